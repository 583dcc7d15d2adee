"""The training data check applies the served model's input rules (common.validation, from the same spec): every
case of the shared table (tests/validation_cases.py) written to a CSV is accepted or refused by pipeline/data.py
exactly as /invocations, /predict and the pyfunc answer it, naming the same field and rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import DatasetConfig, feature_spec, load_config
from pipeline.data import InvalidData, prepare
from tests.conftest import ROOT
from tests.validation_cases import example, value_cases

CLINIC = DatasetConfig.model_validate({
    "name": "clinic", "train": "x.csv", "target": {"column": "dm", "positive": "Yes"},
    "features": [
        {"name": "edad", "column": "age", "type": "numeric", "integer": True, "min": 18, "max": 100,
         "label": {"es": "Edad", "en": "Age"}},
        {"name": "sexo", "type": "categorical", "categories": ["F", "M"], "label": {"es": "Sexo", "en": "Sex"}},
        {"name": "fumador", "type": "categorical", "categories": ["si", "no"], "optional": True,
         "label": {"es": "Fumador", "en": "Smoker"}},
        {"name": "ldl", "type": "numeric", "min": 0, "optional": True, "label": {"es": "LDL", "en": "LDL"}},
    ],
    "risk_bands": [{"name": "all", "upper": 1.0, "label": {"es": "-", "en": "-"}}],
})  # fmt: skip
CONFIGS = {"pima": load_config(ROOT / "data" / "pima" / "dataset.yaml"), "clinic": CLINIC}
# A CSV holds only text: the JSON case "a number sent as a string" cannot be written in one.
NOT_IN_A_CSV = ("-text-number",)


def csv_check(config: DatasetConfig, rows: list[dict], tmp_path: Path) -> tuple[str, str] | None:
    """Write the patients as a training CSV (first row a case, second the valid example), read it back and
    check it: None if accepted, else (field, rule)."""
    target = config.target.column
    frame = pd.DataFrame(rows).rename(columns={f.name: f.column for f in config.features})
    frame[target] = [config.target.positive, "other"]
    frame.to_csv(tmp_path / "cases.csv", index=False)
    try:
        prepare(pd.read_csv(tmp_path / "cases.csv"), config, "cases.csv")
    except InvalidData as exc:
        assert exc.problem.rows == (0,) and "(line(s) 2)" in str(exc)  # the case's own line
        return exc.problem.field, exc.problem.rule
    return None


@pytest.mark.parametrize("dataset", sorted(CONFIGS))
def test_shared_cases_through_the_training_data_check(dataset: str, tmp_path: Path) -> None:
    config = CONFIGS[dataset]
    features = feature_spec(config)
    base = example(features)
    disagreements, checked = [], 0
    for case in value_cases(features):
        if case.id.endswith(NOT_IN_A_CSV):
            continue
        got = csv_check(config, [case.patient(base), base], tmp_path)
        expected = None if case.accepted else (case.field, case.rule)
        checked += 1
        if got != expected:
            disagreements.append(f"{case.id}: training data check gave {got}, expected {expected}")
    assert not disagreements, "\n".join(disagreements)
    assert checked > 3 * len(features)
