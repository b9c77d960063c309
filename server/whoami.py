"""``GET /v1/whoami``: the role of the key presented, so that a client (the dashboard) can hide
the actions its key may not perform.

It reveals nothing a client could not learn by trying: with keys configured, a request without
a valid key is a 401 (as every ``/v1`` route), and a valid key learns only its own role.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .auth import ROLE_SCOPE_KEY, ReadAccess
from .collections import ERRORS

router = APIRouter(prefix="/v1", tags=["operations"], responses={401: ERRORS[401]})


class WhoAmI(BaseModel):
    """The caller's role."""

    role: Literal["admin", "read"] = Field(description="'admin': every operation; 'read': search, get and list.",
                                           examples=["read"])
    auth: bool = Field(description="Whether the server requires API keys (false: everyone is admin).",
                       examples=[True])


@router.get("/whoami", response_model=WhoAmI, dependencies=[ReadAccess], summary="The role of the API key")
async def whoami(request: Request) -> dict[str, object]:
    """``admin`` or ``read`` for the key presented; ``admin`` when the server has no keys."""
    keyring = request.app.state.vq.keyring
    if not keyring.enabled:
        return {"role": "admin", "auth": False}
    role = request.scope.get(ROLE_SCOPE_KEY)  # set by the authentication middleware
    if role is None:  # pragma: no cover - the middleware always sets it for /v1 paths
        header = request.headers.get("authorization")
        role = keyring.role_from_header(None if header is None else header.encode("latin-1", "replace"))
    return {"role": role, "auth": True}
