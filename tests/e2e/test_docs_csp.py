"""The API's browser headers in a real browser (Debian's Chromium through Playwright): /docs still works under its
Content-Security-Policy (its inline script and style are allowed by hash, nothing else), and no other site can
frame it. Chromium's requests are answered in-process by the app (FastAPI TestClient), so no server is needed; the
app has no model loaded, which /docs and /openapi.json handle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import Settings

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
API, OTHER = "http://api.test", "http://other.test"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings.from_env(
        {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}", "HOST": "127.0.0.1", "RELOAD_INTERVAL_S": "0"}
    )
    return TestClient(create_app(settings, ModelStore(settings), {"API_AUTH": "off"}), base_url=API)


def test_docs_render_under_their_csp_and_cannot_be_framed(client: TestClient) -> None:
    def answer(route: sync_api.Route) -> None:
        url = route.request.url
        if url.startswith(OTHER):  # another site that tries to embed the API docs
            route.fulfill(status=200, content_type="text/html", body=f'<iframe id="f" src="{API}/docs"></iframe>')
            return
        r = client.request(route.request.method, url.removeprefix(API))
        route.fulfill(status=r.status_code, headers=dict(r.headers), body=r.content)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.on("pageerror", lambda err: console.append(str(err)))
            page.route("**/*", answer)

            page.goto(f"{API}/docs")
            # The inline script ran (it fetched openapi.json and rendered its routes) and the inline style applied.
            try:
                page.locator("#routes .route").first.wait_for(timeout=10_000)  # no eval: the CSP forbids it
            except sync_api.TimeoutError:
                raise AssertionError(f"the docs rendered no route; browser console: {console}") from None
            assert page.text_content("#title") == client.get("/openapi.json").json()["info"]["title"]
            assert page.eval_on_selector(".route", "e => getComputedStyle(e).borderTopStyle") == "solid"
            assert not [m for m in console if "Content Security Policy" in m], console

            console.clear()
            page.goto(f"{OTHER}/")
            page.wait_for_timeout(1000)
            framed = page.frame_locator("#f").locator("#routes .route")
            assert framed.count() == 0
            assert any("frame-ancestors" in m for m in console), console
        finally:
            browser.close()
