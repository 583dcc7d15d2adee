"""The serving app in process (FastAPI TestClient over a real registered model): the generated OpenAPI
document, error shapes and codes from the one exception handler, and the request id."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.validation_cases import example

JSON_HDR = {"Content-Type": "application/json"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.fixture(scope="module")
def doc(client: Any) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_openapi_patient_is_the_served_spec_with_integers_as_integers(client: Any, doc: dict[str, Any]) -> None:
    features = client.get("/model/info").json()["features"]
    props = doc["components"]["schemas"]["Patient"]["properties"]
    assert set(props) == {f["name"] for f in features}
    for f in features:
        schema = props[f["name"]]
        types = {s.get("type") for s in schema.get("anyOf", [schema])}
        assert ("integer" if f.get("integer") else "number") in types, (f["name"], schema)
        bounded = next(s for s in schema.get("anyOf", [schema]) if s.get("type") in ("integer", "number"))
        assert (bounded["minimum"], bounded["maximum"]) == (f["min"], f["max"])
    required = set(doc["components"]["schemas"]["Patient"]["required"])
    assert required == {f["name"] for f in features if not f["optional"]}


def test_openapi_lists_every_status_and_content_type(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    inv = paths["/invocations"]["post"]
    assert set(inv["requestBody"]["content"]) == {"application/json", "text/csv", "application/vnd.apache.parquet"}
    assert {"200", "400", "413", "415", "503", "504"} <= set(inv["responses"])
    pred = paths["/predict"]["post"]
    assert {"200", "400", "413", "415", "422", "503", "504"} <= set(pred["responses"])
    assert pred["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert pred["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictError")
    assert {p["name"] for p in pred["parameters"]} == {"lang", "contributions", "interval"}
    assert "503" in paths["/model/info"]["get"]["responses"] and "404" in paths["/ping"]["get"]["responses"]
    assert "503" in paths["/health"]["get"]["responses"]
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):  # the document is whole: every reference resolves
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert "/docs" not in paths and "/openapi.json" not in paths


def test_openapi_documents_feedback_and_the_credentials_each_route_needs(doc: dict[str, Any]) -> None:
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    fb = paths["/feedback"]["post"]
    body = fb["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert body[0]["$ref"].endswith("/Outcome") and body[1]["items"]["$ref"].endswith("/Outcome")
    assert {"request_id", "diabetes", "test", "test_date"} <= set(schemas["Outcome"]["required"])
    assert schemas["Outcome"]["properties"]["test"]["enum"] == ["hba1c", "fasting_glucose", "ogtt"]
    ok = fb["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in ok] == ["FeedbackStored", "FeedbackBulk"]
    assert {"400", "404", "409", "413", "415", "422", "503"} <= set(fb["responses"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, scope in (("/invocations", "predict"), ("/predict", "predict"), ("/feedback", "feedback"),
                        ("/model/info", "info"), ("/metrics", "metrics")):  # fmt: skip
        op = next(iter(paths[path].values()))
        assert op["security"] == [{"bearer": []}] and f"Scope: `{scope}`" in op["description"], path
        assert {"401", "403", "429"} <= set(op["responses"]), path
    for path in ("/health", "/ping", "/version"):  # public: Render's health check needs no credential
        assert "security" not in paths[path]["get"] and "401" not in paths[path]["get"]["responses"]


def test_invocations_errors_use_mlflow_codes(client: Any) -> None:
    patient = client.app.state.store.current
    good = example(patient.spec["features"])
    cases = [
        ({"dataframe_records": [good] * 51}, JSON_HDR, 413, "REQUEST_LIMIT_EXCEEDED"),
        ({"dataframe_records": [good]}, {"Content-Type": "text/plain"}, 415, "BAD_REQUEST"),
        ({"dataframe_records": [{**good, "glucosa": "86"}]}, JSON_HDR, 400, "INVALID_PARAMETER_VALUE"),
        ({"dataframe_records": [good], "instances": [good]}, JSON_HDR, 400, "BAD_REQUEST"),
    ]
    for body, headers, status, code in cases:
        r = client.post("/invocations", content=json.dumps(body), headers=headers)
        assert (r.status_code, r.json()["error_code"]) == (status, code), r.text
        assert len(r.headers["x-request-id"]) >= 16
    r = client.post("/invocations", content=b"x" * 20001, headers=JSON_HDR)
    assert (r.status_code, r.json()["error_code"]) == (413, "REQUEST_LIMIT_EXCEEDED")


def test_predict_shapes(client: Any) -> None:
    good = example(client.app.state.store.current.spec["features"])
    r = client.post("/predict", json=good, headers={"x-request-id": "abc-123"})
    # Our id, not the caller's (a caller's id may repeat; ours keys the inference log), in the body and header.
    assert r.status_code == 200 and r.json()["request_id"] == r.headers["x-request-id"] != "abc-123"
    (p,) = r.json()["predictions"]
    assert p["baseline"] + sum(p["contributions"].values()) == pytest.approx(p["logit"], abs=1e-9)
    r = client.post("/predict?lang=de&contributions=maybe", json=good)
    assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} == {"lang", "contributions"}
    r = client.post("/predict", json=[good, 3])
    assert r.status_code == 400
    assert r.json()["errors"] == [
        {
            "row": 1,
            "field": "body",
            "rule": "each patient must be a JSON object",
            "message": "cada paciente debe ser un objeto JSON",
        }
    ]
    r = client.post("/predict", json=[good] * 51)
    assert r.status_code == 413 and r.json()["errors"] == [] and "limit" in r.json()["error"]
    r = client.post("/predict", content=b"[]", headers=JSON_HDR)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "body"


def test_no_model_is_a_503_in_each_shape(client: Any) -> None:
    store = client.app.state.store
    saved, store.current = store.current, None
    try:
        r = client.post("/invocations", json={"dataframe_records": []})
        assert (r.status_code, r.json()["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE")
        r = client.post("/predict", json={})
        assert r.status_code == 503 and r.json()["errors"] == [] and "request_id" in r.json()
        assert client.get("/model/info").status_code == 503
        assert client.get("/ping").status_code == 404
        doc = client.get("/openapi.json").json()  # still a whole document without a model
        assert "/predict" in doc["paths"] and "Patient" in doc["components"]["schemas"]
    finally:
        store.current = saved


def test_metrics_report_the_served_version(client: Any) -> None:
    version = client.app.state.store.current.version
    text = client.get("/metrics").text
    assert f'serving_model_version{{name="diabetes-t2"}} {float(version)}' in text


def test_every_problem_of_a_request_is_reported_at_once_on_both_routes(client: Any) -> None:
    good = example(client.app.state.store.current.spec["features"])
    bad = {**good, "embarazos": 5.9, "glucosa": "86.75", "edad": 333.5, "SECRET": 777.125}
    del bad["pedigri_diabetes"]
    r = client.post("/predict?lang=en", json=[good, bad])
    assert r.status_code == 422
    got = {(e["row"], e["field"], e["rule"].split(" (")[0]) for e in r.json()["errors"]}
    assert {(row, field) for row, field, _ in got} == {
        (1, "embarazos"),
        (1, "glucosa"),
        (1, "edad"),
        (1, "pedigri_diabetes"),
        (1, "body"),
    }
    assert (1, "glucosa", "must be a number") in got  # not also "is required"
    r = client.post("/invocations", json={"dataframe_records": [good, bad]})
    message = r.json()["message"]
    for part in ("embarazos: must be a whole number", "glucosa: must be a number", "edad: must be between"):
        assert part in message
    assert "pedigri_diabetes: is required" in message and "1 unknown column" in message
    assert "glucosa: is required" not in message and "SECRET" not in r.text and "777" not in r.text


def test_rejections_are_logged_with_the_status_sent_and_field_names_only(client: Any, caplog) -> None:
    import logging

    good = example(client.app.state.store.current.spec["features"])
    with caplog.at_level(logging.INFO, logger="serving.app"):
        client.post("/predict", json={**good, "glucosa": "86.75", "SECRET": 1})
        client.post("/invocations", json={"dataframe_records": [{**good, "glucosa": "86.75"}]})
    assert "/predict 422 " in caplog.text and "/invocations 400 " in caplog.text
    assert "fields=['glucosa']" in caplog.text and "86.75" not in caplog.text and "SECRET" not in caplog.text


def test_interval_on_both_routes_agrees_with_the_pyfunc(client: Any) -> None:
    """The 90 % bootstrap interval: params.interval on /invocations, ?interval on /predict, the same figures as the
    model's own pyfunc, and a clear 400/422 for a value that is not a boolean."""
    model = client.app.state.store.current
    good = example(model.spec["features"])
    r = client.post("/invocations", json={"dataframe_records": [good], "params": {"interval": True}})
    assert r.status_code == 200, r.text
    (inv,) = r.json()["predictions"]
    (pred,) = client.post("/predict?interval=true", json=good).json()["predictions"]
    import pandas as pd

    own = model.risk.predict(None, pd.DataFrame([good]), params={"interval": True}).iloc[0]
    for p in (inv, pred):
        assert p["probability_low"] <= p["probability"] <= p["probability_high"]
        assert p["probability_low"] == pytest.approx(own["probability_low"], abs=1e-12)
        assert p["probability_high"] == pytest.approx(own["probability_high"], abs=1e-12)
    assert "probability_low" not in client.post("/predict", json=good).json()["predictions"][0]
    r = client.post("/invocations", json={"dataframe_records": [good], "params": {"interval": "yes"}})
    assert r.status_code == 400 and "params.interval" in r.json()["message"]
    r = client.post("/predict?interval=maybe", json=good)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "interval"
