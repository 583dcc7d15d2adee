"""The inference log writer: every scored row into ``inference_log``, off the request path, losing nothing.

A route calls ``record(...)`` once after scoring. That only appends a reference to the request's arrays to an
in-memory queue (microseconds; a 1000-row request holds about 80 kB of arrays). A per-worker thread takes at
most ``INFERENCE_CHUNK_ROWS`` rows at a time from the head of the queue, converts them and writes them in one
transaction (serving/inference_rows.py: COPY on Postgres), whenever ``INFERENCE_BATCH_ROWS`` rows wait or
``INFERENCE_FLUSH_MS`` milliseconds have passed. Converted rows in memory never exceed a chunk or two.

When the database cannot be reached, each chunk is appended to this worker's spool file (one line per chunk,
fsync'd) under ``INFERENCE_SPOOL_DIR``. When it is reachable but slower than the traffic, the queue is not left
to grow: past ``INFERENCE_SPILL_ROWS`` waiting rows a second thread, the spiller, moves the oldest ones to the
spool — also while the writer is stuck in one slow write. While a spool exists, newer rows wait behind it (in
memory, or on disk past the spill bound), so rows reach the table in the order they were scored; once the
database answers, the spool is replayed from the start and deleted. A replay that is interrupted and repeated
is idempotent (``ON CONFLICT (request_id, row) DO NOTHING``): every row lands exactly once. Spools left by a
dead worker are claimed (atomic rename) and replayed by a live one.

The spool is bounded by ``INFERENCE_SPOOL_MAX_MB`` per worker; a chunk that does not fit is dropped, counted
in ``/metrics`` (``inference_log_rows_total{outcome="dropped"}``) and marks ``/health`` degraded until the
spool drains. So is a request that finds ``INFERENCE_QUEUE_MAX_ROWS`` rows still waiting (not even the
spiller keeps up: a stalled disk). A graceful shutdown writes what is in memory (after ``STOP_WRITE_S``
seconds, the rest goes to the spool); a hard kill loses what is in memory (see README).

Environment: INFERENCE_LOG (on|off, default on), INFERENCE_BATCH_ROWS (500), INFERENCE_FLUSH_MS (200),
INFERENCE_CHUNK_ROWS (2000), INFERENCE_SPILL_ROWS (20000), INFERENCE_QUEUE_MAX_ROWS (100000),
INFERENCE_SPOOL_DIR (<repo>/.inference-spool), INFERENCE_SPOOL_MAX_MB (100), plus the database URL of
``common.inference_db``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from common import inference_db
from common.backend import PROJECT_ROOT
from common.inference_db import SOURCES
from serving import inference_rows
from serving.inference_rows import Batch
from serving.inference_rows import Item as _Item

log = logging.getLogger("serving.inference_log")

ROWS = Counter(
    "inference_log_rows_total",
    "Scored rows by what the inference log did with them (written, spooled, replayed, dropped)",
    ["outcome"],
)
SPOOL_BYTES = Gauge("inference_log_spool_bytes", "Bytes waiting in this worker's spool", multiprocess_mode="livesum")

CALLER_MAX = 200  # inference_log.caller is VARCHAR(200) (common/inference_db.py)
SOURCE_HEADER = "x-inference-source"  # how the app says a request came from its individual or batch page
REPLAY_EVERY_S = 1.0  # how often a worker whose database is down retries it
STOP_WRITE_S = 4.0  # at a graceful stop, write to the database this long, then spool the rest (faster)
DROP_LOG_EVERY_S = 10.0
MARK_EVERY_S = 1.0
SPOOL_READ_BYTES = 8 * 1024 * 1024
FULL_MARKER = "FULL-"  # a file <dir>/FULL-<pid> exists while that worker drops rows (read by /health)
UNREACHABLE_S = 5.0  # a worker that has not reached the log process for this long reports /health degraded


@dataclass(frozen=True)
class Config:
    enabled: bool
    url: str
    spool_dir: Path
    batch_rows: int
    flush_s: float
    spool_max_bytes: int
    queue_max_rows: int
    chunk_rows: int = 2000
    spill_rows: int = 20_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        batch_rows = max(1, int(env.get("INFERENCE_BATCH_ROWS") or 500))
        queue_max_rows = max(2, int(env.get("INFERENCE_QUEUE_MAX_ROWS") or 100_000))
        spill = int(env.get("INFERENCE_SPILL_ROWS") or min(20_000, queue_max_rows // 2))
        return cls(
            enabled=inference_db.log_enabled(env),
            url=inference_db.database_url(env),
            spool_dir=Path(env.get("INFERENCE_SPOOL_DIR") or PROJECT_ROOT / ".inference-spool"),
            batch_rows=batch_rows,
            flush_s=max(1, int(env.get("INFERENCE_FLUSH_MS") or 200)) / 1000,
            spool_max_bytes=int(float(env.get("INFERENCE_SPOOL_MAX_MB") or 100) * 1024 * 1024),
            queue_max_rows=queue_max_rows,
            chunk_rows=max(1, int(env.get("INFERENCE_CHUNK_ROWS") or 2000)),
            # below the queue's bound, or the spiller would never start before requests' rows are dropped
            spill_rows=max(0, min(spill, queue_max_rows - 1)),
        )


class Writer:
    """One per worker process. ``submit`` is the only method a request thread calls.

    Two threads: the writer writes chunks to the table (or, behind a spool, replays it), and the spiller moves
    the oldest waiting rows to the spool whenever more than ``spill_rows`` wait — also while the writer is stuck
    in a slow write, which is when it matters. Both append to the spool holding ``_spool_lock`` while they take
    a chunk and write it, so the file holds chunks in the order they left the queue."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.pid = os.getpid()
        self._queue: deque[_Item] = deque()
        self._head = 0  # rows of _queue[0] already taken
        self._pending = 0  # rows in the queue, not yet taken
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the writer waits on it: a batch is due
        self._spill_cond = threading.Condition(lock)  # the spiller waits on it: too many rows wait
        self._spool_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._stopping = False
        self._stop_t = 0.0
        self._engine: sa.Engine | None = None
        self._migrated = False
        self._next_replay = 0.0
        self.spool = cfg.spool_dir / f"spool-{self.pid}.jsonl"
        self._postgres = cfg.url.startswith("postgresql")
        self._replayed_to = 0  # bytes of our own spool already in the table
        self._spool_full = False  # a chunk did not fit: drop until our spool has been replayed
        self._marked_full = False
        self._marked_t = 0.0
        self._drop_logged = -DROP_LOG_EVERY_S
        self.dropped = 0
        self.db_ok: bool | None = None
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._spiller = threading.Thread(target=self._spill_run, name="inference-log-spill", daemon=True)
        self._thread.start()
        self._spiller.start()
        atexit.register(self.close)

    # ---- request path ---------------------------------------------------------------------------------
    def submit(self, item: _Item) -> None:
        n = len(item)
        with self._cond:
            if self._pending + n > self.cfg.queue_max_rows:
                # Not even the spiller keeps up (a stalled disk): refuse to grow without bound.
                self._drop(n)
                return
            self._queue.append(item)
            self._pending += n
            if self._pending >= self.cfg.batch_rows:
                self._cond.notify()
            if self._pending > self.cfg.spill_rows:
                self._spill_cond.notify()

    # ---- writer thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._pending < self.cfg.batch_rows and not self._stopping:
                    self._cond.wait(self.cfg.flush_s)
                stopping = self._stopping
            try:
                self._step(stopping)
            except Exception as exc:  # noqa: BLE001 - the writer must survive anything; the chunk was spooled or counted
                _log_failure("flush", exc)
            if stopping:
                with self._cond:
                    if not self._pending:
                        return

    def _step(self, stopping: bool) -> None:
        """One chunk to the table, or, behind a spool, the spool's replay (or the waiting rows to the spool)."""
        if stopping and time.monotonic() - self._stop_t > STOP_WRITE_S:
            self._spill(keep=0)  # leaving, and the database is slow: the rest to disk (faster)
            return
        with self._spool_lock:  # no spill between looking for a spool and taking the chunk
            behind = self._has_spool() or bool(self._orphans())
            batch = Batch() if behind else self._take(self.cfg.chunk_rows)
        if behind:
            # Rows in memory are newer than the spool's: they wait for its replay, or join it on disk.
            if stopping or (self.db_ok is False and time.monotonic() < self._next_replay):
                self._spill(keep=0)  # the database is down, or we are leaving: keep them on disk
            else:
                self._replay()
            return
        batch = self._convertible(batch)
        if not len(batch):
            return
        try:
            self._write(batch)
        except Exception as exc:  # noqa: BLE001 - any database failure: keep the rows on disk instead
            self._unreachable(exc)
            with self._spool_lock:
                # A spool that exists now was started by the spiller while this chunk was being written: its
                # rows are newer, so this chunk goes in front of them.
                self._append(batch, first=self._has_spool())
            return
        ROWS.labels("written").inc(len(batch))
        if self._marked_full and self._pending <= self.cfg.spill_rows:
            self._clear_full()  # keeping up again

    def _take(self, max_rows: int) -> Batch:
        """At most ``max_rows`` rows from the head of the queue (a request may be split between chunks)."""
        segments = []
        n = 0
        with self._cond:
            while self._queue and n < max_rows:
                item = self._queue[0]
                lo = self._head
                hi = min(len(item), lo + max_rows - n)
                segments.append((item, lo, hi))
                n += hi - lo
                if hi == len(item):
                    self._queue.popleft()
                    self._head = 0
                else:
                    self._head = hi
            self._pending -= n
        return Batch(segments)

    def _convertible(self, batch: Batch) -> Batch:
        """The chunk converted for the database (done once, kept for the write or the spool); rows that cannot be
        converted — a request whose arrays do not fit its model — are dropped and counted, not taken for a
        database failure (they would fail the spool too, and every replay)."""
        n = len(batch)
        try:
            kept = batch.prepare(self._postgres)
        except Exception as exc:  # noqa: BLE001 - counted below
            kept, name = Batch(), type(exc).__name__
        else:
            name = "a request's arrays"
        if len(kept) < n:
            log.error("inference log: %d rows could not be converted (%s); dropped", n - len(kept), name)
            self._drop(n - len(kept))
        return kept

    def _write(self, batch: Batch) -> None:
        if self._engine is None:
            # No ping before each batch (a round trip): a connection that failed is invalidated instead.
            self._engine = inference_db.make_engine(self.cfg.url, pool_size=1, max_overflow=0, pool_pre_ping=False)
        if not (self._migrated or self.cfg.url in _schema_ready):
            inference_db.migrate(self.cfg.url)
        self._migrated = True
        inference_rows.insert(self._engine, batch)
        self.db_ok = True

    def _unreachable(self, exc: BaseException) -> None:
        if self.db_ok is not False:
            log.warning("inference log database unreachable (%s); spooling to %s", type(exc).__name__, self.spool)
        self.db_ok = False
        self._next_replay = time.monotonic() + REPLAY_EVERY_S

    # ---- spiller thread -------------------------------------------------------------------------------
    def _spill_run(self) -> None:
        while True:
            with self._cond:
                while self._pending <= self.cfg.spill_rows and not self._stopping:
                    self._spill_cond.wait()
                if self._stopping:
                    return  # the writer takes care of what is left
            try:
                self._spill(keep=self.cfg.spill_rows)
            except Exception as exc:  # noqa: BLE001 - must survive anything; the chunk was counted as dropped
                _log_failure("spill", exc)
                time.sleep(REPLAY_EVERY_S)

    def _spill(self, keep: int) -> None:
        """Move the oldest waiting rows to the end of our spool, chunk by chunk, until ``keep`` are left."""
        while True:
            with self._spool_lock:
                if self._pending <= keep:
                    return
                self._append(self._take(self.cfg.chunk_rows))  # whole chunks: fewer, larger fsyncs

    # ---- spool (appends and the end of a replay hold _spool_lock) ----------------------------------------
    def _has_spool(self) -> bool:
        return self.spool.exists()

    def _orphans(self) -> list[Path]:
        """Spools of workers that no longer run (a restart, a killed worker): ``spool-<pid>.jsonl``, and
        ``claimed-<pid>-…`` of a worker that died while replaying a spool it had claimed."""
        out = []
        try:
            paths = sorted(self.cfg.spool_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return out
        for p in paths:
            kind, _, rest = p.stem.partition("-")
            owner = rest.split("-", 1)[0]
            if kind not in ("spool", "claimed") or not owner.isdigit():
                continue
            if int(owner) != self.pid and not _alive(int(owner)):
                out.append(p)
        return out

    def _append(self, batch: Batch, first: bool = False) -> None:
        """Append a chunk to our spool, fsync'd; ``first``: in front of what it holds (rare: see _step)."""
        n = len(batch)
        if not n:
            return
        if self._spool_full:
            self._drop(n)  # not even converted: full until the replay has emptied it
            return
        size = self.spool.stat().st_size if self.spool.exists() else 0
        batch = self._convertible(batch)  # (the spiller's chunks are converted here, the writer's already were)
        n = len(batch)
        if not n:
            return
        line = batch.spool_line(postgres=self._postgres)
        if size + len(line) > self.cfg.spool_max_bytes:
            self._spool_full = size > 0  # (a chunk larger than the whole bound is dropped alone)
            self._drop(n)
            return
        self.cfg.spool_dir.mkdir(parents=True, exist_ok=True)
        if first and size:
            _prepend(self.spool, line)
        else:
            with open(self.spool, "ab") as fh:
                try:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError:
                    fh.truncate(size)  # no torn line in front of later ones (disk full): these rows are lost
                    self._drop(n)
                    raise
        SPOOL_BYTES.set(size + len(line) - self._replayed_to)
        ROWS.labels("spooled").inc(n)

    def _drop(self, n: int) -> None:
        """Count rows lost (a request thread, the writer or the spiller may call this)."""
        with self._drop_lock:
            self._drop_counted(n)

    def _drop_counted(self, n: int) -> None:
        self.dropped += n
        ROWS.labels("dropped").inc(n)
        now = time.monotonic()
        if n and now - self._drop_logged >= DROP_LOG_EVERY_S:  # one line per interval, not one per chunk
            log.error("inference log spool full: %d rows dropped by this worker in all", self.dropped)
            self._drop_logged = now
        if self._marked_full and now - self._marked_t < MARK_EVERY_S:
            return  # /health's count may lag a second; a file write per dropped chunk would slow the writer
        try:
            self.cfg.spool_dir.mkdir(parents=True, exist_ok=True)
            (self.cfg.spool_dir / f"{FULL_MARKER}{self.pid}").write_text(str(self.dropped))
            self._marked_full, self._marked_t = True, now
        except OSError:
            pass

    def _clear_full(self) -> None:
        (self.cfg.spool_dir / f"{FULL_MARKER}{self.pid}").unlink(missing_ok=True)
        self._marked_full = False

    def _replay(self) -> None:
        """Dead workers' spools first, then our own (oldest rows first); each deleted once fully in the table.
        Our own may grow meanwhile (the spiller appends behind it): the replay goes on until it reaches the end."""
        was_down = self.db_ok is False
        try:
            for path in self._orphans():
                claimed = self.cfg.spool_dir / f"claimed-{self.pid}-{path.name}"
                try:
                    os.rename(path, claimed)  # atomic: only one live worker gets it
                except OSError:
                    continue
                self._replay_file(claimed, 0)
                claimed.unlink()
            if self._has_spool():
                self._replay_file(self.spool, self._replayed_to)
            with self._spool_lock:
                self._clear_full()
            if was_down:
                log.info("inference log database reachable again; spool replayed")
        except Exception as exc:  # noqa: BLE001 - still down: keep the spool and try again later
            self._unreachable(exc)

    def _replay_file(self, path: Path, offset: int) -> None:
        own = path == self.spool
        # A buffer larger than a line: one read per line (each read gives the GIL away; see inference_rows.insert)
        with open(path, "rb", buffering=SPOOL_READ_BYTES) as fh:
            while True:
                fh.seek(offset)  # drops the read buffer: lines appended since are seen
                line = fh.readline()
                if not line.endswith(b"\n"):
                    if not own:
                        return  # the end, or a torn last line (killed mid-write) never acknowledged as spooled
                    with self._spool_lock:  # no append in flight: the end is the end
                        fh.seek(offset)
                        line = fh.readline()
                        if not line.endswith(b"\n"):  # the end (or a torn line from a crash): done with it
                            self.spool.unlink()
                            self._replayed_to = 0
                            self._spool_full = False
                            SPOOL_BYTES.set(0)
                            return
                try:
                    batch = Batch.from_spool_line(line)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.error("inference log spool %s: an unreadable line of %d bytes skipped", path.name, len(line))
                    batch = Batch()
                if len(batch):
                    self._write(batch)
                    ROWS.labels("replayed").inc(len(batch))
                offset += len(line)
                if own:
                    self._replayed_to = offset

    # ---- shutdown ---------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 8.0) -> None:
        """Write what is in memory (to the table, or to the spool) before the process exits."""
        with self._cond:
            if not self._stopping:
                self._stopping = True
                self._stop_t = time.monotonic()
            self._cond.notify()
            self._spill_cond.notify()
        self._thread.join(timeout_s)
        self._spiller.join(1.0)
        if self._engine is not None:
            self._engine.dispose()


def _prepend(path: Path, line: bytes) -> None:
    """Put ``line`` in front of a spool file: a copy with it first, fsync'd, renamed over the file (atomic)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out, open(path, "rb") as old:
        out.write(line)
        while block := old.read(SPOOL_READ_BYTES):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _log_failure(step: str, exc: BaseException) -> None:
    """The exception's type and where it was raised, never its message: a database error quotes the failing row
    ("Failing row contains (...)"), and these rows are patients' values."""
    import traceback

    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}" if frame else ""
    log.error("inference log %s failed: %s%s", step, type(exc).__name__, where)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_config: Config | None = None
_writer: Writer | None = None
_shipper: Any = None  # serving.inference_ship.Shipper, in a worker of `python -m serving` (INFERENCE_LOG_SOCKET)
SOCKET_ENV = "INFERENCE_LOG_SOCKET"  # set by `python -m serving` for its workers: the log process's socket
_socket: tuple[int, str] | None = None  # (pid, SOCKET_ENV's value) read once per process: an environ lookup per
# request costs more than the rest of shipper() (set to None to read it again)
_trusted_kinds: tuple[str, ...] | None = None  # serving.auth.TRUSTED_KINDS, imported on first use
# Databases setup() migrated in the master; forked workers then skip Alembic (and its imports) for them. Keyed by
# URL: one process may build apps over several databases (tests), and a flag would skip a new one's migration.
_schema_ready: set[str] = set()
_lock = threading.Lock()


def config() -> Config:
    global _config
    if _config is None:
        _config = Config.from_env()
    return _config


def setup() -> None:
    """At API start (in the master, before workers fork): create or migrate the tables. An unreachable
    database is not fatal: workers spool and migrate once it answers."""
    cfg = config()
    if not cfg.enabled:
        log.info("inference log disabled (INFERENCE_LOG=off)")
        return
    try:
        inference_db.migrate(cfg.url)
        _schema_ready.add(cfg.url)
        if cfg.url.startswith("postgresql"):
            import psycopg2.errors  # noqa: F401 - the writer's; imported before the fork, so workers share its pages
    except Exception as exc:  # noqa: BLE001 - serving must not depend on the log database being up
        log.warning("inference log database not migrated at start (%s); will retry on first write", type(exc).__name__)


def writer() -> Writer | None:
    """This process's writer, started on first use (after gunicorn's fork: threads do not survive a fork)."""
    global _writer
    cfg = config()
    if not cfg.enabled:
        return None
    w = _writer
    if w is None or w.pid != os.getpid():
        with _lock:
            if _writer is None or _writer.pid != os.getpid():
                _writer = Writer(cfg)
            w = _writer
    return w


def shipper() -> Any:
    """This worker's connection to the log process, when ``python -m serving`` runs one (else None: the writer
    runs in this process, as in tests that build the app in process)."""
    global _shipper, _socket
    pid = os.getpid()
    if _socket is None or _socket[0] != pid:
        _socket = (pid, os.environ.get(SOCKET_ENV) or "")
    path = _socket[1]
    if not path or not config().enabled:
        return None
    s = _shipper
    if s is None or s.pid != pid:
        with _lock:
            if _shipper is None or _shipper.pid != pid:
                from serving.inference_ship import Shipper

                cfg = config()
                _shipper = Shipper(path, cfg.flush_s, cfg.queue_max_rows, _ShipDrops(cfg))
            s = _shipper
    return s


class _ShipDrops:
    """Rows a worker could not hand to the log process (it was gone too long): counted in /metrics, and a
    spool-full marker with the worker's pid makes /health degraded, as the writer's own drops do."""

    def __init__(self, cfg: Config):
        self.cfg, self.dropped = cfg, 0

    def __call__(self, n: int) -> None:
        self.dropped += n
        ROWS.labels("dropped").inc(n)
        log.error("inference log: %d rows dropped by this worker in all (the log process is unreachable)", self.dropped)
        try:
            self.cfg.spool_dir.mkdir(parents=True, exist_ok=True)
            (self.cfg.spool_dir / f"{FULL_MARKER}{os.getpid()}").write_text(str(self.dropped))
        except OSError:
            pass

    def clear(self) -> None:
        """Every waiting row has reached the log process again."""
        (self.cfg.spool_dir / f"{FULL_MARKER}{os.getpid()}").unlink(missing_ok=True)


def shutdown() -> None:
    """Flush and stop this process's writer, or hand what waits to the log process (graceful shutdown)."""
    s = _shipper
    if s is not None and s.pid == os.getpid():
        s.close()
    w = _writer
    if w is not None and w.pid == os.getpid():
        w.close()


def record(request: Any, model: Any, route: str, request_id: str, X: Any, out: Mapping[str, Any],
           caller: str = "anonymous") -> None:  # fmt: skip
    """Log the rows a route just scored. Called once per successful scoring request; never raises."""
    global _trusted_kinds
    w = shipper() or writer()
    if w is None:
        return
    if _trusted_kinds is None:
        from serving.auth import TRUSTED_KINDS  # here: the log process imports this module without the API's auth

        _trusted_kinds = TRUSTED_KINDS
    try:
        state = request.scope.get("state") or {}
        t0 = state.get("t0")
        latency_ms = (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0
        # Only the app's own credential may say which page scored (anyone else could mislabel their rows).
        principal = state.get("principal")
        trusted = principal is not None and getattr(principal, "kind", "") in _trusted_kinds
        source = (request.headers.get(SOURCE_HEADER) if trusted else None) or "api"
        w.submit(
            _Item(
                ts_us=time.time_ns() // 1000,
                request_id=request_id,
                route=route,
                source=source if source in SOURCES else "api",
                caller=caller[:CALLER_MAX],  # the column's bound: a longer name would make the chunk unwritable
                latency_ms=latency_ms,
                model=model,
                X=X,
                probability=out["probability"],
                label=out["label"],
                risk_level=out["risk_level"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - logging must never fail a prediction
        _log_failure("record", exc)


def health() -> dict[str, Any]:
    """The log's state for /health: ``degraded`` while any worker's spool is full (rows being dropped)."""
    cfg = config()
    if not cfg.enabled:
        return {"status": "off"}
    try:
        full = list(cfg.spool_dir.glob(f"{FULL_MARKER}*"))
        spooled = sum(p.stat().st_size for p in cfg.spool_dir.glob("*.jsonl"))
    except OSError:
        full, spooled = [], 0
    dropped = 0
    live = []
    for p in full:
        pid = p.name[len(FULL_MARKER) :]
        if not (pid.isdigit() and _alive(int(pid))):
            continue  # a dead worker's marker: its spool is replayed by a live worker, its drops stay in /metrics
        live.append(p)
        try:
            dropped += int(p.read_text() or 0)
        except (OSError, ValueError):
            pass
    full = live
    status = "degraded" if full else ("spooling" if spooled else "ok")
    doc: dict[str, Any] = {"status": status, "spool_bytes": spooled, "dropped_rows": dropped}
    s = _shipper if _shipper is not None and _shipper.pid == os.getpid() else None
    if s is not None:
        away = s.unreachable_since is not None and time.monotonic() - s.unreachable_since > UNREACHABLE_S
        doc["process"] = "unreachable" if away else "connected"
        doc["waiting_rows"] = s.waiting_rows
        if away and status == "ok":
            doc["status"] = "degraded"
    return doc


def apply_health(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the log's state to a /health document; a full spool makes an ``ok`` service ``degraded``."""
    state = health()
    doc["inference_log"] = state
    if state["status"] == "degraded" and doc.get("status") == "ok":
        doc["status"] = "degraded"
        doc["reason"] = (
            f"inference log spool full: {state['dropped_rows']} rows dropped"
            if state["dropped_rows"] or state.get("process") != "unreachable"
            else "inference log process unreachable: rows wait in memory"
        )
    return doc
