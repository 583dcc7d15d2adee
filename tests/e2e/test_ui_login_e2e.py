"""Issue 8, item 7, in a real browser (Debian Chromium through Playwright): with the built-in login, a stranger
gets the login page and nothing else (no menu, no page, no model data); a clinician created with
`python -m ui.users add` gets in; five wrong passwords lock the account. No API is needed: the pages behind
the login are not what this tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_ui_e2e import CHROMIUM, CHROMIUM_ARGS, wait_idle, wait_rerun
from tests.ui_stack import ROOT, free_port, wait_http
from ui.i18n import tr

pytestmark = pytest.mark.slow
PASSWORD = "una contraseña larga"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("login")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "UI_", "API_"))}
    env |= {"APP_DATABASE_URL": f"sqlite:///{work / 'app.db'}", "UI_AUTH": "builtin", "UI_LOGIN_MAX_FAILURES": "5",
            "API_BASE_URL": f"http://127.0.0.1:{free_port()}", "PYTHONPATH": str(ROOT)}  # fmt: skip
    added = subprocess.run([sys.executable, "-m", "ui.users", "add", "ana"], input=PASSWORD + "\n", env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert added.returncode == 0, added.stderr
    port, log = free_port(), work / "streamlit.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.port", str(port),
                                 "--server.headless", "true", "--server.address", "127.0.0.1"],
                                cwd=ROOT, env=env, stdout=fh, stderr=fh)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc, 90, log)
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def login(page: Any, user: str, password: str, settled: Callable[[], bool] | None = None) -> None:
    """Submit the form and wait until the attempt has been checked, before the next one: until ``settled()``
    (the account's row shows it) when given, else by the page's run indicator (``wait_rerun``, which waits up to
    5 s for a run that may be too short to show it)."""
    page.get_by_label(tr("username", "es")).fill(user)
    page.get_by_label(tr("password", "es")).fill(password)
    page.get_by_role("button", name=tr("login_button", "es")).click()
    if settled is None:
        wait_rerun(page)
        return
    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, "the login attempt was never checked"
        time.sleep(0.05)
    wait_idle(page)


def account(env: dict[str, str], name: str) -> dict[str, Any]:
    """The account's row in the app's database (what the login page recorded)."""
    from ui import users

    eng = users.engine(env["APP_DATABASE_URL"])
    with eng.connect() as conn:
        return dict(conn.execute(users.users.select().where(users.users.c.username == name)).mappings().one())


def test_a_stranger_sees_only_the_login_page(server: tuple[str, dict[str, str]], browser: Any) -> None:
    url, _ = server
    for path in ("/", "/lotes", "/modelo", "/individual"):
        page = browser.new_page()
        page.goto(url + path)
        page.get_by_role("button", name=tr("login_button", "es")).wait_for(timeout=60_000)
        wait_idle(page)
        text = page.locator("body").inner_text()
        for other in ("nav_individual", "nav_batch", "nav_model", "api_down", "model_title", "batch_title"):
            assert tr(other, "es").split("(")[0] not in text, (path, other)
        assert page.locator('[data-testid="stSidebarNav"], [data-testid="stPageLink"]').count() == 0
        assert "Page not found" not in text
        page.close()


def test_a_clinician_logs_in_and_a_guesser_is_locked_out(server: tuple[str, dict[str, str]], browser: Any) -> None:
    url, env = server
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("button", name=tr("login_button", "es")).wait_for(timeout=60_000)
    login(page, "ana", "wrong password")
    page.get_by_text(tr("login_failed", "es")).wait_for(timeout=30_000)
    login(page, "ana", PASSWORD)
    page.get_by_role("heading", name=tr("individual_title", "es")).wait_for(timeout=60_000)
    page.get_by_text(tr("logged_in_as", "es", user="ana")).wait_for()
    page.close()

    guesser = browser.new_page()
    guesser.goto(url)
    guesser.get_by_role("button", name=tr("login_button", "es")).wait_for(timeout=60_000)
    def failures_recorded(n: int) -> Callable[[], bool]:
        def settled() -> bool:
            row = account(env, "ana")
            return row["failed_attempts"] == n or (n == 5 and row["locked_until"] is not None)  # the fifth locks

        return settled

    for n in range(1, 6):
        login(guesser, "ana", "wrong password", failures_recorded(n))
    guesser.get_by_text(tr("login_locked", "es", minutes=15)).wait_for(timeout=30_000)
    login(guesser, "ana", PASSWORD)  # the right password no longer helps
    guesser.get_by_text(tr("login_locked", "es", minutes=15)).wait_for(timeout=30_000)
    assert guesser.get_by_role("heading", name=tr("individual_title", "es")).count() == 0
