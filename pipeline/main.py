"""The MLproject's ``main`` entry point: load → train → evaluate → log → register → gate/promote.

python -m pipeline.main [--config data/pima/dataset.yaml] [--family auto] [--seed 42] ...

One function per step, called in that order by :func:`run`:
    load      the dataset config and its CSVs, checked before any run or version exists
    train     cross-validated fit, compiled into the additive model that is served (must agree with sklearn)
    evaluate  held-out metrics and reference baselines
    log       parameters, data, metrics, plots, model card and the pyfunc model, into the MLflow run
    register  a new version of the registered model, with @challenger (pipeline/registry.py)
    gate      promote it to MODEL_ALIAS only when it passes the gate (pipeline/registry.py)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from common.backend import PROJECT_ROOT, is_tracking_server, redact
from pipeline import evaluate, package, reference, registry
from pipeline.config import CV_FOLDS, CV_REPEATS, MAX_AUC_DROP, MIN_AUC, SEED, ConfigError, DatasetConfig, load_config
from pipeline.data import Split, check_cv, load_split
from pipeline.risk_model import RiskModel
from pipeline.settings import CHALLENGER, PipelineSettings, load_settings
from pipeline.tracking import log_new_params, training_run
from pipeline.train import Fitted, TrainOptions, attach_ensemble, compile_additive, fit, log_cv, set_reference

DEFAULT_CONFIG = PROJECT_ROOT / "data" / "pima" / "dataset.yaml"
# Sklearn's probabilities and the compiled model's must agree to this tolerance.
COMPILE_TOLERANCE = 1e-9


@dataclass
class Inputs:
    config: DatasetConfig
    split: Split
    opts: TrainOptions


@dataclass
class Trained:
    fitted: Fitted
    model: RiskModel  # the compiled model, as it will be served
    spec: dict[str, Any]
    params: dict[str, Any]
    X_train: np.ndarray  # feature matrices in the served model's encoding
    X_test: np.ndarray


@dataclass
class Evaluated:
    p_test: np.ndarray
    metrics: dict[str, float]
    baselines: dict[str, float]


@dataclass
class Outcome:
    run_id: str
    version: str
    promoted: bool
    gate: registry.GateResult
    metrics: dict[str, float]


# ---- the steps ----------------------------------------------------------------------------------------
def load(args: argparse.Namespace) -> Inputs:
    """Everything that can be wrong with the options, config or data raises ConfigError here."""
    opts = TrainOptions(args.family, args.C, args.n_knots, args.calibration, args.cv_folds, args.cv_repeats, args.seed)
    opts.check()
    config = load_config(args.config)
    split = load_split(config, seed=args.seed, train=args.train_data or None, test=args.test_data or None)
    check_cv(split, opts.cv_folds)
    evaluate.load_external(config)  # a bad external cohort fails here too
    return Inputs(config, split, opts)


def train(inputs: Inputs, model_name: str) -> Trained:
    config, split = inputs.config, inputs.split
    fitted = fit(config, split.X_train, split.y_train, inputs.opts)
    spec = package.model_spec(config, split, fitted, model_name)
    params = compile_additive(fitted, config, split.X_train)
    model = RiskModel()
    model.load_dict({"spec": spec, "params": params})
    X_train, X_test = model.to_matrix(split.X_train), model.to_matrix(split.X_test)
    set_reference(model, X_train)
    params["reference"] = model.reference.tolist()
    attach_ensemble(model, params, fitted, config, split.X_train, split.y_train, inputs.opts)  # per-prediction interval
    gap = float(np.max(np.abs(model.probability(X_test) - fitted.estimator.predict_proba(split.X_test)[:, 1])))
    if gap > COMPILE_TOLERANCE:
        raise RuntimeError(f"compiled model differs from scikit-learn by {gap:g}")
    return Trained(fitted, model, spec, params, X_train, X_test)


def evaluate_model(trained: Trained, inputs: Inputs) -> Evaluated:
    split, threshold = inputs.split, inputs.config.threshold
    p = trained.model.probability(trained.X_test)
    test_metrics = evaluate.metrics(split.y_test, p, threshold)
    baselines = evaluate.reference_baselines(split.X_train, split.y_train, split.X_test, split.y_test, threshold)
    fitted = trained.fitted
    trained.spec.update(metrics=test_metrics, baselines=baselines, cv=fitted.cv_scores)
    trained.spec.update(cv_table=fitted.cv_table, select_by=fitted.select_by)
    # Metric intervals, decision curve, subgroups, external cohorts (logged to the active run by evaluate.py).
    trained.spec.update(evaluate.log_report(inputs.config, split, trained.model, p, seed=inputs.opts.seed))
    return Evaluated(p, test_metrics, baselines)


def log_inputs(inputs: Inputs, model_name: str, rule: registry.GateRule) -> None:
    """What the run starts from (before training, so a failed training still shows them)."""
    split = inputs.split
    log_new_params({**vars(inputs.opts), "dataset": inputs.config.name, "model_name": model_name,
                    "min_auc": rule.min_auc, "max_auc_drop": rule.max_auc_drop,
                    "n_train": len(split.y_train), "n_test": len(split.y_test)})  # fmt: skip
    mlflow.set_tags({"data_checksum": split.checksum, "git_commit": package.git_commit()})
    # Datasets in the run's "Inputs" (float target: MLflow warns about integer columns in schemas).
    for frame, y, name, context in ((split.X_train, split.y_train, "train", "training"),
                                    (split.X_test, split.y_test, "test", "evaluation")):  # fmt: skip
        data = mlflow.data.from_pandas(frame.assign(target=y.astype(float)), name=name, targets="target")
        mlflow.log_input(data, context=context)


def log(inputs: Inputs, trained: Trained, evaluated: Evaluated) -> str:
    """Log the training's results and the model into the active run; returns the model's URI."""
    fitted, split, threshold = trained.fitted, inputs.split, inputs.config.threshold
    log_new_params({"chosen_family": fitted.family, "chosen_calibration": fitted.calibration,
                    **{f"chosen_{k.split('__')[-1]}": v for k, v in fitted.best_params.items()}})  # fmt: skip
    mlflow.log_metrics({f"cv_brier_{k}": v for k, v in fitted.cv_scores.items()})
    mlflow.log_metrics(log_cv(fitted))  # every candidate's CV Brier, log loss and calibration slope
    mlflow.log_metrics({f"test_{k}": v for k, v in evaluated.metrics.items()})
    mlflow.log_metrics(evaluated.baselines)
    with tempfile.TemporaryDirectory() as tmp:
        curves = package.effects(trained.model, trained.X_train)
        for f in evaluate.plots(split.y_test, evaluated.p_test, threshold, curves, Path(tmp) / "plots"):
            mlflow.log_artifact(str(f), "plots")
    card = evaluate.model_card(trained.spec)
    # The training distributions the monitor job compares live traffic with (stored inside the model).
    ref = reference.distributions(trained.model, trained.X_train, inputs.config.monitoring.model_dump())
    return package.log_pyfunc(inputs.config, trained.spec, trained.params, card, ref).model_uri


def version_tags(split: Split, spec: dict[str, Any], run_id: str, m: dict[str, float]) -> dict[str, str]:
    return {"data_checksum": split.checksum, "git_commit": spec["git_commit"], "run_id": run_id,
            "roc_auc": f"{m['roc_auc']:.4f}", "brier": f"{m['brier']:.4f}",
            "errors": f"{m['errors']}/{m['n_test']}"}  # fmt: skip


def run(
    inputs: Inputs, settings: PipelineSettings, model_name: str, experiment: str, rule: registry.GateRule
) -> Outcome:
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    with training_run(settings, experiment) as active:
        run_id = active.info.run_id
        log_inputs(inputs, model_name, rule)
        trained = train(inputs, model_name)
        evaluated = evaluate_model(trained, inputs)
        model_uri = log(inputs, trained, evaluated)
        split = inputs.split
        tags = version_tags(split, trained.spec, run_id, evaluated.metrics)
        mv = registry.register_version(client, model_uri, model_name, tags)
        verdict = registry.gate_and_promote(client, mv, settings.model_alias, evaluated.metrics["roc_auc"],
                                            split.X_test, split.y_test, rule)  # fmt: skip
        mlflow.set_tag("gate", "passed" if verdict.passed else "failed")
    return Outcome(run_id, str(mv.version), verdict.passed, verdict, evaluated.metrics)


# ---- command line -------------------------------------------------------------------------------------
def count(minimum: int) -> Callable[[str], int]:
    """A whole number >= minimum; MLproject passes its float parameters through, so "5.0" is 5."""

    def parse(text: str) -> int:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if not value.is_integer() or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got '{text}'")
        return int(value)

    return parse


def parse_args(argv: list[str] | None, settings: PipelineSettings) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="dataset config YAML")
    p.add_argument("--train-data", default="", help="override the config's training CSV")
    p.add_argument("--test-data", default="", help="override the config's test CSV")
    p.add_argument("--family", default="auto", help="auto, logistic, spline or ebm")
    p.add_argument("--C", default="auto", help="inverse regularisation strength, or auto (CV)")
    p.add_argument("--n-knots", default="auto", help="spline knots, or auto (CV)")
    p.add_argument("--calibration", default="auto", help="auto, none or sigmoid")
    p.add_argument("--cv-folds", type=count(2), default=CV_FOLDS)
    p.add_argument("--cv-repeats", type=count(1), default=CV_REPEATS)
    p.add_argument("--seed", type=count(0), default=SEED)
    p.add_argument("--model-name", default="", help=f"registered model (default: MODEL_NAME, {settings.model_name})")
    p.add_argument("--experiment", default="", help="experiment when not run by `mlflow run` (default: model name)")
    p.add_argument("--min-auc", type=float, default=MIN_AUC, help="gate: absolute ROC AUC floor")
    p.add_argument("--max-auc-drop", type=float, default=MAX_AUC_DROP, help="gate: allowed AUC loss against the alias")
    args = p.parse_args(argv)
    args.model_name = args.model_name or settings.model_name
    args.experiment = args.experiment or args.model_name
    return args


def report(out: Outcome, settings: PipelineSettings, model_name: str) -> None:
    uri, m = settings.tracking_uri, out.metrics
    print(f"tracking: {redact(uri)}")
    print(f"run: {out.run_id}")
    print(f"registered: {model_name} version {out.version} (alias {CHALLENGER})")
    print(
        f"held-out ({m['n_test']} rows): ROC AUC {m['roc_auc']:.3f}, Brier {m['brier']:.3f}, "
        f"errors {m['errors']}/{m['n_test']}, calibration slope {m['calibration_slope']:.2f}"
    )
    verdict = f"promoted to @{settings.model_alias}" if out.promoted else "NOT promoted"
    print(f"gate: {verdict} — " + "; ".join(out.gate.reasons))
    print("browse: mlflow ui --backend-store-uri " + redact(uri) if not is_tracking_server(uri) else f"browse: {uri}")


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    args = parse_args(argv, settings)
    try:
        inputs = load(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rule = registry.GateRule(args.min_auc, args.max_auc_drop)
    out = run(inputs, settings, args.model_name, args.experiment, rule)
    report(out, settings, args.model_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
