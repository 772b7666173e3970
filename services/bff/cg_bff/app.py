"""The bff's HTTP app."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from cglib.metrics import metrics_route


def create_app(proxy_public_url: str) -> FastAPI:
    page = resources.files("cg_bff").joinpath("static/index.html").read_text()
    page = page.replace("{{PROXY_URL}}", proxy_public_url)
    app = FastAPI(title="Creditgate portal", docs_url=None, redoc_url=None)
    metrics_route(app)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app
