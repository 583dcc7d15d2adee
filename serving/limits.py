"""What one request may cost a worker, in size, time and memory, enforced before and while its body is parsed.

- ``Limits``: rows, columns, characters per value and decoded bytes for the served version (the settings, never
  below what the model itself needs). ``serving.decode`` checks them before each expensive parse.
- ``bounded``: the request timeout (REQUEST_TIMEOUT_S) over parsing too. A large body is decoded in the worker's
  parse thread while the event loop keeps serving other requests and gunicorn's heartbeat; the request answers 504
  at its deadline even when a parser is still running, so an overrun never costs the worker its life.
- ``BodyGuard``: a body must arrive within BODY_READ_TIMEOUT_S (a slow sender gets 408 and its connection is
  closed), and the bodies being received hold at most a fixed budget of this worker's memory (more → 503).
Connection-level bounds (idle connections, the request head, the number of connections) are in ``serving.worker``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request

from serving.errors import Deadline, InputError
from serving.mlflow_adapter import SUPPORTED_FORMATS
from serving.strict import PARAMS

if TYPE_CHECKING:
    from common.validation import FeatureRules
    from serving.settings import Settings

T = TypeVar("T")
# Keys that an error message may name: the envelope's own (MLflow's formats, params and the model's parameters,
# dataframe_split's parts).
FORMAT_KEYS = frozenset({*SUPPORTED_FORMATS, "params", *PARAMS, "columns", "data", "index"})
INLINE_BYTES = 64 * 1024  # JSON and CSV bodies up to this are decoded on the event loop: faster than a thread hop
HEAVY = "serving.heavy"  # scope state: this request decoded in the parse thread
BUFFERED_BODIES = 4  # bodies of MAX_BODY_BYTES that a worker holds at once while they are being received


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_columns: int
    max_value_chars: int
    max_decoded_bytes: int
    allow_extra: bool
    nameable: frozenset[str]  # keys an error message may repeat (never a client's own key)

    @classmethod
    def for_model(cls, settings: Settings, rules: FeatureRules) -> Limits:
        """The settings' limits, raised where the served version needs more: its own feature count, and its longest
        feature name or category label (a version must always be able to receive its own inputs)."""
        words = [*rules.names, *(c for cats in rules.categories.values() for c in cats)]
        return cls(
            max_rows=settings.max_rows,
            max_columns=max(settings.max_columns, len(rules.names)),
            max_value_chars=max([settings.max_value_chars, *(len(w) for w in words)]),
            max_decoded_bytes=settings.max_decoded_bytes,
            allow_extra=settings.allow_extra_columns,
            nameable=frozenset(rules.names) | FORMAT_KEYS,
        )


# ---- the request timeout over parsing ---------------------------------------------------------------------
_lane: ThreadPoolExecutor | None = None
_lane_pid = 0


def _parse_lane() -> ThreadPoolExecutor:
    # One thread per worker process, created in the worker (threads do not survive gunicorn's fork). One, so
    # large bodies are decoded one at a time and their memory never adds up; the others wait their turn within
    # their own deadline.
    global _lane, _lane_pid
    if _lane is None or _lane_pid != os.getpid():
        _lane, _lane_pid = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serving-parse"), os.getpid()
    return _lane


def release_memory() -> None:
    """Give pyarrow's memory pool (mimalloc) back to the system once a large request has ended: it keeps freed
    pages for reuse, so after a Parquet body a worker stayed about 50 MiB larger and the next large request of
    another kind (a JSON body, in Python's own heap) started from there. Well under 1 ms, in the parse thread.
    (glibc's malloc_trim was tried too: little more memory back, and 2 to 3 ms more on the next 10,000-row request,
    spent faulting the pages in again.)"""
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


async def bounded(request: Request, dl: Deadline, heavy: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` within the request's deadline. Light work (a body up to INLINE_BYTES of JSON or CSV) runs
    inline; heavy work (a larger body, or any Parquet body, whose decoded size is not its size) in the parse
    thread, answering 504 at the deadline. A parser still running then stops at its next deadline check (``fn``
    gets ``dl``); a pandas or pyarrow call runs to its end, which the limits checked before it keep short, and its
    result is dropped. After heavy work the request's memory is given back once the request has ended."""
    if not heavy:
        return fn(*args)
    request.scope.setdefault("state", {})[HEAVY] = True
    future = asyncio.get_running_loop().run_in_executor(_parse_lane(), fn, *args)
    try:
        return await asyncio.wait_for(future, max(dl.remaining(), 0.0))
    except TimeoutError:
        raise dl.error() from None


# ---- the body's arrival -------------------------------------------------------------------------------------
class _Read:
    """One request's body as it arrives."""

    __slots__ = ("deadline", "held", "complete", "late")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.held = 0
        self.complete = False
        self.late = False


class BodyGuard:
    """Pure ASGI, around every HTTP request's ``receive``:

    - the body must be received within ``read_timeout_s`` of the request reaching the app, else 408 with
      ``Connection: close`` (uvicorn has no body read timeout: a client sending a byte a second held a request
      for as long as it liked);
    - the bodies of this worker's requests in progress hold at most ``buffer_bytes``, counted as they arrive and
      released when the request ends: beyond, 503 with Retry-After (connections × MAX_BODY_BYTES would
      otherwise be the bound).

    Reads past their deadline are found by one sweep every SWEEP_S per worker, not by a timer per request: a
    timer costs about 5 µs to arm and cancel under uvloop, more than the rest of this guard on the 1-row hot path.
    """

    SWEEP_S = 0.25

    def __init__(self, app: Any, read_timeout_s: float, buffer_bytes: int):
        self.app = app
        self.read_timeout_s = read_timeout_s
        self.buffer_bytes = buffer_bytes
        self.buffered = 0  # this process's bytes of bodies held by requests in progress
        self.waiting: dict[asyncio.Task[Any], _Read] = {}  # requests waiting for more of their body
        self.sweep_loop: asyncio.AbstractEventLoop | None = None  # the loop the sweep runs in

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.sweep_loop or loop.is_closed():
            return
        now = loop.time()
        for task, read in list(self.waiting.items()):
            if now >= read.deadline:
                read.late = True
                del self.waiting[task]
                task.cancel()
        loop.call_later(self.SWEEP_S, self._sweep, loop)

    def _timed_out(self) -> InputError:
        return InputError(
            f"request body not received within {self.read_timeout_s:g} s (BODY_READ_TIMEOUT_S)",
            status=408,
            headers={"Connection": "close"},  # the rest of a slow body is not waited for
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        if self.sweep_loop is not loop:  # started by the first request in this loop (never in gunicorn's master)
            self.sweep_loop = loop
            loop.call_later(self.SWEEP_S, self._sweep, loop)
        read = _Read(loop.time() + self.read_timeout_s)

        async def guarded_receive() -> dict[str, Any]:
            if read.complete:  # after the body only a disconnect can come: no deadline on waiting for it
                return await receive()
            if read.late or loop.time() >= read.deadline:
                raise self._timed_out()
            task = asyncio.current_task()
            assert task is not None
            self.waiting[task] = read
            try:
                message = await receive()
            except asyncio.CancelledError:
                if read.late and task.uncancel() == 0:  # the sweep's cancellation, and no one else's
                    raise self._timed_out() from None
                raise
            finally:
                self.waiting.pop(task, None)
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                read.held += size
                self.buffered += size
                if not message.get("more_body", False):
                    read.complete = True
                elif self.buffered > self.buffer_bytes:
                    raise InputError(
                        "too many request bodies are being received at once; retry shortly",
                        status=503,
                        headers={"Retry-After": "1", "Connection": "close"},
                    )
            return message

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            self.buffered -= read.held
            if read.held > INLINE_BYTES or scope.get("state", {}).get(HEAVY):  # its objects are gone by now
                _parse_lane().submit(release_memory)
