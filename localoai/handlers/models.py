"""`/v1/models`: the one model this server serves."""

from __future__ import annotations

from openai.pagination import SyncPage
from openai.types import Model

from localoai.served import ServedModel


def model_card(served: ServedModel) -> Model:
    return Model(id=served.name, object="model", created=served.created, owned_by="localoai",
                 max_model_len=served.context_length)


ModelPage = SyncPage[Model]
"""Parametrized once: pydantic builds a class for each `SyncPage[Model]` it is asked for when its
cache of them has let the last one go (a new class every few requests)."""


def list_models(served: ServedModel) -> SyncPage[Model]:
    return ModelPage(data=[model_card(served)], object="list")


def retrieve_model(served: ServedModel, model_id: str) -> Model:
    served.check_model(model_id)
    return model_card(served)
