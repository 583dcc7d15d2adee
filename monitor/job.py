"""The monitoring job: ``mlflow run . --env-manager local -e monitor [-P days=30]``.

Reads the last ``days`` of the inference log for one model version (default: the one ``@champion`` points
at), compares inputs and predictions with the reference distributions stored in that version's model.json,
scores confirmed outcomes, and writes one MLflow run in experiment ``diabetes-t2-monitoring`` tagged with the
model name and version: metrics ``prediction_count``, ``risk_level_share_<level>``, ``drift_psi_<feature>``,
``drift_pvalue_<feature>`` (KS for numeric, chi-square for categorical), ``missing_rate_<feature>``,
``prediction_drift_psi``, ``outcome_*`` with CIs and ``outcome_n``, ``batch_job_count`` / ``batch_rows_scored``
(the version's batch scoring jobs in the window, from their summary rows; their records are not in the log); an
HTML report; and a ``verdict`` tag (ok / warn / alert / no-data) from the dataset config's PSI thresholds. It first
purges log rows older than ``INFERENCE_RETENTION_DAYS`` (default 365).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from common import inference_db
from common.backend import PROJECT_ROOT, artifact_root, is_tracking_server, redact, tracking_uri
from common.settings import MONITORING_EXPERIMENT
from monitor import stats
from monitor.report import html_report

EXPERIMENT = MONITORING_EXPERIMENT
CHUNK = 20_000
# Rows read for drift (a random sample above this): keeps the job inside a 512 MB instance at any log size.
MAX_ROWS = int(os.environ.get("MONITOR_MAX_ROWS") or 200_000)


def purge(engine: sa.Engine, retention_days: int) -> int:
    """Delete log rows (and their outcomes) older than the retention period; returns rows deleted."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    log_t, out_t = inference_db.inference_log, inference_db.inference_outcome
    with engine.begin() as conn:
        old = sa.select(log_t.c.request_id).where(log_t.c.ts < cutoff)
        conn.execute(sa.delete(out_t).where(out_t.c.request_id.in_(old)))
        return conn.execute(sa.delete(log_t).where(log_t.c.ts < cutoff)).rowcount


def batch_jobs(engine: sa.Engine, name: str, version: str, since: datetime) -> dict[str, float]:
    """The version's batch jobs that started in the window (one summary row each): how many, and their rows."""
    t = inference_db.inference_batch_job
    q = sa.select(
        sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.rows), 0), sa.func.coalesce(sa.func.sum(t.c.scored), 0)
    )
    q = q.where(t.c.model_name == name, t.c.model_version == version, t.c.started_at >= since)
    with engine.connect() as conn:
        jobs, rows, scored = conn.execute(q).one()
    return {"batch_job_count": int(jobs), "batch_rows_total": int(rows), "batch_rows_scored": int(scored)}


def model_document(name: str, version: str) -> dict[str, Any]:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/artifacts/model.json", dst_path=tmp)
        return json.loads(Path(path).read_text(encoding="utf-8"))


def read_log(engine: sa.Engine, name: str, version: str, since: datetime, features: list[dict[str, Any]]) -> dict:
    """The window, bounded in memory whatever its size: exact counts and risk mix (SQL), every confirmed outcome
    with its prediction, and for drift the inputs, probabilities and latencies of at most MAX_ROWS rows (a
    seeded TABLESAMPLE BERNOULLI on Postgres when the window is larger). Rows are fetched in chunks."""
    log_t, out_t = inference_db.inference_log, inference_db.inference_outcome

    def where(t: Any) -> Any:
        return (t.c.model_name == name) & (t.c.model_version == version) & (t.c.ts >= since)

    names = [f["name"] for f in features]
    codes = {f["name"]: {c: float(i) for i, c in enumerate(f["categories"])} for f in features if f.get("categories")}
    with engine.connect() as conn:
        mix = dict(conn.execute(sa.select(log_t.c.risk_level, sa.func.count()).where(where(log_t))
                                .group_by(log_t.c.risk_level)).all())  # fmt: skip
        total = int(sum(mix.values()))
        joined = log_t.join(out_t, (out_t.c.request_id == log_t.c.request_id) & (out_t.c.row == log_t.c.row))
        q = sa.select(log_t.c.probability, out_t.c.diabetes).select_from(joined).where(where(log_t)).limit(MAX_ROWS)
        outcomes = np.array(conn.execute(q).all(), dtype=float).reshape(-1, 2)
        table: Any = log_t
        if total > MAX_ROWS and engine.dialect.name == "postgresql":
            table = log_t.tablesample(sa.func.bernoulli(100.0 * MAX_ROWS / total), seed=sa.literal(7))
        cap = min(total, int(MAX_ROWS * 1.1))  # a Bernoulli sample can come out a little larger than asked
        X = np.full((cap, len(names)), np.nan)
        p, lat = np.empty(cap), np.empty(cap)
        q = sa.select(table.c.features, table.c.probability, table.c.latency_ms).where(where(table)).limit(cap)
        i = 0
        for part in conn.execution_options(stream_results=True, yield_per=CHUNK).execute(q).partitions():
            for feats, prob, ms in part:
                if isinstance(feats, str):
                    feats = json.loads(feats)
                for j, name_ in enumerate(names):
                    v = feats.get(name_)
                    if v is not None:
                        X[i, j] = codes[name_].get(v, np.nan) if name_ in codes else float(v)
                p[i], lat[i] = prob, ms
                i += 1
    return {"total": total, "mix": mix, "X": X[:i], "p": p[:i], "latency": lat[:i],
            "p_outcome": outcomes[:, 0], "y_outcome": outcomes[:, 1]}  # fmt: skip


def analyse(doc: dict[str, Any], data: dict[str, Any], warn: float, alert: float) -> dict[str, Any]:
    ref = doc["reference_distributions"]
    spec = doc["spec"]
    n = data["total"]
    metrics: dict[str, float] = {"prediction_count": n, "drift_sample_rows": len(data["p"])}
    details: dict[str, Any] = {}
    if n == 0:
        return {"metrics": metrics, "verdict": "no-data", "flagged": [], "features": {}, "prediction": None}
    for b in spec["risk_bands"]:
        metrics[f"risk_level_share_{b['name']}"] = data["mix"].get(b["name"], 0) / n
    psis = {}
    for j, f in enumerate(spec["features"]):
        d = stats.feature_drift(ref["features"][f["name"]], data["X"][:, j])
        details[f["name"]] = d
        psis[f["name"]] = d["psi"]
        metrics[f"drift_psi_{f['name']}"] = d["psi"]
        metrics[f"drift_pvalue_{f['name']}"] = d["pvalue"]
        metrics[f"missing_rate_{f['name']}"] = d["missing_rate"]
    pred = stats.feature_drift(ref["prediction"], data["p"])
    metrics["prediction_drift_psi"] = pred["psi"]
    metrics["prediction_drift_pvalue"] = pred["pvalue"]
    metrics["prediction_mean"] = float(np.mean(data["p"]))
    metrics["latency_p50_ms"], metrics["latency_p95_ms"] = map(float, np.percentile(data["latency"], [50, 95]))
    metrics.update(stats.outcome_metrics(data["y_outcome"], data["p_outcome"], float(spec["threshold"])))
    verdict, flagged = stats.verdict({**psis, "prediction": pred["psi"]}, warn, alert)
    return {"metrics": metrics, "verdict": verdict, "flagged": flagged, "features": details, "prediction": pred}


def _experiment_id() -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    uri = tracking_uri()
    location = None if is_tracking_server(uri) else f"{artifact_root()}/{EXPERIMENT}"
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def log_run(result: dict[str, Any], name: str, version: str, days: int, purged: int) -> str:
    import mlflow

    launcher = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run` made a run elsewhere: ours goes to EXPERIMENT
    exp_id = _experiment_id()
    finite = {k: float(v) for k, v in result["metrics"].items() if v is not None and np.isfinite(v)}
    tags = {
        "model_name": name,
        "model_version": version,
        "verdict": result["verdict"],
        "drifted_features": ",".join(result["flagged"]),
        "window_days": str(days),
        "purged_rows": str(purged),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=f"monitor {name} v{version}") as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(finite)
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "monitoring_report.html"
            report.write_text(html_report(result, name, version, days), encoding="utf-8")
            mlflow.log_artifact(str(report))
            summary = Path(tmp) / "monitoring.json"
            summary.write_text(json.dumps(result, default=float, indent=1), encoding="utf-8")
            mlflow.log_artifact(str(summary))
    if launcher:
        from mlflow import MlflowClient

        MlflowClient().set_tag(launcher, "monitoring_run_id", run.info.run_id)
    return run.info.run_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=30, help="window of the log to analyse")
    p.add_argument("--model-name", default="", help="registered model (default: MODEL_NAME, see common/settings.py)")
    p.add_argument("--version", default="", help="model version (default: the one @champion points at)")
    p.add_argument("--config", default=str(PROJECT_ROOT / "data" / "pima" / "dataset.yaml"), help="thresholds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import mlflow
    from mlflow import MlflowClient

    from common.settings import CommonSettings, SettingsError
    from pipeline.config import ConfigError, load_config

    args = parse_args(argv)
    try:
        settings = CommonSettings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.model_name = args.model_name or settings.model_name
    try:
        thresholds = load_config(args.config).monitoring
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.days < 1:
        print("error: days must be at least 1", file=sys.stderr)
        return 2
    retention = int(os.environ.get("INFERENCE_RETENTION_DAYS") or 365)
    mlflow.set_tracking_uri(settings.tracking_uri)
    version = args.version or MlflowClient().get_model_version_by_alias(args.model_name, settings.model_alias).version
    doc = model_document(args.model_name, str(version))
    if "reference_distributions" not in doc:
        print(f"error: {args.model_name} version {version} has no reference distributions (trained before "
              "monitoring existed); retrain it to monitor drift", file=sys.stderr)  # fmt: skip
        return 2
    url = inference_db.database_url()
    inference_db.migrate(url)
    engine = inference_db.make_engine(url)
    try:
        purged = purge(engine, retention)
        since = datetime.now(UTC) - timedelta(days=args.days)
        data = read_log(engine, args.model_name, str(version), since, doc["spec"]["features"])
        jobs = batch_jobs(engine, args.model_name, str(version), since)
    finally:
        engine.dispose()
    result = analyse(doc, data, thresholds.psi_warn, thresholds.psi_alert)
    result["metrics"].update(jobs)
    run_id = log_run(result, args.model_name, str(version), args.days, purged)
    m = result["metrics"]
    print(f"log: {redact(url)}; purged {purged} rows older than {retention} days")
    print(f"model: {args.model_name} version {version}; {m['prediction_count']} predictions in {args.days} days"
          f" (and {m['batch_job_count']} batch jobs, {m['batch_rows_scored']} rows scored)")  # fmt: skip
    print(f"verdict: {result['verdict']}" + (f" (drift: {', '.join(result['flagged'])})" if result["flagged"] else ""))
    if m.get("outcome_n"):
        print(f"outcomes: {m['outcome_n']}, AUC {m.get('outcome_auc', float('nan')):.3f}")
    print(f"run: {run_id} (experiment {EXPERIMENT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
