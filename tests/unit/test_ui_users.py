"""The built-in login's user store (ui/users.py) on a real SQLite file: bcrypt hashes, lockout, disable, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ui import users

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.fixture
def eng(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    monkeypatch.setattr(users, "ROUNDS", 4)  # bcrypt's cheapest cost: same checks, a busy machine stays fast
    return users.engine(f"sqlite:///{tmp_path / 'app.db'}")


def test_only_a_bcrypt_hash_is_stored(eng: sa.Engine) -> None:
    users.add(eng, "ana", PASSWORD)
    with eng.connect() as conn:
        stored = conn.execute(sa.select(users.users.c.password_hash)).scalar_one()
    assert stored.startswith("$2b$") and PASSWORD not in stored
    assert users.verify(eng, "ana", PASSWORD, 5, timedelta(minutes=15)).ok
    assert not users.verify(eng, "ana", PASSWORD + "x", 5, timedelta(minutes=15)).ok
    assert not users.verify(eng, "nobody", PASSWORD, 5, timedelta(minutes=15)).ok
    with pytest.raises(users.UserError, match="already exists"):
        users.add(eng, "ana", PASSWORD)
    with pytest.raises(users.UserError, match="12 characters"):
        users.add(eng, "bea", "short")


def test_lockout_after_repeated_failures_even_for_the_right_password(eng: sa.Engine) -> None:
    users.add(eng, "ana", PASSWORD)
    outcomes = [users.verify(eng, "ana", "wrong", 3, timedelta(minutes=15)) for _ in range(3)]
    assert [o.locked for o in outcomes] == [False, False, True]
    assert users.verify(eng, "ana", PASSWORD, 3, timedelta(minutes=15)) == users.Outcome(ok=False, locked=True)
    users.set_active(eng, "ana", True)  # `enable` clears the lockout
    assert users.verify(eng, "ana", PASSWORD, 3, timedelta(minutes=15)).ok


def test_lockout_ends(eng: sa.Engine) -> None:
    users.add(eng, "ana", PASSWORD)
    assert users.verify(eng, "ana", "wrong", 1, timedelta(seconds=0)).locked
    assert users.verify(eng, "ana", PASSWORD, 1, timedelta(seconds=0)).ok


def test_a_disabled_user_cannot_log_in(eng: sa.Engine) -> None:
    users.add(eng, "ana", PASSWORD)
    users.set_active(eng, "ana", False)
    assert not users.verify(eng, "ana", PASSWORD, 5, timedelta(minutes=15)).ok
    assert [u["active"] for u in users.listing(eng)] == [False]
    assert "password_hash" not in users.listing(eng)[0]


def test_database_url_order() -> None:
    assert users.database_url({}) == f"sqlite:///{users.DEFAULT_SQLITE_PATH}"
    assert users.database_url({"DATABASE_URL": "postgres://u@h/db"}) == "postgresql+psycopg2://u@h/db"
    env = {"DATABASE_URL": "postgres://u@h/db", "APP_DATABASE_URL": "sqlite:////tmp/x.db"}
    assert users.database_url(env) == "sqlite:////tmp/x.db"


@pytest.mark.slow
def test_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ui.users", *args], input=stdin, env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert run("add", "ana", stdin=PASSWORD + "\n").returncode == 0
    assert run("add", "ana", stdin=PASSWORD + "\n").returncode == 1
    assert run("list").stdout.startswith("ana\tactive\tlast login never")
    assert run("disable", "ana").returncode == 0
    assert "ana\tdisabled" in run("list").stdout
    assert run("disable", "nobody").returncode == 1
    assert PASSWORD not in run("list").stdout
