"""`/v1/models`: the one model this server serves."""

from __future__ import annotations

from openai.pagination import SyncPage
from openai.types import Model

from localoai.served import LoadedModel


def model_card(model: LoadedModel) -> Model:
    return Model(id=model.name, object="model", created=model.created, owned_by="localoai",
                 max_model_len=model.context_length)


ModelPage = SyncPage[Model]
"""Parametrized once: pydantic builds a class for each `SyncPage[Model]` it is asked for when its
cache of them has let the last one go (a new class every few requests)."""


def list_models(model: LoadedModel) -> SyncPage[Model]:
    return ModelPage(data=[model_card(model)], object="list")


def retrieve_model(model: LoadedModel, model_id: str) -> Model:
    model.check_model(model_id)
    return model_card(model)
