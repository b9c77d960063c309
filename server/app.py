"""The FastAPI application: :func:`create_app` wires settings, state, routers and middleware.

Nothing is built at import time.  Collections are (re)opened in the lifespan startup,
in a worker thread, and closed on shutdown.  Routers are included from :data:`ROUTERS`,
so a new resource is one more entry there.

Middleware, outermost first, all pure ASGI (no per-request wrapper objects): metrics
(times and counts every request, errors included) → catch-all (a generic JSON 500 for
anything unexpected) → authentication and per-key limits (401/429 before the body is
read) → body limits (413 before the body is read, 408 for bodies that arrive too slowly)
→ FastAPI.  Below the app, :mod:`.protocol` bounds connections and header reading.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from this server, not
from a CDN, so they work offline: the assets come from the ``fastapi-offline`` package,
which ships current Swagger UI and ReDoc builds as package data (a maintained package
rather than files vendored here that nobody would update).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import collections, ops, points, search, weights
from .auth import AuthMiddleware, KeyLimits, KeyRing
from .embedders import DEFAULT_EMBEDDERS, EmbedderFactory
from .errors import CatchAllMiddleware, install_error_handlers
from .limits import BodyLimitMiddleware
from .metrics import HttpMetrics, MetricsMiddleware
from .registry import CollectionRegistry
from .schemas import PointsUpsert, SearchRequest
from .settings import Settings
from .state import ServerState

LOG = logging.getLogger(__name__)

#: Routers served by the app, in OpenAPI order.
ROUTERS: list[APIRouter] = [collections.router, points.router, search.router, ops.router, weights.router]

#: Models used only through ``openapi_extra`` (multi-media-type bodies) that must appear in the schema.
EXTRA_SCHEMAS = (PointsUpsert, SearchRequest)
#: Where the offline Swagger UI / ReDoc assets are served.
DOCS_ASSETS = "/docs-assets"

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
            state.batcher.close()
            await anyio.to_thread.run_sync(registry.close_all)

    app = FastAPI(title="vqsearch", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=_operation_id, docs_url=None, redoc_url=None,
                  openapi_tags=[{"name": "collections", "description": "Create, list, inspect, delete."},
                                {"name": "points", "description": "Write, delete and read points."},
                                {"name": "search", "description": "k-nearest-neighbour search."},
                                {"name": "operations", "description": "Health and metrics."}])
    app.state.vq = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    _add_offline_docs(app)
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_json=settings.max_json_bytes, max_arrow=settings.max_arrow_bytes,
                       body_timeout=settings.body_timeout, min_body_rate=settings.min_body_rate)
    app.add_middleware(AuthMiddleware, keyring=state.keyring,
                       limits=KeyLimits(settings.key_concurrency, settings.key_rate))
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=[r for rt in ROUTERS for r in rt.routes])
    return app


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` with every asset served by this app (see the module docstring)."""
    assets = importlib.resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=oauth_url, swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    @app.get(oauth_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> Any:
    """The ``uvicorn.Config`` :func:`serve` uses (tests pass ``overrides``, e.g. ``log_level``).

    The HTTP protocol is :mod:`.protocol`'s (httptools parser plus connection hygiene); the event
    loop is uvloop where it is installed (see benchmarks/RESULTS.md for what each measurably adds).
    """
    import uvicorn

    from .protocol import protocol_class

    kwargs: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": settings.log_level, "proxy_headers": False,
        "server_header": False, "access_log": settings.access_log, "backlog": max(2048, settings.max_connections),
        "loop": "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        "http": protocol_class(header_timeout=settings.header_timeout, max_header_bytes=settings.max_header_bytes,
                               max_connections=settings.max_connections),
        "lifespan": "on",
    }
    kwargs.update(overrides)
    return uvicorn.Config(app, **kwargs)


def serve(settings: Settings) -> None:
    """Run the app with uvicorn on ``settings.host:settings.port`` until interrupted."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
