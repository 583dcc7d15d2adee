"""API keys: the store (in the API's own database, through SQLAlchemy) and the command that manages it.

    python -m serving.keys create --name NAME [--scopes predict,info,metrics] [--days N]
    python -m serving.keys list
    python -m serving.keys revoke NAME
    python -m serving.keys token --client NAME --days N [--scopes predict,info]

A key is ``dk_`` + 32 random bytes (secrets.token_urlsafe). It is printed once, by ``create``, alone on the last
line, and only its SHA-256 is stored. A plain (unsalted, fast) hash is enough here because the key is not a
password: with 256 bits of randomness nobody can search for a preimage, salt or no salt, and a fast hash keeps
the per-request check in microseconds (a slow password hash would add tens of milliseconds to every request).
Looking a key up by its hash also means the database never compares secrets.

Database: APP_DATABASE_URL, else DATABASE_URL, else a git-ignored SQLite file in the project (.api-keys.db).
``token`` signs an HS256 JWT with JWT_SECRET_KEY (``exp`` always set, scopes in the ``scope`` claim).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from common.backend import PROJECT_ROOT, normalize_database_url

SCOPES = ("predict", "info", "metrics", "feedback")  # feedback: reserved for the inference-log routes
DEFAULT_SCOPES = ("predict", "info")
KEY_PREFIX = "dk_"
DEFAULT_DB_PATH = PROJECT_ROOT / ".api-keys.db"
JWT_ISSUER = JWT_AUDIENCE = "diabetes-api"
MIN_SECRET_CHARS = 32  # HS256 wants a key at least as long as its 256-bit output
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
)


class KeyStoreError(ValueError):
    """A refused key-management request; the message names the field and the rule."""


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = env.get("APP_DATABASE_URL") or env.get("DATABASE_URL") or f"sqlite:///{DEFAULT_DB_PATH}"
    return normalize_database_url(url)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = sorted(set(items) - set(SCOPES))
    if unknown or not items:
        raise KeyStoreError(f"scopes must be a comma-separated subset of {','.join(SCOPES)}; got {unknown or 'none'}")
    return tuple(s for s in SCOPES if s in items)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without a zone; everything here is written in UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class KeyRecord:
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            name=row.name,
            scopes=tuple(row.scopes.split(",")),
            created_at=_utc(row.created_at),
            expires_at=_utc(row.expires_at),
            revoked_at=_utc(row.revoked_at),
            last_used_at=_utc(row.last_used_at),
        )

    def status(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class KeyStore:
    """The api_keys table. The engine is made lazily and again after a fork (a gunicorn worker must not share
    the master's connections)."""

    def __init__(self, url: str):
        self.url = url
        self._engine: sa.Engine | None = None
        self._pid = 0

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None or self._pid != os.getpid():
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
            self._pid = os.getpid()
            metadata.create_all(self._engine)  # idempotent: creates only what is missing
        return self._engine

    def create(self, name: str, scopes: Iterable[str], days: int | None) -> str:
        if not _NAME.match(name):
            raise KeyStoreError("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if days is not None and days < 1:
            raise KeyStoreError("days must be a whole number >= 1")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        row = {
            "name": name,
            "key_hash": hash_key(key),
            "scopes": ",".join(parse_scopes(scopes)),
            "created_at": now,
            "expires_at": now + timedelta(days=days) if days else None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(api_keys.insert().values(**row))
        except sa.exc.IntegrityError:
            raise KeyStoreError(f"a key named {name!r} exists already; names are never reused, pick another") from None
        return key

    def records(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            return [KeyRecord.from_row(r) for r in conn.execute(sa.select(api_keys).order_by(api_keys.c.id))]

    def revoke(self, name: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                api_keys.update()
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return done.rowcount > 0

    def lookup(self, key_hash: str) -> KeyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
        return KeyRecord.from_row(row) if row else None

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Write last-use times (key hash -> time), batched off the request path."""
        if not used:
            return
        with self.engine.begin() as conn:
            for key_hash, when in used.items():
                conn.execute(api_keys.update().where(api_keys.c.key_hash == key_hash).values(last_used_at=when))


def make_token(secret: str, client: str, scopes: Iterable[str], days: int, now: float | None = None) -> str:
    import jwt

    if len(secret) < MIN_SECRET_CHARS:
        raise KeyStoreError(f"JWT_SECRET_KEY must be set and at least {MIN_SECRET_CHARS} characters long")
    if not _NAME.match(client):
        raise KeyStoreError("client must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if days < 1:
        raise KeyStoreError("days must be a whole number >= 1")
    now = int(time.time() if now is None else now)
    claims = {
        "sub": client,
        "scope": " ".join(parse_scopes(scopes)),
        "iat": now,
        "exp": now + days * 86400,
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.keys", description="Manage the serving API's keys.")
    sub = ap.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="make a key and print it once (last line)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", default=",".join(DEFAULT_SCOPES), help=f"subset of {','.join(SCOPES)}")
    create.add_argument("--days", type=int, default=None, help="valid for N days (default: until revoked)")
    sub.add_parser("list", help="every key: name, scopes, dates and status (never the key)")
    revoke = sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    token = sub.add_parser("token", help="print a signed JWT (HS256, JWT_SECRET_KEY) for a client system")
    token.add_argument("--client", required=True)
    token.add_argument("--days", type=int, required=True)
    token.add_argument("--scopes", default=",".join(DEFAULT_SCOPES))
    args = ap.parse_args(argv)
    try:
        if args.command == "token":
            print(make_token(os.environ.get("JWT_SECRET_KEY", ""), args.client, parse_scopes(args.scopes), args.days))
            return 0
        store = KeyStore(database_url())
        if args.command == "create":
            key = store.create(args.name, parse_scopes(args.scopes), args.days)
            print(f"created key {args.name!r} with scopes {args.scopes}; it is shown only now, store it safely:")
            print(key)
        elif args.command == "list":
            print(f"{'name':<24} {'scopes':<24} {'created':<16} {'expires':<16} {'last used':<16} status")
            for r in store.records():
                print(
                    f"{r.name:<24} {','.join(r.scopes):<24} {_fmt(r.created_at):<16} {_fmt(r.expires_at):<16} "
                    f"{_fmt(r.last_used_at):<16} {r.status()}"
                )
        elif not store.revoke(args.name):
            print(f"error: no active key named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.name!r}; running APIs refuse it within their key cache time (AUTH_CACHE_TTL_S)")
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sa.exc.SQLAlchemyError as exc:
        print(f"error: the key database is not reachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
