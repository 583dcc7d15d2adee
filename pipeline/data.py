"""Load a CSV as the dataset config describes it: checked features (by API name) and a 0/1 target."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from common.validation import FeatureRules, Problem
from pipeline.config import ConfigError, DatasetConfig, Derive, Feature, Target, category_text, feature_spec

_OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}


@dataclass
class Split:
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    checksum: str  # sha256 over the files read, so a registered version names its data


def sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"data file {path} is not a readable CSV: {exc}") from None
    if df.empty:
        raise ConfigError(f"data file {path} has a header but no rows")
    return df


def _rows(rows: np.ndarray | tuple[int, ...]) -> str:
    """CSV line numbers of a row mask or of 0-based row positions (at most five)."""
    idx = np.flatnonzero(rows) if isinstance(rows, np.ndarray) and rows.dtype == bool else np.asarray(rows, int)
    more = "…" if len(idx) > 5 else ""
    return ", ".join(str(i + 2) for i in idx[:5]) + more  # +2: 1-based and the header line


class InvalidData(ConfigError):
    """A feature column that breaks one of the model's input rules; ``problem`` names the field and the rule."""

    def __init__(self, source: str, column: str, problem: Problem):
        self.problem = problem
        super().__init__(f"{source}: column '{column}' ({problem.field}): {problem.text} "
                         f"(line(s) {_rows(problem.rows)})")  # fmt: skip


def prepare(df: pd.DataFrame, config: DatasetConfig, source: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Features named as the API names them, and the target as 0/1; raises ConfigError on bad data."""
    tcol = config.target.derive.column if config.target.derive else config.target.column
    missing = [c for c in [*(f.column for f in config.features), tcol] if c not in df.columns]
    if missing:
        raise ConfigError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
    X = pd.DataFrame({f.name: _parse(df[f.column], f, source) for f in config.features})
    check_rules(X, config, source)
    return X.reset_index(drop=True), _target(df, config, source)


def _parse(col: pd.Series, f: Feature, source: str) -> pd.Series:
    """A CSV column as values. CSV holds only text, so a cell that reads as a number is one (unlike JSON,
    where "86" is refused); a category is compared as text (1.0 → "1")."""
    if f.type == "numeric":
        values = pd.to_numeric(col, errors="coerce")
        bad = values.isna().to_numpy() & col.notna().to_numpy()
        if bad.any():
            raise InvalidData(source, str(f.column), Problem(f.name, "number", {}, tuple(np.flatnonzero(bad))))
        return values.astype(float)
    values = col.map(category_text, na_action="ignore").astype("string")
    return values.astype(object).where(values.notna(), np.nan)


def check_rules(X: pd.DataFrame, config: DatasetConfig, source: str) -> None:
    """The served model's input rules (common.validation, from the same spec), applied to the training data;
    raises InvalidData for the first feature that breaks one."""
    rules = FeatureRules(feature_spec(config))
    columns = {f.name: str(f.column) for f in config.features}
    matrix = np.empty((len(X), len(rules.names)))
    for j, name in enumerate(rules.names):
        matrix[:, j], wrong_type = rules.column(j, X[name])
        if wrong_type.any():  # only categories can get here: numbers were parsed above
            rule, params = rules.type_problem(j)
            raise InvalidData(source, columns[name], Problem(name, rule, params, tuple(np.flatnonzero(wrong_type))))
    for problem in rules.check(matrix)[:1]:
        raise InvalidData(source, columns[problem.field], problem)


def _target(df: pd.DataFrame, config: DatasetConfig, source: str) -> np.ndarray:
    t = config.target
    y = _derived(df, t.derive, source) if t.derive is not None else _positive_class(df, t, source)
    if y.min() == y.max():
        raise ConfigError(f"{source}: the target has a single class; need both positives and negatives")
    return y


def _derived(df: pd.DataFrame, derive: Derive, source: str) -> np.ndarray:
    """A target derived from a measurement (e.g. HbA1c >= 6.5)."""
    raw = pd.to_numeric(df[derive.column], errors="coerce")
    if raw.isna().any():
        raise ConfigError(
            f"{source}: target column '{derive.column}' needs a number on every row; "
            f"missing or non-numeric on line(s) {_rows(raw.isna().to_numpy())}"
        )
    return _OPS[derive.op](raw.to_numpy(dtype=float), derive.value).astype(int)


def _positive_class(df: pd.DataFrame, t: Target, source: str) -> np.ndarray:
    """1 where the target column holds the positive class."""
    col = df[t.column]
    if col.isna().any():
        raise ConfigError(
            f"{source}: target column '{t.column}' has missing values on line(s) {_rows(col.isna().to_numpy())}"
        )
    classes = sorted(col.astype(str).unique())
    if str(t.positive) not in classes:
        raise ConfigError(
            f"{source}: positive class '{t.positive}' not found in target column '{t.column}' (found: {classes})"
        )
    return (col.astype(str) == str(t.positive)).to_numpy().astype(int)


def load_split(config: DatasetConfig, seed: int = 0, train: str | None = None, test: str | None = None) -> Split:
    """Train and test data; with no test file, a stratified split of the train file."""
    train_path = config.path(train or config.train)
    test_path = config.path(test or config.test)
    for f in config.features:
        if config.target.derive and f.column == config.target.derive.column:
            raise ConfigError(f"feature '{f.name}' is the column the target is derived from (target leakage)")
    X, y = prepare(read_csv(train_path), config, str(train_path))
    if test_path is None:
        if np.bincount(y).min() < 2:
            raise ConfigError(f"{train_path}: a class has fewer than 2 rows; cannot split off a stratified test set")
        X, X_te, y, y_te = train_test_split(X, y, test_size=config.test_size, stratify=y, random_state=seed)
        paths = [train_path]
        X, X_te = X.reset_index(drop=True), X_te.reset_index(drop=True)
    else:
        X_te, y_te = prepare(read_csv(test_path), config, str(test_path))
        paths = [train_path, test_path]
    return Split(X, np.asarray(y), X_te, np.asarray(y_te), sha256_files(paths))


def check_cv(split: Split, folds: int) -> None:
    """Cross-validation needs every class in every fold."""
    smallest = int(np.bincount(split.y_train).min())
    if smallest < folds:
        raise ConfigError(
            f"the training data has only {smallest} row(s) of one class; {folds}-fold cross-validation needs at "
            f"least {folds} (more data, or fewer --cv-folds)"
        )
