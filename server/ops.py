"""Operational endpoints: ``GET /healthz`` (liveness, no auth) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from .. import __version__
from .auth import ReadAccess
from .metrics import CONTENT_TYPE, gauge
from .schemas import Health
from .state import ServerState, StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz(state: StateDep) -> dict[str, object]:
    """Always 200 while the server is up; no authentication, no disk access."""
    return {"status": "ok", "version": __version__, "collections": len(state.registry.names())}


def _index_gauges(state: ServerState) -> list[str]:
    rows = []
    for c in state.registry.all():
        try:
            st = c.index.stats()
        except Exception:  # a collection dropped while we scrape: skip it, never fail the scrape
            continue
        rows.append((c.name, st))
    lab = [(("collection", name),) for name, _ in rows]
    out = gauge("vqsearch_collections", "Collections served.", [((), len(rows))])
    out += gauge("vqsearch_collection_vectors", "Live vectors per collection.",
                 [(lb, st["count"]) for lb, (_, st) in zip(lab, rows)])
    out += gauge("vqsearch_collection_bytes", "Bytes on disk of the current version.",
                 [(lb, st["bytes"]) for lb, (_, st) in zip(lab, rows)])
    out += gauge("vqsearch_collection_segments", "Segments of the current version.",
                 [(lb, st["segments"]) for lb, (_, st) in zip(lab, rows)])
    out += gauge("vqsearch_collection_version", "Current manifest version.",
                 [(lb, st["version"]) for lb, (_, st) in zip(lab, rows)])
    return out


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[ReadAccess], summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition format."}})
async def metrics(state: StateDep) -> PlainTextResponse:
    """Request counts and latency histograms by route, worker-pool use, and index sizes per collection."""
    lines = state.metrics.render()
    pools = [((("pool", "read"),), state.read_limiter), ((("pool", "write"),), state.write_limiter)]
    lines += gauge("vqsearch_worker_threads_busy", "Worker threads in use.",
                   [(lb, lim.borrowed_tokens) for lb, lim in pools])
    lines += gauge("vqsearch_worker_threads_limit", "Worker-pool sizes.", [(lb, lim.total_tokens) for lb, lim in pools])
    b = state.batcher
    lines += gauge("vqsearch_search_batches_busy", "Batched searches running.", [((), b.busy)])
    lines += gauge("vqsearch_search_queued_queries", "Query vectors waiting for a search worker.",
                   [((), b.queued_rows)])
    lines += gauge("vqsearch_search_batches", "Batched index calls made since start (a counter).", [((), b.batches)])
    lines += gauge("vqsearch_search_batched_queries", "Query vectors searched in batches since start (a counter).",
                   [((), b.batched_rows)])
    lines += await state.read(_index_gauges, state)
    return PlainTextResponse("\n".join(lines) + "\n", media_type=CONTENT_TYPE)
