"""`/v1/models`: the one model this server serves."""

from __future__ import annotations

from openai.pagination import SyncPage
from openai.types import Model

from localoai.served import ServedModel


def model_card(served: ServedModel) -> Model:
    return Model(id=served.name, object="model", created=served.created, owned_by="localoai",
                 max_model_len=served.context_length)


def list_models(served: ServedModel) -> SyncPage[Model]:
    return SyncPage[Model](data=[model_card(served)], object="list")


def retrieve_model(served: ServedModel, model_id: str) -> Model:
    served.check_model(model_id)
    return model_card(served)
