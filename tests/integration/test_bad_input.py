"""Bad data or config stops the pipeline with one clear message, and leaves nothing in the registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, run_pipeline

CONFIG = ROOT / "data" / "pima" / "dataset.yaml"


def write_config(tmp_path: Path, mutate) -> Path:
    doc = yaml.safe_load(CONFIG.read_text())
    doc["train"] = str(ROOT / "data" / "pima" / "pima_tr2.csv")
    doc["test"] = str(ROOT / "data" / "pima" / "pima_te.csv")
    mutate(doc, tmp_path)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def _missing_column(doc, tmp):
    doc["features"][1]["column"] = "glucose_typo"


def _wrong_type(doc, tmp):
    text = (ROOT / "data" / "pima" / "pima_tr2.csv").read_text().splitlines()
    text[5] = text[5].replace(text[5].split(",")[1], "high", 1)
    (tmp / "bad.csv").write_text("\n".join(text) + "\n")
    doc["train"] = str(tmp / "bad.csv")


def _unknown_class(doc, tmp):
    doc["target"]["positive"] = "Diabetic"


def _empty_file(doc, tmp):
    (tmp / "empty.csv").write_text("")
    doc["train"] = str(tmp / "empty.csv")


def _header_only(doc, tmp):
    (tmp / "header.csv").write_text("npreg,glu,bp,skin,bmi,ped,age,type\n")
    doc["train"] = str(tmp / "header.csv")


def _required_missing(doc, tmp):
    doc["features"][2]["optional"] = False  # presion_diastolica has 13 missing values in Pima.tr2


def _bad_bands(doc, tmp):
    doc["risk_bands"][0]["upper"] = 0.9


def _few_positives(doc, tmp):
    df = pd.read_csv(ROOT / "data" / "pima" / "pima_tr2.csv")
    positives = df.index[df["type"] == "Yes"]
    df.drop(positives[3:]).to_csv(tmp / "few.csv", index=False)  # 3 women with diabetes left
    doc["train"] = str(tmp / "few.csv")


def _single_class_test(doc, tmp):
    df = pd.read_csv(ROOT / "data" / "pima" / "pima_te.csv")
    df[df["type"] == "No"].to_csv(tmp / "negatives.csv", index=False)
    doc["test"] = str(tmp / "negatives.csv")


def _unknown_key(doc, tmp):
    doc["features"][0]["units"] = "typo for unit"


CASES = {
    "missing column": (_missing_column, "missing column(s) ['glucose_typo']"),
    "wrong type": (_wrong_type, "column 'glu' (glucosa): must be a number (line(s) 6)"),
    "unknown target class": (_unknown_class, "positive class 'Diabetic' not found in target column 'type'"),
    "empty file": (_empty_file, "is empty"),
    "header only": (_header_only, "has a header but no rows"),
    "required feature missing": (_required_missing, "column 'bp' (presion_diastolica): is required (line(s) "),
    "risk bands": (_bad_bands, "risk_bands must have increasing 'upper' limits"),
    "unknown config key": (_unknown_key, "features.0.units: Extra inputs are not permitted"),
    "too few positives for CV": (_few_positives, "only 3 row(s) of one class; 5-fold cross-validation needs"),
    "single-class test set": (_single_class_test, "positive class 'Yes' not found in target column 'type'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_or_config(case: str, tmp_path: Path, sqlite_env: dict[str, str]) -> None:
    mutate, message = CASES[case]
    config = write_config(tmp_path, mutate)
    proc = run_pipeline(sqlite_env, "--config", str(config), "--cv-repeats", "1")  # fails before training
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    _assert_registry_untouched(sqlite_env)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--family", "xgboost"], "unknown model family 'xgboost'"),
        (["--calibration", "isotonic"], "unknown calibration 'isotonic'"),
        (["--C", "-1"], "hyperparameter C must be 'auto' or a positive number"),
        (["--config", "/nonexistent/dataset.yaml"], "dataset config not found"),
    ],
)
def test_bad_parameters(args: list[str], message: str, sqlite_env: dict[str, str]) -> None:
    proc = run_pipeline(sqlite_env, *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    _assert_registry_untouched(sqlite_env)


def _assert_registry_untouched(env: dict[str, str]) -> None:
    db = Path(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    if not db.exists():
        return  # failed before the store was even created
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert client.search_registered_models() == []
    assert client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]) == []
