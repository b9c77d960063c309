"""The web dashboard at ``/ui``: static HTML and ES modules shipped in the package (``server/ui``).

No build step and no CDN: the files in ``ui/`` are what the browser loads, and every call they
make goes through the public ``/v1`` API with the key the user typed (kept in the tab's
``sessionStorage`` only).  The server adds nothing for the dashboard except :mod:`.whoami`,
which any client may use to learn its key's role.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

#: The dashboard's files (index.html, *.js, *.css), installed as package data.
UI_DIR = Path(__file__).parent / "ui"
UI_PATH = "/ui"


def mount_dashboard(app: FastAPI) -> None:
    """Serve ``UI_DIR`` at ``/ui/`` (``/ui`` redirects there, so relative module URLs resolve)."""

    @app.get(UI_PATH, include_in_schema=False)
    async def dashboard_root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/", status_code=308)

    app.mount(f"{UI_PATH}/", StaticFiles(directory=str(UI_DIR), html=True), name="dashboard")
