"""The FastAPI application: :func:`create_app` wires settings, state, routers and middleware.

Nothing is built at import time.  Collections are (re)opened in the lifespan startup,
in a worker thread, and closed on shutdown.  Routers are included from :data:`ROUTERS`;
a new resource (e.g. ``server/models.py`` for ``/v1/models``) is one more entry there.

Middleware, outermost first: metrics (times and counts every request, errors included)
→ catch-all (a generic JSON 500 for anything unexpected) → authentication (401 before
the body is read) → body-size limit (413 before the body is read) → FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from .. import __version__
from . import collections, ops, points, search, weights
from .auth import AuthMiddleware, KeyRing
from .embedders import DEFAULT_EMBEDDERS, EmbedderFactory
from .errors import CatchAllMiddleware, install_error_handlers
from .limits import BodyLimitMiddleware
from .metrics import HttpMetrics, MetricsMiddleware
from .registry import CollectionRegistry
from .schemas import PointsUpsert
from .settings import Settings
from .state import ServerState

LOG = logging.getLogger(__name__)

#: Routers served by the app, in OpenAPI order.  Add ``models.router`` here for ``/v1/models``.
ROUTERS: list[APIRouter] = [collections.router, points.router, search.router, ops.router, weights.router]

#: Models used only through ``openapi_extra`` (multi-media-type bodies) that must appear in the schema.
EXTRA_SCHEMAS = (PointsUpsert,)

DESCRIPTION = """Vector-quantised embedding search over HTTP.

Collections hold quantised vectors with metadata; search by vector (or by text for collections created
with an embedder).  Authenticate with `Authorization: Bearer <key>` once keys are configured: admin keys
can do everything, read-only keys can search, get and list.  Every error is
`{"error": <stable code>, "message": <text>}`."""


def _operation_id(route: APIRoute) -> str:
    """Clean operation ids: the endpoint function name (``search``, ``create_collection`` ...)."""
    return route.name


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                             tags=app.openapi_tags)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in EXTRA_SCHEMAS:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(js.pop("$defs", {}))
            comps[model.__name__] = js
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, *, embedders: Mapping[str, EmbedderFactory] | None = None) -> FastAPI:
    """Build the HTTP app for ``settings``.

    ``embedders`` maps embedder names to factories (default: MiniLM); tests inject fakes here.
    """
    registry = CollectionRegistry(settings.data_dir, DEFAULT_EMBEDDERS if embedders is None else embedders)
    state = ServerState(settings=settings, registry=registry,
                        keyring=KeyRing(settings.api_keys, settings.read_only_keys), metrics=HttpMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(registry.open_all)
        if settings.demo_debian is not None:
            from .demo import load_debian

            await anyio.to_thread.run_sync(load_debian, registry, settings.demo_debian)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(registry.close_all)

    app = FastAPI(title="vqsearch", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=_operation_id,
                  openapi_tags=[{"name": "collections", "description": "Create, list, inspect, delete."},
                                {"name": "points", "description": "Write, delete and read points."},
                                {"name": "search", "description": "k-nearest-neighbour search."},
                                {"name": "operations", "description": "Health and metrics."}])
    app.state.vq = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_json=settings.max_json_bytes, max_arrow=settings.max_arrow_bytes)
    app.add_middleware(AuthMiddleware, keyring=state.keyring)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=[r for rt in ROUTERS for r in rt.routes])
    return app


def serve(settings: Settings) -> None:
    """Run the app with uvicorn on ``settings.host:settings.port`` until interrupted."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                proxy_headers=False, server_header=False)
