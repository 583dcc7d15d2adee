"""Fast, in-process checks of the inference log writer (on SQLite) and of the drift statistics."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa

from monitor import stats
from pipeline.reference import categorical_summary, numeric_summary
from serving.inference_log import Config, Writer, _Item
from serving.inference_rows import Batch

MODEL = SimpleNamespace(
    name="m", version="3", run_id="r" * 32, names=["glucosa", "sexo"], categories={1: {"F": 0.0, "M": 1.0}}
)


def _item(rid: str, n: int) -> _Item:
    X = np.array([[100.0 + i, float(i % 2)] for i in range(n)])
    X[0, 0] = np.nan
    p = np.linspace(0.1, 0.9, n)
    return _Item(time.time_ns() // 1000, rid, "/predict", "api", "anonymous", 1.5, MODEL, X, p, (p >= 0.5).astype(int),
                 np.array(["low"] * n, dtype=object))  # fmt: skip


def _cfg(tmp: Path, url: str, **kw: object) -> Config:
    base = Config(True, url, tmp / "spool", batch_rows=500, flush_s=0.05, spool_max_bytes=10**7, queue_max_rows=10**5)
    return dataclasses.replace(base, **kw)


def _rows(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = conn.execute(sa.text("SELECT request_id, row, features FROM inference_log ORDER BY id")).all()
    engine.dispose()
    return out


@pytest.mark.slow  # Alembic migration and a writer thread per test: a few seconds
def test_rows_hold_the_model_input_with_categories_decoded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    w = Writer(_cfg(tmp_path, url))
    w.submit(_item("a", 3))
    w.close()
    rows = _rows(url)
    assert [(r[0], r[1]) for r in rows] == [("a", 0), ("a", 1), ("a", 2)]
    assert '"glucosa": null' in rows[0][2] and '"sexo": "M"' in rows[1][2]


@pytest.mark.slow  # Alembic migration and a writer thread per test: a few seconds
def test_unreachable_database_spools_then_replays_exactly_once(tmp_path: Path) -> None:
    good = f"sqlite:///{tmp_path / 'log.db'}"
    bad = f"sqlite:///{tmp_path / 'missing-dir' / 'log.db'}"  # a directory that does not exist: cannot connect
    w = Writer(_cfg(tmp_path, bad))
    for k in range(5):
        w.submit(_item(f"r{k}", 4))
    w.close()
    assert w.spool.exists() and _rows_in_spool(w.spool) == 20
    # A torn last line (killed mid-write) is ignored; the restarted worker (same process: same spool) replays.
    with open(w.spool, "ab") as fh:
        fh.write(b'[{"request_id": "torn"')
    saved = w.spool.read_bytes()
    for _ in range(2):  # the second time, the same spool again: a replay interrupted before the file was deleted
        w.spool.write_bytes(saved)
        w2 = Writer(_cfg(tmp_path, good))
        _wait(lambda: not w.spool.exists())  # same process, same spool path
        w2.close()
    rows = _rows(good)
    assert len(rows) == 20 and len({(r[0], r[1]) for r in rows}) == 20
    assert not w.spool.exists()


def _wait(cond: object, timeout_s: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def _rows_in_spool(path: Path) -> int:
    import orjson

    return sum(len(orjson.loads(line)) for line in path.read_bytes().splitlines() if line)


@pytest.mark.slow  # Alembic migration and a writer thread per test: a few seconds
def test_full_spool_drops_and_marks(tmp_path: Path) -> None:
    bad = f"sqlite:///{tmp_path / 'missing-dir' / 'log.db'}"
    w = Writer(_cfg(tmp_path, bad, spool_max_bytes=2000))
    for k in range(10):  # one batch per request: some fit in the spool, the rest are dropped
        w.submit(_item(f"r{k}", 5))
        _wait(lambda k=k: (w.spool.exists() and _rows_in_spool(w.spool) + w.dropped == 5 * (k + 1)))
    w.close()
    assert w.dropped > 0 and _rows_in_spool(w.spool) > 0 and _rows_in_spool(w.spool) + w.dropped == 50
    assert (tmp_path / "spool" / f"FULL-{w.pid}").exists()


def test_copy_text_sqlite_params_and_spool_lines_hold_the_same_rows() -> None:
    """The three forms a batch takes (Postgres COPY text, SQLite parameters, a spool line) are the same rows:
    two models in one batch, a request split between chunks (rows 2:5), categories (one unknown code: null),
    NaN as null, text that COPY must escape (a tab in a caller, a backslash in a category, a tab in a level)."""
    import sqlalchemy as sa

    from serving.inference_rows import Batch, _rows_of_copy_text

    odd = SimpleNamespace(name="m2", version="4", run_id="s" * 32, names=['we"ird\\key', "b"],
                          categories={1: {"a\\b": 0.0, "c": 1.0}})  # fmt: skip
    us = 1_796_742_000_123_456
    b_x = np.array([[1.5, 0.0], [np.nan, 1.0], [2.0, 7.0]])
    first = _item("r1", 5)
    first.caller = "ta\tb"
    second = _Item(us, "r2", "/invocations", "app-batch", "app:ana", 0.25, odd, b_x, np.array([0.2, 0.7, 0.9]),
                   np.array([0, 1, 1]), np.array(["low", "hi\tgh", "high"], dtype=object))  # fmt: skip
    batch = Batch([(first, 2, 5), (second, 0, 3)])
    rows = batch.rows()
    assert [(r[0], r[1]) for r in rows] == [("r1", 2), ("r1", 3), ("r1", 4), ("r2", 0), ("r2", 1), ("r2", 2)]
    assert rows[3][2] == "2026-12-08 15:00:00.123456+00:00"  # UTC, from the epoch microseconds
    assert rows[3][8] == '{"we\\"ird\\\\key": 1.5, "b": "a\\\\b"}'
    assert rows[4][8] == '{"we\\"ird\\\\key": null, "b": "c"}'
    assert rows[5][8].endswith('"b": null}') and rows[0][7] == "ta\tb" and rows[4][11] == "hi\tgh"
    assert rows[0][8] == '{"glucosa": 102.0, "sexo": "F"}' and rows[1][8] == '{"glucosa": 103.0, "sexo": "M"}'
    assert _rows_of_copy_text(batch.copy_text()) == rows  # escaped for COPY and read back: the same values
    params = batch.sqlite_params()
    d = sa.create_engine("sqlite://").dialect
    to_db = sa.DateTime(timezone=True).dialect_impl(d).bind_processor(d)
    assert params[3][2] == to_db(datetime.fromisoformat(rows[3][2])) == "2026-12-08 15:00:00.123456"
    assert [(*p[:2], *p[3:]) for p in params] == [(*r[:2], *r[3:]) for r in rows]
    for postgres in (True, False):  # a spool line, read back, gives the same parameters
        assert Batch.from_spool_line(batch.spool_line(postgres=postgres)).sqlite_params() == params
        prepared = Batch([(first, 2, 5), (second, 0, 3)]).prepare(postgres)  # converted once, kept: same lines
        assert prepared.spool_line(postgres) == batch.spool_line(postgres) and prepared.rows() == rows
    older = [[*r[:2], datetime.fromisoformat(r[2]).isoformat().replace(" ", "T"), *r[3:]] for r in rows]
    assert older[3][2] == "2026-12-08T15:00:00.123456+00:00"  # how earlier versions spooled it
    assert Batch(rows=older).sqlite_params() == params


@pytest.mark.slow  # an Alembic migration: a few seconds
def test_sqlite_takes_a_chunk_in_blocks_exactly_once(tmp_path: Path) -> None:
    """2,003 rows = blocks of 1024, 512, 256, 128, 64, 16, 2 and 1 rows; written twice (a replay), stored once."""
    from common import inference_db
    from serving import inference_rows

    url = f"sqlite:///{tmp_path / 'log.db'}"
    inference_db.migrate(url)
    engine = inference_db.make_engine(url)
    batch = inference_rows.Batch([(_item("big", 2000), 0, 2000), (_item("small", 3), 0, 3)])
    inference_rows.insert(engine, batch)
    inference_rows.insert(engine, batch)
    engine.dispose()
    rows = _rows(url)
    assert [(r[0], r[1]) for r in rows] == [("big", i) for i in range(2000)] + [("small", i) for i in range(3)]


def test_psi_zero_for_the_reference_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(120, 30, 5000)
    ref = numeric_summary(train)
    assert sum(ref["proportions"]) == pytest.approx(1)
    same = stats.feature_drift(ref, rng.normal(120, 30, 5000))
    shifted = stats.feature_drift(ref, rng.normal(160, 30, 5000))
    assert same["psi"] < 0.02 and same["pvalue"] > 0.001
    assert shifted["psi"] > 0.25 and shifted["pvalue"] < 1e-10
    assert stats.verdict({"a": same["psi"], "b": shifted["psi"]}, 0.1, 0.25) == ("alert", ["b"])


def test_categorical_drift_uses_chi_square() -> None:
    ref = categorical_summary(np.array([0.0] * 50 + [1.0] * 50), ["F", "M"])
    d = stats.feature_drift(ref, np.array([0.0] * 90 + [1.0] * 10 + [np.nan] * 5))
    assert d["test"] == "chi2" and d["pvalue"] < 1e-6 and d["psi"] > 0.25
    assert d["missing_rate"] == pytest.approx(5 / 105)


def test_calibration_slope_matches_scikit_learn() -> None:
    from pipeline.evaluate import calibration_intercept_slope

    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 1500)
    y = (rng.uniform(size=1500) < p**1.4).astype(int)
    slope, se = stats.calibration_slope(y, p)
    assert slope == pytest.approx(calibration_intercept_slope(y, p)[1], abs=2e-3) and 0 < se < 0.2
    m = stats.outcome_metrics(y, p, 0.5, boot=100)
    assert m["outcome_n"] == 1500 and m["outcome_auc_ci_low"] < m["outcome_auc"] < m["outcome_auc_ci_high"]


@pytest.mark.slow  # a Postgres database and a lock held for about 3 s: under 10 s in all
def test_burst_beyond_the_queue_with_a_stalled_database_loses_nothing(postgres_url: str, tmp_path: Path) -> None:
    """The database answers but every write waits (a lock held by another session): the writer is stuck in
    its first COPY while a burst of 6x INFERENCE_QUEUE_MAX_ROWS arrives. The spiller moves the overflow to the
    spool; once the lock goes, the stuck chunk, then the spool, then memory reach the table: every row once,
    in the order scored, none dropped."""
    import psycopg2
    from prometheus_client import REGISTRY

    from common import inference_db
    from common.backend import normalize_database_url

    def spooled() -> float:
        return REGISTRY.get_sample_value("inference_log_rows_total", {"outcome": "spooled"}) or 0.0

    url = normalize_database_url(postgres_url)
    inference_db.migrate(url)
    spooled_before = spooled()
    w = Writer(_cfg(tmp_path, url, batch_rows=100, chunk_rows=500, spill_rows=1000, queue_max_rows=3000))
    locker = psycopg2.connect(postgres_url)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE inference_log IN EXCLUSIVE MODE")  # reads go on, writes wait
        sent = [("first", 100)]
        w.submit(_item("first", 100))
        _wait(lambda: w._pending == 0)  # the writer has taken it and now waits on the lock
        for k in range(180):  # 18,000 rows in about a second
            w.submit(_item(f"r{k:03d}", 100))
            sent.append((f"r{k:03d}", 100))
            if k % 10 == 9:
                time.sleep(0.05)
        _wait(lambda: w._pending <= 1000)
        assert w.spool.exists() and w.dropped == 0 and _pg_count(url) == 0
        time.sleep(1.5)  # still stuck: nothing written yet
        assert _pg_count(url) == 0
    finally:
        locker.rollback()  # the lock goes: the database is fast again
        locker.close()
    expected = [(rid, i) for rid, n in sent for i in range(n)]
    _wait(lambda: _pg_count(url) >= len(expected) and not w.spool.exists(), timeout_s=30)
    w.close()
    assert _pg_keys(url) == expected  # every row once, in the order scored (ids ascending)
    assert w.dropped == 0 and not w.spool.exists()
    assert spooled() - spooled_before >= 15_000, "the overflow did not go through the spool"


def _pg_count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM inference_log")).scalar_one()
    engine.dispose()
    return int(n)


def _pg_keys(url: str) -> list[tuple[str, int]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = [tuple(r) for r in conn.execute(sa.text("SELECT request_id, row FROM inference_log ORDER BY id"))]
    engine.dispose()
    return out


def test_a_writer_failure_is_logged_without_the_rows_it_quotes(caplog: pytest.LogCaptureFixture) -> None:
    """Database errors quote the failing row (patients' values): the log says the error's type and place only."""
    from serving import inference_log

    try:
        raise ValueError('null value in column "ts"; DETAIL: Failing row contains (r1, 0, {"glucosa": 5.987654})')
    except ValueError as exc:
        with caplog.at_level("ERROR", logger="serving.inference_log"):
            inference_log._log_failure("flush", exc)
    text = caplog.text
    assert "inference log flush failed: ValueError at test_inference_log_units.py:" in text
    assert "5.987654" not in text and "Failing row" not in text


def test_request_ids_are_uuid7_time_first_and_never_repeat() -> None:
    """The log's key: 32 hex digits of a version-7 UUID whose first 48 bits are the time in milliseconds, so
    ids minted later sort later (Postgres appends them to its unique index) while staying unguessable."""
    import uuid

    from serving.deps import new_request_id

    before = time.time_ns() // 1_000_000
    ids = [new_request_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for rid in ids:
        u = uuid.UUID(rid)
        assert len(rid) == 32 and rid == u.hex and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= int(rid[:12], 16) <= after
    time.sleep(0.002)
    assert new_request_id()[:12] > ids[-1][:12]  # a later millisecond sorts after
    same_ms = [[r for r in ids if r[:12] == ms] for ms in sorted({r[:12] for r in ids})]
    busiest = max(same_ms, key=len)
    assert len(busiest) >= 5 and busiest != sorted(busiest)  # within a millisecond, random: not a counter


def _misfit(rid: str) -> _Item:
    """A request whose matrix does not fit its model (three columns for two features): no route makes one, but
    the writer must not take it for a database failure."""
    bad = _item(rid, 2)
    bad.X = np.zeros((2, 3))
    return bad


def test_rows_that_cannot_be_converted_are_left_out_of_their_batch_alone() -> None:
    good, other = _item("a", 3), _item("c", 2)
    for postgres in (True, False):
        batch = Batch([(good, 0, 3), (_misfit("b"), 0, 2), (other, 0, 2)]).prepare(postgres)
        assert len(batch) == 5 and [r[0] for r in batch.rows()] == ["a", "a", "a", "c", "c"]
        whole = Batch([(good, 0, 3), (other, 0, 2)])
        if postgres:
            assert batch.copy_text() == whole.copy_text()
        else:
            assert batch.sqlite_params() == whole.sqlite_params()
    with pytest.raises(TypeError):
        Batch([(_misfit("b"), 0, 2)])._prepare(True)  # alone: nothing to keep


@pytest.mark.slow  # Alembic migration and a writer thread: a few seconds
def test_the_writer_drops_and_counts_rows_it_cannot_convert_and_writes_the_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    w = Writer(_cfg(tmp_path, url))
    for x in (_item("a", 3), _misfit("b"), _item("c", 2)):
        w.submit(x)
    w.close()
    assert [(r[0], r[1]) for r in _rows(url)] == [("a", 0), ("a", 1), ("a", 2), ("c", 0), ("c", 1)]
    assert w.dropped == 2 and w.db_ok is True and not w.spool.exists()  # not a database failure, nothing spooled
