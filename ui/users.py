"""Clinicians' accounts for the app's built-in login: names and bcrypt password hashes in the app's own
database (``APP_DATABASE_URL``, else ``DATABASE_URL``, else the git-ignored SQLite file ``app.db`` in the
project), with the failed-attempt count and lockout that throttle password guessing.

    python -m ui.users add NAME        # asks for the password twice (or reads one line from stdin)
    python -m ui.users list
    python -m ui.users disable NAME
    python -m ui.users enable NAME     # also clears a lockout
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "app.db"
MIN_PASSWORD_LENGTH = 12
ROUNDS = 12  # bcrypt's work factor: ~0.25 s per check on one core, slow enough against offline guessing
# Checked against when the name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(ROUNDS))

metadata = sa.MetaData()
users = sa.Table(
    "ui_users",
    metadata,
    sa.Column("username", sa.String(100), primary_key=True),
    sa.Column("password_hash", sa.String(100), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("failed_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_login", sa.DateTime(timezone=True), nullable=True),
)


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = env.get("APP_DATABASE_URL") or env.get("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"
    for prefix in ("postgres://", "postgresql://"):  # Render's scheme; SQLAlchemy needs the driver named
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


_ENGINES: dict[str, sa.Engine] = {}


def engine(url: str | None = None) -> sa.Engine:
    """One engine per database (pooled connections), with the table created on first use."""
    url = url or database_url()
    if url not in _ENGINES:
        eng = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(eng)
        _ENGINES[url] = eng
    return _ENGINES[url]


class UserError(ValueError):
    """A command that cannot be done (existing name, unknown name, short password)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(when: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were written in UTC."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def add(eng: sa.Engine, username: str, password: str) -> None:
    username = username.strip()
    if not username:
        raise UserError("the user name is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(ROUNDS)).decode("ascii")
    with eng.begin() as conn:
        if conn.execute(sa.select(users.c.username).where(users.c.username == username)).first():
            raise UserError(f"user {username!r} already exists")
        conn.execute(users.insert().values(username=username, password_hash=hashed, active=True,
                                           created_at=_now(), failed_attempts=0))  # fmt: skip


def set_active(eng: sa.Engine, username: str, active: bool) -> None:
    with eng.begin() as conn:
        changes = {"active": active} | ({"failed_attempts": 0, "locked_until": None} if active else {})
        if conn.execute(users.update().where(users.c.username == username).values(**changes)).rowcount == 0:
            raise UserError(f"no user {username!r}")


def listing(eng: sa.Engine) -> list[dict[str, object]]:
    with eng.connect() as conn:
        rows = conn.execute(sa.select(users).order_by(users.c.username)).mappings().all()
    return [{k: v for k, v in row.items() if k != "password_hash"} for row in rows]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    locked: bool = False  # too many failures: no password is checked until the lockout ends


def verify(eng: sa.Engine, username: str, password: str, max_failures: int, lockout: timedelta) -> Outcome:
    """Check a login. Every failure counts towards a lockout of ``lockout`` after ``max_failures`` in a row;
    a disabled or unknown user fails like a wrong password (nothing tells a stranger which names exist)."""
    now = _now()
    with eng.begin() as conn:
        row = conn.execute(sa.select(users).where(users.c.username == username.strip())).mappings().first()
        if row is None or not row["active"]:
            bcrypt.checkpw(password.encode("utf-8"), _DUMMY_HASH)
            return Outcome(ok=False)
        locked_until = _aware(row["locked_until"])
        if locked_until is not None and locked_until > now:
            return Outcome(ok=False, locked=True)
        where = users.c.username == row["username"]
        if bcrypt.checkpw(password.encode("utf-8"), row["password_hash"].encode("ascii")):
            conn.execute(users.update().where(where).values(failed_attempts=0, locked_until=None, last_login=now))
            return Outcome(ok=True)
        failures = row["failed_attempts"] + 1
        locked = failures >= max_failures
        conn.execute(users.update().where(where).values(failed_attempts=0 if locked else failures,
                                                        locked_until=now + lockout if locked else None))  # fmt: skip
        return Outcome(ok=False, locked=locked)


def _read_password() -> str:
    if not sys.stdin.isatty():  # scripted: one line on stdin
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise UserError("the passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.users", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("add", "disable", "enable"):
        sub.add_parser(name).add_argument("username")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    eng = engine()
    try:
        if args.command == "add":
            add(eng, args.username, _read_password())
            print(f"user {args.username} added")
        elif args.command == "list":
            for u in listing(eng):
                state = "active" if u["active"] else "disabled"
                locked = _aware(u["locked_until"])
                if locked is not None and locked > _now():
                    state += f", locked until {locked:%Y-%m-%d %H:%M} UTC"
                last = _aware(u["last_login"])
                print(f"{u['username']}\t{state}\tlast login {f'{last:%Y-%m-%d %H:%M} UTC' if last else 'never'}")
        else:
            set_active(eng, args.username, args.command == "enable")
            print(f"user {args.username} {args.command}d")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
