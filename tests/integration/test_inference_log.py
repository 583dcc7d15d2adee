"""The inference log against the real API (gunicorn, 2 workers) and the real Postgres: every scored row exactly
once, through every route and input format; nothing lost while the database is away; a full spool is loud;
outcomes join their predictions."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from tests.conftest import EXAMPLE_PATIENT, ROOT
from tests.inference_helpers import log_rows, start_api, trained_registry, wait_rows
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    tmp = tmp_path_factory.mktemp("inference-registry")
    return trained_registry(tmp), tmp


def _patients(n: int, shift: float = 0.0) -> list[dict]:
    return [{**EXAMPLE_PATIENT, "glucosa": 90 + (i * 7) % 100 + shift, "edad": 21 + i % 50} for i in range(n)]


def _requests_of_every_kind() -> list[tuple[str, dict, bytes, int, str | None]]:
    """(path, headers, body, rows, source header) for each route and MLflow input format."""
    df = pd.DataFrame(_patients(3))
    cols = list(df.columns)
    pq = io.BytesIO()
    df.astype(float).to_parquet(pq)
    split = {"dataframe_split": {"columns": cols, "data": df.values.tolist()}}
    return [
        ("/invocations", JSON, json.dumps(split).encode(), 3, None),
        ("/invocations", JSON, json.dumps({"dataframe_records": _patients(2)}).encode(), 2, None),
        ("/invocations", JSON, json.dumps({"instances": _patients(4)}).encode(), 4, None),
        ("/invocations", JSON, json.dumps({"inputs": _patients(1)}).encode(), 1, None),
        ("/invocations", {"Content-Type": "text/csv"}, df.to_csv(index=False).encode(), 3, None),
        ("/invocations", {"Content-Type": "application/vnd.apache.parquet"}, pq.getvalue(), 3, None),
        ("/predict", JSON, json.dumps(_patients(1)[0]).encode(), 1, "app-individual"),
        ("/predict", JSON, json.dumps(_patients(5)).encode(), 5, "app-batch"),
        ("/predict?contributions=false", JSON, json.dumps(_patients(2)).encode(), 2, "batch"),
    ]


def _send(url: str, kinds: list, repeats: int, threads: int = 4) -> list[tuple[str, int, str, str | None]]:
    """Send every kind ``repeats`` times from several threads; returns (request id, rows, path, source)."""
    sent: list[tuple[str, int, str, str | None]] = []
    lock = threading.Lock()
    failures: list[str] = []

    def worker(k: int) -> None:
        with requests.Session() as s:
            for r in range(repeats):
                for i, (path, headers, body, rows, source) in enumerate(kinds):
                    if (r * len(kinds) + i) % threads != k:
                        continue
                    h = dict(headers)
                    if source:
                        h["X-Inference-Source"] = source
                    resp = s.post(url + path, data=body, headers=h, timeout=30)
                    if resp.status_code != 200:
                        failures.append(f"{path} {resp.status_code}")
                        continue
                    with lock:
                        sent.append((resp.headers["x-request-id"], rows, path.split("?")[0], source))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not failures, failures[:5]
    return sent


def test_every_route_and_format_logs_each_row_exactly_once(registry, postgres_url: str, tmp_path: Path) -> None:
    env, _ = registry
    api = start_api(env, tmp_path, postgres_url)
    try:
        kinds = _requests_of_every_kind()
        sent = _send(api.url, kinds, repeats=6)
        expected = sum(n for _, n, _, _ in sent)
        rows = wait_rows(postgres_url, expected)
        health = requests.get(api.url + "/health", timeout=5).json()
    finally:
        api.stop()
    assert len(rows) == expected
    keys = {(r["request_id"], r["row"]) for r in rows}
    assert keys == {(rid, i) for rid, n, _, _ in sent for i in range(n)}
    by_request = {rid: (path, source) for rid, _, path, source in sent}
    for r in rows:
        path, source = by_request[r["request_id"]]
        assert r["route"] == path
        assert r["source"] == (source or "api")
        assert r["caller"] == "local"  # the principal of API_AUTH=off; a key's name when auth is on
        assert r["model_name"] == "diabetes-t2" and r["model_version"] == "1" and len(r["run_id"]) == 32
        assert 0 <= r["probability"] <= 1 and r["label"] in (0, 1) and r["risk_level"] in ("low", "moderate", "high")
        assert r["latency_ms"] > 0 and r["ts"].tzinfo is not None
        assert set(r["features"]) == set(EXAMPLE_PATIENT)
    # the input as the model received it: row i of a 5-patient /predict is patient i
    five = next(rid for rid, n, p, _ in sent if p == "/predict" and n == 5)
    logged = {r["row"]: r["features"] for r in rows if r["request_id"] == five}
    for i, p in enumerate(_patients(5)):
        assert logged[i] == pytest.approx({k: float(v) for k, v in p.items()})
    assert health["inference_log"]["status"] == "ok"
    # one JSON line per request, without feature values
    lines = [json.loads(x) for x in api.log.read_text().splitlines() if x.startswith('{"request_id"')]
    assert {x["request_id"] for x in lines if x["route"] in ("/predict", "/invocations")} == set(by_request)
    assert all(x["status"] == 200 and x["model_version"] == "1" and x["caller"] == "local" for x in lines
               if x["request_id"] in by_request)  # fmt: skip
    assert not re.search(r"glucosa\W+\d", api.log.read_text())


def test_graceful_shutdown_flushes_the_in_memory_batch(registry, postgres_url: str, tmp_path: Path) -> None:
    env, _ = registry
    # Flushing only at shutdown: a long interval and a batch size no test reaches.
    api = start_api(env, tmp_path, postgres_url, INFERENCE_FLUSH_MS="600000", INFERENCE_BATCH_ROWS="1000000")
    try:
        sent = _send(api.url, _requests_of_every_kind(), repeats=2)
        time.sleep(1.0)
        before = len(log_rows(postgres_url))
    finally:
        api.stop()
    assert before == 0
    assert len(log_rows(postgres_url)) == sum(n for _, n, _, _ in sent)


def test_off_switch_logs_nothing(registry, postgres_url: str, tmp_path: Path) -> None:
    env, _ = registry
    api = start_api(env, tmp_path, postgres_url, INFERENCE_LOG="off")
    try:
        _send(api.url, _requests_of_every_kind()[:2], repeats=2)
        time.sleep(1.0)
        assert requests.get(api.url + "/health", timeout=5).json()["inference_log"]["status"] == "off"
    finally:
        api.stop()
    assert log_rows(postgres_url) == []


def _proxied(postgres_url: str, proxy: TcpProxy) -> str:
    return postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy(5432)
    p.start()
    yield p
    p.stop()


OUTAGE_S = 60


def test_database_away_under_load_loses_nothing_and_fails_nothing(
    registry, postgres_url: str, tmp_path: Path, proxy: TcpProxy
) -> None:
    env, _ = registry
    api = start_api(env, tmp_path, _proxied(postgres_url, proxy))
    stop = threading.Event()
    sent: list[tuple[str, int]] = []
    failures: list[str] = []
    kinds = [k for k in _requests_of_every_kind() if k[0] != "/invocations" or k[1] is JSON]

    def load(k: int) -> None:
        with requests.Session() as s:
            i = k
            while not stop.is_set():
                path, headers, body, rows, _ = kinds[i % len(kinds)]
                i += 1
                try:
                    resp = s.post(api.url + path, data=body, headers=headers, timeout=30)
                except requests.RequestException as exc:
                    failures.append(type(exc).__name__)
                    continue
                if resp.status_code != 200:
                    failures.append(str(resp.status_code))
                else:
                    sent.append((resp.headers["x-request-id"], rows))
                time.sleep(0.01)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        proxy.stop()
        down_at = len(sent)
        time.sleep(OUTAGE_S / 2)
        spooling = requests.get(api.url + "/health", timeout=5).json()
        time.sleep(OUTAGE_S / 2)
        during = len(sent) - down_at
        proxy.start()
        time.sleep(5)
        stop.set()
        for t in threads:
            t.join()
        expected = sum(n for _, n in sent)
        rows = wait_rows(postgres_url, expected, timeout_s=90)
    finally:
        stop.set()
        api.stop()
    assert not failures, failures[:5]
    assert during > 100, "the load did not continue while the database was away"
    assert spooling["inference_log"]["status"] == "spooling" and spooling["inference_log"]["spool_bytes"] > 0
    assert len(rows) == expected
    assert {(r["request_id"], r["row"]) for r in rows} == {(rid, i) for rid, n in sent for i in range(n)}
    assert not list((tmp_path / "spool").glob("*.jsonl")), "spool not emptied after replay"


def _metric(text: str, name: str, label: str) -> float:
    m = re.search(rf'^{name}\{{outcome="{label}"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_full_spool_is_degraded_and_counted(registry, postgres_url: str, tmp_path: Path, proxy: TcpProxy) -> None:
    env, _ = registry
    proxy.stop()  # the database is away from the start
    api = start_api(
        env, tmp_path, _proxied(postgres_url, proxy), INFERENCE_SPOOL_MAX_MB="0.01", INFERENCE_FLUSH_MS="50"
    )
    try:
        assert requests.get(api.url + "/health", timeout=5).json()["status"] == "ok"
        body = json.dumps(_patients(20)).encode()
        total = 0
        for _ in range(40):
            assert requests.post(api.url + "/predict", data=body, headers=JSON, timeout=30).status_code == 200
            total += 20
            time.sleep(0.06)
        time.sleep(1.5)
        health = requests.get(api.url + "/health", timeout=5).json()
        text = requests.get(api.url + "/metrics", timeout=5).text
        spooled = _metric(text, "inference_log_rows_total", "spooled")
        dropped = _metric(text, "inference_log_rows_total", "dropped")
        assert health["status"] == "degraded" and "spool full" in health["reason"]
        assert health["inference_log"]["dropped_rows"] > 0
        assert dropped > 0 and spooled > 0 and spooled + dropped == total
        # The database comes back: what was spooled is replayed, the service is healthy again.
        proxy.start()
        rows = wait_rows(postgres_url, int(spooled), timeout_s=30)
        assert len(rows) == spooled
        deadline = time.time() + 10
        while requests.get(api.url + "/health", timeout=5).json()["status"] != "ok" and time.time() < deadline:
            time.sleep(0.3)
        assert requests.get(api.url + "/health", timeout=5).json()["status"] == "ok"
    finally:
        api.stop()


def test_feedback_joins_outcomes_to_predictions(registry, postgres_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    env, _ = registry
    api = start_api(env, tmp_path, postgres_url)
    try:
        as_app = {**JSON, "X-Inference-User": "nurse.1"}  # the app names its user (trusted: auth is off on loopback)
        r = requests.post(api.url + "/predict", data=json.dumps(_patients(3)).encode(), headers=as_app, timeout=30)
        rid = r.json()["request_id"]
        assert {x["caller"] for x in wait_rows(postgres_url, 3)} == {"app:nurse.1"}
        fb = api.url + "/feedback"
        ok = {"request_id": rid, "row": 2, "diabetes": True, "test": "hba1c", "test_date": "2026-01-15"}
        assert requests.post(fb, json=ok, timeout=10).status_code == 200
        assert (
            requests.post(fb, json={**ok, "row": 0, "diabetes": False, "test": "ogtt"}, timeout=10).status_code == 200
        )
        again = {**ok, "test": "fasting_glucose"}  # a corrected result replaces the first
        assert requests.post(fb, json=again, timeout=10).status_code == 200
        missing = requests.post(fb, json={**ok, "request_id": "nope"}, timeout=10)
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "request_id"
        bad = requests.post(fb, json={**ok, "test": "urine"}, timeout=10)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "test"
        future = requests.post(fb, json={**ok, "test_date": "2999-01-01"}, timeout=10)
        assert future.status_code == 422 and future.json()["errors"][0]["field"] == "test_date"
        assert requests.post(fb, data=b"{", headers=JSON, timeout=10).status_code == 400
        # The bulk form (the app's outcomes CSV): one transaction, per-item results, idempotent on (request_id, row).
        r2 = requests.post(api.url + "/predict", json=_patients(2), timeout=30).json()["request_id"]
        wait_rows(postgres_url, 5)
        items = [
            {"request_id": r2, "row": 1, "diabetes": True, "test": "ogtt", "test_date": "2026-02-01"},
            {"request_id": r2, "row": 7, "diabetes": True, "test": "ogtt", "test_date": "2026-02-01"},
            {"request_id": r2, "row": 0, "diabetes": "maybe", "test": "ogtt", "test_date": "2026-02-01"},
        ]
        for _ in range(2):
            bulk = requests.post(fb, data=json.dumps(items).encode(), headers=as_app, timeout=10)
            assert bulk.status_code == 200, bulk.text
            assert {k: bulk.json()[k] for k in ("stored", "not_found", "invalid")} == {
                "stored": 1, "not_found": 1, "invalid": 1}  # fmt: skip
            assert [(p["index"], p["status"]) for p in bulk.json()["problems"]] == [(1, "not_found"), (2, "invalid")]
    finally:
        api.stop()
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        joined = conn.execute(
            sa.text(
                "SELECT request_id, l.row, l.probability, o.diabetes, o.test, o.caller FROM inference_log l "
                "JOIN inference_outcome o USING (request_id, row) ORDER BY l.row, request_id"
            )
        ).all()
    engine.dispose()
    assert [(j.request_id == rid, j.row, j.diabetes, j.test, j.caller) for j in joined] == [
        (True, 0, False, "ogtt", "local"), (False, 1, True, "ogtt", "app:nurse.1"),
        (True, 2, True, "fasting_glucose", "local")]  # fmt: skip


def _training_patients(n: int, glucose_shift: float, seed: int = 1) -> tuple[list[dict], list[int]]:
    """``n`` rows drawn from the training data (so unshifted features match the reference), as API patients."""
    from pipeline.config import load_config

    cfg = load_config(ROOT / "data" / "pima" / "dataset.yaml")
    df = pd.read_csv(ROOT / "data" / "pima" / "pima_tr2.csv").sample(n, replace=True, random_state=seed)
    patients = []
    for _, r in df.iterrows():
        p = {f.name: (None if pd.isna(r[f.column]) else float(r[f.column])) for f in cfg.features}
        p["glucosa"] = min(p["glucosa"] + glucose_shift, 400.0)
        patients.append(p)
    return patients, (df["type"] == "Yes").astype(int).tolist()


def test_monitor_flags_the_shifted_feature_only(registry, postgres_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from mlflow import MlflowClient

    env, _ = registry
    patients, outcomes = _training_patients(1500, glucose_shift=40)
    api = start_api(env, tmp_path, postgres_url)
    try:
        ids = []
        for start in range(0, len(patients), 250):
            r = requests.post(api.url + "/predict?contributions=false", json=patients[start : start + 250], timeout=30)
            assert r.status_code == 200, r.text
            ids += [(r.json()["request_id"], i) for i in range(len(patients[start : start + 250]))]
        wait_rows(postgres_url, len(patients))
        for (rid, row), y in list(zip(ids, outcomes, strict=True))[:300]:
            fb = {"request_id": rid, "row": row, "diabetes": bool(y), "test": "ogtt", "test_date": "2026-01-15"}
            assert requests.post(api.url + "/feedback", json=fb, timeout=10).status_code == 200
    finally:
        api.stop()
    child = {k: v for k, v in env.items() if k != "MLFLOW_RUN_ID"}
    child["APP_DATABASE_URL"] = postgres_url
    # Two batch jobs' summary rows (pipeline/batch/joblog.py), one of them for another version: the run counts one.
    from datetime import UTC, datetime

    from pipeline.batch import joblog

    for job_id, version in (("job-v1", "1"), ("job-v9", "9")):
        job = joblog.Job(job_id, datetime.now(UTC), "diabetes-t2", version, "models:/diabetes-t2/1", "in.csv",
                         "out.parquet", "local", rows=500, invalid=5)  # fmt: skip
        assert joblog.record(job, datetime.now(UTC), {"APP_DATABASE_URL": postgres_url}) == "recorded"
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", ".", "--env-manager", "local", "-e", "monitor", "-P", "days=30"],
        cwd=ROOT, env=child, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("diabetes-t2-monitoring")
    (run,) = client.search_runs([exp.experiment_id])
    m, tags = run.data.metrics, run.data.tags
    assert tags["model_version"] == "1" and tags["model_name"] == "diabetes-t2"
    assert m["prediction_count"] == len(patients)
    assert (m["batch_job_count"], m["batch_rows_scored"]) == (1, 495)  # batch rows are not in prediction_count
    assert m["drift_psi_glucosa"] >= 0.25
    others = {k: v for k, v in m.items() if k.startswith("drift_psi_") and k != "drift_psi_glucosa"}
    assert len(others) == 6 and max(others.values()) < 0.1, others
    assert tags["verdict"] == "alert" and tags["drifted_features"].split(",")[0] == "glucosa"
    assert "embarazos" not in tags["drifted_features"] and "edad" not in tags["drifted_features"]
    assert m["drift_pvalue_glucosa"] < 1e-6
    assert m["missing_rate_pliegue_triceps"] > 0 and m["missing_rate_glucosa"] == 0
    assert sum(v for k, v in m.items() if k.startswith("risk_level_share_")) == pytest.approx(1.0)
    assert m["outcome_n"] == 300 and 0.5 < m["outcome_auc"] <= 1
    assert m["outcome_auc_ci_low"] < m["outcome_auc"] < m["outcome_auc_ci_high"]
    for k in ("brier", "calibration_slope", "sensitivity", "specificity"):
        assert m[f"outcome_{k}_ci_low"] <= m[f"outcome_{k}"] <= m[f"outcome_{k}_ci_high"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"monitoring_report.html", "monitoring.json"} <= arts
    html = Path(client.download_artifacts(run.info.run_id, "monitoring_report.html", str(tmp_path))).read_text()
    assert "glucosa" in html and "alert" in html
