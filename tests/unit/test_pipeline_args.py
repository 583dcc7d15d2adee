"""The pipeline's command line: CV and gate defaults written once (pipeline/config.py) and repeated verbatim by
the MLproject; the model name comes from the settings, never a literal."""

from __future__ import annotations

import argparse

import pytest
import yaml

from pipeline import config as defaults
from pipeline.main import count, parse_args
from pipeline.settings import PipelineSettings
from pipeline.train import TrainOptions
from tests.conftest import ROOT

MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())


def settings(**env: str) -> PipelineSettings:
    return PipelineSettings.from_env(env)


def test_mlproject_argparse_and_train_options_share_the_defaults() -> None:
    params = MLPROJECT["entry_points"]["main"]["parameters"]
    args = parse_args([], settings())
    opts = TrainOptions()
    for key, value in {"cv_folds": defaults.CV_FOLDS, "cv_repeats": defaults.CV_REPEATS, "seed": defaults.SEED,
                       "min_auc": defaults.MIN_AUC, "max_auc_drop": defaults.MAX_AUC_DROP}.items():  # fmt: skip
        assert params[key]["default"] == value, key
        assert getattr(args, key) == value, key
        if hasattr(opts, key):
            assert getattr(opts, key) == value, key


def test_model_name_is_never_a_literal_in_the_mlproject() -> None:
    for entry in MLPROJECT["entry_points"].values():
        if "model_name" in entry["parameters"]:
            assert entry["parameters"]["model_name"]["default"] == ""
    assert MLPROJECT["entry_points"]["batch"]["parameters"]["model_uri"]["default"] == ""
    assert "diabetes-t2" not in (ROOT / "MLproject").read_text().split("entry_points:", 1)[1]
    assert parse_args([], settings()).model_name == "diabetes-t2"
    assert parse_args(["--model-name", ""], settings(MODEL_NAME="clinic")).model_name == "clinic"
    args = parse_args(["--model-name", "other"], settings(MODEL_NAME="clinic"))
    assert (args.model_name, args.experiment) == ("other", "other")


def test_counts_accept_mlprojects_float_spelling() -> None:
    assert count(2)("5") == 5 and count(2)("5.0") == 5
    for bad in ("1", "2.5", "five", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            count(2)(bad)
    with pytest.raises(SystemExit):
        parse_args(["--cv-folds", "1"], settings())
