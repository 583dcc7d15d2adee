"""The bundled data are the MASS Pima files, byte for byte, and the config reads them as documented."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import load_split
from tests.conftest import ROOT

DATA = ROOT / "data" / "pima"

EXPECTED = {
    # file: (rows, with diabetes, rows with a missing value, sha256)
    "pima_tr.csv": (200, 68, 0, "5507048100aed88d085e6f09b96cc55d431c2a32d008a89ea03469e09e725ece"),
    "pima_te.csv": (332, 109, 0, "3da573ab0fdd29df2467d09b22b6562805654a9b9808f90357d2b71fd09a0e2b"),
    "pima_tr2.csv": (300, 106, 100, "34ab11114a8c753664e63b3c4cd4420c275952b80f4e822cf389cc3829c1a08a"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_files(name: str) -> None:
    rows, positives, incomplete, sha = EXPECTED[name]
    path = DATA / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    df = pd.read_csv(path)
    assert list(df.columns) == ["npreg", "glu", "bp", "skin", "bmi", "ped", "age", "type"]
    assert len(df) == rows
    assert (df["type"] == "Yes").sum() == positives
    assert df.isna().any(axis=1).sum() == incomplete
    assert df["age"].min() >= 21


def test_tr2_extends_tr() -> None:
    tr, tr2 = pd.read_csv(DATA / "pima_tr.csv"), pd.read_csv(DATA / "pima_tr2.csv")
    pd.testing.assert_frame_equal(tr2.head(200).astype(float, errors="ignore"), tr.astype(float, errors="ignore"))


def test_config_maps_columns_to_api_names() -> None:
    config = load_config(DATA / "dataset.yaml")
    names = [f.name for f in config.features]
    assert names == ["embarazos", "glucosa", "presion_diastolica", "pliegue_triceps", "imc", "pedigri_diabetes", "edad"]
    assert {f.name for f in config.features if f.optional} == {"presion_diastolica", "pliegue_triceps", "imc"}
    glucosa = next(f for f in config.features if f.name == "glucosa")
    assert glucosa.unit == "mg/dL" and glucosa.label.es and glucosa.label.en
    split = load_split(config)
    assert split.X_train.shape == (300, 7) and split.X_test.shape == (332, 7)
    assert split.y_train.sum() == 106 and split.y_test.sum() == 109
    assert split.X_train["pliegue_triceps"].isna().sum() == 98


def test_number_coded_categories_with_missing_values(tmp_path) -> None:
    """sexo coded 1/2 with a blank cell: pandas reads floats (1.0); they are still the categories 1 and 2."""
    from pipeline.config import DatasetConfig
    from pipeline.data import prepare

    config = DatasetConfig.model_validate({
        "name": "coded", "train": "x.csv", "target": {"column": "dm", "positive": 1},
        "features": [{"name": "sexo", "type": "categorical", "categories": [1, 2], "optional": True,
                      "label": {"es": "Sexo", "en": "Sex"}}],
        "risk_bands": [{"name": "all", "upper": 1.0, "label": {"es": "-", "en": "-"}}],
    })  # fmt: skip
    assert config.features[0].categories == ["1", "2"]
    X, y = prepare(pd.DataFrame({"sexo": [1.0, 2.0, None, 1.0], "dm": [1, 0, 0, 1]}), config, "x.csv")
    assert X["sexo"].tolist()[:2] == ["1", "2"] and pd.isna(X["sexo"].iloc[2])
    assert y.tolist() == [1, 0, 0, 1]


def test_single_class_test_set_is_refused(tmp_path) -> None:
    from pipeline.config import ConfigError, DatasetConfig

    pd.DataFrame({"x": range(20), "hba1c": [5.0, 7.0] * 10}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"x": range(5), "hba1c": [5.0] * 5}).to_csv(tmp_path / "test.csv", index=False)
    config = DatasetConfig.model_validate({
        "name": "derived", "train": "train.csv", "test": "test.csv", "base_dir": tmp_path,
        "target": {"derive": {"column": "hba1c", "op": ">=", "value": 6.5}},
        "features": [{"name": "x", "type": "numeric", "label": {"es": "x", "en": "x"}}],
        "risk_bands": [{"name": "all", "upper": 1.0, "label": {"es": "-", "en": "-"}}],
    })  # fmt: skip
    with pytest.raises(ConfigError, match="test.csv: the target has a single class"):
        load_split(config)
