"""How an API worker hands its scored rows to the inference log process (serving/inference_logd.py), and the
frames they travel in.

Why another process: the writer used to be a thread inside every worker. Measured in process
(benchmarks/inference_log_cost.py), that thread cost a 1-row request 20-55 µs of CPU (the two threads trading
the GIL as much as the conversion itself); packing the same rows and handing them to another process costs the
worker about 2 µs, and the log process then spends 13-19 µs on them (Postgres). The log process runs the same
Writer (its batches, COPY, spool, replay and exactly-once rules are unchanged); a worker only packs each
request's arrays into a frame, appends it to a buffer and sends the buffer, non-blocking, on one Unix socket
when it holds ``SEND_BYTES`` or ``INFERENCE_FLUSH_MS`` has passed (a timer on the worker's event loop sends what
is left).

While the log process cannot be reached (restarting: the gunicorn master starts a new one within a second), the
buffer keeps the frames, up to ``INFERENCE_QUEUE_MAX_ROWS`` rows; beyond that new rows are dropped and counted
(``inference_log_rows_total{outcome="dropped"}``, ``/health`` degraded), never silently. A frame cut in half by
a connection that broke mid-send is dropped whole and counted: the log process discards what it half received.

Frames, little-endian, each ``u32 length`` then the payload:
- ``b"M" u32 model_id`` + JSON ``{name, version, run_id, names, categories}``: once per model per connection;
- ``b"R" u32 model_id, u32 rows, u32 columns, u32 header length`` + JSON header ``[request_id, ts_us, route,
  source, caller, latency_ms, risk_levels]`` + the feature matrix (rows × columns float64) + probability
  (rows float64) + label (rows int64).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from serving.inference_rows import Item

log = logging.getLogger("serving.inference_log")

SEND_BYTES = 64 * 1024  # send once the buffer holds this much (fewer, larger writes)
RECONNECT_EVERY_S = 1.0
_LEN = struct.Struct("<I")
_MODEL = struct.Struct("<cI")
_REQUEST = struct.Struct("<cIIII")
_FRAMED_REQUEST = struct.Struct("<IcIIII")  # the length, then _REQUEST: one pack per frame


# ---- frames ---------------------------------------------------------------------------------------------
def model_frame(model_id: int, model: Any) -> bytes:
    doc = {"name": model.name, "version": model.version, "run_id": model.run_id, "names": list(model.names),
           "categories": {str(j): dict(c) for j, c in model.categories.items()}}  # fmt: skip
    payload = _MODEL.pack(b"M", model_id) + orjson.dumps(doc)
    return _LEN.pack(len(payload)) + payload


def request_frame(model_id: int, item: Item) -> bytes:
    X = np.ascontiguousarray(item.X, dtype=np.float64)
    prob = np.ascontiguousarray(item.probability, dtype=np.float64)
    label = np.ascontiguousarray(item.label, dtype=np.int64)
    rows, cols = X.shape
    levels = item.risk_level.tolist() if hasattr(item.risk_level, "tolist") else list(item.risk_level)
    head = orjson.dumps([item.request_id, item.ts_us, item.route, item.source, item.caller, item.latency_ms, levels])
    size = _REQUEST.size + len(head) + X.nbytes + prob.nbytes + label.nbytes
    return b"".join((_FRAMED_REQUEST.pack(size, b"R", model_id, rows, cols, len(head)), head, X.data, prob.data,
                     label.data))  # fmt: skip


class Decoder:
    """The log process's side: bytes from one connection in, Items out (models remembered per connection)."""

    def __init__(self) -> None:
        self.models: dict[int, SimpleNamespace] = {}
        self._rest = b""

    def feed(self, data: bytes) -> list[Item]:
        """Every whole frame in what has arrived. The arrays are read in place from one immutable bytes object
        (no copy per array); a frame's tail that has not arrived yet waits for the next call."""
        blob = self._rest + data if self._rest else data
        items, pos = [], 0
        while len(blob) - pos >= 4:
            (size,) = _LEN.unpack_from(blob, pos)
            if len(blob) - pos - 4 < size:
                break
            item = self._decode(blob, pos + 4, pos + 4 + size)
            if item is not None:
                items.append(item)
            pos += 4 + size
        self._rest = blob[pos:]
        return items

    @property
    def pending_bytes(self) -> int:
        return len(self._rest)

    def _decode(self, blob: bytes, pos: int, end: int) -> Item | None:
        """The frame whose payload is ``blob[pos:end]``; None for a model frame (remembered)."""
        if blob[pos : pos + 1] == b"M":
            _, model_id = _MODEL.unpack_from(blob, pos)
            doc = orjson.loads(blob[pos + _MODEL.size : end])
            cats = {int(j): c for j, c in doc["categories"].items()}
            self.models[model_id] = SimpleNamespace(name=doc["name"], version=doc["version"], run_id=doc["run_id"],
                                                    names=doc["names"], categories=cats)  # fmt: skip
            return None
        _, model_id, rows, cols, hlen = _REQUEST.unpack_from(blob, pos)
        pos += _REQUEST.size
        rid, ts_us, route, source, caller, latency_ms, levels = orjson.loads(blob[pos : pos + hlen])
        pos += hlen
        X = np.frombuffer(blob, np.float64, rows * cols, pos).reshape(rows, cols)
        pos += rows * cols * 8
        prob = np.frombuffer(blob, np.float64, rows, pos)
        label = np.frombuffer(blob, np.int64, rows, pos + rows * 8)
        return Item(ts_us, rid, route, source, caller, latency_ms, self.models[model_id], X, prob, label, levels)


# ---- the worker's side ----------------------------------------------------------------------------------
class Shipper:
    """One per worker process. ``submit`` packs a request's rows into the buffer; the buffer is sent when large
    enough, or by a timer on the event loop after ``flush_s``. Never blocks the event loop."""

    def __init__(self, path: str, flush_s: float, max_rows: int, on_drop: Any):
        self.path, self.flush_s, self.max_rows, self._on_drop = path, flush_s, max_rows, on_drop
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._sent = 0  # bytes of _buf already sent
        self._frames: deque[tuple[int, int, int]] = deque()  # (start, end, rows) in _buf of frames not fully sent
        self._rows = 0  # rows in _frames
        self._models: dict[int, tuple[Any, int, bytes]] = {}  # id(model) -> (model, model_id, its frame)
        self._on_conn: set[int] = set()  # model ids sent on the current connection
        self._next_connect = 0.0
        self._marked = False  # rows were dropped: /health degraded until the buffer has drained
        self._was_connected = False
        self._timer = False
        self._timer_loop: Any = None
        self._last_send = time.monotonic()
        self.unreachable_since: float | None = None

    def submit(self, item: Item) -> None:
        with self._lock:
            if self._rows + len(item) > self.max_rows:
                self._drop(len(item))  # the log process has not taken rows for a while: bounded, counted
                return
            entry = self._models.get(id(item.model))
            if entry is None or entry[0] is not item.model:
                model_id = len(self._models) + 1
                entry = self._models[id(item.model)] = (item.model, model_id, model_frame(model_id, item.model))
            model_id = entry[1]
            if model_id not in self._on_conn:
                self._append(entry[2], 0)
                self._on_conn.add(model_id)
            self._append(request_frame(model_id, item), len(item))
            due = len(self._buf) - self._sent >= SEND_BYTES or time.monotonic() - self._last_send >= self.flush_s
            if due:
                self._send()
            left = len(self._buf) > self._sent
        if left:
            # Not due yet, or the socket took only part (the log process busy): the timer sends the rest even if
            # no other request comes (without it, an idle worker would keep it until its next request).
            self._arm()

    def _append(self, frame: bytes, rows: int) -> None:
        start = len(self._buf)
        self._buf += frame
        self._frames.append((start, len(self._buf), rows))
        self._rows += rows

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a test calling in a thread): the next submit sends
        if self._timer and self._timer_loop is loop:
            return  # (a worker has one loop; a timer of a loop that has ended never fires)
        self._timer, self._timer_loop = True, loop
        loop.call_later(self.flush_s, self._tick)

    def _tick(self) -> None:
        self._timer = False
        with self._lock:
            self._send()
            left = len(self._buf) > self._sent
        if left:
            self._arm()

    def _send(self) -> None:
        """Send what the socket takes now (non-blocking); connect first if needed. Holds _lock."""
        self._last_send = time.monotonic()
        if self._sock is None and not self._connect():
            return
        try:
            while self._sent < len(self._buf):
                n = self._sock.send(memoryview(self._buf)[self._sent :])
                if not n:
                    break
                self._sent += n
        except BlockingIOError:
            pass  # the log process is busy: the rest waits in the buffer
        except OSError as exc:
            self._settle()
            self._broken(exc)
        self._settle()

    def _drop(self, rows: int) -> None:
        self._marked = True
        self._on_drop(rows)

    def _settle(self) -> None:
        """Forget frames the socket took whole; compact the buffer now and then."""
        while self._frames and self._frames[0][1] <= self._sent:
            self._rows -= self._frames.popleft()[2]
        if self._marked and not self._rows:
            self._marked = False
            clear = getattr(self._on_drop, "clear", None)
            if clear is not None:
                clear()
        if self._sent and (self._sent == len(self._buf) or self._sent > 1 << 20):
            cut = self._sent
            del self._buf[:cut]
            self._sent = 0
            self._frames = deque((a - cut, b - cut, rows) for a, b, rows in self._frames)

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_connect:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            self._next_connect = now + RECONNECT_EVERY_S
            if self.unreachable_since is None:
                self.unreachable_since = now
                log.warning("inference log process unreachable (%s); keeping rows in memory", type(exc).__name__)
            return False
        sock.setblocking(False)
        self._sock = sock
        if self.unreachable_since is not None:
            log.info("inference log process reachable again")
        self.unreachable_since = None
        if self._was_connected:
            self._resync()
        self._was_connected = True
        return True

    def _broken(self, exc: BaseException) -> None:
        """The connection broke (the log process died or restarted). A frame it received only part of is lost:
        skipped and its rows counted as dropped (the new process must start at a frame's first byte)."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._on_conn.clear()
        if self._frames and self._frames[0][0] < self._sent:
            _, end, rows = self._frames.popleft()
            self._sent = end
            self._rows -= rows
            if rows:
                self._drop(rows)
        self._next_connect = 0.0
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
            log.warning("inference log process connection lost (%s); reconnecting", type(exc).__name__)

    def _resync(self) -> None:
        """A new connection: the models the waiting frames use go first (the new process knows none)."""
        if self._sent < len(self._buf):
            head = [frame for _, _, frame in self._models.values()]
            pos = self._sent
            frames = []
            for frame in head:
                frames.append((pos, pos + len(frame), 0))
                pos += len(frame)
            self._buf[self._sent : self._sent] = b"".join(head)
            shift = pos - self._sent
            self._frames = deque([*frames, *((a + shift, b + shift, rows) for a, b, rows in self._frames)])
            self._on_conn = {model_id for _, model_id, _ in self._models.values()}

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Send everything waiting now, waiting for the log process at most ``timeout_s``; True if all was sent."""
        with self._lock:
            return self._send_all(time.monotonic() + timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send everything left (a graceful stop), waiting for the log process at most ``timeout_s``."""
        with self._lock:
            if not self._send_all(time.monotonic() + timeout_s):
                self._drop(self._rows)
                log.error("inference log process not reachable at shutdown: %d rows dropped", self._rows)
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self._on_conn.clear()  # a later connection starts without the models

    def _send_all(self, deadline: float) -> bool:
        """Holds _lock."""
        while self._sent < len(self._buf) and time.monotonic() < deadline:
            self._next_connect = 0.0
            self._send()
            if self._sent < len(self._buf):
                time.sleep(0.01)
        return self._sent >= len(self._buf)

    @property
    def waiting_rows(self) -> int:
        return self._rows
