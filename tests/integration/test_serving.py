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

from tests.conftest import EXAMPLE_PATIENT, FAST_TRAIN, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
# Fast training options: the tests need a real registered model, not the best one.
TRAIN_ARGS = FAST_TRAIN

# Values that appear only in bad requests: they must never come back in a body or show up in a log.
# Values no log field can produce by chance (the request log prints latencies with three decimals, e.g. 5.9).
SENTINELS = ("5.987654", "777.125", "86.75", "433.5", "SECRET")
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
    out = run_pipeline(env, *TRAIN_ARGS, *extra)
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
    # Authentication is not the subject here (tests/unit/test_api_auth.py is): loopback with auth off.
    env.setdefault("HOST", "127.0.0.1")
    env.setdefault("API_AUTH", "off")
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
    clinic: subprocess.Popen  # training of the categorical clinic model, in its own registry
    clinic_env: dict[str, str]


def _start_clinic_training(tmp: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """The clinic dataset of the pipeline's end-to-end test (categorical sexo F/M, optional fumador si/no/ex),
    trained as clinic-risk into a registry of its own, in the background (it overlaps the Pima training)."""
    from tests.integration.test_pipeline_e2e import user_dataset

    folder = tmp / "clinic"
    folder.mkdir()
    config = user_dataset(folder)
    env = clean_env(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts")
    args = ["--config", str(config), "--model-name", "clinic-risk", "--min-auc", "0.55"]
    with (folder / "train.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.main", *TRAIN_ARGS, *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, {**env, "MODEL_NAME": "clinic-risk"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("serving-registry")
    env = clean_env(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts")
    clinic, clinic_env = _start_clinic_training(tmp)
    try:
        train(env)
        yield Registry(env, tmp, clinic, clinic_env)
    finally:
        if clinic.poll() is None:  # only the process this fixture started
            clinic.kill()
        clinic.wait(30)


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
    return {**EXAMPLE_PATIENT, **over}


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
    r = server.post("/invocations", json={"dataframe_records": [patient()]})
    assert r.status_code == 200, r.text
    # No retry: a request is counted before its answer's last byte is sent, so the scrape that follows it (on
    # either worker) must see it.
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
        json.dumps({"dataframe_records": [patient(embarazos=5.987654)]}).encode(),
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
        json.dumps({"dataframe_records": [{**patient(), "SECRET_insulina": 777.125}]}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "1 unknown column (not features of this model); expected: embarazos, glucosa,",
    ),
    (
        "unknown_keys_split",
        JSON_HDR,
        json.dumps({"dataframe_split": {"columns": ["SECRET1", "SECRET2", "glucosa"], "data": [[1, 2, 3]]}}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
        "2 unknown columns (not features of this model); expected: embarazos, glucosa,",
    ),
    (
        "unknown_top_level_and_param_keys",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient()], "params": {"SECRET": 1}}).encode(),
        400,
        "BAD_REQUEST",
        "1 unknown parameter(s)",
    ),
    (
        "unknown_format_keys",
        JSON_HDR,
        json.dumps({"SECRET": [patient()]}).encode(),
        400,
        "BAD_REQUEST",
        "Received 0 of them",
    ),
    (
        "huge_integer",  # 401 digits: beyond a double, so a range error (was OverflowError → 500)
        JSON_HDR,
        b'{"dataframe_records": [{"embarazos": 2, "glucosa": 1'
        + b"0" * 400
        + b', "pedigri_diabetes": 0.5, "edad": 40}]}',
        400,
        "INVALID_PARAMETER_VALUE",
        "glucosa: must be between",
    ),
    (
        "huge_integer_beyond_python_digit_limit",
        JSON_HDR,
        b'{"inputs": {"embarazos": [2], "glucosa": [-' + b"9" * 6000 + b'], "pedigri_diabetes": [0.5], "edad": [40]}}',
        400,
        "INVALID_PARAMETER_VALUE",
        "glucosa: must be between",
    ),
    (
        "float_beyond_double",
        JSON_HDR,
        json.dumps({"dataframe_records": [patient(pedigri_diabetes=1e400)]}).encode(),  # json writes Infinity
        400,
        "INVALID_PARAMETER_VALUE",
        "pedigri_diabetes: must be between",
    ),
    # deeper than the parsers go (orjson: 1024 levels, the standard library: the recursion limit)
    ("deep_json", JSON_HDR, b"[" * 3000 + b"]" * 3000, 400, "BAD_REQUEST", "valid JSON"),
    (
        "deep_json_inside_records",
        JSON_HDR,
        b'{"dataframe_records": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        400,
        "BAD_REQUEST",
        "valid JSON",
    ),
    # more arrays than 2 per allowed row: counted on the bytes, before any parser
    (
        "json_too_many_arrays",
        JSON_HDR,
        b"[" * 100_000 + b"]" * 100_000,
        413,
        "REQUEST_LIMIT_EXCEEDED",
        "too many JSON objects or arrays",
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
        "CSV row 2 has 4 fields but the header has 2",
    ),
    (
        # pandas would make the first value the index and shift every other value one column to the left
        "csv_one_extra_field_on_every_row",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa,presion_diastolica,pliegue_triceps,imc,pedigri_diabetes,edad\n"
        b"2,148,72,35,33.6,0.627,50,\n1,85,66,29,26.6,0.351,31,\n",
        400,
        "BAD_REQUEST",
        "CSV row 1 has 8 fields but the header has 7",
    ),
    (
        "csv_one_extra_field_on_the_first_row",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa,presion_diastolica,pliegue_triceps,imc,pedigri_diabetes,edad\n"
        b"777.125,2,148,72,35,33.6,0.627,50\n",
        400,
        "BAD_REQUEST",
        "CSV row 1 has 8 fields but the header has 7",
    ),
    (
        # no header: the first patient's values would be read as column names — never echoed back
        "csv_without_header",
        {"Content-Type": "text/csv"},
        b"2,86.75,72,35,433.5,0.627,50\n1,85,66,29,26.6,0.351,31\n",
        400,
        "INVALID_PARAMETER_VALUE",
        "7 unknown columns (not features of this model); expected: embarazos, glucosa,",
    ),
    (
        "csv_too_many_rows",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa,pedigri_diabetes,edad\n" + b"1,100,0.5,40\n" * 2001,
        413,
        "REQUEST_LIMIT_EXCEEDED",
        "limit is 2000",
    ),
    (
        "csv_float_for_integer",
        {"Content-Type": "text/csv"},
        b"embarazos,glucosa,pedigri_diabetes,edad\n5.987654,100,0.5,40\n",
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
    assert "86.75" not in doc["message"] and "148" not in doc["message"]  # e.g. a header-less CSV's values


def _parquet(rows: int, columns: list[str], batch: int = 500_000) -> bytes:
    """A zstd Parquet body of ``rows`` identical rows, written in batches (the test never holds them all)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: np.full(min(rows, batch), 1.0) for c in columns})
    out = io.BytesIO()
    with pq.ParquetWriter(out, table.schema, compression="zstd") as writer:
        for start in range(0, rows, batch):
            writer.write_table(table.slice(0, min(batch, rows - start)))
    return out.getvalue()


def _peak_rss_kb(server: Server) -> int:
    """Sum over the server's worker processes of their peak resident set size (VmHWM)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != server.proc.pid:  # ppid: the gunicorn master
                continue
            if b"inference_logd" in (stat.parent / "cmdline").read_bytes():
                continue  # the inference log's process: not a worker
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return total


def test_parquet_rows_are_counted_from_metadata_before_decoding(server: Server, reference: pd.DataFrame) -> None:
    rows = [patient(), patient(glucosa=90, edad=30, embarazos=0), patient(imc=None, pliegue_triceps=None)]
    ok = pd.DataFrame(rows).to_parquet()
    r = server.post("/invocations", data=ok, headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 200, r.text
    assert [p["probability"] for p in r.json()["predictions"]] == pytest.approx(
        reference["probability"].tolist(), abs=1e-12
    )
    # 3M rows x 7 doubles (168 MB decoded) in a body of a few KB: refused from the footer, nothing decoded.
    bomb = _parquet(3_000_000, list(patient()))
    assert len(bomb) < 300_000
    before = _peak_rss_kb(server)
    r = server.post("/invocations", data=bomb, headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 413, r.text
    assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED" and "limit is 2000" in r.json()["message"]
    grown_mb = (_peak_rss_kb(server) - before) / 1024
    assert grown_mb < 40, f"workers' peak RSS grew by {grown_mb:.0f} MB for a refused body"
    r = server.post("/invocations", data=b"PAR1 SECRET", headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 400 and "Parquet" in r.json()["message"]
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
    body = [patient(), {**patient(embarazos=5.987654, glucosa="86.75", edad=333.5), "SECRET": 777.125}]
    del body[1]["pedigri_diabetes"]
    r = server.post(f"/predict?lang={lang}", json=body)
    assert r.status_code == 422, r.text
    errors = {(e["row"], e["field"]): e for e in r.json()["errors"]}
    assert errors[(1, "embarazos")]["rule"] == "must be a whole number"
    assert errors[(1, "embarazos")]["message"] == message
    assert errors[(1, "glucosa")]["rule"] == "must be a number"
    assert errors[(1, "edad")]["rule"].startswith("must be between")
    assert errors[(1, "pedigri_diabetes")]["rule"] == "is required"
    # The unknown key is counted, never named: a key can be data (a value pasted as a name).
    unknown = errors[(1, "body")]
    assert unknown["rule"].startswith("1 unknown field(s) (not features of this model); expected: embarazos")
    assert unknown["message"].startswith("1 campo(s) desconocido(s)" if lang == "es" else "1 unknown field(s)")
    assert all(row == 1 for row, _ in errors)
    no_sentinel(r.text)


@pytest.mark.parametrize(
    "body",
    [
        b'{"embarazos": 2, "glucosa": 1e400, "pedigri_diabetes": 0.5, "edad": 40}',
        b'{"embarazos": 2, "glucosa": 1' + b"0" * 400 + b', "pedigri_diabetes": 0.5, "edad": 40}',
        b'{"embarazos": 2, "glucosa": -Infinity, "pedigri_diabetes": 0.5, "edad": 40}',
    ],
    ids=["1e400", "401_digits", "minus_infinity"],
)
def test_predict_numbers_beyond_a_double_are_range_errors(server: Server, body: bytes) -> None:
    r = server.post("/predict?lang=en", data=body, headers=JSON_HDR)
    assert r.status_code == 422, r.text
    (err,) = r.json()["errors"]
    assert err["field"] == "glucosa" and err["rule"].startswith("must be between"), err


def test_predict_nan_is_a_missing_value_as_on_invocations(server: Server) -> None:
    # MLflow's client writes NaN for a missing value: "not measured", never a range error (as on /invocations).
    body = b'{"embarazos": 2, "glucosa": NaN, "imc": NaN, "pedigri_diabetes": 0.5, "edad": 40}'
    r = server.post("/predict?lang=en", data=body, headers=JSON_HDR)
    assert r.status_code == 422, r.text
    assert [(e["field"], e["rule"]) for e in r.json()["errors"]] == [("glucosa", "is required")]


def test_predict_deep_json_is_a_400(server: Server) -> None:
    r = server.post("/predict", data=b"[" * 3000 + b"]" * 3000, headers=JSON_HDR)
    assert r.status_code == 400
    assert r.json()["errors"][0]["rule"] == "body must be valid JSON"
    r = server.post("/predict", data=b"[" * 100_000 + b"]" * 100_000, headers=JSON_HDR)
    assert r.status_code == 413 and "too many JSON objects or arrays" in r.json()["error"]


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
    # One sample per worker, each at the new version: the gunicorn master serves nothing and reports nothing
    # (it used to report the version it loaded at start, stale beside the workers').
    samples = [x for x in server.get("/metrics").text.splitlines() if x.startswith("serving_model_version{")]
    assert len(samples) == 2 and all(x.endswith(" 2.0") for x in samples), samples


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
        assert "registry not reachable" in doc["reason"]
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
        # /predict is bounded by the same timeout (pydantic validation of 60k patients takes far longer).
        big = json.dumps([patient()] * 60000).encode()
        t0 = time.perf_counter()
        r = srv.post("/predict", data=big, headers=JSON_HDR)
        assert r.status_code == 504, r.text[:300]
        assert "request_id" in r.json() and "longer than" in r.json()["error"]
        assert time.perf_counter() - t0 < 5
        assert srv.post("/predict", json=patient()).status_code == 200
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


LOG_SENTINELS = (*SENTINELS, "41.375", "SECRETKEY")  # the last two also in valid requests and keys


def test_logs_never_contain_request_values(server: Server, registry: Registry) -> None:
    """Self-contained: sends sentinel values through every route (good and bad requests) to this module's
    server, then reads that server's log. Valid requests carry sentinels too (imc=41.375)."""
    good = patient(imc=41.375)
    csv = b"embarazos,glucosa,pedigri_diabetes,edad\n1,86.75,0.5,40\n"
    sends: list[tuple[str, dict[str, str], bytes]] = [
        ("/invocations", headers, body) for _, headers, body, *_ in BAD_INVOCATIONS if len(body) < 400_000
    ]
    sends += [
        ("/invocations", JSON_HDR, json.dumps({"dataframe_records": [good]}).encode()),
        ("/invocations", JSON_HDR, json.dumps({"inputs": {"SECRETKEY": [41.375]}}).encode()),
        ("/invocations", {"Content-Type": "text/csv"}, csv),
        ("/invocations", {"Content-Type": "text/csv"}, b"2,86.75,72\n1,433.5,66\n"),
        ("/invocations", {"Content-Type": "application/vnd.apache.parquet"}, b"PAR1SECRET"),
        ("/predict", JSON_HDR, json.dumps(good).encode()),
        ("/predict", JSON_HDR, json.dumps([good, {**good, "glucosa": "86.75", "SECRETKEY": 777.125}]).encode()),
        ("/predict", JSON_HDR, json.dumps(patient(embarazos=5.987654, edad=433.5)).encode()),
        ("/predict", JSON_HDR, b'{"glucosa": 1e400, "SECRET": 86.75'),
        ("/predict", {"Content-Type": "text/plain"}, b"SECRET 86.75"),
    ]
    for path, headers, body in sends:
        server.post(path, data=body, headers={**headers, "x-request-id": "SECRET 86.75"})
    server.post("/predict?lang=SECRET&contributions=86.75", json=good)
    for path in ("/health", "/ping", "/version", "/model/info", "/metrics", "/docs", "/openapi.json", "/SECRET"):
        server.get(path + "?q=SECRET&v=86.75")
    time.sleep(0.3)  # workers write their log lines as they answer; let the last ones land
    text = server.log.read_text()
    assert "/predict 422" in text and "/invocations 400" in text  # the rejections were logged (without values)
    assert "Traceback" not in text
    assert "Downloading artifacts" not in text  # no progress bars in a service's log (their rates look like values)
    for sentinel in LOG_SENTINELS:
        assert sentinel not in text, f"request value {sentinel!r} in the server log"


# ---- a model with categorical features ----------------------------------------------------------------
CLINIC = {"edad": 50, "sexo": "M", "imc": 30.5, "fumador": "si"}


@pytest.fixture(scope="module")
def clinic_env(registry: Registry) -> dict[str, str]:
    """The registry (env) of the categorical clinic model, once its background training has finished."""
    rc = registry.clinic.wait(300)
    assert rc == 0, (registry.tmp / "clinic" / "train.log").read_text()[-3000:]
    return registry.clinic_env


@pytest.fixture(scope="module")
def clinic_server(clinic_env: dict[str, str], registry: Registry) -> Iterator[Server]:
    srv = start_server(
        clinic_env, registry.tmp / "cache-clinic", registry.tmp / "server-clinic.log", WEB_CONCURRENCY="1"
    )
    yield srv
    srv.stop()


def test_categorical_model_serves_predict_and_every_input_format(clinic_server: Server, clinic_env: dict) -> None:
    import mlflow

    mlflow.set_tracking_uri(clinic_env["MLFLOW_TRACKING_URI"])
    rows = [CLINIC, {"edad": 30, "sexo": "F", "imc": None, "fumador": None}, {"edad": 70, "sexo": "F", "fumador": "ex"}]
    frame = pd.DataFrame(rows, columns=list(CLINIC))
    expected = (
        mlflow.pyfunc.load_model("models:/clinic-risk@champion")
        .predict(frame.astype({"edad": float, "imc": float}))["probability"]
        .tolist()
    )

    info = clinic_server.get("/model/info").json()
    assert [f["name"] for f in info["features"]] == ["edad", "sexo", "imc", "fumador"]
    props = clinic_server.get("/openapi.json").json()["components"]["schemas"]["Patient"]["properties"]
    assert props["sexo"]["enum"] == ["F", "M"]

    r = clinic_server.post("/predict?contributions=true", json=rows)
    assert r.status_code == 200, r.text
    assert [p["probability"] for p in r.json()["predictions"]] == pytest.approx(expected, abs=1e-12)
    assert set(r.json()["predictions"][0]["contributions"]) == {"edad", "sexo", "imc", "fumador"}

    split = {"columns": list(CLINIC), "data": [[r.get(c) for c in CLINIC] for r in rows]}
    bodies = {
        "records": (JSON_HDR, json.dumps({"dataframe_records": rows}).encode()),
        "split": (JSON_HDR, json.dumps({"dataframe_split": split}).encode()),
        "inputs_columns": (JSON_HDR, json.dumps({"inputs": {c: [r.get(c) for r in rows] for c in CLINIC}}).encode()),
        "csv": ({"Content-Type": "text/csv"}, frame.to_csv(index=False).encode()),
        "parquet": ({"Content-Type": "application/vnd.apache.parquet"}, frame.to_parquet()),
    }
    for name, (headers, body) in bodies.items():
        r = clinic_server.post("/invocations", data=body, headers=headers)
        assert r.status_code == 200, (name, r.text)
        assert [p["probability"] for p in r.json()["predictions"]] == pytest.approx(expected, abs=1e-12), name
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    out = ScoringServerClient("127.0.0.1", clinic_server.port).invoke(frame).get_predictions()
    assert out["probability"].tolist() == pytest.approx(expected, abs=1e-12)


SEXO_RULE = "sexo: must be one of ['F', 'M']"


@pytest.mark.parametrize("value", [7.0, -1.0, 0.6, 0, 1, True, "f", "SECRET", [], {}], ids=repr)
def test_categorical_refuses_anything_but_its_strings(clinic_server: Server, value: object) -> None:
    bad = {**CLINIC, "sexo": value}
    for body in (
        {"dataframe_records": [CLINIC, bad]},
        {"dataframe_split": {"columns": list(bad), "data": [list(bad.values())]}},
        {"inputs": {k: [v] for k, v in bad.items()}},
        {"instances": [bad]},
    ):
        r = clinic_server.post("/invocations", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and SEXO_RULE in r.json()["message"], r.text
        no_sentinel(r.text)
    r = clinic_server.post("/predict?lang=en", json=[CLINIC, bad])
    assert r.status_code == 422, r.text
    (err,) = r.json()["errors"]
    assert (err["row"], err["field"], err["rule"]) == (1, "sexo", "must be one of ['F', 'M']")
    no_sentinel(r.text)


def test_categorical_refuses_numbers_in_csv_and_parquet(clinic_server: Server) -> None:
    frame = pd.DataFrame([{**CLINIC, "sexo": 0.0}, {**CLINIC, "sexo": 7.0}])
    for headers, body in (
        ({"Content-Type": "text/csv"}, frame.to_csv(index=False).encode()),
        ({"Content-Type": "application/vnd.apache.parquet"}, frame.to_parquet()),
        ({"Content-Type": "application/vnd.apache.parquet"}, frame.astype({"sexo": object}).to_parquet()),
    ):
        r = clinic_server.post("/invocations", data=body, headers=headers)
        assert r.status_code == 400, r.text
        assert SEXO_RULE in r.json()["message"], r.text
    # A missing optional category is "not measured"; a missing required one is named.
    r = clinic_server.post("/invocations", json={"dataframe_records": [{"edad": 50, "imc": 30.5}]})
    assert r.status_code == 400 and "sexo: is required" in r.json()["message"]
    r = clinic_server.post("/invocations", json={"dataframe_records": [{**CLINIC, "fumador": None}]})
    assert r.status_code == 200, r.text
    text = clinic_server.log.read_text()
    assert "Traceback" not in text and "SECRET" not in text


def _register_copy(client: object, source: Path, name: str, experiment_id: str, edit: object = None) -> str:
    """Register a copy of a downloaded model directory as a new version of ``name``; ``edit`` may change
    its model.json first. Returns the version."""
    import mlflow

    work = source.parent / f"copy-{uuid.uuid4().hex[:8]}"
    shutil.copytree(source, work)
    if edit is not None:
        path = work / "artifacts" / "model.json"
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifacts(str(work), "model")
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)


def test_hot_reload_to_a_version_that_cannot_be_prepared_keeps_serving(
    registry: Registry, clinic_env: dict[str, str]
) -> None:
    """v1 (the Pima model) serves; v2 loads but the API cannot build its schema (its spec lacks the feature
    labels the API publishes) → v1 keeps serving, /health is degraded with the reason; v3 (the categorical
    clinic model) then swaps in and serves categorical strings."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(registry.env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    tmp = registry.tmp / "reload"
    tmp.mkdir()
    experiment = mlflow.create_experiment(f"reload-{uuid.uuid4().hex[:8]}", (tmp / "artifacts").as_uri())
    pima = Path(mlflow.artifacts.download_artifacts("models:/diabetes-t2/1", dst_path=str(tmp / "pima")))
    mlflow.set_tracking_uri(clinic_env["MLFLOW_TRACKING_URI"])  # the clinic model's own registry
    clinic = Path(mlflow.artifacts.download_artifacts("models:/clinic-risk@champion", dst_path=str(tmp / "clinic")))
    mlflow.set_tracking_uri(registry.env["MLFLOW_TRACKING_URI"])
    name = f"reload-{uuid.uuid4().hex[:6]}"
    v1 = _register_copy(client, pima, name, experiment)
    client.set_registered_model_alias(name, "champion", v1)
    env = {**registry.env, "MODEL_NAME": name}
    srv = start_server(env, tmp / "cache", tmp / "server-reload.log", WEB_CONCURRENCY="1", RELOAD_INTERVAL_S="0.3")
    try:
        assert srv.post("/predict", json=patient()).json()["model"]["version"] == v1

        def drop_labels(doc: dict) -> None:
            for f in doc["spec"]["features"]:
                del f["label"]

        v2 = _register_copy(client, pima, name, experiment, edit=drop_labels)
        client.set_registered_model_alias(name, "champion", v2)
        deadline = time.time() + 20
        while time.time() < deadline:
            health = srv.get("/health").json()
            # Transiently "the alias points at version 2" (that worker is loading it); then the failure.
            if health["status"] != "ok" and "could not be loaded" in (health["reason"] or ""):
                break
            r = srv.post("/predict", json=patient())
            assert r.status_code == 200 and r.json()["model"]["version"] == v1, r.text
            time.sleep(0.1)
        assert health["status"] == "degraded" and health["model"]["version"] == v1, health
        assert f"version {v2} could not be loaded (KeyError); still serving version {v1}" == health["reason"]
        for _ in range(5):  # several watcher ticks later: still v1, on every route
            r = srv.post("/predict", json=patient())
            assert r.status_code == 200 and r.json()["model"]["version"] == v1, r.text
            r = srv.post("/invocations", json={"dataframe_records": [patient()]})
            assert r.status_code == 200, r.text
            info = srv.get("/model/info")
            assert info.status_code == 200 and info.json()["version"] == v1
            assert srv.get("/health").json()["status"] == "degraded"
            time.sleep(0.15)
        assert f"loading {name} version {v2} failed (KeyError" in srv.log.read_text()

        v3 = _register_copy(client, clinic, name, experiment)  # the categorical model
        client.set_registered_model_alias(name, "champion", v3)
        deadline = time.time() + 20
        while time.time() < deadline and srv.get("/health").json()["model"]["version"] != v3:
            time.sleep(0.1)
        health = srv.get("/health").json()
        assert health["status"] == "ok" and health["model"]["version"] == v3 and health["reason"] is None, health
        r = srv.post("/predict", json=CLINIC)
        assert r.status_code == 200 and r.json()["model"]["version"] == v3, r.text
        r = srv.post("/invocations", json={"dataframe_records": [CLINIC]})
        assert r.status_code == 200, r.text
        r = srv.post("/invocations", json={"dataframe_records": [{**CLINIC, "sexo": 7.0}]})
        assert r.status_code == 400 and SEXO_RULE in r.json()["message"]
        assert "Traceback" not in srv.log.read_text()
    finally:
        srv.stop()


# ---- Postgres -----------------------------------------------------------------------------------------
def test_postgres_registry(postgres_url: str, tmp_path: Path) -> None:  # fixture: tests/conftest.py
    env = clean_env("", tmp_path / "artifacts")
    del env["MLFLOW_TRACKING_URI"]
    env["DATABASE_URL"] = postgres_url  # the Render-style variable
    train(env)
    srv = start_server(env, tmp_path / "cache", tmp_path / "server-pg.log", WEB_CONCURRENCY="2")
    try:
        assert srv.get("/health").json()["registry_reachable"] is True
        assert srv.get("/model/info").json()["version"] == "1"
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient

        out = ScoringServerClient("127.0.0.1", srv.port).invoke(pd.DataFrame([patient()])).get_predictions()
        assert 0 < out["probability"][0] < 1
        r = srv.post("/predict", json=patient(embarazos=5.987654))
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
