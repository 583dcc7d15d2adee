"""The monitoring run's HTML report: one self-contained page (no scripts, no external assets)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

COLORS = {"ok": "#2e7d32", "warn": "#f9a825", "alert": "#c62828", "no-data": "#777777"}


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else escape(str(v))


def _bars(ref: list[float], cur: list[float]) -> str:
    """Reference (grey) and current (blue) share per bin, side by side."""
    cells = []
    for r, c in zip(ref, cur or [0.0] * len(ref), strict=False):
        cells.append(
            f'<span style="display:inline-block;width:6px;height:{r * 60:.0f}px;background:#bbb"></span>'
            f'<span style="display:inline-block;width:6px;height:{c * 60:.0f}px;background:#1565c0;'
            'margin-right:3px"></span>'
        )
    return f'<div style="display:flex;align-items:flex-end;height:62px">{"".join(cells)}</div>'


def html_report(result: dict[str, Any], name: str, version: str, days: int) -> str:
    m = result["metrics"]
    verdict = result["verdict"]
    rows = []
    for feat, d in result["features"].items():
        psi = d["psi"]
        level = "alert" if feat in result["flagged"] and verdict == "alert" and psi == max(
            x["psi"] for x in result["features"].values()
        ) else ("warn" if feat in result["flagged"] else "ok")  # fmt: skip
        rows.append(
            f"<tr><td>{escape(feat)}</td><td style='color:{COLORS[level]}'>{_fmt(psi)}</td>"
            f"<td>{escape(d['test'])} {_fmt(d['pvalue'])}</td><td>{_fmt(d['reference_missing_rate'])} → "
            f"{_fmt(d['missing_rate'])}</td><td>{_bars(d['reference'], d['current'])}</td></tr>"
        )
    outcome = "".join(
        f"<tr><td>{escape(k)}</td><td>{_fmt(m.get(f'outcome_{k}'))}</td>"
        f"<td>{_fmt(m.get(f'outcome_{k}_ci_low'))} – {_fmt(m.get(f'outcome_{k}_ci_high'))}</td></tr>"
        for k in ("auc", "brier", "calibration_slope", "sensitivity", "specificity")
    )
    mix = ", ".join(f"{escape(k[len('risk_level_share_'):])} {v:.1%}" for k, v in m.items()
                    if k.startswith("risk_level_share_"))  # fmt: skip
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Monitoring {escape(name)} v{escape(version)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>{escape(name)} version {escape(version)}: <span style="color:{COLORS[verdict]}">{escape(verdict)}</span></h1>
<p>Last {days} days: {m["prediction_count"]} predictions. Risk levels: {mix or "–"}.
Prediction drift PSI {_fmt(m.get("prediction_drift_psi"))}; latency p50 {_fmt(m.get("latency_p50_ms"))} ms.</p>
<h2>Input drift against the training data</h2>
<p>Bars: reference share per training-quantile bin (grey) and current share (blue).</p>
<table><tr><th>Feature</th><th>PSI</th><th>Test p-value</th><th>Missing (ref → now)</th><th>Distribution</th></tr>
{"".join(rows)}</table>
<h2>Performance on confirmed outcomes (n = {m.get("outcome_n", 0)})</h2>
<table><tr><th>Metric</th><th>Value</th><th>95 % CI</th></tr>{outcome}</table>
</body></html>"""
