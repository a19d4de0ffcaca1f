"""Bodies of the trainer-control routes (`localoai/app/routes/admin.py`)."""

from __future__ import annotations

from pydantic import StrictInt

from localoai.protocol.base import RequestModel


class PolicyVersionRequest(RequestModel):
    policy_version: StrictInt
