"""One training run on a second dataset config that names an external cohort: the run logs intervals for
every held-out metric, the decision curve, subgroups and the external cohort's metrics (recomputed here
from the registered model); the registered pyfunc and the served /predict return the 90 % interval."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow import MlflowClient
from sklearn.metrics import brier_score_loss, roc_auc_score

from pipeline.config import load_config
from pipeline.data import prepare, read_csv
from tests.conftest import FAST_TRAIN, ROOT, backend_env, example_patient, run_pipeline

pytestmark = pytest.mark.slow
NAME = "report-check"
PIMA = ROOT / "data" / "pima"


def second_config(tmp: Path, external: Path) -> Path:
    doc = yaml.safe_load((PIMA / "dataset.yaml").read_text(encoding="utf-8"))
    doc.update(name="pima-second", train=str(PIMA / "pima_tr2.csv"), test=str(PIMA / "pima_te.csv"))
    doc["external"] = [{"name": "cohort_b", "file": str(external), "description": "test cohort"}]
    path = tmp / "second.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    # The "external" cohort: Pima.tr's 200 complete rows (same columns). Not independent of the training
    # data; enough to check that the pipeline scores whatever cohort the config names.
    external = tmp / "cohort_b.csv"
    pd.read_csv(PIMA / "pima_tr.csv").to_csv(external, index=False)
    config = second_config(tmp, external)
    env = backend_env(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts")
    proc = run_pipeline(env, "--config", str(config), "--model-name", NAME, "--family", "logistic",
                        "--cv-repeats", "1", "--cv-folds", "3", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"env": env, "config": config, "external": external, "tmp": tmp}


def test_run_logs_intervals_decision_curve_subgroups_and_external(trained: dict) -> None:
    mlflow.set_tracking_uri(trained["env"]["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    mv = client.get_model_version_by_alias(NAME, "champion")
    run = client.get_run(mv.run_id)
    m = run.data.metrics
    for k in ("roc_auc", "brier", "sensitivity", "specificity", "errors", "calibration_slope", "calibration_intercept"):
        assert m[f"test_{k}_ci_low"] <= m[f"test_{k}"] <= m[f"test_{k}_ci_high"], k
        assert m[f"test_{k}_ci_low"] < m[f"test_{k}_ci_high"], k
    for cand in ("logistic", "calibration_none", "calibration_sigmoid", "calibration_isotonic"):
        assert f"cv_{cand}_brier" in m and f"cv_{cand}_log_loss" in m
    assert "subgroup_edad_lt30_roc_auc_ci_low" in m and "subgroup_imc_ge35_roc_auc" in m

    # The external cohort's figures are the registered model's, recomputed here from its predictions.
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    X, y = prepare(read_csv(trained["external"]), load_config(trained["config"]), "external")
    p = model.predict(X)["probability"].to_numpy()
    assert m["external_cohort_b_roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["external_cohort_b_brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert (
        m["external_cohort_b_roc_auc_ci_low"] < m["external_cohort_b_roc_auc"] < m["external_cohort_b_roc_auc_ci_high"]
    )

    files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/decision_curve.csv", "evaluation/decision_curve.png", "evaluation/subgroups.json"} <= files
    dc = pd.read_csv(client.download_artifacts(run.info.run_id, "evaluation/decision_curve.csv"))
    assert dc["threshold"].min() == pytest.approx(0.05) and dc["threshold"].max() == pytest.approx(0.6)
    split_test = prepare(read_csv(PIMA / "pima_te.csv"), load_config(trained["config"]), "test")
    pt = model.predict(split_test[0])["probability"].to_numpy()
    yt = split_test[1]
    t = 0.2
    hand = ((pt >= t) & (yt == 1)).sum() / len(yt) - ((pt >= t) & (yt == 0)).sum() / len(yt) * t / (1 - t)
    assert dc.loc[np.isclose(dc["threshold"], t), "net_benefit_model"].item() == pytest.approx(hand, abs=1e-12)
    card = Path(client.download_artifacts(run.info.run_id, "model_card.md")).read_text(encoding="utf-8")
    for heading in ("## Decision analysis", "## Subgroups", "## External validation", "95 % interval"):
        assert heading in card
    assert "`cohort_b`" in card


def test_pyfunc_and_predict_return_the_interval(trained: dict) -> None:
    mlflow.set_tracking_uri(trained["env"]["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert {p.name for p in model.metadata.signature.params} == {"contributions", "interval"}
    X = prepare(read_csv(PIMA / "pima_te.csv"), load_config(trained["config"]), "test")[0].head(50)
    plain = model.predict(X)
    out = model.predict(X, params={"interval": True})
    np.testing.assert_allclose(out["probability"], plain["probability"], atol=1e-9)
    assert (out["probability_low"] < out["probability_high"]).all()
    assert ((out["probability_low"] > 0) & (out["probability_high"] < 1)).all()
    assert "probability_low" not in plain

    port = _free_port()
    env = {
        **trained["env"],
        "PORT": str(port),
        "MODEL_NAME": NAME,
        "MODEL_CACHE_DIR": str(trained["tmp"] / "cache"),
        "WEB_CONCURRENCY": "1",
        "REGISTRY_TIMEOUT_S": "60",
        "HOST": "127.0.0.1",
        "API_AUTH": "off",  # authentication is not the subject here (loopback only, as the API allows)
    }  # fmt: skip (a loaded CI machine loads slowly)
    log = (trained["tmp"] / "serving.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (trained["tmp"] / "serving.log").read_text()[-3000:]
            assert time.time() < deadline, (trained["tmp"] / "serving.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).json().get("status") == "ok":
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        patient = example_patient(_features(trained["config"]))
        expected = model.predict(pd.DataFrame([patient]).astype(float), params={"interval": True}).iloc[0]
        r = requests.post(f"{url}/predict", params={"interval": "true"}, json=[patient], timeout=10)
        assert r.status_code == 200, r.text
        row = r.json()["predictions"][0]
        assert row["probability_low"] == pytest.approx(expected["probability_low"], abs=1e-9)
        assert row["probability_high"] == pytest.approx(expected["probability_high"], abs=1e-9)
        assert (
            "probability_low"
            not in requests.post(f"{url}/predict", json=[patient], timeout=10).json()["predictions"][0]
        )
        bad = requests.post(f"{url}/predict", params={"interval": "maybe", "lang": "en"}, json=[patient], timeout=10)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "interval"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group of the server this test started (its workers)


def test_a_bad_external_cohort_fails_before_any_run(trained: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    pd.read_csv(PIMA / "pima_tr.csv").drop(columns=["glu"]).to_csv(broken, index=False)
    config = second_config(tmp_path, broken)
    env = backend_env(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    proc = run_pipeline(env, *FAST_TRAIN, "--config", str(config), "--model-name", "broken")
    assert proc.returncode == 2
    assert "external cohort 'cohort_b'" in proc.stderr and "glu" in proc.stderr


def _features(config: Path) -> list[dict]:
    return [f.model_dump() for f in load_config(config).features]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
