"""Evaluación individual: a form generated from the served model's feature spec, scored by the API.

Numbers are typed as text and read by ui/rules.py, not by st.number_input: the browser's number field turns
«33,6» into 336 and silently keeps the previous value when one is out of range (with an English message), so a
clinician could see a risk computed from values that are no longer on screen.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import api, components, rules, spec
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
    """One input per feature, returned as typed; optional ones get a "not measured" checkbox that disables it."""
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
        value = st.text_input(
            spec.label(f, lang),
            key=f"feat_{name}",
            help=help_text or None,
            placeholder=t("optional_placeholder") if f.get("optional") else t("required_placeholder"),
            disabled=disabled,
        )
    if f.get("optional"):
        st.checkbox(t("not_measured"), key=f"nm_{name}")
    return None if disabled else value


def read_form() -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """(the request's patient, {field: broken rule}, optional fields left out). Whole numbers are sent as ints."""
    cols = st.columns(2)
    payload: dict[str, Any] = {}
    problems: dict[str, str] = {}
    not_measured: set[str] = set()
    for i, f in enumerate(features):
        with cols[i % 2]:
            value, rule = rules.check(f, feature_widget(f))
        if rule is not None:
            problems[f["name"]] = rule
        elif value is None:
            not_measured.add(f["name"])  # left out of the request: the model imputes it
        else:
            payload[f["name"]] = int(value) if f.get("integer") else value
    return payload, problems, not_measured


def show_problems(problems: dict[str, str]) -> None:
    by_name = {f["name"]: f for f in features}
    lines = [
        f"- **{spec.label(by_name[name], lang)}**: {components.problem_text(rule, by_name[name])}"
        for name, rule in problems.items()
    ]
    st.error(t("fix_fields") + "\n\n" + "\n".join(lines), icon=":material/edit:")


def show_result(result: dict[str, Any], not_measured: set[str]) -> None:
    body = result["body"]
    pred = body["predictions"][0]
    served = str((body.get("model") or {}).get("version", ""))
    if served and served != str(info.get("version")):
        api.model_info.clear()  # the API switched model version: regenerate the form from the new spec
    st.divider()
    st.subheader(t("result_title"))
    c1, c2, c3 = st.columns(3)
    c1.metric(t("probability"), spec.format_probability(float(pred["probability"]), lang))
    if pred.get("probability_low") is not None:
        c1.caption(
            t(
                "interval_caption",
                low=spec.format_probability(float(pred["probability_low"]), lang),
                high=spec.format_probability(float(pred["probability_high"]), lang),
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
        help=t("label_help", threshold=spec.format_probability(float(threshold), lang)),
    )
    if pred.get("probability_low") is not None:
        components.interval_chart(pred, bands)
    st.markdown(f"**{t('contributions_title')}**")
    if isinstance(pred.get("contributions"), dict):
        components.contributions_chart(pred["contributions"], features, not_measured)
        if pred.get("baseline") is not None:
            reference = spec.format_probability(components.sigmoid(pred["baseline"]), lang)
            st.caption(t("contributions_help", reference=reference))
    st.caption(
        t("model_version_used", name=(body.get("model") or {}).get("name", info.get("name", "")), version=served)
    )
    if body.get("request_id"):  # the key to send the confirmed diagnosis with (batch page, second tab)
        st.caption(t("request_reference", request_id=body["request_id"]))


# Plain widgets rather than st.form: the "not measured" checkbox must disable its input as soon as it is ticked.
payload, problems, not_measured = read_form()
if st.button(t("submit"), type="primary", key="submit"):
    st.session_state.pop("individual_result", None)  # whatever happens next, the previous risk is gone
    if problems:
        show_problems(problems)
    else:
        try:
            body = components.predict_with_interval(settings, [payload], lang)
            st.session_state["individual_result"] = {"payload": payload, "body": body}
        except api.ApiError as exc:
            components.api_error(exc, settings.api_base_url, features)

result = st.session_state.get("individual_result")
if result and not problems and result["payload"] == payload:  # never a risk for values no longer on screen
    show_result(result, not_measured)
components.disclaimer()
