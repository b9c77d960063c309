"""``/v1/aliases``: second names for collections, resolved by every collection route.

``PUT /v1/aliases/{alias}`` with ``{"collection": name}`` creates the alias or moves it (one
atomic registry write), so clients that search ``/v1/collections/{alias}/...`` switch to a
rebuilt collection at once.  See :mod:`.registry` for the rules.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .auth import AdminAccess, ReadAccess
from .collections import ERRORS
from .schemas import AliasList, AliasSet, AliasTarget
from .state import StateDep

router = APIRouter(prefix="/v1/aliases", tags=["collections"], responses=ERRORS)


@router.get("", response_model=AliasList, dependencies=[ReadAccess], summary="List aliases")
async def list_aliases(state: StateDep) -> dict[str, Any]:
    """Every alias and the collection it names."""
    return {"aliases": state.registry.aliases()}


@router.put("/{alias}", response_model=AliasTarget, dependencies=[AdminAccess], summary="Create or move an alias")
async def set_alias(alias: str, body: AliasSet, state: StateDep) -> dict[str, str]:
    """Point ``alias`` at an existing collection (by its name, not another alias); moves an existing alias."""
    await state.admin(state.registry.set_alias, alias, body.collection)
    return {"alias": alias, "collection": body.collection}


@router.delete("/{alias}", response_model=AliasTarget, dependencies=[AdminAccess], summary="Delete an alias")
async def delete_alias(alias: str, state: StateDep) -> dict[str, str]:
    """Delete an alias (its collection stays)."""
    target = state.registry.alias_target(alias)
    await state.admin(state.registry.delete_alias, alias)
    return {"alias": alias, "collection": target or ""}
