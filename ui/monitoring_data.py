"""SQL behind the monitoring page: every figure is aggregated in the database (one scan per panel), so the page
stays fast on millions of logged rows; only small result tables reach pandas. The connection is read-only.

The log lives in the API's database (``APP_DATABASE_URL``, else ``DATABASE_URL``, else the API's SQLite file).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from common.inference_db import inference_log as LOG
from common.inference_db import inference_outcome as OUTCOME

MAX_OUTCOMES = 50_000  # outcome rows fetched for AUC/Brier/CIs (confirmed outcomes are few next to predictions)
# Drift is estimated on a random sample of about this many rows (Postgres): extracting every feature from the JSON
# of a million rows takes tens of seconds, and the sampling error of a 10-bin PSI at 50k rows is ~0.0002.
DRIFT_SAMPLE_ROWS = 50_000


def window(version: tuple[str, str], start: date, end: date, table: Any = LOG) -> Any:
    """WHERE clause: one model version, from ``start`` 00:00 UTC to the end of ``end`` (inclusive)."""
    lo = datetime.combine(start, time.min, tzinfo=UTC)
    hi = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    c = table.c
    return (c.model_name == version[0]) & (c.model_version == version[1]) & (c.ts >= lo) & (c.ts < hi)


def versions(conn: sa.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(sa.select(LOG.c.model_name, LOG.c.model_version).distinct()).all()
    return sorted(((r[0], r[1]) for r in rows), key=lambda r: (r[0], int(r[1]) if r[1].isdigit() else -1), reverse=True)


def daily(conn: sa.Connection, where: Any) -> pd.DataFrame:
    """Predictions and mean latency per UTC day."""
    day = sa.func.date(LOG.c.ts).label("day")
    q = (
        sa.select(day, sa.func.count().label("predictions"), sa.func.avg(LOG.c.latency_ms).label("latency_ms"))
        .where(where)
        .group_by(day)
        .order_by(day)
    )
    df = pd.DataFrame(conn.execute(q).all(), columns=["day", "predictions", "latency_ms"])
    df["day"] = pd.to_datetime(df["day"])
    return df


def latency_percentiles(conn: sa.Connection, where: Any) -> dict[str, float] | None:
    """p50/p95 latency in the database (Postgres's percentile_cont); None where the database has none."""
    if conn.dialect.name != "postgresql":
        return None
    pct = [sa.func.percentile_cont(p).within_group(LOG.c.latency_ms) for p in (0.5, 0.95)]
    row = conn.execute(sa.select(*pct).where(where)).one()
    return {"p50": row[0], "p95": row[1]} if row[0] is not None else None


def risk_mix(conn: sa.Connection, where: Any) -> dict[str, int]:
    q = sa.select(LOG.c.risk_level, sa.func.count()).where(where).group_by(LOG.c.risk_level)
    return {r[0]: int(r[1]) for r in conn.execute(q).all()}


def drift_counts(
    conn: sa.Connection, version: tuple[str, str], start: date, end: date, reference: dict[str, Any], rows: int
) -> dict[str, dict[str, Any]]:
    """Per feature: current counts in the reference's bins (or categories) and missing values, in ONE scan.

    The inner query extracts each feature from the JSON once; OFFSET 0 keeps the planner from inlining it into
    every bin's CASE (which would re-parse the JSON per bin). On Postgres, windows larger than DRIFT_SAMPLE_ROWS
    are read through TABLESAMPLE BERNOULLI with a fixed seed (same sample on every reload)."""
    feats = reference["features"]
    table: Any = LOG
    if conn.dialect.name == "postgresql" and rows > DRIFT_SAMPLE_ROWS:
        table = LOG.tablesample(sa.func.bernoulli(100.0 * DRIFT_SAMPLE_ROWS / rows), seed=sa.literal(7))
    cols = []
    for j, (name, ref) in enumerate(feats.items()):
        value = table.c.features[name]
        cols.append((value.as_string() if ref["type"] == "categorical" else value.as_float()).label(f"f{j}"))
    sub = sa.select(*cols).where(window(version, start, end, table)).offset(0).subquery()
    aggs, keys = [], []
    for j, (name, ref) in enumerate(feats.items()):
        col = sub.c[f"f{j}"]
        aggs.append(sa.func.sum(sa.case((col.is_(None), 1), else_=0)))
        keys.append((name, "missing", None))
        if ref["type"] == "categorical":
            conds = [col == c for c in ref["categories"]]
        else:
            edges = ref["edges"]
            bounds = [None, *edges, None]
            conds = []
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                parts = (
                    [col.is_not(None)]
                    + ([col >= lo] if lo is not None else [])
                    + ([col < hi] if hi is not None else [])
                )
                conds.append(sa.and_(*parts))
        for k, cond in enumerate(conds):
            aggs.append(sa.func.sum(sa.case((cond, 1), else_=0)))
            keys.append((name, "bin", k))
    row = conn.execute(sa.select(sa.func.count(), *aggs).select_from(sub)).one()
    n = int(row[0])
    out: dict[str, dict[str, Any]] = {name: {"n": n, "missing": 0, "counts": []} for name in feats}
    for (name, kind, _), v in zip(keys, row[1:], strict=True):
        if kind == "missing":
            out[name]["missing"] = int(v or 0)
        else:
            out[name]["counts"].append(int(v or 0))
    for name in out:
        out[name]["counts"] = np.array(out[name]["counts"])
    return out


def outcomes(conn: sa.Connection, where: Any) -> pd.DataFrame:
    """(probability, diabetes) of the window's predictions with a confirmed outcome (at most MAX_OUTCOMES)."""
    joined = LOG.join(OUTCOME, (OUTCOME.c.request_id == LOG.c.request_id) & (OUTCOME.c.row == LOG.c.row))
    q = sa.select(LOG.c.probability, OUTCOME.c.diabetes).select_from(joined).where(where).limit(MAX_OUTCOMES)
    return pd.DataFrame(conn.execute(q).all(), columns=["probability", "diabetes"])
