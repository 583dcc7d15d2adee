"""Modelo: the model card read from the registry, every version and its aliases, and what the API serves now.

The card is written here, in the app's language, from the structured spec stored inside each version
(``model.json``: features, bands, metrics, baselines) and the run's metrics; the pipeline's English markdown
card stays in the registry for data scientists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from common.backend import redact
from ui import api, components, registry, spec
from ui.i18n import calibration_name, current_lang, t
from ui.settings import Settings, load


def metric_rows() -> list[tuple[str, str]]:
    """Rows of the metrics table: (metric key, label); ROC AUC, Brier and PR AUC read the same in both."""
    return [
        ("roc_auc", "ROC AUC"),
        ("brier", "Brier"),
        ("errors", t("errors_col")),
        ("pr_auc", "PR AUC"),
        ("sensitivity", t("sensitivity")),
        ("specificity", t("specificity")),
        ("calibration_slope", t("calibration_slope")),
        ("calibration_intercept", t("calibration_intercept")),
    ]


def served_now(settings: Settings) -> tuple[str, dict[str, Any] | None]:
    """The version the API serves right now (health is never cached: that is the point of this box), and its
    /model/info; ("", None) when the API is down or has no model."""
    served: dict[str, Any] = {}
    try:
        health = api.health(settings.api_base_url)
        served = health.get("model") or {}
        if health.get("status") == "down" or not served.get("version"):
            st.error(t("api_no_model", url=settings.api_base_url), icon=":material/cloud_off:")
        else:
            st.success(
                t("served_now", name=served.get("name", ""), version=served["version"], alias=served.get("alias", "")),
                icon=":material/check_circle:",
            )
            if health.get("status") == "degraded":
                st.warning(t("api_degraded"), icon=":material/warning:")
    except api.ApiError:
        st.error(t("api_down", url=settings.api_base_url), icon=":material/cloud_off:")
    version = str(served.get("version") or "")
    if not version:
        return "", None
    try:
        return version, api.model_info(settings.api_base_url)
    except api.ApiError:
        return version, None


def registry_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every registered version, newest first; a banner and the page stops when there is none to show."""
    uri = redact(settings.tracking_uri)
    try:
        versions = registry.versions(settings.tracking_uri, settings.model_name)
    except registry.ModelNotFound:
        versions = []
    except registry.RegistryError:
        st.error(t("registry_down", uri=uri), icon=":material/database:")
        st.stop()
    if not versions:
        st.error(t("registry_no_model", name=settings.model_name, uri=uri), icon=":material/database:")
        st.stop()
    return versions


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else ""


def _tag_number(text: str, lang: str) -> str:
    """A metric recorded as a tag (text), with the language's decimal separator."""
    try:
        return spec.decimal(float(text), lang, 3)
    except ValueError:
        return text


def versions_table(versions: list[dict[str, Any]], served_version: str, lang: str) -> None:
    gate_labels = {"passed": t("gate_passed"), "failed": t("gate_failed")}
    st.subheader(t("versions_title"))
    rows = [
        {
            t("version"): v["version"],
            t("aliases"): ", ".join(v["aliases"]),
            t("serving_col"): "✓" if v["version"] == served_version else "",
            t("created"): _when(v["created_ms"]),
            "ROC AUC": _tag_number(v["tags"].get("roc_auc", ""), lang),
            "Brier": _tag_number(v["tags"].get("brier", ""), lang),
            t("errors_col"): v["tags"].get("errors", ""),
            t("gate"): gate_labels.get(v["tags"].get("gate", ""), ""),
            t("gate_reasons"): components.gate_reasons(v["tags"], lang),
        }
        for v in versions
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="versions_table")


def pick_version(versions: list[dict[str, Any]], served_version: str, champion: str | None) -> dict[str, Any]:
    by_version = {v["version"]: v for v in versions}
    default = served_version if served_version in by_version else champion or versions[0]["version"]
    options = list(by_version)

    def label(version: str) -> str:
        v = by_version[version]
        tags = [*v["aliases"], *([t("serving_now_short")] if version == served_version else [])]
        return f"v{version}" + (f" · {', '.join(tags)}" if tags else "")

    selected = st.selectbox(
        t("select_version"), options, index=options.index(default), format_func=label, key="card_version"
    )
    return by_version[selected]


def card_sources(settings: Settings, mv: dict[str, Any], info: dict[str, Any] | None) -> tuple[dict, dict]:
    """(the run's metrics and params, the spec stored with the version); for the served version /model/info
    carries the same fields when the registry copy cannot be read."""
    try:
        run = registry.run_data(settings.tracking_uri, mv["run_id"]) if mv["run_id"] else {"metrics": {}, "params": {}}
    except registry.RegistryError:
        st.error(t("registry_down", uri=redact(settings.tracking_uri)), icon=":material/database:")
        st.stop()
    mspec = registry.model_spec(settings.tracking_uri, settings.model_name, mv["version"])
    if mspec is None and info is not None and str(info.get("version")) == mv["version"]:
        mspec = info
    return run, mspec or {}


def card_header(settings: Settings, mv: dict[str, Any], mspec: dict[str, Any], params: dict, lang: str) -> None:
    st.header(t("card_title", name=settings.model_name, version=mv["version"]))
    st.subheader(t("intended_use_title"))
    st.markdown(t("intended_use_text"))
    st.subheader(t("population_title"))
    st.markdown(
        t(
            "population_text",
            dataset=mspec.get("dataset") or params.get("dataset", "?"),
            n_train=mspec.get("n_train") or params.get("n_train", "?"),
            n_test=mspec.get("n_test") or params.get("n_test", "?"),
        )
    )
    description = mspec.get("description")
    if description:
        st.markdown(f"> {spec.localized(description, lang)}")
        if not isinstance(description, dict) and lang != "en":  # a dataset config without a translation
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


def metrics_table(version: str, mspec: dict[str, Any], metrics: dict[str, float], lang: str) -> None:
    """Held-out metrics beside the recomputed and published baselines."""
    held = mspec.get("metrics") or {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
    base = mspec.get("baselines") or {k: v for k, v in metrics.items() if k.startswith("baseline_")}
    published: dict[str, dict[str, Any]] = mspec.get("published_baselines") or {}

    def num(x: Any, key: str) -> str:
        if x is None or (isinstance(x, float) and pd.isna(x)):
            return "—"
        return f"{int(x)}" if key == "errors" else spec.decimal(float(x), lang, 3)

    rows = metric_rows()
    keys = [k for k, _ in rows]
    columns = {t("this_model", version=version): [num(held.get(k), k) for k in keys]}
    columns[t("baseline_logreg_recomputed")] = [
        num(base.get(f"baseline_logreg_{k}"), k) if k in ("roc_auc", "brier", "errors") else "—" for k in keys
    ]
    columns[t("baseline_glucose_recomputed")] = [
        num(base.get("baseline_glucose_roc_auc"), k) if k == "roc_auc" else "—" for k in keys
    ]
    for source, vals in published.items():
        columns[t("published", source=source)] = [num(vals.get(k), k) for k in keys]
    st.dataframe(pd.DataFrame(columns, index=[label for _, label in rows]), key="metrics_table")
    st.caption(t("metrics_help"))
    if not published:
        st.caption(t("published_unavailable"))


def plots(settings: Settings, mv: dict[str, Any], mspec: dict[str, Any]) -> None:
    st.subheader(t("plots_title"))
    if components.curve_charts(mspec.get("curves")):  # drawn here, in the reader's language
        return
    for col, path, caption in zip(
        st.columns(2), ("plots/roc.png", "plots/calibration.png"), (t("roc_caption"), t("calib_caption")), strict=True
    ):
        with col:
            try:
                png = registry.run_artifact(settings.tracking_uri, mv["run_id"], path) if mv["run_id"] else None
            except registry.RegistryError:
                png = None
            if png:
                st.image(png, caption=caption, width="stretch")
            else:
                st.info(t("plot_missing", path=path))


def inputs_and_bands(mspec: dict[str, Any], lang: str) -> None:
    features = mspec.get("features") or []
    if features:
        st.subheader(t("inputs_title"))
        rows = [
            {
                t("feature"): spec.label(f, lang),
                t("valid_range_col"): spec.range_text(f, lang),
                t("required_col"): t("no") if f.get("optional") else t("yes"),
            }
            for f in features
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    bands = mspec.get("risk_bands") or []
    if bands:
        lower, parts = 0.0, []
        for b in bands:
            upper = float(b["upper"])
            limits = f"{spec.format_percent(lower, lang)}–{spec.format_percent(upper, lang)}"
            parts.append(f"{spec.localized(b.get('label'), lang)}: {limits}")
            lower = upper
        threshold = spec.format_percent(float(mspec.get("threshold", 0.5)), lang)
        st.caption(t("bands_text", bands=" · ".join(parts), threshold=threshold))


def main() -> None:
    settings = load()
    lang = current_lang()
    st.title(t("model_title"))
    served_version, info = served_now(settings)
    versions = registry_versions(settings)
    champion = next((v["version"] for v in versions if settings.model_alias in v["aliases"]), None)
    if served_version and champion and served_version != champion:
        st.warning(
            t("served_not_alias", served=served_version, alias=settings.model_alias, version=champion),
            icon=":material/warning:",
        )
    # The API and this page may read different registries (a misconfigured URI, or a stale API cache): the
    # same version number then hides a different model. The run id tells them apart.
    served_run = str((info or {}).get("run_id") or "")
    registry_run = next((str(v["run_id"] or "") for v in versions if v["version"] == served_version), "")
    if served_run and served_run != registry_run:
        st.warning(t("served_other_registry", version=served_version), icon=":material/warning:")

    versions_table(versions, served_version, lang)
    mv = pick_version(versions, served_version, champion)
    run, mspec = card_sources(settings, mv, info)
    card_header(settings, mv, mspec, run["params"], lang)
    st.subheader(t("metrics_title", n=mspec.get("n_test") or run["params"].get("n_test", "?")))
    metrics_table(mv["version"], mspec, run["metrics"], lang)
    components.uncertainty_and_subgroups(mspec, metric_rows())  # 95 % intervals and subgroups
    plots(settings, mv, mspec)
    inputs_and_bands(mspec, lang)
    st.subheader(t("limits_title"))
    st.markdown(t("limits_text"))


main()
