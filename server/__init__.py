"""vqsearch HTTP API (FastAPI).  ``create_app(Settings(data_dir=...))`` or ``vqsearch serve --data DIR``."""

from __future__ import annotations

from .app import ROUTERS, create_app, serve
from .settings import InvalidSettings, Settings

__all__ = ["ROUTERS", "InvalidSettings", "Settings", "create_app", "serve"]
