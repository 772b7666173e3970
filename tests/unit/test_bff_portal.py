"""How the BFF serves the portal (cg_bff.portal), in-process: the built app at / with its
client-side routes, hashed assets cached for a year, index.html never cached, /api never
the portal (an unknown API route stays the API's JSON 404, for any method); without a
build, a placeholder page that says to run `make portal`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cg_bff import errors
from cg_bff.portal import ASSET_CACHE, mount_portal

INDEX = "<!doctype html><title>Creditgate portal</title><script src=/assets/index-abc123.js></script>"


def app_with(portal_dir: Path) -> TestClient:
    app = FastAPI()
    errors.install_handlers(app)

    @app.get("/api/v1/thing")
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    mount_portal(app, portal_dir, "https://gateway.example.com/v1")
    return TestClient(app)


@pytest.fixture
def built(tmp_path: Path) -> TestClient:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log('portal')")
    return app_with(tmp_path)


@pytest.mark.parametrize("path", ["/", "/sign-in", "/partner/gateway", "/partner/gateway/keys/key_1", "/apix"])
def test_every_page_of_the_app_is_its_index_never_cached(built: TestClient, path: str):
    r = built.get(path)
    assert r.status_code == 200 and r.text == INDEX
    assert r.headers["content-type"].startswith("text/html") and r.headers["cache-control"] == "no-cache"


def test_hashed_assets_are_cached_for_a_year_and_a_missing_one_is_a_404(built: TestClient):
    r = built.get("/assets/index-abc123.js")
    assert r.status_code == 200 and r.text == "console.log('portal')" and r.headers["cache-control"] == ASSET_CACHE
    missing = built.get("/assets/index-gone.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "cache-control" not in missing.headers


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/api", "/api/", "/api/v1/nothing", "/api/v2/thing"])
def test_the_api_is_never_the_portal(built: TestClient, method: str, path: str):
    r = built.request(method, path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert built.get("/api/v1/thing").json() == {"ok": "yes"}


def test_without_a_build_a_placeholder_says_how_to_build_it(tmp_path: Path):
    c = app_with(tmp_path / "dist")
    r = c.get("/")
    assert r.status_code == 200 and "make portal" in r.text and "https://gateway.example.com/v1" in r.text
    assert c.get("/partner/gateway").status_code == 404
