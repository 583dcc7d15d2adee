"""Rate limits and quotas for the protected routes, counted with the ``limits`` library.

- RATE_LIMIT_PER_KEY (default ``600/minute;100000/day``): requests per credential (key, JWT client or the
  service key): a rate and a daily quota.
- RATE_LIMIT_AUTH_FAILURES (default ``10/minute``): failed credentials per client address. Once over it, that
  address gets 429 before its credential is even looked at, so guessing keys is throttled.
- RATE_LIMIT_STORAGE_URI (default empty: in-process): shared counters, ``redis://host:6379`` (Render Key Value).

Limits use the ``limits`` notation (``N/second|minute|hour|day``, several joined by ``;``). A limit of 0 requests
is refused (it would lock everyone out); to switch limiting off for one kind, give a very large number.

In-process counting (the default) is per worker process: with WEB_CONCURRENCY=2 a client can reach up to twice a
limit. Set RATE_LIMIT_STORAGE_URI for exact counts shared by every worker and instance. Counting uses fixed
windows (the cheapest strategy: one counter per limit), so a client can burst up to twice a limit across a window
boundary. If the shared store stops answering, counting falls back to in-process (logged) rather than refusing
every request: authentication still holds, and abuse is still bounded per worker.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from prometheus_client import Counter

from serving.settings import SettingsError

log = logging.getLogger("serving.ratelimit")

DEFAULTS = {
    "RATE_LIMIT_PER_KEY": "600/minute;100000/day",
    "RATE_LIMIT_AUTH_FAILURES": "10/minute",
}
LIMITED = Counter("serving_rate_limited_total", "Requests refused with 429, by limit", ["limit"])


def _parse(env: Mapping[str, str], key: str) -> tuple[RateLimitItem, ...]:
    text = (env.get(key) or DEFAULTS[key]).strip()
    try:
        items = tuple(parse_many(text))
    except ValueError:
        raise SettingsError(f"{key} must look like '600/minute' or '600/minute;100000/day'") from None
    if not items or any(item.amount < 1 for item in items):
        raise SettingsError(f"{key} must allow at least 1 request per window")
    return items


@dataclass(frozen=True)
class RateLimitConfig:
    per_key: tuple[RateLimitItem, ...]
    auth_failures: tuple[RateLimitItem, ...]
    storage_uri: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RateLimitConfig:
        uri = (env.get("RATE_LIMIT_STORAGE_URI") or "").strip()
        if uri and not uri.startswith(("redis://", "rediss://")):
            raise SettingsError("RATE_LIMIT_STORAGE_URI must be a redis:// or rediss:// URI (or empty: in-process)")
        return cls(_parse(env, "RATE_LIMIT_PER_KEY"), _parse(env, "RATE_LIMIT_AUTH_FAILURES"), uri)


class ProcessStorage(Storage):
    """In-process fixed-window counters for limits' FixedWindowRateLimiter. limits' own MemoryStorage starts a
    timer thread to expire keys whenever the previous one has finished (about every 10 ms under load), and the
    request waits for that thread to start: measured in-process, that was most of authentication's cost per
    request. Here expired windows are reset when touched and swept inline at most once per SWEEP_S. Only the
    worker's event loop calls it, so no lock is needed."""

    STORAGE_SCHEME = ["serving-process"]
    SWEEP_S = 60.0

    def __init__(self, uri: str | None = None, **options: Any):
        super().__init__(uri, **options)
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._next_sweep = time.time() + self.SWEEP_S

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_S
            for old in [k for k, t in self._expires.items() if t <= now]:
                self.clear(old)
        if self._expires.get(key, 0.0) <= now:
            self._counts[key], self._expires[key] = 0, now + expiry
        self._counts[key] += amount
        return self._counts[key]

    def get(self, key: str) -> int:
        return self._counts.get(key, 0) if self._expires.get(key, 0.0) > time.time() else 0

    def get_expiry(self, key: str) -> float:
        return max(self._expires.get(key, 0.0), time.time())

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        count = len(self._counts)
        self._counts.clear()
        self._expires.clear()
        return count

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)
        self._expires.pop(key, None)


class RateLimiter:
    """Fixed-window counters, in memory (a few microseconds, no await) or in a shared store (redis-py's asyncio
    client: the event loop keeps serving while the store answers). The shared client is made lazily in the
    process and event loop that use it (never in gunicorn's master before the fork). A store that fails is
    bypassed for STORE_RETRY_S, so an unreachable store costs one short timeout, not one per request."""

    STORE_RETRY_S = 30.0
    STORE_TIMEOUT_S = 0.25

    def __init__(self, config: RateLimitConfig):
        self.config = config
        self._memory = FixedWindowRateLimiter(ProcessStorage())
        self._shared: Any = None
        self._shared_pid = 0
        self._store_down_until = 0.0

    def _shared_limiter(self) -> Any:
        if self._shared is None or self._shared_pid != os.getpid():
            from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindow

            uri = "async+" + self.config.storage_uri
            timeout = self.STORE_TIMEOUT_S
            storage = storage_from_string(
                uri, implementation="redispy", socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self._shared, self._shared_pid = AsyncFixedWindow(storage), os.getpid()
        return self._shared

    async def _call(self, method: str, *args: Any) -> Any:
        if self.config.storage_uri and time.monotonic() >= self._store_down_until:
            try:
                return await getattr(self._shared_limiter(), method)(*args)
            except Exception as exc:  # noqa: BLE001 - any store failure: count in-process instead of failing
                self._store_down_until = time.monotonic() + self.STORE_RETRY_S
                log.warning(
                    "rate-limit store unreachable (%s); counting in-process for %.0f s",
                    type(exc).__name__,
                    self.STORE_RETRY_S,
                )
        return getattr(self._memory, method)(*args)

    async def _over(self, method: str, items: tuple[RateLimitItem, ...], kind: str, ident: str) -> int | None:
        """Seconds to wait if any of ``items`` refuses (``hit`` counts the request, ``test`` only looks)."""
        if not self.config.storage_uri:  # the common case: plain calls, no await per item on the hot path
            check = getattr(self._memory, method)
            for item in items:
                if not check(item, kind, ident):
                    return self._refused(kind, self._memory.get_window_stats(item, kind, ident))
            return None
        for item in items:
            if not await self._call(method, item, kind, ident):
                return self._refused(kind, await self._call("get_window_stats", item, kind, ident))
        return None

    @staticmethod
    def _refused(kind: str, stats: Any) -> int:
        LIMITED.labels(kind).inc()
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def failures_exceeded(self, address: str) -> int | None:
        """Seconds to wait if this address is over its failed-credential limit, else None. Does not count."""
        return await self._over("test", self.config.auth_failures, "auth_failures", address)

    async def record_failure(self, address: str) -> None:
        for item in self.config.auth_failures:
            await self._call("hit", item, "auth_failures", address)

    async def hit_key(self, name: str) -> int | None:
        """Count one request for this credential; seconds to wait if over a limit, else None."""
        return await self._over("hit", self.config.per_key, "per_key", name)
