"""How an API worker hands its scored rows to the inference log process (serving/inference_logd.py), and the
frames they travel in.

Why another process: the writer used to be a thread inside every worker. Measured in process
(benchmarks/inference_log_cost.py), that thread cost a 1-row request 20-55 µs of CPU (the two threads trading
the GIL as much as the conversion itself). The log process runs the same Writer (its batches, COPY, spool,
replay and exactly-once rules are unchanged); a worker only keeps a reference to each request's arrays and,
once those add up to ``SEND_BYTES`` or ``INFERENCE_FLUSH_MS`` has passed (a timer on the worker's event loop),
packs the requests waiting into one frame per model and sends the buffer, non-blocking, on one Unix socket.
One frame for a few hundred 1-row requests, not one each: the log process's work per frame (decoding it,
queueing it, starting its conversion) was most of its cost for 1-row traffic.

While the log process cannot be reached (restarting: the gunicorn master starts a new one within a second), the
buffer keeps the frames, up to ``INFERENCE_QUEUE_MAX_ROWS`` rows; beyond that new rows are dropped and counted
(``inference_log_rows_total{outcome="dropped"}``, ``/health`` degraded), never silently. A frame cut in half by
a connection that broke mid-send was never read (the log process reads whole frames only): it is sent again,
whole, on the next connection; one cut a second time is dropped and counted.

Frames, little-endian, each ``u32 length`` then the payload:
- ``b"M" u32 model_id`` + JSON ``{name, version, run_id, names, categories}``: once per model per connection;
- ``b"B" u32 model_id, u32 rows, u32 columns, u32 header length`` + JSON header ``[request_ids, ts_us, routes,
  sources, callers, latencies_ms, sizes, risk level names]`` (one entry per request, then the distinct risk
  levels) + the feature matrix (rows × columns float64) + probability (rows float64) + label (rows int64) + risk
  level (rows u32, an index into the names): read as the Rows of serving/inference_rows.py.
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
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from serving.inference_rows import Item, Rows

log = logging.getLogger("serving.inference_log")

SEND_BYTES = 64 * 1024  # pack and send once the requests waiting take about this much (fewer, larger writes)
_ITEM_BYTES = 120  # about what a request adds to a frame's header, besides its rows
_ROW_BYTES = 30  # about what a row adds besides its features: probability, label, risk level
RECONNECT_EVERY_S = 1.0
_LEN = struct.Struct("<I")
_MODEL = struct.Struct("<cI")
_ROWS = struct.Struct("<cIIII")
_FRAMED_ROWS = struct.Struct("<IcIIII")  # the length, then _ROWS: one pack per frame


# ---- frames ---------------------------------------------------------------------------------------------
def model_frame(model_id: int, model: Any) -> bytes:
    doc = {"name": model.name, "version": model.version, "run_id": model.run_id, "names": list(model.names),
           "categories": {str(j): dict(c) for j, c in model.categories.items()}}  # fmt: skip
    payload = _MODEL.pack(b"M", model_id) + orjson.dumps(doc)
    return _LEN.pack(len(payload)) + payload


def rows_frame(model_id: int, items: Sequence[Item]) -> bytes:
    """One frame holding these requests' rows (all scored by one model): per-request values in the JSON header,
    the arrays concatenated, risk levels as codes into the header's list of the distinct ones."""
    import pandas as pd  # (here: a worker has it loaded already; the log process, which only decodes, does not)

    X = np.concatenate([it.X for it in items], dtype=np.float64)
    prob = np.concatenate([it.probability for it in items], dtype=np.float64)
    label = np.concatenate([it.label for it in items], dtype=np.int64)
    # (a missing level gets a code of its own, never the -1 sentinel: every code indexes the names)
    codes, names = pd.factorize(np.concatenate([it.risk_level for it in items], dtype=object), use_na_sentinel=False)
    n, cols = X.shape
    if len(prob) != n or len(label) != n or len(codes) != n or cols != len(items[0].model.names):
        # (a frame the log process would misread must not leave the worker; one check over the whole run)
        raise ValueError(f"the requests' arrays do not match: {X.shape} features, {len(prob)} probabilities")
    head = orjson.dumps([
        [it.request_id for it in items], [it.ts_us for it in items], [it.route for it in items],
        [it.source for it in items], [it.caller for it in items], [float(it.latency_ms) for it in items],
        [len(it) for it in items], names.tolist(),
    ])  # fmt: skip
    codes = codes.astype(np.uint32)
    size = _ROWS.size + len(head) + X.nbytes + prob.nbytes + label.nbytes + codes.nbytes
    return b"".join((_FRAMED_ROWS.pack(size, b"B", model_id, n, cols, len(head)), head, X.data, prob.data,
                     label.data, codes.data))  # fmt: skip


class Decoder:
    """The log process's side: bytes from one connection in, Rows out (models remembered per connection)."""

    def __init__(self) -> None:
        self.models: dict[int, SimpleNamespace] = {}
        self._rest = b""

    def feed(self, data: bytes) -> list[Rows]:
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

    def _decode(self, blob: bytes, pos: int, end: int) -> Rows | None:
        """The frame whose payload is ``blob[pos:end]``; None for a model frame (remembered)."""
        if blob[pos : pos + 1] == b"M":
            _, model_id = _MODEL.unpack_from(blob, pos)
            doc = orjson.loads(blob[pos + _MODEL.size : end])
            cats = {int(j): c for j, c in doc["categories"].items()}
            self.models[model_id] = SimpleNamespace(name=doc["name"], version=doc["version"], run_id=doc["run_id"],
                                                    names=doc["names"], categories=cats)  # fmt: skip
            return None
        _, model_id, n, cols, hlen = _ROWS.unpack_from(blob, pos)
        pos += _ROWS.size
        rid, ts_us, route, source, caller, latency_ms, sizes, names = orjson.loads(blob[pos : pos + hlen])
        pos += hlen
        X = np.frombuffer(blob, np.float64, n * cols, pos).reshape(n, cols)
        pos += n * cols * 8
        prob = np.frombuffer(blob, np.float64, n, pos)
        label = np.frombuffer(blob, np.int64, n, pos + n * 8)
        levels = np.asarray(names, dtype=object)[np.frombuffer(blob, np.uint32, n, pos + n * 16)].tolist()
        return Rows(self.models[model_id], rid, ts_us, route, source, caller, latency_ms, sizes, [0] * len(sizes), X,
                    prob, label, levels)  # fmt: skip


# ---- the worker's side ----------------------------------------------------------------------------------
class Shipper:
    """One per worker process. ``submit`` keeps a reference to a request's scored rows; once they add up to
    ``SEND_BYTES``, or ``flush_s`` after the last send (a timer on the event loop), the requests waiting are
    packed into one frame per model and the buffer is sent. Never blocks the event loop."""

    def __init__(self, path: str, flush_s: float, max_rows: int, on_drop: Any):
        self.path, self.flush_s, self.max_rows, self._on_drop = path, flush_s, max_rows, on_drop
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._items: list[Item] = []  # requests scored since the last pack
        self._item_rows = 0
        self._item_bytes = 0  # about what they will take in a frame
        self._buf = bytearray()
        self._sent = 0  # bytes of _buf already sent
        self._frames: deque[tuple[int, int, int]] = deque()  # (start, end, rows) in _buf of frames not fully sent
        self._rows = 0  # rows in _frames
        self._models: dict[int, tuple[Any, int, bytes]] = {}  # id(model) -> (model, model_id, its frame)
        self._on_conn: set[int] = set()  # model ids sent on the current connection
        self._next_connect = 0.0
        self._marked = False  # rows were dropped: /health degraded until the buffer has drained
        self._was_connected = False
        self._resent = False  # a frame cut by a broken connection is being sent again (once)
        self._timer = False
        self._timer_loop: Any = None
        self._last_send = time.monotonic()
        self.unreachable_since: float | None = None

    def submit(self, item: Item) -> None:
        n = len(item)
        with self._lock:
            if self._rows + self._item_rows + n > self.max_rows:
                self._drop(n)  # the log process has not taken rows for a while: bounded, counted
                return
            self._items.append(item)
            self._item_rows += n
            self._item_bytes += _ITEM_BYTES + n * (8 * len(item.model.names) + _ROW_BYTES)
            if self._item_bytes >= SEND_BYTES or time.monotonic() - self._last_send >= self.flush_s:
                self._send()
            left = self._item_rows or len(self._buf) > self._sent
        if left:
            # Not due yet, or the socket took only part (the log process busy): the timer sends the rest even if
            # no other request comes (without it, an idle worker would keep it until its next request).
            self._arm()

    def _pack(self) -> None:
        """The requests waiting become frames in the buffer: one per run of requests scored by the same model
        (a model's own frame first, once per connection). Holds _lock."""
        items, self._items, self._item_rows, self._item_bytes = self._items, [], 0, 0
        k = 0
        while k < len(items):
            model = items[k].model
            end = k + 1
            while end < len(items) and items[end].model is model:
                end += 1
            entry = self._models.get(id(model))
            if entry is None or entry[0] is not model:
                model_id = len(self._models) + 1
                entry = self._models[id(model)] = (model, model_id, model_frame(model_id, model))
            model_id = entry[1]
            if model_id not in self._on_conn:
                self._append(entry[2], 0)
                self._on_conn.add(model_id)
            self._append_run(model_id, items[k:end])
            k = end

    def _append_run(self, model_id: int, items: list[Item]) -> None:
        """One frame for these requests; if they cannot be packed together (a request whose arrays do not fit the
        model), one frame each, and a request that cannot be packed alone is dropped and counted."""
        try:
            self._append(rows_frame(model_id, items), sum(map(len, items)))
            return
        except Exception as exc:  # noqa: BLE001 - rows that cannot be packed are counted, never lost silently
            if len(items) == 1:
                log.error("inference log: %d rows could not be packed (%s); dropped", len(items[0]),
                          type(exc).__name__)  # fmt: skip
                self._drop(len(items[0]))
                return
        for it in items:
            self._append_run(model_id, [it])

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
            left = self._item_rows or len(self._buf) > self._sent
        if left:
            self._arm()

    def _send(self) -> None:
        """Pack what waits, then send what the socket takes now (non-blocking); connect first if needed. Holds
        _lock."""
        self._last_send = time.monotonic()
        if self._items:
            self._pack()
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
            rows = self._frames.popleft()[2]
            self._rows -= rows
            if rows:
                self._resent = False
        if self._marked and not self._rows:
            self._marked = False
            clear = getattr(self._on_drop, "clear", None)
            if clear is not None:
                clear()
        if self._sent and (self._sent == len(self._buf) or self._sent > 1 << 20):
            cut = min(self._sent, self._frames[0][0]) if self._frames else self._sent  # (a frame being sent stays)
            del self._buf[:cut]
            self._sent -= cut
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
        """The connection broke (the log process died or restarted). A frame it received only part of was never
        read (the log process reads whole frames only), so it is sent again whole on the next connection, which
        starts at its first byte; a frame cut twice (a reader that refuses it) is dropped and counted."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._on_conn.clear()
        if self._frames and self._frames[0][0] < self._sent:
            start, end, rows = self._frames[0]
            if self._resent:
                self._frames.popleft()
                self._sent, self._resent = end, False
                self._rows -= rows
                if rows:
                    self._drop(rows)
            else:
                self._sent, self._resent = start, True
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
        if self._items:
            self._pack()
        while self._sent < len(self._buf) and time.monotonic() < deadline:
            self._next_connect = 0.0
            self._send()
            if self._sent < len(self._buf):
                time.sleep(0.01)
        return self._sent >= len(self._buf)

    @property
    def waiting_rows(self) -> int:
        return self._rows + self._item_rows
