"""Counting and paging through a collection: ``POST .../count``, ``POST .../points/scroll``, ``GET .../points``.

A scroll page is the ``limit`` smallest matching ids above the cursor ``after``, with their
metadata as columns, and ``next_after`` (the cursor of the next page, null after the last).
Pages are read from one pinned snapshot each; a write between two pages is seen by the later
page only.  Cost is bounded before any work: ``limit`` ≤ :data:`~.schemas.MAX_SCROLL` and
``limit`` × returned columns ≤ ``max_include_cells``; the encoded page must fit
``max_response_bytes``.  A count reads the filtered columns once (no data for no filter).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..errors import InvalidInput
from . import wire
from .auth import ReadAccess
from .collections import ERRORS
from .convert import metadata_columns
from .errors import TooExpensive
from .registry import Collection
from .schemas import MAX_ID, MAX_INCLUDE, MAX_SCROLL, CountRequest, CountResult, ScrollPage, ScrollRequest
from .search import check_filter_numbers
from .settings import Settings
from .state import CollectionDep, StateDep

router = APIRouter(prefix="/v1/collections/{name}", tags=["points"], responses=ERRORS)


def _check_filter(flt: dict[str, Any] | None) -> None:
    if flt is not None:
        check_filter_numbers(flt)


def _page(c: Collection, s: Settings, flt: dict[str, Any] | None, after: int | None, limit: int,
          include: list[str] | None) -> bytes:
    """The JSON of one scroll page (blocking: reads the index)."""
    index = c.index
    columns = include
    if columns is None:  # all columns: known only from the schema (the page checks it again)
        columns = list(index.get_metadata(np.zeros(0, np.uint64)).column_names)
    cells = limit * len(columns)
    if cells > s.max_include_cells:
        raise TooExpensive(f"limit={limit} × {len(columns)} columns = {cells:,} values exceeds the limit of "
                           f"{s.max_include_cells:,} (setting max_include_cells); ask for fewer columns with "
                           "'include' or a smaller limit")
    page = index.scroll(flt, after=after, limit=limit, columns=columns)
    body = orjson.dumps({"ids": page.ids.tolist(), "metadata": metadata_columns(page.metadata),
                         "next_after": page.next_after})
    if len(body) > s.max_response_bytes:
        raise TooExpensive(f"the page exceeds max_response_bytes ({s.max_response_bytes:,}); use a smaller limit "
                           "or fewer include columns")
    return body


@router.post("/count", response_model=CountResult, dependencies=[ReadAccess], summary="Count points")
async def count_points(body: CountRequest, collection: CollectionDep, state: StateDep) -> dict[str, int]:
    """Exact number of points matching ``filter`` (all points without one)."""
    _check_filter(body.filter)
    return {"count": await state.read(collection.index.count, body.filter)}


@router.post("/points/scroll", response_model=ScrollPage, dependencies=[ReadAccess],
             summary="Page through points (filtered)")
async def scroll_points(body: ScrollRequest, collection: CollectionDep, state: StateDep) -> Response:
    """One page of the points matching ``filter``, ascending by id, after the cursor ``after``.  Follow
    ``next_after`` until it is null to visit every matching point once."""
    _check_filter(body.filter)
    if body.include is not None and any(not c for c in body.include):
        raise InvalidInput("include: column names must be non-empty")
    raw = await state.read(_page, collection, state.settings, body.filter, body.after, body.limit, body.include)
    return Response(raw, media_type="application/json")


@router.get("/points", response_model=ScrollPage, dependencies=[ReadAccess], summary="List points (paged)")
async def list_points(
    collection: CollectionDep,
    state: StateDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Cursor: the previous page's next_after.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SCROLL, description="Points per page.")] = 1000,
    include: Annotated[list[str] | None, Query(max_length=MAX_INCLUDE,
                                               description="Metadata columns to return (default: all).")] = None,
    filter: Annotated[str | None, Query(max_length=65_536, description="Metadata filter as JSON.")] = None,
) -> Response:
    """The same pages as ``POST .../points/scroll``, with the options in the query string."""
    flt = None
    if filter is not None:
        flt = wire.loads(filter.encode())
        if not isinstance(flt, dict):
            raise InvalidInput(f"filter must be a JSON object, got {type(flt).__name__}")
    return await scroll_points(ScrollRequest(filter=flt, after=after, limit=limit, include=include),
                               collection, state)
