"""Content parts that chat completions and the Responses API share."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from localoai.protocol.base import RequestModel, Unsupported


class RefusalPart(RequestModel):
    type: Literal["refusal"]
    refusal: str


class RefusedPart(RequestModel):
    """A part of a modality a text-only model cannot read: refused, naming its type.

    Subclasses only fix the `type` literal, so the discriminated union routes that type here."""

    model_config = {**RequestModel.model_config, "extra": "allow"}

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, dict) else None
        raise Unsupported(f"content parts of type '{kind}' are not supported: this server serves a text-only model")
