"""``python -m serving.keys``: create / list / revoke / token, on SQLite and on the real Postgres."""

from __future__ import annotations

import secrets
from pathlib import Path

import jwt
import pytest

from common.backend import normalize_database_url
from serving import keys


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, url: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("APP_DATABASE_URL", url)
    code = keys.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    return request.getfixturevalue("postgres_url")  # tests/conftest.py: a fresh database


def test_create_list_revoke(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(monkeypatch, capsys, db_url, "create", "--name", "clinic-a", "--scopes", "predict,metrics")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("dk_") and len(key) >= 40 and " " not in key

    store = keys.KeyStore(normalize_database_url(db_url))
    [record] = store.records()
    assert record.name == "clinic-a" and record.scopes == ("predict", "metrics") and record.expires_at is None
    assert store.lookup(keys.hash_key(key)) == record
    with store.engine.connect() as conn:  # only the hash is stored
        stored = [tuple(r) for r in conn.execute(keys.api_keys.select())]
    assert key not in str(stored) and keys.hash_key(key) in str(stored)

    code, out, _ = run(monkeypatch, capsys, db_url, "create", "--name", "ui2", "--days", "30")
    second = out.strip().splitlines()[-1]
    assert code == 0 and second != key
    code, listing, _ = run(monkeypatch, capsys, db_url, "list")
    assert code == 0 and "clinic-a" in listing and "ui2" in listing and "predict,info" in listing
    assert key not in listing and second not in listing and "active" in listing

    assert run(monkeypatch, capsys, db_url, "revoke", "clinic-a")[0] == 0
    assert store.lookup(keys.hash_key(key)).status() == "revoked"
    code, _, err = run(monkeypatch, capsys, db_url, "revoke", "clinic-a")
    assert code == 1 and "no active key" in err
    assert "revoked" in run(monkeypatch, capsys, db_url, "list")[1]

    code, _, err = run(monkeypatch, capsys, db_url, "create", "--name", "clinic-a")
    assert code == 2 and "exists already" in err  # names are never reused


@pytest.mark.parametrize(
    "argv, message",
    [
        (["create", "--name", "x", "--scopes", "predict,admin"], "scopes must be"),
        (["create", "--name", "bad name"], "name must be"),
        (["create", "--name", "x", "--days", "0"], "days must be"),
    ],
)
def test_create_refuses_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    code, out, err = run(monkeypatch, capsys, f"sqlite:///{tmp_path / 'k.db'}", *argv)
    assert code == 2 and message in err and "dk_" not in out


def test_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    secret = secrets.token_urlsafe(32)
    monkeypatch.setenv("JWT_SECRET_KEY", secret)
    assert keys.main(["token", "--client", "lab-system", "--days", "7", "--scopes", "predict"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="diabetes-api")
    assert claims["sub"] == "lab-system" and claims["scope"] == "predict"
    assert claims["exp"] - claims["iat"] == 7 * 86400

    monkeypatch.setenv("JWT_SECRET_KEY", "short")
    assert keys.main(["token", "--client", "lab-system", "--days", "7"]) == 2
    assert "JWT_SECRET_KEY" in capsys.readouterr().err


def test_default_database_is_a_git_ignored_file_in_the_project() -> None:
    url = keys.database_url({})
    assert url == f"sqlite:///{keys.DEFAULT_DB_PATH}"
    ignored = (Path(keys.__file__).resolve().parent.parent / ".gitignore").read_text().splitlines()
    assert keys.DEFAULT_DB_PATH.name in ignored
    assert keys.database_url({"DATABASE_URL": "postgres://u@h/db"}) == "postgresql+psycopg2://u@h/db"
    assert keys.database_url({"APP_DATABASE_URL": "sqlite:///a.db", "DATABASE_URL": "postgres://u@h/db"}) == (
        "sqlite:///a.db"
    )
