"""Bodies of the trainer-control routes (`localoai/app/routes/admin.py`)."""

from __future__ import annotations

from localoai.protocol.base import Int64, RequestModel


class PolicyVersionRequest(RequestModel):
    policy_version: Int64
