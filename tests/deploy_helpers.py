"""Process helpers for the deployment tests: free ports, waiting on health checks, stopping process groups,
and one patient scored through the clinicians' app in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from deploy.rehearse import free_port  # noqa: F401 - re-exported for the tests
from tests.conftest import example_patient  # noqa: F401 - re-exported for the tests and benchmarks

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def wait_healthy(url: str, procs: list[subprocess.Popen], timeout_s: float, logs: list[Path]) -> requests.Response:
    """GET ``url`` until it answers 2xx; fail early (with the logs' tails) if a process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a process exited ({p.returncode}) before {url} was healthy:\n{tails(logs)}")
        try:
            r = requests.get(url, timeout=2)
            if 200 <= r.status_code < 300:
                return r
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not healthy within {timeout_s}s:\n{tails(logs)}")


def tails(logs: list[Path], n: int = 4000) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in logs if p.exists())


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
    """Signal the process group and wait; kill it if it does not stop in time. Returns the exit code."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return proc.wait()
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def log_in(page: Any, login: tuple[str, str]) -> None:
    """Fill and submit the app's built-in login form (Spanish, the default language)."""
    from ui.i18n import tr

    page.get_by_label(tr("username", "es")).fill(login[0])
    page.get_by_label(tr("password", "es")).fill(login[1])
    page.get_by_role("button", name=tr("login_button", "es")).click()


def probability_shown_by_app(app_url: str, features: list[dict[str, Any]], patient: dict[str, Any],
                             screenshot: Path | None = None, login: tuple[str, str] | None = None) -> str:
    """Log in (the app's built-in login, when ``login`` is given), fill the individual form in Chromium, submit,
    and read the probability the app shows."""
    from playwright.sync_api import sync_playwright

    from ui import spec
    from ui.i18n import tr

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app_url)
            if login is not None:
                log_in(page, login)
            page.get_by_role("button", name=tr("submit", "es")).wait_for(timeout=60_000)
            for f in features:
                box = page.get_by_label(spec.label(f, "es"), exact=True)
                box.fill(str(patient[f["name"]]))
                box.press("Enter")
                page.wait_for_timeout(150)
            page.get_by_role("button", name=tr("submit", "es")).click()
            metric = page.locator('[data-testid="stMetric"]').filter(has_text=tr("probability", "es"))
            metric.wait_for(timeout=60_000)
            shown = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            return shown
        finally:
            browser.close()
