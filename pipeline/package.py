"""What a registered version carries: its spec (``model.json``), signature, pinned requirements, model card
and the models-from-code pyfunc (``risk_model.py``) — built here so ``main.py`` only orders the steps."""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import scipy
import sklearn
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from common.backend import PROJECT_ROOT
from pipeline import synthetic
from pipeline.config import DatasetConfig, feature_spec
from pipeline.data import Split
from pipeline.risk_model import RiskModel
from pipeline.train import Fitted

MODEL_CODE = Path(__file__).with_name("risk_model.py")


def signature(config: DatasetConfig) -> ModelSignature:
    # Float columns even for counts: with integer columns MLflow silently truncates 5.9 to 5.
    inputs = Schema(
        [
            ColSpec("double" if f.type == "numeric" else "string", f.name, required=not f.optional)
            for f in config.features
        ]
    )
    outputs = Schema(
        [
            ColSpec("double", "probability"),
            ColSpec("long", "label"),
            ColSpec("string", "risk_level"),
            ColSpec("double", "probability_low", required=False),  # with params {"interval": true}
            ColSpec("double", "probability_high", required=False),
        ]
    )
    params = ParamSchema([ParamSpec("contributions", "boolean", False), ParamSpec("interval", "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_spec(config: DatasetConfig, split: Split, fitted: Fitted, model_name: str) -> dict[str, Any]:
    """Everything about the model the served copy needs to describe and check itself (metrics added later)."""
    return {
        "model_name": model_name,
        "dataset": config.name,
        "description": config.description if isinstance(config.description, str) else config.description.model_dump(),
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


def pip_requirements(params: dict[str, Any]) -> list[str]:
    """What the served copy imports, pinned to the versions it was trained and checked with."""
    reqs = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    if any(t["kind"] == "spline" for t in params["terms"]):
        reqs.append(f"scipy=={scipy.__version__}")
    return reqs


def log_pyfunc(config: DatasetConfig, spec: dict[str, Any], params: dict[str, Any], card: str,
               reference_distributions: dict[str, Any] | None = None) -> ModelInfo:  # fmt: skip
    """Log the model into the active run: risk_model.py as code, model.json and the card as artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        card_path, model_json = Path(tmp) / "model_card.md", Path(tmp) / "model.json"
        card_path.write_text(card, encoding="utf-8")
        mlflow.log_artifact(str(card_path))
        doc: dict[str, Any] = {"spec": spec, "params": params}
        if reference_distributions is not None:  # what the monitor job compares live traffic with
            doc["reference_distributions"] = reference_distributions
        model_json.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        example = synthetic.input_example(config)  # never a training or test row (real patients)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"model_json": str(model_json), "model_card": str(card_path)},
            signature=signature(config),
            input_example=example,
            pip_requirements=pip_requirements(params),
            metadata={"model_name": spec["model_name"], "dataset": config.name, "sklearn_version": sklearn.__version__},
        )
