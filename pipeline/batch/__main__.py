"""`python -m pipeline.batch --input PATH --output PATH [...]`: score a whole population with the registered model.

Exit 0 when the output is written; 1 with a one-line summary when more rows than ``--max-error-rate`` are invalid
(no output is published) or the job cannot run. Each job is an MLflow run with its counts and throughput and,
when the inference log exists, one summary row in it (pipeline/batch/joblog.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

import mlflow

from pipeline.batch import joblog
from pipeline.batch.core import BatchError, Tally, column_map, load_model, metric_key, now

log = logging.getLogger("pipeline.batch")
EXPERIMENT = "batch-scoring"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.batch", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="CSV or Parquet: a file, a folder of part files or a glob")
    p.add_argument("--output", required=True, help="Parquet, or CSV when the name ends in .csv (Spark: a folder)")
    p.add_argument("--model-uri", default="", help="default: models:/$MODEL_NAME@$MODEL_ALIAS (common/settings.py)")
    p.add_argument("--engine", choices=["local", "spark"], default="local")
    p.add_argument("--id-columns", default="", help="comma-separated input columns copied to the output")
    p.add_argument("--config", default="", help="dataset config whose 'column' mapping names the input columns")
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--contributions", default="false", choices=["true", "false"])
    p.add_argument("--experiment", default=EXPERIMENT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    from pipeline.settings import load_settings
    from pipeline.tracking import log_new_params, training_run  # `mlflow run` aware, like training

    settings = load_settings()
    args.model_uri = args.model_uri or f"models:/{settings.model_name}@{settings.model_alias}"
    ids = [c.strip() for c in args.id_columns.split(",") if c.strip()]
    contributions = args.contributions == "true"
    started_at = now()
    with training_run(settings, args.experiment) as run:
        params = {"input": args.input, "output": args.output, "model_uri": args.model_uri, "engine": args.engine,
                  "id_columns": ",".join(ids), "config": args.config or "(none)", "max_error_rate": args.max_error_rate,
                  "contributions": args.contributions}  # fmt: skip
        log_new_params(params)
        job: joblog.Job | None = None
        try:
            model = load_model(args.model_uri)
            mlflow.log_params({"model_name": model.name, "model_version": model.version, "model_uri_pinned": model.uri})
            job = joblog.Job(run.info.run_id, started_at, model.name, model.version, model.uri, args.input,
                             args.output, args.engine)  # fmt: skip
            mapping = column_map(model, args.config or None)
            start = time.perf_counter()  # the scoring phase: after start-up and the model load
            if args.engine == "spark":
                from pipeline.batch.spark import run_spark

                tally = run_spark(model, mapping, args.input, args.output, ids, contributions, args.max_error_rate)
            else:
                from pipeline.batch.local import run_local

                tally = run_local(model, mapping, args.input, args.output, ids, contributions, args.max_error_rate)
        except BatchError as exc:
            mlflow.set_tag("batch.error", str(exc))
            print(f"batch scoring failed: {exc}", file=sys.stderr)
            if job is not None:  # the model was loaded: the job ran and failed, which the log should show
                job.status, job.message = "failed", str(exc)
                mlflow.set_tag("inference_log", joblog.record(job, now()))
            mlflow.end_run("FAILED")
            return 1
        seconds = time.perf_counter() - start
        log_tally(tally, seconds)
        assert job is not None  # set as soon as the model is loaded, before scoring
        job.rows, job.invalid, job.errors = tally.rows, tally.invalid, dict(tally.reasons)
        job.rows_per_second = tally.rows / seconds if seconds else 0.0
        if tally.stopped or tally.rate > args.max_error_rate:
            summary = f"{tally.summary()}; above max_error_rate {args.max_error_rate:.2%}, no output written"
            mlflow.set_tag("batch.error", summary)
            print(f"batch scoring failed: {summary}", file=sys.stderr)
            job.status, job.message = "failed", summary
            mlflow.set_tag("inference_log", joblog.record(job, now()))
            mlflow.end_run("FAILED")
            return 1
        mlflow.set_tag("inference_log", joblog.record(job, now()))
        print(f"scored {tally.rows - tally.invalid} of {tally.rows} rows in {seconds:.1f}s "
              f"({tally.rows / seconds:,.0f} rows/s) with {model.name} v{model.version} -> {args.output} "
              f"[run {run.info.run_id}]" + (f"; {tally.summary()}" if tally.invalid else ""))  # fmt: skip
    return 0


def log_tally(tally: Tally, seconds: float) -> None:
    metrics = {
        "rows_total": tally.rows,
        "rows_scored": tally.rows - tally.invalid,
        "rows_invalid": tally.invalid,
        "error_rate": tally.rate,
        "seconds": seconds,
        "rows_per_second": tally.rows / seconds if seconds else 0.0,
    }
    metrics.update({metric_key(r): c for r, c in tally.reasons.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_dict({"rows": tally.rows, "invalid": tally.invalid, "reasons": dict(tally.reasons)}, "errors.json")


if __name__ == "__main__":
    sys.exit(main())
