"""Streamlit AppTest for each page of the clinicians' app, against the real API and registry (tests/ui_stack.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from tests.conftest import example_patient as patient
from tests.ui_stack import ROOT, Stack, free_port, login_off, ui_stack, wait_http  # noqa: F401 - fixtures
from ui import spec
from ui.i18n import calibration_name, tr
from ui.settings import MLFLOW_HTTP_VARS

APP = str(ROOT / "ui" / "app.py")
TIMEOUT_S = 60  # first runs import pandas/altair/mlflow; later runs take milliseconds


@pytest.fixture(autouse=True, scope="module")
def _restore_mlflow_http_env() -> Iterator[None]:
    """AppTest runs the app in this process, and the app sets MLflow HTTP retry defaults: undo them afterwards
    so other test modules keep MLflow's own defaults."""
    saved = {k: os.environ.get(k) for k in MLFLOW_HTTP_VARS}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def info(ui_stack: Stack) -> dict[str, Any]:  # noqa: F811 - pytest fixture injection
    return requests.get(f"{ui_stack.api_url}/model/info", timeout=10).json()


@pytest.fixture
def app_env(ui_stack: Stack, monkeypatch: pytest.MonkeyPatch, login_off: None) -> Stack:  # noqa: F811
    """AppTest runs the script in this process: point its settings (read from os.environ) at the stack."""
    for key in ("API_HOSTPORT", "MLFLOW_TRACKING_HOSTPORT", "MODEL_NAME", "MODEL_ALIAS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("API_BASE_URL", ui_stack.api_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ui_stack.tracking_uri)
    return ui_stack


def api_predict(stack: Stack, patients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    resp = requests.post(f"{stack.api_url}/predict", json=patients, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"]


def run_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fill(at: AppTest, values: dict[str, Any], lang: str = "es") -> None:
    """Type each value as a clinician of ``lang`` writes it (decimal comma in Spanish)."""
    for name, value in values.items():
        at.text_input(key=f"feat_{name}").set_value(spec.decimal(value, lang))


def probability_shown(at: AppTest, lang: str = "es") -> str | None:
    return next((m.value for m in at.metric if m.label == tr("probability", lang)), None)


# ---- Evaluación individual ---------------------------------------------------------------------------------
def test_form_has_one_widget_per_spec_feature(app_env: Stack, info: dict[str, Any]) -> None:
    at = run_app()
    features = info["features"]
    inputs = [w for w in at.text_input if str(w.key).startswith("feat_")]
    selects = [w for w in at.selectbox if str(w.key).startswith("feat_")]
    # Exactly one widget per feature (the two-column layout orders them column by column).
    assert sorted(w.key for w in [*inputs, *selects]) == sorted(f"feat_{f['name']}" for f in features)
    by_key = {w.key: w for w in inputs}
    for f in features:
        w = by_key[f"feat_{f['name']}"]
        assert w.label == spec.label(f, "es")  # Spanish by default, with the unit
        assert tr("valid_range", "es", range=spec.range_text(f, "es")) in w.help
        assert w.value == ""  # no invented defaults: the clinician types every value
    optional = {f["name"] for f in features if f.get("optional")}
    assert {str(c.key).removeprefix("nm_") for c in at.checkbox if str(c.key).startswith("nm_")} == optional
    assert at.title[0].value == tr("individual_title", "es")


def test_submit_shows_the_api_probability(app_env: Stack, info: dict[str, Any]) -> None:
    values = patient(info["features"])
    expected = api_predict(app_env, [values])[0]
    at = run_app()
    fill(at, values)
    at.button(key="submit").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert probability_shown(at) == spec.format_probability(expected["probability"], "es")
    band = spec.band_for(info["risk_bands"], expected["risk_level"])
    page_md = "\n".join(m.value for m in at.markdown)
    assert spec.localized(band["label"], "es") in page_md and band["color"] in page_md
    assert any(
        tr("model_version_used", "es", name=info["name"], version=info["version"]) == c.value for c in at.caption
    )
    assert at.warning[0].value == tr("disclaimer", "es")
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart"), "contributions chart missing"
    # The 90 % interval from /predict?interval=true, in words under the probability (and drawn as a chart).
    r = requests.post(f"{app_env.api_url}/predict", params={"interval": "true"}, json=[values], timeout=10)
    low, high = (
        spec.format_probability(r.json()["predictions"][0][k], "es") for k in ("probability_low", "probability_high")
    )
    assert tr("interval_caption", "es", low=low, high=high) in [c.value for c in at.caption]
    assert len(at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")) == 2  # interval + contributions


def test_not_measured_leaves_the_field_out(app_env: Stack, info: dict[str, Any]) -> None:
    optional = next(f["name"] for f in info["features"] if f.get("optional"))
    values = patient(info["features"])
    at = run_app()
    fill(at, values)
    at.checkbox(key=f"nm_{optional}").check().run()
    assert at.text_input(key=f"feat_{optional}").disabled
    at.button(key="submit").click().run()
    del values[optional]
    expected = api_predict(app_env, [values])[0]
    assert probability_shown(at) == spec.format_probability(expected["probability"], "es")


def test_api_422_is_shown_per_field(app_env: Stack, info: dict[str, Any]) -> None:
    required = [f for f in info["features"] if not f.get("optional")]
    values = patient(info["features"])
    del values[required[0]["name"]]  # left empty: the API answers 422 for this field
    at = run_app()
    fill(at, values)
    at.button(key="submit").click().run()
    assert not at.exception
    assert not at.metric  # no result
    message = at.error[0].value
    assert spec.label(required[0], "es") in message  # the clinician's label, not the API field name
    assert "obligatorio" in message  # in Spanish
    assert "Traceback" not in message


def _result_then(at: AppTest, info: dict[str, Any], field: str, typed: str) -> AppTest:
    """A valid result on screen, then ``typed`` in ``field`` and «Calcular riesgo» again."""
    fill(at, patient(info["features"]))
    at.button(key="submit").click().run()
    assert probability_shown(at) is not None
    at.text_input(key=f"feat_{field}").set_value(typed)
    at.button(key="submit").click().run()
    assert not at.exception
    return at


def test_out_of_range_value_removes_the_previous_result(app_env: Stack, info: dict[str, Any]) -> None:
    """Issue 11: age 15 after a valid result left the old risk on screen beside the new values."""
    age = next(f for f in info["features"] if f.get("integer") and f["min"] > 15)
    at = _result_then(run_app(), info, age["name"], "15")
    assert probability_shown(at) is None and not at.get("arrow_vega_lite_chart")
    message = at.error[0].value
    rule = tr("rule_out_of_range", "es", detail=spec.range_text(age, "es"))
    assert f"**{spec.label(age, 'es')}**: {rule}" in message
    assert "obligatorio" not in message


def test_out_of_range_glucose_says_out_of_range_with_the_range(app_env: Stack, info: dict[str, Any]) -> None:
    glucose = next(f for f in info["features"] if f["name"] == "glucosa")
    at = _result_then(run_app(), info, "glucosa", spec.decimal(glucose["max"] + 100, "es"))
    assert probability_shown(at) is None
    assert at.error[0].value.endswith(tr("rule_out_of_range", "es", detail=spec.range_text(glucose, "es")))
    assert "mg/dL" in at.error[0].value and "obligatorio" not in at.error[0].value


def test_a_decimal_comma_is_read_as_a_decimal_separator(app_env: Stack, info: dict[str, Any]) -> None:
    """«33,6» is 33.6 (the browser's number field made it 336, out of range, and kept the old result)."""
    bmi = next(f for f in info["features"] if not f.get("integer") and f["min"] < 33.6 < f["max"] < 336)
    values = {**patient(info["features"]), bmi["name"]: 40.0}
    at = run_app()
    fill(at, values)
    at.button(key="submit").click().run()
    before = probability_shown(at)
    at.text_input(key=f"feat_{bmi['name']}").set_value("33,6")
    assert probability_shown(at.run()) is None  # values changed: the old risk is gone before any click
    at.button(key="submit").click().run()
    assert not at.error, [e.value for e in at.error]
    expected = api_predict(app_env, [{**values, bmi["name"]: 33.6}])[0]
    assert probability_shown(at) == spec.format_probability(expected["probability"], "es") != before
    assert "," in probability_shown(at)  # «81,3 %», not «81.3 %»


def test_english_ui_uses_a_decimal_point(app_env: Stack, info: dict[str, Any]) -> None:
    values = patient(info["features"])
    at = run_app()
    at.selectbox(key="lang").set_value("en").run()
    fill(at, values, "en")
    at.button(key="submit").click().run()
    expected = api_predict(app_env, [values])[0]
    assert probability_shown(at, "en") == spec.format_probability(expected["probability"], "en")
    assert "." in probability_shown(at, "en")


def test_language_switch_changes_labels(app_env: Stack, info: dict[str, Any]) -> None:
    at = run_app()
    at.selectbox(key="lang").set_value("en").run()
    assert at.title[0].value == tr("individual_title", "en")
    inputs = [w for w in at.text_input if str(w.key).startswith("feat_")]
    labels = {w.key: w.label for w in inputs}
    assert labels == {f"feat_{f['name']}": spec.label(f, "en") for f in info["features"] if f["type"] == "numeric"}
    assert at.button(key="submit").label == tr("submit", "en")
    # the choice survives a page switch
    at.switch_page("views/model.py").run()
    assert at.title[0].value == tr("model_title", "en")


@pytest.mark.parametrize("page", [None, "views/batch.py", "views/model.py"])
def test_api_down_shows_a_banner(app_env: Stack, monkeypatch: pytest.MonkeyPatch, page: str | None) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("API_BASE_URL", closed)
    at = run_app(page)
    assert at.error, "no banner"
    assert at.error[0].value == tr("api_down", "es", url=closed)
    if page == "views/model.py":  # the registry part still works without the API
        assert at.subheader[0].value == tr("versions_title", "es")


def test_registry_down_shows_a_banner(app_env: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    at = run_app("views/model.py")
    assert [e.value for e in at.error] == [tr("registry_down", "es", uri=closed)]
    assert "Traceback" not in "".join(e.value for e in at.error)


def scored_table(at: AppTest, lang: str = "es") -> pd.DataFrame:
    return next(d.value for d in at.dataframe if tr("col_risk_level", lang) in d.value.columns)


# ---- Evaluación por lotes -----------------------------------------------------------------------------------
def test_batch_validation_report_and_scoring(app_env: Stack, info: dict[str, Any]) -> None:
    features = info["features"]
    good = patient(features)
    required = next(f for f in features if not f.get("optional") and not f.get("integer"))
    whole = next(f for f in features if f.get("integer"))
    rows = [
        {"id": "A", **good},
        {"id": "B", **good, required["name"]: required["max"] + 1},  # out of range
        {"id": "C", **good, required["name"]: None},  # required value empty
        {"id": "D", **good, whole["name"]: 2.5},  # not a whole number
        {"id": "E", **good, required["name"]: "abc"},  # not a number
        {
            "id": "F",
            **{k: v for k, v in good.items() if not next(f for f in features if f["name"] == k).get("optional")},
        },
    ]
    csv = pd.DataFrame(rows).to_csv(index=False).encode()
    at = run_app("views/batch.py")
    at.file_uploader(key="upload").set_value(("pacientes.csv", csv, "text/csv")).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {tr("rows_total", "es"): "6", tr("rows_valid", "es"): "2", tr("rows_invalid", "es"): "4"}
    report = next(d.value for d in at.dataframe if tr("problem", "es") in d.value.columns)
    assert report[tr("row", "es")].tolist() == [2, 3, 4, 5]
    problems = report[tr("problem", "es")].tolist()
    assert problems[0].startswith(tr("rule_out_of_range", "es", detail="")[:10])
    assert problems[1] == tr("rule_required", "es")
    assert problems[2] == tr("rule_not_integer", "es")
    assert problems[3] == tr("rule_not_number", "es")
    assert report[tr("feature", "es")].tolist()[0] == spec.label(required, "es")

    at.button(key="score").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.get("download_button"), "no download button"
    scored = scored_table(at)
    assert scored["id"].tolist() == ["A", "B", "C", "D", "E", "F"]
    expected = api_predict(app_env, [good, {k: v for k, v in rows[5].items() if k != "id"}])
    shown = scored[tr("col_probability", "es")].tolist()
    assert shown[0] == spec.format_probability(expected[0]["probability"], "es")
    assert shown[5] == spec.format_probability(expected[1]["probability"], "es")
    assert shown[1:5] == ["", "", "", ""]
    assert (scored[tr("col_errors", "es")].iloc[1:5] != "").all()
    assert not {"probability", "risk_level", "label"} & set(scored.columns)  # no English column names


def test_batch_result_columns_never_overwrite_the_clinic_columns(app_env: Stack, info: dict[str, Any]) -> None:
    """A clinic column called like a result (`probability`, the API's name) is kept; with the switch to the
    machine-readable file the result gets another name, and the page says which. (The file's contents are
    checked in tests/unit/test_ui_locale.py and, downloaded by a browser, in the end-to-end test.)"""
    row = patient(info["features"])
    csv = pd.DataFrame([{**row, "probability": "mine"}]).to_csv(index=False).encode()
    at = run_app("views/batch.py")
    at.file_uploader(key="upload").set_value(("p.csv", csv, "text/csv")).run()
    at.button(key="score").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = scored_table(at)
    assert shown["probability"].tolist() == ["mine"]
    expected = api_predict(app_env, [row])[0]
    assert shown[tr("col_probability", "es")].tolist() == [spec.format_probability(expected["probability"], "es")]
    assert not [i for i in at.info if "probability_2" in i.value]
    at.toggle(key="machine_csv").set_value(True).run()
    assert [i.value for i in at.info if "`probability` → `probability_2`" in i.value]
    assert scored_table(at)["probability"].tolist() == ["mine"]


def test_batch_missing_required_column(app_env: Stack, info: dict[str, Any]) -> None:
    features = info["features"]
    required = next(f for f in features if not f.get("optional"))
    df = pd.DataFrame([patient(features)]).drop(columns=[required["name"]])
    at = run_app("views/batch.py")
    buf = io.StringIO()
    df.to_csv(buf, index=False, sep=";")  # Spanish-locale export
    at.file_uploader(key="upload").set_value(("p.csv", buf.getvalue().encode(), "text/csv")).run()
    assert not at.exception
    assert required["name"] in at.error[0].value
    assert not [b for b in at.button if b.key == "score"]


def test_batch_duplicate_feature_column_blocks_scoring(app_env: Stack, info: dict[str, Any]) -> None:
    """`edad=50` beside `Edad=99`: the page must not pick one of them silently."""
    features = info["features"]
    required = next(f for f in features if not f.get("optional"))
    row = patient(features)
    df = pd.DataFrame([{**row, required["name"].capitalize(): row[required["name"]]}])
    at = run_app("views/batch.py")
    at.file_uploader(key="upload").set_value(("p.csv", df.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception
    labels = spec.label(required, "es") + f" (`{required['name']}`)"
    assert [e.value for e in at.error] == [tr("duplicate_columns", "es", columns=labels)]
    assert {m.label: m.value for m in at.metric}[tr("rows_valid", "es")] == "0"
    assert not [b for b in at.button if b.key == "score"]


def test_batch_blank_headers_and_cp1252_are_scored_and_kept(app_env: Stack, info: dict[str, Any]) -> None:
    """An Excel export: cp1252 text and trailing empty header cells. Scoring and the download must work, and the
    clinic's own columns come back unchanged."""
    features = info["features"]
    names = [f["name"] for f in features]
    row = patient(features)
    csv = ";".join([*names, "nombre", "", ""]) + "\n" + ";".join([*(str(row[n]) for n in names), "niña", "", ""])
    at = run_app("views/batch.py")
    at.file_uploader(key="upload").set_value(("p.csv", (csv + "\n").encode("cp1252"), "text/csv")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.button(key="score").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    scored = scored_table(at)
    n = len(names)
    assert list(scored.columns[n : n + 3]) == ["nombre", f"columna_{n + 2}", f"columna_{n + 3}"]
    assert scored["nombre"].tolist() == ["niña"]
    expected = spec.format_probability(api_predict(app_env, [row])[0]["probability"], "es")
    assert scored[tr("col_probability", "es")].iloc[0] == expected
    assert at.get("download_button"), "no download button"


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf\r\n\r\n"])
def test_batch_empty_file_says_so(app_env: Stack, data: bytes) -> None:
    at = run_app("views/batch.py")
    at.file_uploader(key="upload").set_value(("p.csv", data, "text/csv")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [tr("csv_empty", "es")]


# ---- Diagnósticos confirmados (second tab of the batch page) and who asked ------------------------------------
def logged(stack: Stack, request_id: str, n: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The API's inference-log rows of one request, once all ``n`` are written (the writer flushes off the request
    path)."""
    from tests.inference_helpers import log_rows

    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in log_rows(stack.env["APP_DATABASE_URL"]) if r["request_id"] == request_id]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_confirmed_outcomes_from_the_scored_file_join_their_predictions(app_env: Stack, info: dict[str, Any]) -> None:
    """Score three patients, take request_id and row from the scored table, upload a CSV of outcomes for them
    (plus an unknown id, a pending row and a bad one), send it: the summary says what was stored, and the outcomes
    are in the API's inference_outcome, joined to their predictions."""
    good = patient(info["features"])
    at = run_app("views/batch.py")
    assert [t.label for t in at.tabs] == [tr("tab_patients", "es"), tr("tab_outcomes", "es")]
    csv = pd.DataFrame([{"id": k, **good} for k in "ABC"]).to_csv(index=False).encode()
    at.file_uploader(key="upload").set_value(("p.csv", csv, "text/csv")).run()
    at.button(key="score").click().run()
    scored = scored_table(at)
    (rid,) = set(scored["request_id"])
    assert scored["row"].tolist() == ["0", "1", "2"]
    assert len(logged(app_env, rid, 3)) == 3

    outcomes_csv = (
        "request_id;row;diabetes;test;test_date\n"
        f"{rid};0;sí;HbA1c;15/01/2026\n"
        f"{rid};2;no;ogtt;2026-01-20\n"
        "no-such-request;0;1;ogtt;2026-01-20\n"
        f"{rid};1;;;\n"  # not confirmed yet
        f"{rid};1;quizá;ogtt;2026-01-20\n"
    ).encode()
    at.file_uploader(key="outcomes_upload").set_value(("d.csv", outcomes_csv, "text/csv")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    tab = at.tabs[1]
    before = {m.label: m.value for m in tab.metric}
    assert before == {tr("rows_total", "es"): "5", tr("outcomes_ready", "es"): "3", tr("outcomes_pending", "es"): "1",
                      tr("rows_invalid", "es"): "1"}  # fmt: skip
    report = next(d.value for d in tab.dataframe if tr("problem", "es") in d.value.columns)
    assert report.values.tolist() == [[5, "diabetes", tr("outcome_rule_bad_yes_no", "es")]]
    assert "quizá" not in report.to_string()

    at.button(key="send_outcomes").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    tab = at.tabs[1]
    after = {m.label: m.value for m in tab.metric}
    assert {k: after[tr(k, "es")] for k in ("outcomes_stored", "outcomes_not_found", "outcomes_invalid")} == {
        "outcomes_stored": "2", "outcomes_not_found": "1", "outcomes_invalid": "1"}  # fmt: skip
    assert tr("outcomes_summary", "es", stored=2, total=3) in [x.value for x in tab.success]
    assert not at.get("progress")  # the "sending 3/3" bar is gone once the summary is shown
    sent = next(d.value for d in tab.dataframe if d.value.shape[0] == 1 and 3 in d.value.iloc[:, 0].tolist())
    assert sent.values.tolist() == [[3, "request_id", tr("outcome_rule_not_found", "es")]]

    engine = sa.create_engine(app_env.env["APP_DATABASE_URL"])
    with engine.connect() as conn:
        joined = conn.execute(sa.text(
            "SELECT l.row, l.source, o.diabetes, o.test, o.test_date FROM inference_log l JOIN inference_outcome o "
            "ON o.request_id = l.request_id AND o.row = l.row WHERE l.request_id = :rid ORDER BY l.row"
        ), {"rid": rid}).all()  # fmt: skip
    engine.dispose()
    assert [tuple(j) for j in joined] == [(0, "app-batch", 1, "hba1c", "2026-01-15"),
                                          (2, "app-batch", 0, "ogtt", "2026-01-20")]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        # the app's key without the feedback scope: 403
        ("no scope", {"API_AUTH": "on", "API_SERVICE_KEY": "s" * 40, "API_SERVICE_SCOPES": "predict,info"},
         "outcomes_forbidden"),
        ("log off", {"INFERENCE_LOG": "off"}, "outcomes_log_off"),  # nothing to join outcomes to: 409
    ],
)  # fmt: skip
def test_outcomes_refused_by_the_api_say_why(app_env: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             case: str, extra: dict[str, str], message: str) -> None:  # fmt: skip
    """An API that refuses outcomes (a real one, started for this test) gets the page's own explanation, no
    summary, and no progress bar left behind."""
    from tests.inference_helpers import start_api

    api = start_api(app_env.env, tmp_path, f"sqlite:///{tmp_path / 'log.db'}", workers=1, **extra)
    try:
        monkeypatch.setenv("API_BASE_URL", api.url)
        if "API_SERVICE_KEY" in extra:
            monkeypatch.setenv("API_SERVICE_KEY", extra["API_SERVICE_KEY"])
        at = run_app("views/batch.py")
        outcomes_csv = b"request_id,row,diabetes,test,test_date\nsome-request,0,si,hba1c,2026-01-15\n"
        at.file_uploader(key="outcomes_upload").set_value(("d.csv", outcomes_csv, "text/csv")).run()
        at.button(key="send_outcomes").click().run()
        assert not at.exception, case
        tab = at.tabs[1]
        assert [e.value for e in tab.error] == [tr(message, "es")], case
        assert [x.value for x in tab.success] == [tr("outcomes_all_valid", "es")], case  # the file's check only
        assert tr("outcomes_stored", "es") not in [m.label for m in tab.metric], case  # no summary
        assert not at.get("progress"), case
    finally:
        api.stop()


def test_the_logged_in_clinician_is_the_caller(app_env: Stack, info: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Issue 9: the log's caller is the app's user (``app:<user>``), sent as a plain token, never a credential."""
    monkeypatch.setenv("UI_AUTH", "builtin")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.session_state["auth"] = {"user": "Ana García", "seen": time.monotonic()}  # as the login form leaves it
    at.run()
    assert not at.exception
    fill(at, patient(info["features"]))
    at.button(key="submit").click().run()
    assert probability_shown(at) is not None
    prefix = tr("request_reference", "es", request_id="").split("`")[0]
    reference = next(c.value for c in at.caption if c.value.startswith(prefix))
    rid = reference.split("`")[1]
    (row,) = logged(app_env, rid, 1)
    assert (row["caller"], row["source"], row["route"]) == ("app:Ana_Garcia", "app-individual", "/predict")


# ---- Modelo -------------------------------------------------------------------------------------------------
def curve_charts(at: Any) -> set[str]:
    """The y-axis titles of the page's Vega-Lite charts that have one (the model page's curves)."""
    titles = set()
    for el in at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart"):
        doc = json.loads(el.proto.spec)
        layers = doc.get("layer") or [doc]
        for layer in layers:
            title = ((layer.get("encoding") or {}).get("y") or {}).get("title")
            if title:
                titles.add(title)
    return titles


def test_model_page_shows_the_served_version(app_env: Stack, info: dict[str, Any]) -> None:
    at = run_app("views/model.py")
    assert not at.error, [e.value for e in at.error]
    served = requests.get(f"{app_env.api_url}/health", timeout=5).json()["model"]
    assert at.success[0].value == tr(
        "served_now", "es", name=served["name"], version=served["version"], alias=served["alias"]
    )
    versions = next(d.value for d in at.dataframe if tr("aliases", "es") in d.value.columns)
    row = versions[versions[tr("version", "es")] == str(served["version"])].iloc[0]
    assert "champion" in row[tr("aliases", "es")] and row[tr("serving_col", "es")] == "✓"
    metrics = next(
        d.value for d in at.dataframe if tr("this_model", "es", version=served["version"]) in d.value.columns
    )
    shown_auc = metrics.loc["ROC AUC", tr("this_model", "es", version=served["version"])]
    assert shown_auc == spec.decimal(info["metrics"]["roc_auc"], "es", 3) and "," in shown_auc  # «0,866»
    # The gate's reasons in Spanish, from the codes the pipeline recorded (the first version had no champion).
    assert row[tr("gate_reasons", "es")] == tr("gate_reason_no_served", "es", alias="champion")
    assert not at.expander, "the pipeline's English markdown card is not shown"
    assert any(c.startswith(tr("published", "es", source="")) for c in metrics.columns)
    # ROC, calibration and decision curves drawn from the version's numbers, labelled in Spanish (no English PNG).
    assert curve_charts(at) == {tr("roc_y", "es"), tr("calib_y", "es"), tr("dc_y", "es")} and len(at.image) == 0
    assert tr("intended_use_title", "es") in [s.value for s in at.subheader]
    # The bundled config describes its population in both languages: Spanish here, no "English only" note.
    assert any(m.value.startswith("> Mujeres de origen pima") for m in at.markdown)
    assert tr("registry_text_english", "es") not in [c.value for c in at.caption]
    # 95 % intervals of the held-out metrics, and the subgroup table (from the version's model.json).
    intervals = next(d.value for d in at.dataframe if tr("interval_95", "es") in d.value.columns)
    auc = intervals[intervals[tr("metric", "es")] == "ROC AUC"].iloc[0]
    low, high = (float(x) for x in auc[tr("interval_95", "es")].split(" – "))
    assert low < float(auc[tr("value", "es")]) < high and auc[tr("value", "es")] == f"{info['metrics']['roc_auc']:.3f}"
    groups = next(d.value for d in at.dataframe if tr("subgroup", "es") in d.value.columns)
    assert {"edad < 30", "edad >= 45", "imc >= 35"} <= set(groups[tr("subgroup", "es")])
    details = next(c.value for c in at.caption if c.value.startswith("Familia "))
    assert f"calibración {calibration_name(info['calibration'], 'es')} ·" in details
    assert calibration_name(info["calibration"], "es") != info["calibration"]  # a word, not the code


def test_model_page_lists_every_version_and_flags_an_alias_elsewhere(
    app_env: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A second version holding @challenger (the API keeps serving @champion v1, so other tests are unaffected)."""
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # A decoy global tracking URI, as left by other code in the same process: the page must not depend on it.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", f"sqlite:///{tmp_path / 'decoy.db'}")

    from ui import registry

    client = MlflowClient(tracking_uri=app_env.tracking_uri, registry_uri=app_env.tracking_uri)
    v1 = client.get_model_version("diabetes-t2", "1")
    # The storage location, not v1.source ("models:/m-…"): MLflow resolves that against its global tracking URI,
    # which other test modules in this process may have pointed elsewhere.
    source = client.get_model_version_download_uri("diabetes-t2", v1.version)
    v2 = client.create_model_version("diabetes-t2", source, run_id=v1.run_id, tags={"gate": "failed"})
    client.set_registered_model_alias("diabetes-t2", "challenger", v2.version)
    registry.versions.clear()  # the page caches registry reads for a minute
    monkeypatch.setenv("MODEL_ALIAS", "challenger")  # the alias this deployment follows, for the warning below

    at = run_app("views/model.py")
    table = next(d.value for d in at.dataframe if tr("aliases", "es") in d.value.columns)
    assert table[tr("version", "es")].tolist() == [str(v2.version), "1"]
    assert table[tr("aliases", "es")].tolist() == ["challenger", "champion"]
    assert table[tr("gate", "es")].tolist()[0] == tr("gate_failed", "es")
    assert [w.value for w in at.warning] == [tr("served_not_alias", "es", served="1", alias="challenger", version="2")]

    at.selectbox(key="card_version").select_index(0).run()  # newest version first
    assert at.header[0].value == tr("card_title", "es", name="diabetes-t2", version=v2.version)
    metrics = next(d.value for d in at.dataframe if tr("this_model", "es", version=v2.version) in d.value.columns)
    assert any(c.startswith(tr("published", "es", source="")) for c in metrics.columns)  # v2's spec from the registry
    assert len(curve_charts(at)) == 3


@pytest.fixture
def mlflow_server(ui_stack: Stack) -> Iterator[str]:  # noqa: F811
    """An MLflow tracking server over the stack's registry: the app reads the registry over HTTP on Render."""
    port = free_port()
    log = ui_stack.workdir / "mlflow-server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", ui_stack.tracking_uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=ui_stack.workdir, env=ui_stack.env, stdout=fh, stderr=fh, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 180, log)  # `mlflow server` starts slowly on a busy machine
        yield f"127.0.0.1:{port}"
    finally:
        # `mlflow server` runs uvicorn as a child: signal the whole group this test started, by its id.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_model_page_reads_the_registry_over_http(
    app_env: Stack, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_TRACKING_HOSTPORT", mlflow_server)  # as Render provides it
    at = run_app("views/model.py")
    assert not at.error, [e.value for e in at.error]
    assert len(curve_charts(at)) == 3
    assert any("champion" in " ".join(d.value.get(tr("aliases", "es"), [])) for d in at.dataframe)


def test_model_page_warns_when_the_api_reads_another_registry(
    app_env: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Same name and version number, different model: the run ids differ, and the page says so."""
    from mlflow import MlflowClient

    other = f"sqlite:///{tmp_path / 'other.db'}"
    client = MlflowClient(tracking_uri=other, registry_uri=other)
    client.create_registered_model("diabetes-t2")
    (tmp_path / "model").mkdir()
    mv = client.create_model_version("diabetes-t2", (tmp_path / "model").as_uri())
    client.set_registered_model_alias("diabetes-t2", "champion", mv.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    at = run_app("views/model.py")
    assert not at.exception
    assert tr("served_other_registry", "es", version="1") in [w.value for w in at.warning]


def test_stack_serves_the_registered_champion(ui_stack: Stack) -> None:  # noqa: F811 - the fixture
    """Guards the other UI tests' premise: the API serves version 1 of the model we just trained."""
    health = requests.get(f"{ui_stack.api_url}/health", timeout=5).json()
    assert health["status"] == "ok"
    assert str(health["model"]["version"]) == "1"
    print(f"\nstack: training {ui_stack.train_s:.1f}s, API up in {ui_stack.api_start_s:.1f}s")
