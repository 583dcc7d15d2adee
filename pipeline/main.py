"""Train → evaluate → register → gate/promote: the MLproject's ``main`` entry point.

python -m pipeline.main [--config data/pima/dataset.yaml] [--family auto] [--seed 42] ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import scipy
import sklearn
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from common.backend import PROJECT_ROOT, artifact_root, is_tracking_server, redact, tracking_uri
from pipeline import evaluate, reference, registry
from pipeline.config import ConfigError, DatasetConfig, load_config
from pipeline.data import Split, check_cv, load_split
from pipeline.risk_model import RiskModel
from pipeline.train import TrainOptions, compile_additive, fit, set_reference

MODEL_CODE = Path(__file__).with_name("risk_model.py")
DEFAULT_CONFIG = PROJECT_ROOT / "data" / "pima" / "dataset.yaml"
# Sklearn's probabilities and the compiled model's must agree to this tolerance.
COMPILE_TOLERANCE = 1e-9


@dataclass
class Outcome:
    run_id: str
    version: str
    promoted: bool
    gate: registry.GateResult
    metrics: dict[str, float]


def feature_spec(config: DatasetConfig) -> list[dict[str, Any]]:
    keep = ("name", "type", "integer", "unit", "min", "max", "categories", "optional", "label", "help")
    return [f.model_dump(include=set(keep)) for f in config.features]


def signature(config: DatasetConfig) -> ModelSignature:
    # Float columns even for counts: with integer columns MLflow silently truncates 5.9 to 5.
    inputs = Schema(
        [
            ColSpec("double" if f.type == "numeric" else "string", f.name, required=not f.optional)
            for f in config.features
        ]
    )
    outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "label"), ColSpec("string", "risk_level")])
    params = ParamSchema([ParamSpec("contributions", "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ensure_experiment(name: str) -> None:
    if os.environ.get("MLFLOW_RUN_ID"):
        return  # launched by `mlflow run`, which chose the experiment and created the run
    client = MlflowClient()
    if client.get_experiment_by_name(name) is None:
        location = None if is_tracking_server(mlflow.get_tracking_uri()) else f"{artifact_root()}/{name}"
        client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


def effects(model: RiskModel, X_train: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each numeric feature's contribution curve over its training range, others held at their impute value."""
    out = {}
    for j, f in enumerate(model.features):
        if f["type"] != "numeric":
            continue
        col = X_train[:, j][~np.isnan(X_train[:, j])]
        xs = np.linspace(col.min(), col.max(), 60)
        grid = np.tile(model.impute, (len(xs), 1))
        grid[:, j] = xs
        out[f["name"]] = (xs, model.terms_matrix(grid)[:, j] - model.reference[j])
    return out


def train_and_register(
    config: DatasetConfig, split: Split, opts: TrainOptions, model_name: str, min_auc: float, max_auc_drop: float
) -> Outcome:
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_params(
            {
                **vars(opts),
                "dataset": config.name,
                "model_name": model_name,
                "min_auc": min_auc,
                "max_auc_drop": max_auc_drop,
                "n_train": len(split.y_train),
                "n_test": len(split.y_test),
            }
        )
        mlflow.set_tags({"data_checksum": split.checksum, "git_commit": git_commit()})
        # Datasets in the run's "Inputs" (float target: MLflow warns about integer columns in schemas).
        for frame, y, name, context in ((split.X_train, split.y_train, "train", "training"),
                                        (split.X_test, split.y_test, "test", "evaluation")):  # fmt: skip
            data = mlflow.data.from_pandas(frame.assign(target=y.astype(float)), name=name, targets="target")
            mlflow.log_input(data, context=context)

        fitted = fit(config, split.X_train, split.y_train, opts)
        mlflow.log_params(
            {
                "chosen_family": fitted.family,
                "chosen_calibration": fitted.calibration,
                **{f"chosen_{k.split('__')[-1]}": v for k, v in fitted.best_params.items()},
            }
        )
        mlflow.log_metrics({f"cv_brier_{k}": v for k, v in fitted.cv_scores.items()})

        spec: dict[str, Any] = {
            "model_name": model_name,
            "dataset": config.name,
            "description": config.description,
            "target": config.target.label.model_dump(),
            "features": feature_spec(config),
            "threshold": config.threshold,
            "risk_bands": [b.model_dump() for b in config.risk_bands],
            "family": fitted.family,
            "calibration": fitted.calibration,
            "hyperparameters": {k.split("__")[-1]: v for k, v in fitted.best_params.items()},
            "data_checksum": split.checksum,
            "git_commit": git_commit(),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_train": int(len(split.y_train)),
            "n_test": int(len(split.y_test)),
            "published_baselines": config.published_baselines,
        }
        params = compile_additive(fitted, config, split.X_train)
        model = RiskModel()
        model.load_dict({"spec": spec, "params": params})
        X_train = model.to_matrix(split.X_train)
        set_reference(model, X_train)
        params["reference"] = model.reference.tolist()

        X_test = model.to_matrix(split.X_test)
        p = model.probability(X_test)
        gap = float(np.max(np.abs(p - fitted.estimator.predict_proba(split.X_test)[:, 1])))
        if gap > COMPILE_TOLERANCE:
            raise RuntimeError(f"compiled model differs from scikit-learn by {gap:g}")

        test_metrics = evaluate.metrics(split.y_test, p, config.threshold)
        baselines = evaluate.reference_baselines(
            split.X_train, split.y_train, split.X_test, split.y_test, config.threshold
        )
        spec["metrics"] = test_metrics
        spec["baselines"] = baselines
        spec["cv"] = fitted.cv_scores
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        mlflow.log_metrics(baselines)

        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            for f in evaluate.plots(split.y_test, p, config.threshold, effects(model, X_train), tmp_path / "plots"):
                mlflow.log_artifact(str(f), "plots")
            card = tmp_path / "model_card.md"
            card.write_text(evaluate.model_card(spec), encoding="utf-8")
            mlflow.log_artifact(str(card))
            model_json = tmp_path / "model.json"
            model_json.write_text(json.dumps({"spec": spec, "params": params, "reference_distributions": reference.distributions(model, X_train, config.monitoring.model_dump())}, indent=1), encoding="utf-8")  # noqa: E501 - one-line hook
            example = split.X_test.head(3).astype({f.name: float for f in config.features if f.type == "numeric"})
            reqs = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
            if any(t["kind"] == "spline" for t in params["terms"]):
                reqs.append(f"scipy=={scipy.__version__}")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={"model_json": str(model_json), "model_card": str(card)},
                signature=signature(config),
                input_example=example,
                pip_requirements=reqs,
                metadata={"model_name": model_name, "dataset": config.name, "sklearn_version": sklearn.__version__},
            )

        mv = mlflow.register_model(
            info.model_uri,
            model_name,
            tags={
                "data_checksum": split.checksum,
                "git_commit": spec["git_commit"],
                "run_id": run.info.run_id,
                "roc_auc": f"{test_metrics['roc_auc']:.4f}",
                "brier": f"{test_metrics['brier']:.4f}",
                "errors": f"{test_metrics['errors']}/{test_metrics['n_test']}",
            },
        )
        try:
            client.set_registered_model_alias(model_name, registry.CHALLENGER, mv.version)
            result = registry.gate(
                client, model_name, test_metrics["roc_auc"], split.X_test, split.y_test, min_auc, max_auc_drop
            )
            client.set_model_version_tag(model_name, mv.version, "gate", "passed" if result.passed else "failed")
            client.set_model_version_tag(model_name, mv.version, "gate_reasons", "; ".join(result.reasons))
            if result.passed:
                registry.promote(client, model_name, mv.version)
            mlflow.set_tag("gate", "passed" if result.passed else "failed")
        except BaseException:
            # Nothing half-registered: a version whose gating did not finish is removed.
            client.delete_model_version(model_name, mv.version)
            raise
    return Outcome(run.info.run_id, mv.version, result.passed, result, test_metrics)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="dataset config YAML")
    p.add_argument("--train-data", default="", help="override the config's training CSV")
    p.add_argument("--test-data", default="", help="override the config's test CSV")
    p.add_argument("--family", default="auto", help="auto, logistic or spline")
    p.add_argument("--C", default="auto", help="inverse regularisation strength, or auto (CV)")
    p.add_argument("--n-knots", default="auto", help="spline knots, or auto (CV)")
    p.add_argument("--calibration", default="auto", help="auto, none or sigmoid")
    p.add_argument("--cv-folds", type=int, default=5)
    p.add_argument("--cv-repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model-name", default=os.environ.get("MODEL_NAME", "diabetes-t2"))
    p.add_argument("--experiment", default="diabetes-t2")
    p.add_argument("--min-auc", type=float, default=0.80, help="gate: absolute ROC AUC floor")
    p.add_argument("--max-auc-drop", type=float, default=0.01, help="gate: allowed AUC loss against the champion")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = TrainOptions(args.family, args.C, args.n_knots, args.calibration, args.cv_folds, args.cv_repeats, args.seed)
    try:
        # Everything that can be wrong with the data or config fails here, before any run or version exists.
        opts.check()
        config = load_config(args.config)
        split = load_split(config, seed=args.seed, train=args.train_data or None, test=args.test_data or None)
        check_cv(split, opts.cv_folds)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    ensure_experiment(args.experiment)
    out = train_and_register(config, split, opts, args.model_name, args.min_auc, args.max_auc_drop)
    m = out.metrics
    print(f"tracking: {redact(uri)}")
    print(f"run: {out.run_id}")
    print(f"registered: {args.model_name} version {out.version} (alias {registry.CHALLENGER})")
    print(
        f"held-out ({m['n_test']} rows): ROC AUC {m['roc_auc']:.3f}, Brier {m['brier']:.3f}, "
        f"errors {m['errors']}/{m['n_test']}, calibration slope {m['calibration_slope']:.2f}"
    )
    verdict = "promoted to @champion" if out.promoted else "NOT promoted"
    print(f"gate: {verdict} — " + "; ".join(out.gate.reasons))
    print("browse: mlflow ui --backend-store-uri " + redact(uri) if not is_tracking_server(uri) else f"browse: {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
