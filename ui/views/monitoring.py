"""Monitorización: what the model has been doing, from the inference log (read-only): volume per day, latency,
risk-level mix, drift per feature against the training data (traffic light, reference vs current), and
performance on confirmed outcomes with its sample size; by model version and date range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import streamlit as st

from common.backend import redact
from common.inference_db import database_url, make_engine
from monitor import stats
from ui import monitoring_data as data
from ui import registry
from ui.i18n import current_lang, t
from ui.settings import load

settings = load()
lang = current_lang()
TTL_S = 60
LIGHTS = {"ok": "🟢", "warn": "🟡", "alert": "🔴"}
LEVEL_KEYS = {"ok": "mon_level_ok", "warn": "mon_level_warn", "alert": "mon_level_alert"}
METRIC_KEYS = {
    "auc": "mon_metric_auc",
    "brier": "mon_metric_brier",
    "calibration_slope": "mon_metric_calibration_slope",
    "sensitivity": "mon_metric_sensitivity",
    "specificity": "mon_metric_specificity",
}


@st.cache_resource
def _engine(url: str) -> sa.Engine:
    return make_engine(url, read_only=True)


def _run(fn: Any, *args: Any) -> Any:
    with _engine(database_url()).connect() as conn:
        return fn(conn, *args)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _versions() -> list[tuple[str, str]]:
    return _run(data.versions)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _panels(version: tuple[str, str], start: Any, end: Any, reference: dict[str, Any] | None) -> dict[str, Any]:
    def all_panels(conn: sa.Connection) -> dict[str, Any]:
        where = data.window(version, start, end)
        daily = data.daily(conn, where)
        rows = int(daily["predictions"].sum()) if len(daily) else 0
        return {
            "daily": daily,
            "latency": data.latency_percentiles(conn, where),
            "mix": data.risk_mix(conn, where),
            "drift": data.drift_counts(conn, version, start, end, reference, rows) if reference and rows else None,
            "outcomes": data.outcomes(conn, where),
        }

    return _run(all_panels)


st.title(t("mon_title"))
st.caption(t("mon_intro"))
try:
    available = _versions()
except sa.exc.SQLAlchemyError:
    st.error(t("mon_db_down", url=redact(database_url())), icon=":material/database:")
    st.stop()
if not available:
    st.info(t("mon_empty"), icon=":material/info:")
    st.stop()

left, right = st.columns(2)
version = left.selectbox(t("mon_version"), available, format_func=lambda v: f"{v[0]} · v{v[1]}")
today = datetime.now(UTC).date()
picked = right.date_input(t("mon_dates"), value=(today - timedelta(days=30), today), max_value=today)
if not isinstance(picked, tuple | list) or len(picked) != 2:
    st.info(t("mon_pick_range"))
    st.stop()
start, end = picked

doc = registry.model_document(settings.tracking_uri, version[0], version[1])
reference = doc.get("reference_distributions") if doc else None
spec = (doc or {}).get("spec") or {}
try:
    panels = _panels(version, start, end, reference)
except sa.exc.SQLAlchemyError:
    st.error(t("mon_db_down", url=redact(database_url())), icon=":material/database:")
    st.stop()

daily = panels["daily"]
total = int(daily["predictions"].sum()) if len(daily) else 0
n_outcomes = len(panels["outcomes"])
c1, c2, c3 = st.columns(3)
c1.metric(t("mon_predictions"), f"{total:,}")
lat = panels["latency"]
if lat:
    c2.metric(t("mon_latency_p50_p95"), f"{lat['p50']:.1f} / {lat['p95']:.1f} ms")
elif total:
    c2.metric(t("mon_latency_mean"), f"{float(np.average(daily['latency_ms'], weights=daily['predictions'])):.1f} ms")
c3.metric(t("mon_outcomes"), f"{n_outcomes:,}")
if not total:
    st.info(t("mon_no_rows"), icon=":material/info:")
    st.stop()

# ---- volume and latency ------------------------------------------------------------------------------------
st.subheader(t("mon_volume"))
per_day = daily.set_index("day")
st.bar_chart(per_day[["predictions"]].rename(columns={"predictions": t("mon_predictions")}))
st.subheader(t("mon_latency"))
st.line_chart(per_day[["latency_ms"]].rename(columns={"latency_ms": t("mon_latency_ms")}))

# ---- risk-level mix -----------------------------------------------------------------------------------------
st.subheader(t("mon_risk_mix"))
bands = spec.get("risk_bands") or [{"name": k, "label": {lang: k}} for k in panels["mix"]]
mix = pd.DataFrame(
    {
        t("mon_share_now"): [panels["mix"].get(b["name"], 0) / total for b in bands],
        t("mon_share_ref"): [(reference or {}).get("risk_levels", {}).get(b["name"], np.nan) for b in bands],
    },
    index=[b["label"].get(lang, b["name"]) if isinstance(b.get("label"), dict) else b["name"] for b in bands],
)
st.bar_chart(mix, stack=False)

# ---- drift ------------------------------------------------------------------------------------------------------
st.subheader(t("mon_drift"))
if reference is None:
    st.warning(t("mon_no_reference"), icon=":material/warning:")
else:
    th = reference.get("thresholds") or {"psi_warn": 0.1, "psi_alert": 0.25}
    st.caption(t("mon_drift_help", warn=th["psi_warn"], alert=th["psi_alert"]))
    sampled = next(iter(panels["drift"].values()))["n"]
    if sampled < total:
        st.caption(t("mon_drift_sample", n=f"{sampled:,}", total=f"{total:,}"))
    labels = {f["name"]: f["label"].get(lang, f["name"]) for f in spec.get("features", [])}
    summary, charts = [], []
    for name, ref in reference["features"].items():
        cur = panels["drift"][name]
        psi = stats.psi(ref["proportions"], cur["counts"])
        level = "alert" if psi >= th["psi_alert"] else "warn" if psi >= th["psi_warn"] else "ok"
        summary.append(
            {
                t("mon_feature"): labels.get(name, name),
                t("mon_status"): f"{LIGHTS[level]} {t(LEVEL_KEYS[level])}",
                "PSI": round(psi, 3) if np.isfinite(psi) else None,
                t("mon_missing"): f"{ref['missing_rate']:.1%} → {cur['missing'] / max(cur['n'], 1):.1%}",
            }
        )
        if ref["type"] == "categorical":
            index = ref["categories"]
        else:
            e = ref["edges"]
            index = [f"< {e[0]:g}"] + [f"{a:g}–{b:g}" for a, b in zip(e[:-1], e[1:], strict=True)] + [f"≥ {e[-1]:g}"]
        counts = cur["counts"]
        frame = pd.DataFrame(
            {
                t("mon_reference"): ref["proportions"],
                t("mon_current"): counts / counts.sum() if counts.sum() else np.zeros(len(counts)),
            },
            index=pd.Index(index, name=labels.get(name, name)),
        )
        charts.append((f"{LIGHTS[level]} {labels.get(name, name)} · PSI {psi:.3f}", frame))
    st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch")
    for i in range(0, len(charts), 2):
        cols = st.columns(2)
        for col, (title, frame) in zip(cols, charts[i : i + 2], strict=False):
            col.markdown(f"**{title}**")
            col.bar_chart(frame, stack=False, height=220)

# ---- outcomes -----------------------------------------------------------------------------------------------------
st.subheader(t("mon_performance"))
out = panels["outcomes"]
if out.empty:
    st.info(t("mon_no_outcomes"), icon=":material/info:")
else:
    m = stats.outcome_metrics(
        out["diabetes"].astype(int).to_numpy(),
        out["probability"].to_numpy(),
        float(spec.get("threshold", 0.5)),
        boot=200,
    )
    st.caption(t("mon_outcomes_n", n=m["outcome_n"], positives=m["outcome_positives"]))
    rows = []
    for key, label in METRIC_KEYS.items():
        if f"outcome_{key}" in m:
            lo, hi = m.get(f"outcome_{key}_ci_low"), m.get(f"outcome_{key}_ci_high")
            rows.append(
                {
                    t("mon_metric"): t(label),
                    t("mon_value"): round(m[f"outcome_{key}"], 3),
                    t("mon_ci"): f"{lo:.3f} – {hi:.3f}" if lo is not None and hi is not None else "–",
                }
            )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
