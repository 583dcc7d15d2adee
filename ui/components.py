"""Small rendering helpers shared by the pages."""

from __future__ import annotations

import html
import json
import math
from typing import Any

import streamlit as st

from ui import spec
from ui.api import ApiBadResponse, ApiError, ApiUnavailable, ApiValidationError, model_info
from ui.i18n import current_lang, t, tr
from ui.spec import Feature


def served_model_info(base_url: str) -> dict[str, Any]:
    """The API's /model/info for a page; on failure a banner and the page stops (never a traceback)."""
    try:
        return model_info(base_url)
    except ApiError as exc:
        api_error(exc, base_url)
        st.stop()
        raise  # st.stop() raises; this line only satisfies type checkers


def api_error(exc: ApiError, base_url: str, features: list[Feature] | None = None) -> None:
    """One clear message per kind of failure; never a traceback."""
    if isinstance(exc, ApiValidationError):
        validation_errors(exc.errors, features or [], show_rows=False)
    elif isinstance(exc, ApiBadResponse):
        st.error(t("api_bad_response", url=base_url), icon=":material/warning:")
    elif isinstance(exc, ApiUnavailable) and exc.status == 503:
        st.error(t("api_no_model", url=base_url), icon=":material/cloud_off:")
    elif isinstance(exc, ApiUnavailable) and exc.status is not None:
        st.error(t("api_http_error", url=base_url, status=exc.status), icon=":material/warning:")
    else:
        st.error(t("api_down", url=base_url), icon=":material/cloud_off:")


def field_label(field: str, features: list[Feature]) -> str:
    f = next((f for f in features if f["name"] == field), None)
    return spec.label(f, current_lang()) if f else field


def validation_errors(errors: list[dict[str, Any]], features: list[Feature], show_rows: bool) -> None:
    """The API's 422 errors as readable, field-level messages (the API writes them in our language)."""
    lines = []
    for e in errors:
        row = e.get("row")  # None for errors about the whole request
        where = t("row_n", n=int(row) + 1) + " · " if show_rows and isinstance(row, int) else ""
        message = e.get("message") or e.get("rule") or ""
        lines.append(f"- {where}**{field_label(str(e.get('field', '')), features)}**: {message}")
    st.error(t("fix_fields") + "\n\n" + "\n".join(lines), icon=":material/edit:")


def problem_text(rule: str, feature: Feature | None, detail: str = "") -> str:
    """One broken input rule (ui/rules.py) in the clinician's words; a range is written from the spec, with its
    unit and the language's decimal separator."""
    if rule == "out_of_range" and feature is not None:
        detail = spec.range_text(feature, current_lang())
    return t(f"rule_{rule}", detail=detail)


def gate_reasons(tags: dict[str, str], lang: str) -> str:
    """A version's gate reasons in ``lang``, from the codes pipeline/registry.py records (``gate_reason_codes``);
    versions registered before the codes existed only have the English text, shown as recorded."""
    try:
        codes = json.loads(tags.get("gate_reason_codes") or "null")
    except ValueError:
        codes = None
    if not isinstance(codes, list):
        return tags.get("gate_reasons", "")
    words = []
    for c in codes:
        params = {k: spec.decimal(v, lang, 4) if isinstance(v, float) else v for k, v in c.items() if k != "code"}
        try:
            words.append(tr(f"gate_reason_{c.get('code')}", lang, **params))
        except (KeyError, IndexError):  # a parameter this app does not know yet: say what is recorded
            words.append(str(c.get("code")))
    return "; ".join(words)


def uploader_text() -> None:
    """Streamlit's file uploader writes its button and size hint in English and offers no option to change
    them: hide those two texts and draw ours (the label and help above say the size limit)."""
    button = json.dumps(t("upload_button"))
    st.html(
        "<style>"
        '[data-testid="stFileUploaderDropzoneInstructions"]{display:none}'
        '[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"]{display:none}'
        # Only the button that had a text label: the file's delete button is an icon and stays one.
        f'[data-testid="stFileUploaderDropzone"] button:has([data-testid="stMarkdownContainer"])::after'
        f"{{content:{button}}}"
        "</style>"
    )


def _text_color(hex_color: str) -> str:
    """Black or white text, whichever reads better on the band colour (the amber band needs black)."""
    try:
        r, g, b = (int(hex_color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4))
    except ValueError:
        return "#000000"
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55 else "#ffffff"


def risk_badge(band: dict[str, Any] | None, level: str) -> None:
    if band is None:
        st.markdown(f"**{html.escape(level)}**")
        return
    color = str(band.get("color") or "#777777")
    text = html.escape(spec.localized(band.get("label"), current_lang()) or level)
    st.markdown(
        f'<span data-testid="risk-band" style="background:{html.escape(color)};color:{_text_color(color)};'
        f'padding:0.25em 0.8em;border-radius:0.5em;font-weight:700;font-size:1.2em">{text}</span>',
        unsafe_allow_html=True,
    )


def contributions_chart(contributions: dict[str, float], features: list[Feature], not_measured: set[str]) -> None:
    """Horizontal bars: how much each input moves the log-odds from the reference patient, largest first."""
    # Imported here, not at module top: ~0.7 s the form page does not need before the first result.
    import altair as alt
    import pandas as pd

    lang = current_lang()
    rows = []
    for f in features:
        if f["name"] not in contributions:
            continue
        name = spec.label(f, lang, with_unit=False)
        if f["name"] in not_measured:
            name += f" ({t('not_measured').lower()})"
        value = float(contributions[f["name"]])
        rows.append({"feature": name, "value": value, "effect": t("raises") if value > 0 else t("lowers")})
    if not rows:
        return
    df = pd.DataFrame(rows)
    df["abs"] = df["value"].abs()
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("value:Q", title=t("contribution_axis")),
            y=alt.Y(
                "feature:N", sort=alt.SortField("abs", order="descending"), title=None, axis=alt.Axis(labelLimit=320)
            ),
            color=alt.Color(
                "effect:N",
                scale=alt.Scale(domain=[t("raises"), t("lowers")], range=["#c62828", "#2e7d32"]),
                legend=alt.Legend(title=None, orient="bottom"),
            ),
            tooltip=[
                alt.Tooltip("feature:N", title=t("feature")),
                alt.Tooltip("value:Q", title=t("contribution_axis"), format="+.3f"),
            ],
        )
        .properties(height=36 * len(rows) + 40)
        .configure(locale={"number": NUMBER_LOCALE[lang]})  # axis and tooltip numbers: «0,5» in Spanish
    )
    st.altair_chart(chart, width="stretch")


# Vega's number locale (d3-format) per app language.
NUMBER_LOCALE = {
    "es": {"decimal": ",", "thousands": ".", "grouping": [3], "currency": ["", " €"]},
    "en": {"decimal": ".", "thousands": ",", "grouping": [3], "currency": ["$", ""]},
}


def predict_with_interval(settings: Any, patients: list[dict[str, Any]], lang: str) -> dict[str, Any]:
    """/predict with the 90 % interval; a model version trained before intervals existed refuses the
    flag (422 on the field 'interval'), and is then asked without it."""
    from ui import api

    try:
        return api.predict(settings.api_base_url, patients, lang, settings.api_timeout_s, interval=True)
    except api.ApiValidationError as exc:
        if not exc.errors or any(e.get("field") != "interval" for e in exc.errors):
            raise
    return api.predict(settings.api_base_url, patients, lang, settings.api_timeout_s)


def interval_chart(pred: dict[str, Any], bands: list[dict[str, Any]]) -> None:
    """The probability as a dot, its 90 % interval as a line, over the risk bands' colours."""
    import altair as alt
    import pandas as pd

    lang = current_lang()
    lows = [0.0, *[float(b["upper"]) for b in bands[:-1]]]
    zones = pd.DataFrame(
        [
            {
                "start": lo,
                "end": float(b["upper"]),
                "band": spec.localized(b.get("label"), lang) or b["name"],
                "color": b.get("color", "#777"),
            }
            for lo, b in zip(lows, bands, strict=True)
        ]
    )
    p, lo, hi = float(pred["probability"]), float(pred["probability_low"]), float(pred["probability_high"])
    point = pd.DataFrame([{"p": p, "lo": lo, "hi": hi, "y": 0}])
    x = alt.X("start:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%", title=t("probability")))
    base = (
        alt.Chart(zones)
        .mark_rect(opacity=0.2)
        .encode(
            x=x,
            x2="end:Q",
            color=alt.Color("color:N", scale=None),
            tooltip=[alt.Tooltip("band:N", title=t("risk_band"))],
        )
    )
    rule = alt.Chart(point).mark_rule(strokeWidth=4, color="#333").encode(x="lo:Q", x2="hi:Q")
    dot = (
        alt.Chart(point)
        .mark_circle(size=160, color="#000")
        .encode(
            x="p:Q",
            tooltip=[
                alt.Tooltip("p:Q", format=".1%", title=t("probability")),
                alt.Tooltip("lo:Q", format=".1%", title=t("interval_low")),
                alt.Tooltip("hi:Q", format=".1%", title=t("interval_high")),
            ],  # fmt: skip
        )
    )
    st.altair_chart((base + rule + dot).properties(height=70), width="stretch")


def uncertainty_and_subgroups(mspec: dict[str, Any], rows: list[tuple[str, str]]) -> None:
    """The model page's 95 % intervals of the held-out metrics and its subgroup table (model.json of the
    version; versions trained before intervals existed have neither, and show nothing here)."""
    import pandas as pd

    held, ci = mspec.get("metrics") or {}, mspec.get("metrics_ci") or {}
    if ci:
        st.subheader(t("intervals_title"))
        table = [
            {
                t("metric"): label,
                t("value"): _fmt(held.get(k), k),
                t("interval_95"): f"{_fmt(ci[k][0], k)} – {_fmt(ci[k][1], k)}",
            }
            for k, label in rows
            if k in ci
        ]
        st.dataframe(pd.DataFrame(table), hide_index=True, key="intervals_table")
        st.caption(t("intervals_help"))
    groups = mspec.get("subgroups") or []
    if groups:
        st.subheader(t("subgroups_title"))
        table = []
        for g in groups:
            m, gci = g.get("metrics") or {}, g.get("ci") or {}
            auc = f"{m['roc_auc']:.3f} ({gci['roc_auc'][0]:.3f} – {gci['roc_auc'][1]:.3f})" if m else "—"
            table.append(
                {
                    t("subgroup"): f"{g['feature']} {g['band']}",
                    "n": g["n"],
                    t("cases"): g["events"],
                    "ROC AUC (95 %)": auc,
                    t("flag"): t("flag_below") if g.get("flag") else ("" if m else t("too_few")),
                }
            )
        st.dataframe(pd.DataFrame(table), hide_index=True, key="subgroups_table")
        st.caption(t("subgroups_help"))


def _fmt(x: Any, key: str) -> str:
    return "—" if x is None else f"{float(x):.0f}" if key == "errors" else f"{float(x):.3f}"


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def disclaimer() -> None:
    st.warning(t("disclaimer"), icon=":material/medical_information:")


def curve_charts(curves: dict[str, Any] | None) -> bool:
    """The held-out ROC curve, calibration and decision curve of a version, drawn from the numbers in its
    model.json (``curves``, pipeline/evaluate.py) with this app's labels. False for versions trained before the
    numbers were stored: the page then shows the run's English PNGs."""
    import altair as alt
    import pandas as pd

    try:
        roc = pd.DataFrame({"x": curves["roc"]["fpr"], "y": curves["roc"]["tpr"]})
        cal = pd.DataFrame({"x": curves["calibration"]["predicted"], "y": curves["calibration"]["observed"]})
        dc = curves["decision"]
        net = pd.DataFrame(
            [{"t": th, "nb": v, "who": t(who)} for who, key in (("dc_model", "model"), ("dc_treat_all", "treat_all"),
                                                                  ("dc_treat_none", None))  # fmt: skip
             for th, v in zip(dc["threshold"], dc[key] if key else [0.0] * len(dc["threshold"]), strict=True)]
        )
    except (TypeError, KeyError, ValueError):
        return False
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(strokeDash=[4, 4], color="#888")

    def square(points: Any, x_title: str, y_title: str, mark: Any) -> Any:
        axis = {"scale": alt.Scale(domain=[0, 1])}
        chart = mark(points).encode(
            x=alt.X("x:Q", title=x_title, **axis), y=alt.Y("y:Q", title=y_title, **axis),
            tooltip=[alt.Tooltip("x:Q", format=".2f", title=x_title), alt.Tooltip("y:Q", format=".2f", title=y_title)],
        )  # fmt: skip
        return (diagonal.encode(x="x:Q", y="y:Q") + chart).properties(height=300)

    left, right = st.columns(2)
    with left:
        st.altair_chart(square(roc, t("roc_x"), t("roc_y"), lambda d: alt.Chart(d).mark_line()), width="stretch")
        st.caption(t("roc_caption"))
    with right:
        marks = lambda d: alt.Chart(d).mark_line(point=True)  # noqa: E731 - one-line chart factory
        st.altair_chart(square(cal, t("calib_x"), t("calib_y"), marks), width="stretch")
        st.caption(t("calib_caption"))
    top = max(0.05, float(net["nb"].max()))
    chart = (
        alt.Chart(net)
        .mark_line()
        .encode(
            x=alt.X("t:Q", title=t("dc_x"), axis=alt.Axis(format="%")),
            y=alt.Y("nb:Q", title=t("dc_y"), scale=alt.Scale(domain=[-0.05, top * 1.1], clamp=True)),
            color=alt.Color("who:N", title=None, legend=alt.Legend(orient="bottom"),
                            scale=alt.Scale(domain=[t("dc_model"), t("dc_treat_all"), t("dc_treat_none")],
                                            range=["#c62828", "#1565c0", "#424242"])),  # fmt: skip
            tooltip=[alt.Tooltip("t:Q", format=".0%", title=t("dc_x")),
                     alt.Tooltip("nb:Q", format=".3f", title=t("dc_y")), alt.Tooltip("who:N", title=" ")],
        )  # fmt: skip
        .properties(height=300)
    )
    st.altair_chart(chart, width="stretch")
    st.caption(t("dc_caption"))
    return True
