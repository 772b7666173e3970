"""The portal at ``/``: the single-page app built from ``services/bff/portal`` (``make
portal``), or, when it is not built, a placeholder page that says how to build it.

The built app is ``index.html`` plus content-hashed files under ``assets/``:

- ``/assets/...`` are served with a year-long ``immutable`` cache (a new build has new
  names), an unknown one is the API's 404;
- any other GET outside ``/api`` answers ``index.html`` with ``no-cache`` (the app's own
  routes, ``/partner/gateway`` and the like, are client-side, so a reload works);
- ``/api/...`` is never the portal: an unknown API route stays a JSON 404.

The app talks to the BFF only through ``/api/v1``, as any other client does.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

log = logging.getLogger("cg_bff.portal")
ASSET_CACHE = "public, max-age=31536000, immutable"


class _OutsideApi(Convertor[str]):
    """A path that is not under ``/api``: the API's unknown routes keep their 404 (and a
    POST to one is not a 405 of the portal's GET route)."""

    regex = r"(?!api(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("outside_api", _OutsideApi())


class _HashedAssets(StaticFiles):
    """Vite's output: every file name carries a hash of its content, so it never changes."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = ASSET_CACHE
        return response


def mount_portal(app: FastAPI, portal_dir: Path, proxy_public_url: str) -> None:
    """Serves the built portal from ``portal_dir``, or the placeholder page if it has no
    ``index.html``. Call after the API's routes: its catch-all route comes last."""
    index = portal_dir / "index.html"
    if not index.is_file():
        log.warning("the portal is not built: serving a placeholder at /", extra={"portal_dir": str(portal_dir)})
        page = resources.files("cg_bff").joinpath("static/index.html").read_text()
        page = page.replace("{{PROXY_URL}}", proxy_public_url)

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def placeholder() -> HTMLResponse:
            return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

        return

    app.mount("/assets", _HashedAssets(directory=portal_dir / "assets", check_dir=False), name="portal-assets")

    @app.get("/{path:outside_api}", include_in_schema=False)
    async def portal(path: str) -> FileResponse:
        # read at each request: a rebuild (new asset names) is picked up without a restart
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})
