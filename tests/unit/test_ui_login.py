"""The built-in login in Streamlit's AppTest (in process): nothing but the login page before login, the idle
timeout, and login off refused off loopback. No API runs: the pages behind the login show their banner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from ui import users
from ui.i18n import tr

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
PASSWORD = "una contraseña larga"


@pytest.fixture
def app_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(users, "ROUNDS", 4)  # bcrypt's cheapest cost: the same checks, fast on a busy machine
    url = f"sqlite:///{tmp_path / 'app.db'}"
    users.add(users.engine(url), "ana", PASSWORD)
    for key in ("API_HOSTPORT", "UI_AUTH", "UI_SESSION_TIMEOUT_MIN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("APP_DATABASE_URL", url)
    monkeypatch.setenv("API_BASE_URL", "http://127.0.0.1:9")  # nothing listens: pages show a banner
    previous = config.get_option("server.address")
    yield
    config.set_option("server.address", previous)


def run() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def log_in(at: AppTest, user: str, password: str) -> AppTest:
    at.text_input(key="login_user").set_value(user)
    next(w for w in at.text_input if w.label == tr("password", "es")).set_value(password)
    at.button[0].click().run()  # the form's submit button
    return at


def test_a_stranger_gets_only_the_login_page(app_db: None) -> None:
    at = run()
    assert [t.value for t in at.title] == [tr("login_title", "es")]
    assert not at.error and not at.get("page_link") and not at.metric and not at.dataframe
    assert {w.label for w in at.text_input} == {tr("username", "es"), tr("password", "es")}
    log_in(at, "ana", "wrong password")
    assert [e.value for e in at.error] == [tr("login_failed", "es")]
    assert [t.value for t in at.title] == [tr("login_title", "es")]


def test_a_clinician_logs_in_and_is_logged_out_when_idle(app_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UI_SESSION_TIMEOUT_MIN", "1")
    at = log_in(run(), "ana", PASSWORD)
    assert at.title[0].value == tr("individual_title", "es")
    assert tr("logged_in_as", "es", user="ana") in [c.value for c in at.caption]
    at.session_state["auth"]["seen"] -= 61  # a minute and a second without a click
    at.run()
    assert at.title[0].value == tr("login_title", "es")
    assert [i.value for i in at.info] == [tr("session_expired", "es")]


def test_login_off_is_refused_unless_bound_to_loopback(app_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UI_AUTH", "off")
    config.set_option("server.address", "0.0.0.0")
    at = run()
    assert [e.value for e in at.error] == [tr("auth_off_refused", "es")] and not at.title
    config.set_option("server.address", "127.0.0.1")
    assert run().title[0].value == tr("individual_title", "es")
