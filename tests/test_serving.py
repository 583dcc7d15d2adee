"""End-to-end tests of the serving API: the real `python -m serving` (gunicorn + uvicorn workers) on a
loopback port, against a real registry that `python -m pipeline.main` trained into (SQLite per session,
and a fresh Postgres database). Servers are started once per module and shared between tests."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
# Fast training options: the tests need a real registered model, not the best one.
TRAIN_ARGS = ("--cv-repeats", "1", "--cv-folds", "3")
PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)

# Values that appear only in bad requests: they must never come back in a body or show up in a log.
SENTINELS = ("5.9", "777.125", "86.75", "433.5", "SECRET")
JSON_HDR = {"Content-Type": "application/json"}


def clean_env(tracking_uri: str, artifacts: Path | None = None, **extra: str) -> dict[str, str]:
    drop = ("MLFLOW_TRACKING_URI", "DATABASE_URL", "MLFLOW_TRACKING_HOSTPORT", "MLFLOW_RUN_ID", "PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PROMETHEUS_")}
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT)})
    if artifacts is not None:
        env["MLFLOW_ARTIFACT_ROOT"] = artifacts.as_uri()
    env.update(extra)
    return env


def train(env: dict[str, str], *extra: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.main", *TRAIN_ARGS, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path
    cache: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group of the server this test started
                self.proc.wait(5)


def start_server(env: dict[str, str], cache: Path, log: Path, expect: str | None = "ok", **settings: str) -> Server:
    port = free_port()
    env = {**env, "PORT": str(port), "MODEL_CACHE_DIR": str(cache), **settings}
    env.setdefault("WEB_CONCURRENCY", "2")
    fh = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving"],
        cwd=ROOT,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(proc, port, log, cache)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            r = server.get("/health")
            if expect is None or r.json()["status"] == expect:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server not {expect} within 60 s:\n{log.read_text()[-3000:]}")


@dataclass
class Registry:
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("serving-registry")
    env = clean_env(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts")
    train(env)
    return Registry(env, tmp)


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[Server]:
    srv = start_server(
        registry.env,
        registry.tmp / "cache",
        registry.tmp / "server.log",
        RELOAD_INTERVAL_S="0.5",
        MAX_ROWS="2000",
        MAX_BODY_BYTES="300000",
    )
    yield srv
    srv.stop()


def patient(**over: float) -> dict[str, float]:
    base = {
        "embarazos": 2,
        "glucosa": 148,
        "presion_diastolica": 72,
        "pliegue_triceps": 35,
        "imc": 33.6,
        "pedigri_diabetes": 0.627,
        "edad": 50,
    }
    base.update(over)
    return base


def no_sentinel(text: str) -> None:
    for s in SENTINELS:
        assert s not in text, f"submitted value {s!r} echoed back"


# ---- operational routes -------------------------------------------------------------------------------
def test_health_ping_version(server: Server) -> None:
    r = server.get("/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok"
    assert doc["model"] == {"name": "diabetes-t2", "version": "1", "alias": "champion"}
    assert doc["registry_reachable"] is True
    assert doc["uptime_s"] > 0
    assert server.get("/ping").status_code == 200
    import mlflow

    assert server.get("/version").text == mlflow.__version__


def test_model_info_has_everything_the_ui_needs(server: Server) -> None:
    info = server.get("/model/info").json()
    for key in (
        "name version alias run_id created_at source metrics baselines published_baselines features threshold "
        "risk_bands target family calibration hyperparameters data_checksum trained_at n_train n_test signature"
    ).split():
        assert key in info, key
    assert info["version"] == "1" and info["source"] == "registry" and len(info["run_id"]) == 32
    names = [f["name"] for f in info["features"]]
    assert "glucosa" in names and all({"min", "max", "unit", "optional", "label"} <= set(f) for f in info["features"])
    assert [b["name"] for b in info["risk_bands"]] == ["low", "moderate", "high"]
    assert {c["name"] for c in info["signature"]["inputs"]} == set(names)
    assert 0.5 < info["metrics"]["roc_auc"] <= 1


def test_openapi_and_docs_describe_the_real_schema_offline(server: Server) -> None:
    doc = server.get("/openapi.json").json()
    props = doc["components"]["schemas"]["Patient"]["properties"]
    assert set(props) == {f["name"] for f in server.get("/model/info").json()["features"]}
    assert "/predict" in doc["paths"] and "/invocations" in doc["paths"]
    html = server.get("/docs").text
    assert "openapi.json" in html
    assert "http://" not in html and "https://" not in html  # nothing loaded from a CDN


def test_metrics(server: Server) -> None:
    server.post("/invocations", json={"dataframe_records": [patient()]})
    text = server.get("/metrics").text
    assert 'serving_requests_total{method="POST",route="/invocations",status="200"}' in text
    assert "serving_request_duration_seconds_bucket" in text
    assert "serving_predictions_total{risk_level=" in text
    assert 'serving_model_version{name="diabetes-t2"' in text


# ---- MLflow protocol ----------------------------------------------------------------------------------
def _formats() -> dict[str, tuple[dict[str, str], bytes]]:
    rows = [patient(), patient(glucosa=90, edad=30, embarazos=0), patient(imc=None, pliegue_triceps=None)]
    cols = list(rows[0])
    csv = pd.DataFrame(rows).to_csv(index=False).encode()
    return {
        "dataframe_split": (
            JSON_HDR,
            json.dumps({"dataframe_split": {"columns": cols, "data": [list(r.values()) for r in rows]}}).encode(),
        ),
        "dataframe_split_index": (
            JSON_HDR,
            json.dumps({"dataframe_split": pd.DataFrame(rows).to_dict(orient="split")}).encode(),
        ),
        "dataframe_records": (JSON_HDR, json.dumps({"dataframe_records": rows}).encode()),
        "instances": (JSON_HDR, json.dumps({"instances": rows}).encode()),
        "inputs_columns": (JSON_HDR, json.dumps({"inputs": {c: [r[c] for r in rows] for c in cols}}).encode()),
        "inputs_records": (JSON_HDR, json.dumps({"inputs": rows}).encode()),
        "csv": ({"Content-Type": "text/csv"}, csv),
        "json_charset": (
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps({"dataframe_records": rows}).encode(),
        ),
    }


@pytest.fixture(scope="module")
def reference(registry: Registry) -> pd.DataFrame:
    """What MLflow's own pyfunc predicts for the same rows (the served copy must agree)."""
    import mlflow

    mlflow.set_tracking_uri(registry.env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model("models:/diabetes-t2@champion")
    rows = [patient(), patient(glucosa=90, edad=30, embarazos=0), patient(imc=None, pliegue_triceps=None)]
    # pyfunc's own schema check refuses int64 for a double column, so give it floats
    return model.predict(pd.DataFrame(rows).astype(float), params={"contributions": True})


@pytest.mark.parametrize("fmt", list(_formats()))
def test_every_mlflow_input_format(server: Server, reference: pd.DataFrame, fmt: str) -> None:
    headers, body = _formats()[fmt]
    r = server.post("/invocations", data=body, headers=headers)
    assert r.status_code == 200, r.text
    preds = pd.DataFrame(r.json()["predictions"])
    assert list(preds.columns) == ["probability", "label", "risk_level"]
    assert preds["probability"].tolist() == pytest.approx(reference["probability"].tolist(), abs=1e-12)
    assert preds["label"].tolist() == reference["label"].tolist()
    assert preds["risk_level"].tolist() == reference["risk_level"].tolist()


def test_params_contributions_match_mlflow_output(server: Server, reference: pd.DataFrame) -> None:
    rows = [patient(), patient(glucosa=90, edad=30, embarazos=0), patient(imc=None, pliegue_triceps=None)]
    r = server.post("/invocations", json={"dataframe_records": rows, "params": {"contributions": True}})
    assert r.status_code == 200, r.text
    preds = pd.DataFrame(r.json()["predictions"])
    assert list(preds.columns) == list(reference.columns)  # same columns, same order as MLflow's records output
    pd.testing.assert_frame_equal(preds, reference, check_dtype=False, atol=1e-12)


def test_mlflow_scoring_server_client_unchanged(server: Server, reference: pd.DataFrame) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", server.port)
    client.wait_server_ready(timeout=10)
    rows = [patient(), patient(glucosa=90, edad=30, embarazos=0), patient(imc=None, pliegue_triceps=None)]
    out = client.invoke(pd.DataFrame(rows)).get_predictions()
    assert out["probability"].tolist() == pytest.approx(reference["probability"].tolist(), abs=1e-12)
    out = client.invoke(pd.DataFrame(rows), params={"contributions": True}).get_predictions()
    assert "contrib_glucosa" in out.columns


# ---- strictness: each bad input's status and body -----------------------------------------------------
BAD_INVOCATIONS = [
    # (id, headers, body, status, error_code, text that must be in the message)
    (
        "no_content_type",
        {},
        json.dumps({"dataframe_records": [patient()]}).encode(),
        415,
        "BAD_REQUEST",
        "Content-Type",
    ),
    ("text_plain", {"Content-Type": "text/plain"}, b"x", 415, "BAD_REQUEST", "content types"),
    ("charset", {"Content-Type": "application/json; charset=latin-1"}, b"{}", 415, "BAD_REQUEST", "UTF-8"),
    ("not_json", JSON_HDR, b"{SECRET", 400, "BAD_REQUEST", "valid JSON"),
    ("json_list", JSON_HDR, b"[1, 2]", 400, "BAD_REQUEST", "exactly one of"),
    (
        "two_formats",
        JSON_HDR,
        json.dumps({"dataframe_records": [], "instances": []}).encode(),
        400,
        "BAD_REQUEST",
        "exactly one of",
    ),
    (
        "float_for_integer",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient(embarazos=5.9)]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "embarazos: must be a whole number",
    ),
    (
        "string_for_number",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient(glucosa="86.75")]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "glucosa: must be a number",
    ),
    (
        "bool_for_number",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient(glucosa=True)]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "glucosa: must be a number",
    ),
    (
        "extra_column",
        JSON_HDR,
        json.dumps({"dataframe_records": [{**patient(), "insulina": 777.125}]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "insulina: is not a feature",
    ),
    (
        "missing_required",
        JSON_HDR,
        json.dumps({"dataframe_records": [{"glucosa": 148, "edad": 50}]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "embarazos: is required",
    ),
    (
        "out_of_range",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient(glucosa=433.5)]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "glucosa: must be between",
    ),
    (
        "split_extra_key",
        JSON_HDR,
        json.dumps({"dataframe_split": {"columns": ["glucosa"], "data": [[1]], "x": 1}}).encode(),
        400,
        "BAD_REQUEST",
        "dataframe_split must have",
    ),
    (
        "bad_param",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient()], "params": {"contributions": "SECRET"}}).encode(),
        400,
        "BAD_REQUEST",
        "contributions",
    ),
    (
        "unknown_param",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient()], "params": {"temperature": 1}}).encode(),
        400,
        "BAD_REQUEST",
        "unknown parameter",
    ),
    (
        "csv_text_in_number",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa,pedigri_diabetes,edad\n1,SECRET,0.5,40\n",
        400,
        "INVALID_PARAMETER_VALUE",
        "glucosa: must be a number",
    ),
    (
        "csv_ragged",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa\n1,2\n1,2,3,SECRET\n",
        400,
        "BAD_REQUEST",
        "could not be parsed",
    ),
    (
        "csv_float_for_integer",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa,pedigri_diabetes,edad\n5.9,100,0.5,40\n",
        400,
        "INVALID_PARAMETER_VALUE",
        "whole number",
    ),
    (
        "too_many_rows",
        JSON_HDR,
        json.dumps({"inputs": {"glucosa": [100] * 2001}}).encode(),
        413,
        "REQUEST_LIMIT_EXCEEDED",
        "limit is 2000",
    ),
    (
        "body_too_large",
        JSON_HDR,
        b'{"inputs": {"glucosa": [' + b"1," * 200000 + b"1]}}",
        413,
        "REQUEST_LIMIT_EXCEEDED",
        "limit is 300000 bytes",
    ),
]


@pytest.mark.parametrize("case", BAD_INVOCATIONS, ids=[c[0] for c in BAD_INVOCATIONS])
def test_bad_invocations(server: Server, case: tuple) -> None:
    _, headers, body, status, code, text = case
    # requests adds no Content-Type for raw bytes, so "no_content_type" really sends none.
    r = server.post("/invocations", data=body, headers=headers)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["error_code"] == code
    assert text in doc["message"]
    assert "Traceback" not in r.text and "stack_trace" not in doc
    no_sentinel(r.text)


def test_body_limit_holds_without_content_length(server: Server) -> None:
    def chunks() -> Iterator[bytes]:  # a generator makes requests send chunked, with no Content-Length
        yield b'{"inputs": {"glucosa": ['
        for _ in range(400):
            yield b"1," * 500
        yield b"1]}}"

    r = server.post("/invocations", data=chunks(), headers=JSON_HDR)
    assert r.status_code == 413 and "limit" in r.json()["message"]


def test_predict_one_and_many(server: Server) -> None:
    r = server.post("/predict", json=patient())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model"] == {"name": "diabetes-t2", "version": "1"} and len(doc["request_id"]) >= 16
    (p,) = doc["predictions"]
    assert 0 < p["probability"] < 1 and p["label"] in (0, 1) and p["risk_level"] in ("low", "moderate", "high")
    assert p["baseline"] + sum(p["contributions"].values()) == pytest.approx(p["logit"], abs=1e-9)
    r = server.post("/predict?contributions=false", json=[patient(), patient(glucosa=90, imc=None)])
    preds = r.json()["predictions"]
    assert len(preds) == 2 and "contributions" not in preds[0] and preds[0]["probability"] > preds[1]["probability"]


@pytest.mark.parametrize("lang,message", [("es", "debe ser un número entero"), ("en", "must be a whole number")])
def test_predict_422_names_field_and_rule_in_language(server: Server, lang: str, message: str) -> None:
    body = [patient(), {**patient(embarazos=5.9, glucosa="86.75", edad=333.5), "SECRET": 777.125}]
    del body[1]["pedigri_diabetes"]
    r = server.post(f"/predict?lang={lang}", json=body)
    assert r.status_code == 422, r.text
    errors = {(e["row"], e["field"]): e for e in r.json()["errors"]}
    assert errors[(1, "embarazos")]["rule"] == "must be a whole number"
    assert errors[(1, "embarazos")]["message"] == message
    assert errors[(1, "glucosa")]["rule"] == "must be a number"
    assert errors[(1, "edad")]["rule"].startswith("must be between")
    assert errors[(1, "pedigri_diabetes")]["rule"] == "is required"
    assert (1, "SECRET") in errors  # the unknown key is named (it is a key, not a value)
    assert all(row == 1 for row, _ in errors)
    for s in SENTINELS[:-1]:
        assert s not in r.text


@pytest.mark.parametrize(
    "headers,body,status",
    [
        ({}, json.dumps(patient()).encode(), 415),
        (JSON_HDR, b"{not json", 400),
        (JSON_HDR, b"[]", 400),
        (JSON_HDR, b"42", 400),
        (JSON_HDR, json.dumps([patient()] * 2001).encode(), 413),
    ],
    ids=["no_content_type", "not_json", "empty_list", "scalar", "too_many"],
)
def test_predict_bad_requests(server: Server, headers: dict, body: bytes, status: int) -> None:
    r = server.post("/predict", data=body, headers=headers)
    assert r.status_code == status, r.text
    assert "request_id" in r.json()


def test_predict_bad_query(server: Server) -> None:
    r = server.post("/predict?lang=fr&contributions=maybe", json=patient())
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"lang", "contributions"}


# ---- hot reload under load ----------------------------------------------------------------------------
def test_hot_reload_under_concurrent_load_has_zero_failures(server: Server, registry: Registry) -> None:
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer(route: str) -> None:
        s = requests.Session()
        while not stop.is_set():
            try:
                if route == "/predict":
                    r = s.post(server.url + "/predict", json=patient(), timeout=10)
                    if r.status_code == 200:
                        versions.append(r.json()["model"]["version"])
                else:
                    r = s.post(server.url + "/invocations", json={"dataframe_records": [patient()]}, timeout=10)
                if r.status_code != 200:
                    failures.append(f"{route} {r.status_code}")
            except requests.RequestException as exc:
                failures.append(f"{route} {type(exc).__name__}")

    threads = [threading.Thread(target=hammer, args=(r,)) for r in ("/predict", "/predict", "/invocations")]
    for t in threads:
        t.start()
    try:
        out = train(registry.env)  # version 2: same data and options, so the gate promotes it
        assert "promoted to @champion" in out
        deadline = time.time() + 30
        while time.time() < deadline and server.get("/health").json()["model"]["version"] != "2":
            time.sleep(0.2)
        time.sleep(1.5)  # every worker has had several watcher ticks
        n_before = len(versions)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not failures, failures[:10]
    assert "1" in versions and "2" in versions
    assert set(versions[n_before:]) == {"2"}, "some worker still serves version 1"
    assert len(versions) > 100  # the load was real
    health = server.get("/health").json()
    assert health["status"] == "ok" and health["model"]["version"] == "2"
    assert server.get("/model/info").json()["version"] == "2"


# ---- restart while the registry is down ---------------------------------------------------------------
def test_restart_with_registry_down_serves_cached_copy_degraded(server: Server, registry: Registry) -> None:
    cache = registry.tmp / "cache-copy"
    shutil.copytree(server.cache, cache)
    # A SQLite file in a directory that does not exist: MLflow cannot create it, so the registry is unreachable.
    env = clean_env(f"sqlite:///{registry.tmp / 'gone' / 'mlflow.db'}")
    srv = start_server(
        env,
        cache,
        registry.tmp / "server-down.log",
        expect="degraded",
        WEB_CONCURRENCY="1",
        REQUEST_TIMEOUT_S="0.02",
        MAX_BODY_BYTES="20000000",
        MAX_ROWS="100000",
    )
    try:
        health = srv.get("/health")
        assert health.status_code == 200
        doc = health.json()
        assert doc["registry_reachable"] is False and doc["model"]["version"] in ("1", "2")
        assert srv.get("/model/info").json()["source"] == "cache"
        r = srv.post("/invocations", json={"dataframe_records": [patient()]})
        assert r.status_code == 200 and r.json()["predictions"][0]["risk_level"] in ("low", "moderate", "high")
        assert srv.post("/predict", json=patient()).status_code == 200
        # The timeout bounds the work: 60k rows take far longer than 20 ms to check, so the worker stops early.
        big = json.dumps({"dataframe_records": [patient()] * 60000}).encode()
        t0 = time.perf_counter()
        r = srv.post("/invocations", data=big, headers=JSON_HDR)
        assert r.status_code == 504, r.text
        assert r.json()["error_code"] == "DEADLINE_EXCEEDED"
        assert time.perf_counter() - t0 < 5
        assert srv.post("/invocations", json={"dataframe_records": [patient()]}).status_code == 200
    finally:
        srv.stop()


def test_down_when_no_registry_and_no_cache(registry: Registry) -> None:
    env = clean_env(f"sqlite:///{registry.tmp / 'gone' / 'mlflow.db'}")
    srv = start_server(
        env, registry.tmp / "empty-cache", registry.tmp / "server-empty.log", expect="down", WEB_CONCURRENCY="1"
    )
    try:
        r = srv.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "down"
        assert srv.get("/ping").status_code == 404  # MLflow's answer when no model is loaded
        r = srv.post("/invocations", json={"dataframe_records": [patient()]})
        assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    finally:
        srv.stop()


def test_logs_never_contain_request_values(server: Server, registry: Registry) -> None:
    for log in registry.tmp.glob("server*.log"):
        text = log.read_text()
        assert "Traceback" not in text, log
        no_sentinel(text)


# ---- Postgres -----------------------------------------------------------------------------------------
@pytest.fixture
def postgres_db() -> Iterator[str]:
    import psycopg2

    try:
        admin = psycopg2.connect(**PG_ADMIN)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres at 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip(f"Postgres not reachable: {exc}")
    admin.autocommit = True
    name = f"test_serving_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_postgres_registry(postgres_db: str, tmp_path: Path) -> None:
    env = clean_env("", tmp_path / "artifacts")
    del env["MLFLOW_TRACKING_URI"]
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{postgres_db}"  # the Render-style variable
    train(env)
    srv = start_server(env, tmp_path / "cache", tmp_path / "server-pg.log", WEB_CONCURRENCY="2")
    try:
        assert srv.get("/health").json()["registry_reachable"] is True
        assert srv.get("/model/info").json()["version"] == "1"
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient

        out = ScoringServerClient("127.0.0.1", srv.port).invoke(pd.DataFrame([patient()])).get_predictions()
        assert 0 < out["probability"][0] < 1
        r = srv.post("/predict", json=patient(embarazos=5.9))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "embarazos"
        csv = io.StringIO()
        pd.DataFrame([patient()]).to_csv(csv, index=False)
        assert srv.post("/invocations", data=csv.getvalue(), headers={"Content-Type": "text/csv"}).status_code == 200
    finally:
        srv.stop()


def test_cache_from_another_registry_is_not_served(registry: Registry, tmp_path: Path) -> None:
    """Same name and version, different registry (e.g. a recreated mlflow.db): the cached copy is replaced."""
    shared_cache = tmp_path / "cache"
    first = start_server(registry.env, shared_cache, tmp_path / "first.log", WEB_CONCURRENCY="1")
    try:
        first_info = first.get("/model/info").json()
    finally:
        first.stop()
    other = clean_env(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "other-artifacts")
    family = "logistic" if first_info["family"] == "spline" else "spline"
    train(other, "--family", family)
    second = start_server(other, shared_cache, tmp_path / "second.log", WEB_CONCURRENCY="1")
    try:
        info = second.get("/model/info").json()
        assert info["version"] == "1" and info["run_id"] != first_info["run_id"]
        assert info["source"] == "registry"
        assert info["family"] == family  # read from the loaded model itself, not from registry metadata
    finally:
        second.stop()
