"""The hand-over of scored rows from an API worker to the inference log process (serving/inference_ship.py):
frames read back exactly, whatever the pieces the socket delivers them in; a worker's buffer sent, kept while
the log process is away, bounded and counted beyond its bound; a frame cut by a broken connection sent again
whole to the next process (never misread, never lost), and one cut twice dropped and counted."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from serving.inference_rows import Batch, Item, Rows
from serving.inference_ship import Decoder, Shipper, model_frame, rows_frame

MODEL = SimpleNamespace(name="m", version="7", run_id="r" * 32, names=["glucosa", "sexo"],
                        categories={1: {"F": 0.0, "M": 1.0}})  # fmt: skip
OTHER = SimpleNamespace(name="m", version="8", run_id="s" * 32, names=["a"], categories={})


def item(rid: str, n: int, model: SimpleNamespace = MODEL) -> Item:
    k = len(model.names)
    X = np.arange(n * k, dtype=np.float64).reshape(n, k)
    X[0, 0] = np.nan
    p = np.linspace(0.1, 0.9, n)
    levels = np.array(["low", "hi\tgh"] * n, dtype=object)[:n]
    return Item(1_796_742_000_123_456 + n, rid, "/predict", "app-batch", "app:ana", 1.25, model, X, p,
                (p > 0.5).astype(np.int64), levels)  # fmt: skip


def table_rows(xs: list[Item] | list[Rows]) -> list[list]:
    """What these become in inference_log: every column of every row."""
    return Batch([(x, 0, len(x)) for x in xs]).rows()


def same(sent: list[Item], got: list[Rows]) -> None:
    assert table_rows(got) == table_rows(sent)
    for r in got:
        assert (r.model.names, r.model.categories) == (MODEL.names, MODEL.categories) or r.model.names == OTHER.names


def ids(got: list[Rows]) -> list[str]:
    return [rid for r in got for rid in r.request_id]


def test_frames_read_back_exactly_in_any_pieces() -> None:
    sent = [item("a", 1), item("b", 5), item("c", 3, OTHER), item("d", 2, OTHER)]
    stream = model_frame(1, MODEL) + model_frame(2, OTHER)
    stream += rows_frame(1, sent[:2]) + rows_frame(2, sent[2:])
    rng = np.random.default_rng(0)
    for _ in range(20):  # the socket may cut anywhere
        cuts = sorted(rng.choice(len(stream), size=6, replace=False))
        d = Decoder()
        got = []
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += d.feed(stream[a:b])
        assert d.pending_bytes == 0 and [len(r) for r in got] == [6, 5]  # one frame per model's run of requests
        assert ids(got) == ["a", "b", "c", "d"] and got[0].sizes == [1, 5] and got[1].model.names == ["a"]
        same(sent, got)  # the same rows in the table as the items the worker had
        assert got[0].risk_level == ["low", "low", "hi\tgh", "low", "hi\tgh", "low"]


def test_a_chunk_may_cut_a_block_of_requests_anywhere() -> None:
    """The writer takes chunks of at most N rows: slices of a received block, cut inside a request or between
    two, must make exactly the rows the requests had, row numbers included."""
    sent = [item("a", 3), item("b", 1), item("c", 4), item("d", 2)]
    (block,) = Decoder().feed(model_frame(1, MODEL) + rows_frame(1, sent))
    whole = table_rows(sent)
    for cuts in ([0, 10], [0, 1, 10], [0, 3, 4, 10], [0, 2, 5, 9, 10], [0, 4, 6, 7, 10], list(range(11))):
        parts = [(block, lo, hi) for lo, hi in zip(cuts, cuts[1:], strict=False)]
        assert Batch(parts).rows() == whole, cuts
        assert Batch(parts).copy_text() == Batch([(x, 0, len(x)) for x in sent]).copy_text()
    mixed = Batch([(block, 0, 5), (item("e", 2), 1, 2), (block, 5, 10)]).rows()
    assert [(r[0], r[1]) for r in mixed] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0), ("e", 1), ("c", 1),
                                             ("c", 2), ("c", 3), ("d", 0), ("d", 1)]  # fmt: skip


class FakeLogProcess:
    """A Unix socket server that decodes what it receives, as serving/inference_logd.py does; with
    ``read_only``, it reads that many bytes of its first connection and then dies (closes)."""

    def __init__(self, path: str, read_only: int | None = None):
        self.path, self.items, self.read_only = path, [], read_only
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        d = Decoder()
        if self.read_only is not None:
            left = self.read_only
            while left > 0 and (data := conn.recv(min(left, 65536))):
                self.items += d.feed(data)
                left -= len(data)
            self.srv.close()  # first: a reconnect must find nobody, not wait in the backlog of a dying process
        else:
            while data := conn.recv(65536):
                self.items += d.feed(data)
        conn.close()
        self.srv.close()

    def wait(self, n: int) -> list[Rows]:
        """What it received once it holds ``n`` requests (or after 10 s)."""
        deadline = time.monotonic() + 10
        while len(ids(self.items)) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.items


@pytest.fixture
def sock(tmp_path: Path) -> str:
    return str(tmp_path / "s")


def test_the_buffer_waits_for_the_log_process_then_arrives_in_order(sock: str) -> None:
    drops: list[int] = []
    s = Shipper(sock, flush_s=0.0, max_rows=1000, on_drop=drops.append)
    first = [item(f"r{i}", 2) for i in range(5)]
    for x in first:  # nobody listens yet: kept in memory
        s.submit(x)
    assert s.waiting_rows == 10 and s.unreachable_since is not None and not drops
    server = FakeLogProcess(sock)
    s._next_connect = 0.0  # (the worker retries every RECONNECT_EVERY_S)
    later = item("later", 3, OTHER)
    s.submit(later)
    got = server.wait(6)
    assert ids(got) == ["r0", "r1", "r2", "r3", "r4", "later"]
    same([*first, later], got)
    assert s.waiting_rows == 0 and s.unreachable_since is None
    s.close()


def test_beyond_its_bound_a_worker_drops_and_counts(sock: str) -> None:
    drops: list[int] = []
    s = Shipper(sock, flush_s=0.0, max_rows=5, on_drop=drops.append)
    for i in range(4):
        s.submit(item(f"r{i}", 2))
    assert s.waiting_rows == 4 and drops == [2, 2]  # rows 5..8 did not fit
    s.close(timeout_s=0.2)
    assert drops == [2, 2, 4]  # nobody came before the stop: the rest is counted too


def _send_until(s: Shipper, done: Any) -> None:
    deadline = time.monotonic() + 10
    while not done() and time.monotonic() < deadline:  # (the event loop's timer would do this in a worker)
        with s._lock:
            s._send()
        time.sleep(0.01)


def test_a_frame_cut_by_a_broken_connection_is_sent_again_whole_and_one_cut_twice_is_dropped(sock: str) -> None:
    """The log process reads the first kilobytes of a 4 MB frame (more than a socket holds) and dies. It never
    read that frame (whole frames only), so the worker keeps it and sends it again, whole and after the model,
    to the next process: nothing lost, nothing doubled. A frame cut a second time (a reader that refuses it)
    is dropped and its rows counted, and the process after that still reads the next request correctly."""
    drops: list[int] = []
    s = Shipper(sock, flush_s=0.0, max_rows=10**6, on_drop=drops.append)
    big, nxt = item("big", 100_000), item("next", 3)
    dying = FakeLogProcess(sock, read_only=5000)
    s.submit(big)
    dying.thread.join(5)
    _send_until(s, lambda: s._sock is None)  # the next sends meet the closed connection
    assert drops == [] and s.waiting_rows == 100_000 and dying.items == []
    Path(sock).unlink()
    fresh = FakeLogProcess(sock)
    with s._lock:
        s._next_connect = 0.0
    s.submit(nxt)
    assert s.flush(timeout_s=10) is True
    got = fresh.wait(2)
    assert ids(got) == ["big", "next"] and drops == []
    same([big, nxt], got)
    s.close()

    # cut twice: dropped and counted, and the reader after that reads clean
    s = Shipper(sock, flush_s=0.0, max_rows=10**6, on_drop=drops.append)
    fresh.thread.join(5)
    Path(sock).unlink()
    for _ in range(2):
        dying = FakeLogProcess(sock, read_only=5000)
        with s._lock:
            s._next_connect = 0.0
        if not s.waiting_rows:
            s.submit(big)
        _send_until(s, lambda d=dying: s._sock is None and not d.thread.is_alive())  # connected, cut, gone
        Path(sock).unlink()
        assert dying.items == []
    assert drops == [100_000] and s.waiting_rows == 0
    fresh = FakeLogProcess(sock)
    with s._lock:
        s._next_connect = 0.0
    s.submit(nxt)
    assert s.flush() is True
    got = fresh.wait(1)
    assert ids(got) == ["next"]
    same([nxt], got)
    s.close()


def test_every_connection_gets_the_model_before_its_rows(sock: str) -> None:
    """Each connection is a new reader: after a stop (close) a worker reconnects, at once or on a later send,
    and must send the model again before rows that use it."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(8)
    got: list[Rows] = []
    errors: list[BaseException] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            d = Decoder()  # one per connection, as in the log process
            try:
                while data := conn.recv(65536):
                    got.extend(d.feed(data))
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(exc)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    s = Shipper(sock, flush_s=0.0, max_rows=1000, on_drop=lambda n: None)
    s.submit(item("a", 1))
    s.close()
    with s._lock:
        s._send()  # a timer's send with nothing waiting: connects with an empty buffer
    s.submit(item("b", 2))
    s.close()
    s.submit(item("c", 1))
    s.close()
    deadline = time.monotonic() + 5
    while len(ids(got)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.close()
    assert not errors and ids(got) == ["a", "b", "c"]


def test_flush_sends_what_waits_and_keeps_the_connection(sock: str) -> None:
    """A long flush interval keeps frames in the buffer; ``flush`` sends them now over the same connection (the
    log process's reader gets no second model frame: one connection, one Decoder), and reports whether all went."""
    server = FakeLogProcess(sock)  # one connection only: a reconnect would never be read
    s = Shipper(sock, flush_s=3600.0, max_rows=1000, on_drop=lambda n: None)
    for rid, n in (("a", 2), ("b", 1), ("c", 4)):
        s.submit(item(rid, n))
    assert s.waiting_rows == 7 and server.items == []  # all wait for the timer (no event loop here: none armed)
    assert s.flush() is True and s.waiting_rows == 0
    s.submit(item("d", 1))
    assert s.flush() is True
    got = server.wait(4)
    assert ids(got) == ["a", "b", "c", "d"] and len(got) == 2  # what waited went as one frame
    s.close()
    assert s.flush(timeout_s=0.05) is True  # nothing waits: nothing to send, nothing refused


def test_what_a_full_socket_left_behind_is_sent_by_the_timer_with_no_more_requests(sock: str) -> None:
    """A burst while the log process is busy: each due send fills the socket and the rest waits in the buffer.
    The event loop's timer must send that rest although no request follows (an idle worker must not keep rows
    until its next request, nor lose them on a kill)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(1)
    got: list[Rows] = []

    def serve() -> None:
        conn, _ = srv.accept()
        time.sleep(0.5)  # busy: the worker's sends fill the socket meanwhile
        d = Decoder()
        while data := conn.recv(65536):
            got.extend(d.feed(data))
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    s = Shipper(sock, flush_s=0.05, max_rows=10**6, on_drop=lambda n: None)

    async def burst_then_idle() -> None:
        for i in range(40):  # 40 frames of about 75 kB: far more than a Unix socket buffers
            s.submit(item(f"r{i}", 2000))
        assert s.waiting_rows > 0  # the socket took only part
        await asyncio.sleep(1.5)  # the worker's loop runs on; no request comes

    asyncio.run(burst_then_idle())
    deadline = time.monotonic() + 2
    while len(ids(got)) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)  # (reading what was sent; nothing sends now: no loop runs)
    assert ids(got) == [f"r{i}" for i in range(40)] and s.waiting_rows == 0
    s.close()
    srv.close()


def test_rows_that_cannot_be_packed_are_counted_and_the_rest_still_goes(sock: str) -> None:
    """A request whose arrays do not fit its model's frame (here a matrix of the wrong width) must not take the
    other requests waiting with it, nor vanish: its run is dropped and counted, later requests arrive."""
    server = FakeLogProcess(sock)
    drops: list[int] = []
    s = Shipper(sock, flush_s=3600.0, max_rows=1000, on_drop=drops.append)
    bad = item("bad", 2)
    bad.X = np.zeros((2, 5))  # two feature columns in the model, five here
    s.submit(item("a", 1))
    s.submit(item("b", 2, OTHER))
    s.submit(bad)
    s.submit(item("c", 3))
    assert s.flush() is True
    got = server.wait(3)
    assert ids(got) == ["a", "b", "c"] and drops == [2]
    same([item("a", 1), item("b", 2, OTHER), item("c", 3)], got)
    s.close()
