"""Evaluación individual: a form generated from the served model's feature spec, scored by the API."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import api, components, spec
from ui.i18n import current_lang, t
from ui.settings import load

settings = load()
lang = current_lang()

st.title(t("individual_title"))
st.caption(t("individual_intro"))

info = components.served_model_info(settings.api_base_url)

features: list[spec.Feature] = info["features"]
bands: list[dict[str, Any]] = info.get("risk_bands") or []


def feature_widget(f: spec.Feature) -> Any:
    """One input per feature; optional ones get a "not measured" checkbox that disables the input."""
    name = f["name"]
    help_text = spec.localized(f.get("help"), lang)
    rng = spec.range_text(f, lang)
    if rng:
        help_text = f"{help_text}  \n{t('valid_range', range=rng)}".strip()
    disabled = bool(f.get("optional")) and bool(st.session_state.get(f"nm_{name}", False))
    if f.get("type") == "categorical":
        cats = [str(c) for c in (f.get("categories") or [])]
        value = st.selectbox(
            spec.label(f, lang), cats, index=None, key=f"feat_{name}", help=help_text or None, disabled=disabled
        )
    else:
        value = st.number_input(
            spec.label(f, lang),
            value=None,
            key=f"feat_{name}",
            help=help_text or None,
            placeholder=t("optional_placeholder") if f.get("optional") else t("required_placeholder"),
            disabled=disabled,
            **spec.number_input_args(f),
        )
    if f.get("optional"):
        st.checkbox(t("not_measured"), key=f"nm_{name}")
    return None if disabled else value


# Plain widgets rather than st.form: the "not measured" checkbox must disable its input as soon as it is ticked.
cols = st.columns(2)
payload: dict[str, Any] = {}
not_measured: set[str] = set()
for i, f in enumerate(features):
    with cols[i % 2]:
        value = feature_widget(f)
    if value is None:
        if f.get("optional"):
            not_measured.add(f["name"])  # left out of the request: the model imputes it
        continue
    payload[f["name"]] = value

submitted = st.button(t("submit"), type="primary", key="submit")
if submitted:
    try:
        body = components.predict_with_interval(settings, [payload], lang)
        st.session_state["individual_result"] = {"payload": payload, "body": body}
    except api.ApiError as exc:
        st.session_state.pop("individual_result", None)
        components.api_error(exc, settings.api_base_url, features)

result = st.session_state.get("individual_result")
if result and result["payload"] != payload:
    result = None  # the inputs changed since the last calculation: never show a stale risk
if result:
    body = result["body"]
    pred = body["predictions"][0]
    served = str((body.get("model") or {}).get("version", ""))
    if served and served != str(info.get("version")):
        api.model_info.clear()  # the API switched model version: regenerate the form from the new spec
    st.divider()
    st.subheader(t("result_title"))
    c1, c2, c3 = st.columns(3)
    c1.metric(t("probability"), spec.format_probability(float(pred["probability"])))
    if pred.get("probability_low") is not None:
        c1.caption(
            t(
                "interval_caption",
                low=spec.format_probability(float(pred["probability_low"])),
                high=spec.format_probability(float(pred["probability_high"])),
            ),
            help=t("interval_help"),
        )
    with c2:
        st.markdown(f"**{t('risk_band')}**")
        components.risk_badge(spec.band_for(bands, str(pred.get("risk_level"))), str(pred.get("risk_level")))
    threshold = info.get("threshold", 0.5)
    c3.metric(
        t("label"),
        t("label_positive") if int(pred.get("label", 0)) == 1 else t("label_negative"),
        help=t("label_help", threshold=spec.format_probability(float(threshold))),
    )
    if pred.get("probability_low") is not None:
        components.interval_chart(pred, bands)
    st.markdown(f"**{t('contributions_title')}**")
    if isinstance(pred.get("contributions"), dict):
        components.contributions_chart(pred["contributions"], features, not_measured)
        if pred.get("baseline") is not None:
            st.caption(t("contributions_help", reference=spec.format_probability(components.sigmoid(pred["baseline"]))))
    st.caption(
        t("model_version_used", name=(body.get("model") or {}).get("name", info.get("name", "")), version=served)
    )
components.disclaimer()
