"""Modelo: the model card read from the registry, every version and its aliases, and what the API serves now."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from common.backend import redact
from ui import api, components, registry, spec
from ui.i18n import calibration_name, current_lang, t
from ui.settings import load

settings = load()
lang = current_lang()

st.title(t("model_title"))

# ---- what the API serves right now (health is never cached: that is the point of this box) ----------------
served: dict[str, Any] = {}
try:
    health = api.health(settings.api_base_url)
    served = health.get("model") or {}
    if health.get("status") == "down" or not served.get("version"):
        st.error(t("api_no_model", url=settings.api_base_url), icon=":material/cloud_off:")
    else:
        st.success(
            t("served_now", name=served.get("name", ""), version=served.get("version"), alias=served.get("alias", "")),
            icon=":material/check_circle:",
        )
        if health.get("status") == "degraded":
            st.warning(t("api_degraded"), icon=":material/warning:")
except api.ApiError:
    st.error(t("api_down", url=settings.api_base_url), icon=":material/cloud_off:")
served_version = str(served.get("version") or "")

info: dict[str, Any] | None = None
if served_version:
    try:
        info = api.model_info(settings.api_base_url)
    except api.ApiError:
        info = None

# ---- the registry ----------------------------------------------------------------------------------------
try:
    versions = registry.versions(settings.tracking_uri, settings.model_name)
except registry.ModelNotFound:
    st.error(
        t("registry_no_model", name=settings.model_name, uri=redact(settings.tracking_uri)), icon=":material/database:"
    )
    st.stop()
except registry.RegistryError:
    st.error(t("registry_down", uri=redact(settings.tracking_uri)), icon=":material/database:")
    st.stop()
if not versions:
    st.error(
        t("registry_no_model", name=settings.model_name, uri=redact(settings.tracking_uri)), icon=":material/database:"
    )
    st.stop()

by_version = {v["version"]: v for v in versions}
champion = next((v["version"] for v in versions if settings.model_alias in v["aliases"]), None)
if served_version and champion and served_version != champion:
    st.warning(
        t("served_not_alias", served=served_version, alias=settings.model_alias, version=champion),
        icon=":material/warning:",
    )


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else ""


# The API and this page may read different registries (a misconfigured URI, or a stale API cache): the same
# version number then hides a different model. The run id tells them apart.
served_run = str((info or {}).get("run_id") or "")
registry_run = str(by_version.get(served_version, {}).get("run_id") or "")
if served_run and served_run != registry_run:
    st.warning(t("served_other_registry", version=served_version), icon=":material/warning:")

gate_labels = {"passed": t("gate_passed"), "failed": t("gate_failed")}
st.subheader(t("versions_title"))
st.dataframe(
    pd.DataFrame(
        [
            {
                t("version"): v["version"],
                t("aliases"): ", ".join(v["aliases"]),
                t("serving_col"): "✓" if v["version"] == served_version else "",
                t("created"): _when(v["created_ms"]),
                "ROC AUC": v["tags"].get("roc_auc", ""),
                "Brier": v["tags"].get("brier", ""),
                t("errors_col"): v["tags"].get("errors", ""),
                t("gate"): gate_labels.get(v["tags"].get("gate", ""), ""),
                t("gate_reasons"): v["tags"].get("gate_reasons", ""),
            }
            for v in versions
        ]
    ),
    hide_index=True,
    key="versions_table",
)

# ---- one version's card -----------------------------------------------------------------------------------
default = served_version if served_version in by_version else champion or versions[0]["version"]
options = [v["version"] for v in versions]


def _version_label(version: str) -> str:
    v = by_version[version]
    tags = [*v["aliases"], *([t("serving_now_short")] if version == served_version else [])]
    return f"v{version}" + (f" · {', '.join(tags)}" if tags else "")


selected = st.selectbox(
    t("select_version"), options, index=options.index(default), format_func=_version_label, key="card_version"
)
mv = by_version[selected]
try:
    run = registry.run_data(settings.tracking_uri, mv["run_id"]) if mv["run_id"] else {"metrics": {}, "params": {}}
    card_md = registry.run_artifact(settings.tracking_uri, mv["run_id"], "model_card.md") if mv["run_id"] else None
except registry.RegistryError:
    st.error(t("registry_down", uri=redact(settings.tracking_uri)), icon=":material/database:")
    st.stop()
# The spec stored with the version; for the served version /model/info carries the same fields.
mspec = registry.model_spec(settings.tracking_uri, settings.model_name, selected)
if mspec is None and info is not None and str(info.get("version")) == selected:
    mspec = info
mspec = mspec or {}
metrics = run["metrics"]
params = run["params"]


def _section(md: str, heading: str) -> str:
    """One `## heading` section of the registered model card (the card is written in English by the pipeline)."""
    match = re.search(rf"^## {re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", md, flags=re.S | re.M)
    return match.group(1).strip() if match else ""


st.header(t("card_title", name=settings.model_name, version=selected))
st.subheader(t("intended_use_title"))
st.markdown(t("intended_use_text"))

st.subheader(t("population_title"))
n_train = mspec.get("n_train") or params.get("n_train", "?")
n_test = mspec.get("n_test") or params.get("n_test", "?")
st.markdown(
    t("population_text", dataset=mspec.get("dataset") or params.get("dataset", "?"), n_train=n_train, n_test=n_test)
)
card = card_md.decode("utf-8", errors="replace") if card_md else ""
population = mspec.get("description") or _section(card, "Population and data")
if population:
    st.markdown(f"> {population}")
    st.caption(t("registry_text_english"))
st.caption(
    t(
        "model_details",
        family=mspec.get("family") or params.get("chosen_family", "?"),
        calibration=calibration_name(mspec.get("calibration") or params.get("chosen_calibration", "?"), lang),
        checksum=(mspec.get("data_checksum") or mv["tags"].get("data_checksum", "?"))[:12],
        commit=(mspec.get("git_commit") or mv["tags"].get("git_commit", "?"))[:12],
    )
)

# ---- held-out metrics beside the baselines ----------------------------------------------------------------
st.subheader(t("metrics_title", n=n_test))
held = mspec.get("metrics") or {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
base = mspec.get("baselines") or {k: v for k, v in metrics.items() if k.startswith("baseline_")}
published: dict[str, dict[str, Any]] = mspec.get("published_baselines") or {}
rows = [
    ("roc_auc", "ROC AUC"),
    ("brier", "Brier"),
    ("errors", t("errors_col")),
    ("pr_auc", "PR AUC"),
    ("sensitivity", t("sensitivity")),
    ("specificity", t("specificity")),
    ("calibration_slope", t("calibration_slope")),
    ("calibration_intercept", t("calibration_intercept")),
]


def _num(x: Any, key: str) -> str:
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return "—"
    return f"{int(x)}" if key == "errors" else f"{float(x):.3f}"


columns: dict[str, list[str]] = {t("this_model", version=selected): [_num(held.get(k), k) for k, _ in rows]}
columns[t("baseline_logreg_recomputed")] = [
    _num(base.get(f"baseline_logreg_{k}"), k) if k in ("roc_auc", "brier", "errors") else "—" for k, _ in rows
]
columns[t("baseline_glucose_recomputed")] = [
    _num(base.get("baseline_glucose_roc_auc"), k) if k == "roc_auc" else "—" for k, _ in rows
]
for source, vals in published.items():
    columns[t("published", source=source)] = [_num(vals.get(k), k) for k, _ in rows]
st.dataframe(pd.DataFrame(columns, index=[label for _, label in rows]), key="metrics_table")
st.caption(t("metrics_help"))
if not published:
    st.caption(t("published_unavailable"))

components.uncertainty_and_subgroups(mspec, rows)  # 95 % intervals and subgroups (issue 12)

# ---- plots from the run's artifacts -----------------------------------------------------------------------
st.subheader(t("plots_title"))
c1, c2 = st.columns(2)
for col, path, caption in ((c1, "plots/roc.png", t("roc_caption")), (c2, "plots/calibration.png", t("calib_caption"))):
    with col:
        try:
            png = registry.run_artifact(settings.tracking_uri, mv["run_id"], path) if mv["run_id"] else None
        except registry.RegistryError:
            png = None
        if png:
            st.image(png, caption=caption, width="stretch")
        else:
            st.info(t("plot_missing", path=path))

# ---- inputs and bands, then the limits and the full registered card ----------------------------------------
features = mspec.get("features") or []
if features:
    st.subheader(t("inputs_title"))
    st.dataframe(
        pd.DataFrame(
            [
                {
                    t("feature"): spec.label(f, lang),
                    t("valid_range_col"): spec.range_text(f, lang),
                    t("required_col"): t("no") if f.get("optional") else t("yes"),
                }
                for f in features
            ]
        ),
        hide_index=True,
    )
bands = mspec.get("risk_bands") or []
if bands:
    lower = 0.0
    parts = []
    for b in bands:
        parts.append(f"{spec.localized(b.get('label'), lang)}: {lower:.0%}–{float(b['upper']):.0%}")
        lower = float(b["upper"])
    st.caption(t("bands_text", bands=" · ".join(parts), threshold=f"{float(mspec.get('threshold', 0.5)):.0%}"))

st.subheader(t("limits_title"))
st.markdown(t("limits_text"))
if card:
    with st.expander(t("full_card")):
        st.markdown(card)
