"""The inference log writer: every scored row into ``inference_log``, off the request path, losing nothing.

A route calls ``record(...)`` once after scoring. That only appends a reference to the request's arrays to an
in-memory list (microseconds); a per-worker thread turns them into rows and writes a batch with one multi-row
INSERT every ``INFERENCE_BATCH_ROWS`` rows or ``INFERENCE_FLUSH_MS`` milliseconds.

When the database cannot be reached, each batch is appended to this worker's spool file (one JSON line per
batch, fsync'd) under ``INFERENCE_SPOOL_DIR``. While a spool exists, new batches go behind it, so rows reach the
table in the order they were scored; once the database answers, the spool is replayed from the start and
deleted. ``INSERT ... ON CONFLICT (request_id, row) DO NOTHING`` makes a replay that is interrupted and
repeated idempotent: every row lands exactly once. Spools left by a dead worker are claimed (atomic rename) and
replayed by a live one. The spool is bounded by ``INFERENCE_SPOOL_MAX_MB`` per worker; a batch that does not fit
is dropped, counted in ``/metrics`` (``inference_log_rows_total{outcome="dropped"}``) and marks ``/health``
degraded until the spool drains. A graceful shutdown flushes; a hard kill loses what is in memory (see README).

Environment: INFERENCE_LOG (on|off, default on), INFERENCE_BATCH_ROWS (500), INFERENCE_FLUSH_MS (200),
INFERENCE_SPOOL_DIR (<repo>/.inference-spool), INFERENCE_SPOOL_MAX_MB (100), INFERENCE_QUEUE_MAX_ROWS (100000),
plus the database URL of ``common.inference_db``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from common import inference_db
from common.backend import PROJECT_ROOT
from common.inference_db import SOURCES
from serving.auth import TRUSTED_KINDS

log = logging.getLogger("serving.inference_log")

ROWS = Counter(
    "inference_log_rows_total",
    "Scored rows by what the inference log did with them (written, spooled, replayed, dropped)",
    ["outcome"],
)
SPOOL_BYTES = Gauge("inference_log_spool_bytes", "Bytes waiting in this worker's spool", multiprocess_mode="livesum")

SOURCE_HEADER = "x-inference-source"  # how the app says a request came from its individual or batch page
REPLAY_EVERY_S = 1.0  # how often a worker with a spool retries the database
FULL_MARKER = "FULL-"  # a file <dir>/FULL-<pid> exists while that worker drops rows (read by /health)


@dataclass(frozen=True)
class Config:
    enabled: bool
    url: str
    spool_dir: Path
    batch_rows: int
    flush_s: float
    spool_max_bytes: int
    queue_max_rows: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            enabled=inference_db.log_enabled(env),
            url=inference_db.database_url(env),
            spool_dir=Path(env.get("INFERENCE_SPOOL_DIR") or PROJECT_ROOT / ".inference-spool"),
            batch_rows=max(1, int(env.get("INFERENCE_BATCH_ROWS") or 500)),
            flush_s=max(1, int(env.get("INFERENCE_FLUSH_MS") or 200)) / 1000,
            spool_max_bytes=int(float(env.get("INFERENCE_SPOOL_MAX_MB") or 100) * 1024 * 1024),
            queue_max_rows=max(1, int(env.get("INFERENCE_QUEUE_MAX_ROWS") or 100_000)),
        )


@dataclass(frozen=True)
class _Item:
    """One request's scored rows, as the route had them; converted to table rows on the writer thread."""

    ts: datetime
    request_id: str
    route: str
    source: str
    caller: str
    latency_ms: float
    model: Any  # ServedModel
    X: Any
    probability: Any
    label: Any
    risk_level: Any

    def rows(self) -> list[list[Any]]:
        """Table rows as lists in COLUMNS order: features already JSON text, the time as ISO text. Plain lists
        because this runs for every scored row on the writer thread, which shares the GIL with the requests."""
        m = self.model
        names = m.names
        decode = {j: {code: cat for cat, code in cats.items()} for j, cats in m.categories.items()}
        prob, label, level = self.probability.tolist(), self.label.tolist(), self.risk_level.tolist()
        ts, dumps = self.ts.isoformat(), orjson.dumps
        head = [m.name, m.version, m.run_id, self.route, self.caller]
        out = []
        for i, values in enumerate(self.X.tolist()):
            if decode:
                values = [decode[j].get(v) if j in decode and v == v else v for j, v in enumerate(values)]
            # NaN (v != v) is "not measured": JSON null
            feats = dumps({n: (v if v == v else None) for n, v in zip(names, values, strict=True)}).decode()
            out.append([self.request_id, i, ts, *head, feats, prob[i], int(label[i]), str(level[i]), self.latency_ms,
                        self.source])  # fmt: skip
        return out


COLUMNS = ("request_id", "row", "ts", "model_name", "model_version", "run_id", "route", "caller", "features",
           "probability", "label", "risk_level", "latency_ms", "source")  # fmt: skip
_PG_INSERT = (
    f"INSERT INTO inference_log ({', '.join(COLUMNS)}) VALUES %s ON CONFLICT (request_id, row) DO NOTHING"
)
_PG_TEMPLATE = "(" + ", ".join("%s::jsonb" if c == "features" else "%s::timestamptz" if c == "ts" else "%s"
                               for c in COLUMNS) + ")"  # fmt: skip


def _insert(engine: sa.Engine, rows: list[list[Any]]) -> None:
    """One multi-row INSERT per batch, ignoring rows already present (a replay). On Postgres through psycopg2's
    execute_values (SQLAlchemy's executemany with ON CONFLICT sends one statement per row: too slow here)."""
    if engine.dialect.name == "postgresql":
        from psycopg2.extras import execute_values

        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:
                execute_values(cur, _PG_INSERT, rows, template=_PG_TEMPLATE, page_size=len(rows))
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return
    from sqlalchemy.dialects.sqlite import insert

    dicts = [dict(zip(COLUMNS, r, strict=True)) for r in rows]
    for d in dicts:
        d["ts"] = datetime.fromisoformat(d["ts"])
        d["features"] = orjson.loads(d["features"])
    stmt = insert(inference_db.inference_log).on_conflict_do_nothing(index_elements=["request_id", "row"])
    with engine.begin() as conn:
        conn.execute(stmt, dicts)


class Writer:
    """One per worker process. ``submit`` is the only method a request thread calls."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.pid = os.getpid()
        self._items: list[_Item] = []
        self._pending = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._engine: sa.Engine | None = None
        self._migrated = False
        self._next_replay = 0.0
        self.spool = cfg.spool_dir / f"spool-{self.pid}.jsonl"
        self._replayed_to = 0  # bytes of our own spool already in the table
        self.dropped = 0
        self.db_ok: bool | None = None
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ---- request path ---------------------------------------------------------------------------------
    def submit(self, item: _Item) -> None:
        n = len(item.probability)
        with self._cond:
            if self._pending + n > self.cfg.queue_max_rows:
                # The writer cannot keep up even with the spool (disk stalled): refuse to grow without bound.
                self._drop(n)
                return
            self._items.append(item)
            self._pending += n
            if self._pending >= self.cfg.batch_rows:
                self._cond.notify()

    # ---- writer thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._items and not self._stopping:
                    self._cond.wait(self.cfg.flush_s)
                elif self._pending < self.cfg.batch_rows and not self._stopping:
                    self._cond.wait(self.cfg.flush_s)
                items, self._items, self._pending = self._items, [], 0
                stopping = self._stopping
            try:
                self._flush([r for it in items for r in it.rows()])
            except Exception:  # noqa: BLE001 - the writer must survive anything; the batch was spooled or counted
                log.exception("inference log flush failed")
            if stopping:
                with self._cond:
                    if not self._items:
                        return

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        if self._has_spool() or self._orphans():
            if rows:
                self._append(rows)
            if time.monotonic() >= self._next_replay:
                self._replay()
            return
        if not rows:
            return
        try:
            self._write(rows)
            ROWS.labels("written").inc(len(rows))
        except Exception as exc:  # noqa: BLE001 - any database failure: keep the rows on disk instead
            self._unreachable(exc)
            self._append(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._engine is None:
            self._engine = inference_db.make_engine(self.cfg.url, pool_size=1, max_overflow=0)
        if not (self._migrated or self.cfg.url in _schema_ready):
            inference_db.migrate(self.cfg.url)
        self._migrated = True
        _insert(self._engine, rows)
        self.db_ok = True

    def _unreachable(self, exc: BaseException) -> None:
        if self.db_ok is not False:
            log.warning("inference log database unreachable (%s); spooling to %s", type(exc).__name__, self.spool)
        self.db_ok = False
        self._next_replay = time.monotonic() + REPLAY_EVERY_S

    # ---- spool ----------------------------------------------------------------------------------------
    def _has_spool(self) -> bool:
        return self.spool.exists()

    def _orphans(self) -> list[Path]:
        """Spools of workers that no longer run (a restart, a killed worker)."""
        out = []
        try:
            paths = sorted(self.cfg.spool_dir.glob("spool-*.jsonl"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return out
        for p in paths:
            pid = int(p.stem.split("-", 1)[1]) if p.stem.split("-", 1)[1].isdigit() else -1
            if pid != self.pid and not _alive(pid):
                out.append(p)
        return out

    def _append(self, rows: list[dict[str, Any]]) -> None:
        line = orjson.dumps(rows) + b"\n"
        size = self.spool.stat().st_size if self.spool.exists() else 0
        if size + len(line) > self.cfg.spool_max_bytes:
            self._drop(len(rows))
            return
        self.cfg.spool_dir.mkdir(parents=True, exist_ok=True)
        with open(self.spool, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        SPOOL_BYTES.set(size + len(line))
        ROWS.labels("spooled").inc(len(rows))

    def _drop(self, n: int) -> None:
        self.dropped += n
        ROWS.labels("dropped").inc(n)
        if n:
            log.error("inference log spool full: %d rows dropped (%d in total by this worker)", n, self.dropped)
        try:
            self.cfg.spool_dir.mkdir(parents=True, exist_ok=True)
            (self.cfg.spool_dir / f"{FULL_MARKER}{self.pid}").write_text(str(self.dropped))
        except OSError:
            pass

    def _replay(self) -> None:
        """Our own spool first (oldest rows), then any dead worker's; each deleted once fully in the table."""
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
                self._replayed_to = self._replay_file(self.spool, self._replayed_to)
                self.spool.unlink()
                self._replayed_to = 0
                SPOOL_BYTES.set(0)
            (self.cfg.spool_dir / f"{FULL_MARKER}{self.pid}").unlink(missing_ok=True)
            log.info("inference log database reachable again; spool replayed")
        except Exception as exc:  # noqa: BLE001 - still down: keep the spool and try again later
            self._unreachable(exc)

    def _replay_file(self, path: Path, start: int) -> int:
        offset = start
        with open(path, "rb") as fh:
            fh.seek(start)
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a torn last line (killed mid-write) was never acknowledged as spooled
                rows = orjson.loads(line)
                self._write(rows)
                ROWS.labels("replayed").inc(len(rows))
                offset += len(line)
                if path == self.spool:
                    self._replayed_to = offset
        return offset

    # ---- shutdown ---------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 8.0) -> None:
        """Flush what is in memory (to the table, or to the spool) before the process exits."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._engine is not None:
            self._engine.dispose()


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
            import psycopg2.extras  # noqa: F401 - imported before the fork, so workers share its pages
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


def shutdown() -> None:
    """Flush and stop this process's writer (graceful shutdown)."""
    w = _writer
    if w is not None and w.pid == os.getpid():
        w.close()


def record(request: Any, model: Any, route: str, request_id: str, X: Any, out: Mapping[str, Any],
           caller: str = "anonymous") -> None:  # fmt: skip
    """Log the rows a route just scored. Called once per successful scoring request; never raises."""
    w = writer()
    if w is None:
        return
    try:
        state = request.scope.get("state") or {}
        t0 = state.get("t0")
        latency_ms = (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0
        # Only the app's own credential may say which page scored (anyone else could mislabel their rows).
        principal = state.get("principal")
        trusted = principal is not None and getattr(principal, "kind", "") in TRUSTED_KINDS
        source = (request.headers.get(SOURCE_HEADER) if trusted else None) or "api"
        w.submit(
            _Item(
                ts=datetime.now(UTC),
                request_id=request_id,
                route=route,
                source=source if source in SOURCES else "api",
                caller=caller,
                latency_ms=latency_ms,
                model=model,
                X=X,
                probability=out["probability"],
                label=out["label"],
                risk_level=out["risk_level"],
            )
        )
    except Exception:  # noqa: BLE001 - logging must never fail a prediction
        log.exception("inference log record failed")


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
    return {"status": status, "spool_bytes": spooled, "dropped_rows": dropped}


def apply_health(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the log's state to a /health document; a full spool makes an ``ok`` service ``degraded``."""
    state = health()
    doc["inference_log"] = state
    if state["status"] == "degraded" and doc.get("status") == "ok":
        doc["status"] = "degraded"
        doc["reason"] = f"inference log spool full: {state['dropped_rows']} rows dropped"
    return doc
