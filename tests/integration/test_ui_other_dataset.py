"""The app hard-codes no feature: served a clinic's own model (categorical features, a derived target, other
names and units), the form, the result and the batch page follow that model's spec."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from streamlit.testing.v1 import AppTest

from tests.conftest import FAST_TRAIN
from tests.integration.test_pipeline_e2e import user_dataset
from tests.ui_stack import ROOT, child_env, free_port, login_off, wait_http  # noqa: F401 - login_off
from ui import spec
from ui.i18n import tr

APP = str(ROOT / "ui" / "app.py")
NAME = "clinic-risk"


@pytest.fixture(scope="module")
def clinic_api() -> Iterator[tuple[str, str]]:
    work = Path(tempfile.mkdtemp(prefix="ui-clinic-"))
    env = child_env(f"sqlite:///{work / 'mlflow.db'}", (work / "artifacts").as_uri())
    env.update({"MODEL_NAME": NAME, "MODEL_CACHE_DIR": str(work / "cache"), "HOST": "127.0.0.1", "API_AUTH": "off"})
    config = user_dataset(work)
    train = subprocess.run(
        [sys.executable, "-m", "pipeline.main", *FAST_TRAIN, "--config", str(config), "--model-name", NAME,
         "--min-auc", "0.55"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    port, log = free_port(), work / "serving.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env={**env, "PORT": str(port)},
                                stdout=fh, stderr=fh)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120, log)
        yield f"http://127.0.0.1:{port}", env["MLFLOW_TRACKING_URI"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def app(clinic_api: tuple[str, str], monkeypatch: pytest.MonkeyPatch, login_off: None) -> dict:  # noqa: F811
    api_url, tracking_uri = clinic_api
    for key in ("API_HOSTPORT", "MLFLOW_TRACKING_HOSTPORT", "MODEL_ALIAS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("API_BASE_URL", api_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MODEL_NAME", NAME)
    return requests.get(f"{api_url}/model/info", timeout=10).json() | {"api_url": api_url}


def test_form_follows_a_categorical_spec_and_matches_the_api(app: dict) -> None:
    features = {f["name"]: f for f in app["features"]}
    assert {n for n, f in features.items() if f["type"] == "categorical"} == {"sexo", "fumador"}
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    selects = {w.key: w for w in at.selectbox if str(w.key).startswith("feat_")}
    numbers = {w.key: w for w in at.text_input if str(w.key).startswith("feat_")}
    assert set(selects) == {"feat_sexo", "feat_fumador"} and set(numbers) == {"feat_edad", "feat_imc"}
    assert selects["feat_sexo"].options == ["F", "M"] and selects["feat_fumador"].options == ["si", "no", "ex"]
    assert selects["feat_sexo"].label == spec.label(features["sexo"], "es")
    assert tr("valid_range", "es", range=spec.range_text(features["edad"], "es")) in numbers["feat_edad"].help
    assert spec.range_text(features["edad"], "es").startswith("18–100")

    at.text_input(key="feat_edad").set_value("70")
    at.selectbox(key="feat_sexo").set_value("M")
    at.selectbox(key="feat_fumador").set_value("si")
    at.checkbox(key="nm_imc").check()
    at.run()
    at.button(key="submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    expected = requests.post(f"{app['api_url']}/predict", json={"edad": 70, "sexo": "M", "fumador": "si"},
                             timeout=10).json()["predictions"][0]  # fmt: skip
    shown = next(m for m in at.metric if m.label == tr("probability", "es"))
    assert shown.value == spec.format_probability(expected["probability"], "es")
    assert any(tr("model_version_used", "es", name=NAME, version=app["version"]) == c.value for c in at.caption)


def test_batch_checks_categories_and_scores_the_valid_rows(app: dict) -> None:
    csv = (
        b"id,edad,sexo,imc,fumador\n"
        b"A,70,M,,si\n"  # optional values may be blank
        b"B,45,X,30,no\n"  # not a category of this model
        b"C,30,F,22.5,\n"
    )
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/batch.py").run()
    at.file_uploader(key="upload").set_value(("clinica.csv", csv, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    report = next(d.value for d in at.dataframe if tr("problem", "es") in d.value.columns)
    assert report[tr("row", "es")].tolist() == [2]
    assert report[tr("problem", "es")].tolist() == [tr("rule_not_category", "es", detail="F, M")]
    at.button(key="score").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    scored = next(d.value for d in at.dataframe if tr("col_risk_level", "es") in d.value.columns)
    expected = requests.post(
        f"{app['api_url']}/predict",
        json=[{"edad": 70, "sexo": "M", "fumador": "si"}, {"edad": 30, "sexo": "F", "imc": 22.5}],
        timeout=10,
    ).json()["predictions"]
    shown = scored[tr("col_probability", "es")].tolist()
    assert shown == [spec.format_probability(expected[0]["probability"], "es"), "",
                     spec.format_probability(expected[1]["probability"], "es")]  # fmt: skip


def test_model_card_text_fits_this_model(app: dict) -> None:
    """The card's fixed text names no population or feature of the bundled model; this model's own description
    (its population) is what the page quotes."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/model.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = [m.value for m in at.markdown]
    assert tr("intended_use_text", "es") in shown and tr("limits_text", "es") in shown
    text = "\n".join(shown).lower()
    for word in ("mujer", "21 años", "sog", "2 h"):
        assert word not in text, word
