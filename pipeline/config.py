"""The dataset config: which CSV columns are features, their units, ranges and labels, and the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Defaults of a training run, written once: argparse (pipeline/main.py), TrainOptions and bootstrap use these;
# MLproject must repeat them as YAML, and tests/unit/test_pipeline_args.py keeps it in step.
CV_FOLDS = 5
CV_REPEATS = 4
SEED = 42
MIN_AUC = 0.80  # gate: absolute ROC AUC floor
MAX_AUC_DROP = 0.01  # gate: allowed ROC AUC loss against the version the alias names


class ConfigError(ValueError):
    """A data or config problem, with one message that names it."""


class Text(BaseModel):
    model_config = ConfigDict(extra="forbid")
    es: str
    en: str


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    column: str | None = None  # CSV column; defaults to the API name
    type: Literal["numeric", "categorical"]
    integer: bool = False
    unit: str = ""
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    optional: bool = False
    label: Text
    help: Text | None = None

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_as_text(cls, value: object) -> object:
        # Number-coded categories (sexo: 1/2) are compared as text, as the data loader reads them.
        if isinstance(value, list):
            return [category_text(v) for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> Feature:
        if self.column is None:
            self.column = self.name
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature '{self.name}' needs a 'categories' list")
            if self.min is not None or self.max is not None or self.integer:
                raise ValueError(f"categorical feature '{self.name}' cannot have min, max or integer")
        elif self.categories:
            raise ValueError(f"numeric feature '{self.name}' cannot have 'categories'")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"feature '{self.name}': min must be below max")
        return self


def category_text(value: object) -> object:
    """1, 1.0 and "1" are the same category; other values pass through unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return value


class Derive(BaseModel):
    """A target derived from a measurement, e.g. HbA1c >= 6.5 %."""

    model_config = ConfigDict(extra="forbid")
    column: str
    op: Literal[">=", ">", "<=", "<"]
    value: float


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str | None = None
    positive: str | int | float | bool | None = None
    derive: Derive | None = None
    label: Text = Text(es="Diabetes tipo 2", en="Type 2 diabetes")

    @model_validator(mode="after")
    def _one_rule(self) -> Target:
        if (self.derive is None) == (self.column is None):
            raise ValueError("target needs either 'column' with 'positive', or 'derive'")
        if self.column is not None and self.positive is None:
            raise ValueError("target 'column' needs a 'positive' class")
        return self


class RiskBand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    upper: float = Field(gt=0, le=1)
    label: Text
    color: str = "#777777"


class Subgroup(BaseModel):
    """Report performance by bands of a numeric feature: edges [25, 30] make < 25, 25–30 and >= 30."""

    model_config = ConfigDict(extra="forbid")
    feature: str
    edges: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Subgroup:
        if self.edges != sorted(set(self.edges)):
            raise ValueError(f"subgroup '{self.feature}': edges must be strictly increasing")
        return self


class External(BaseModel):
    """Another cohort with the same features and target, reported on but never used to choose the model."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    file: str
    description: str = ""


class Monitoring(BaseModel):
    """Drift thresholds of the monitor job (population stability index per feature and for predictions)."""

    model_config = ConfigDict(extra="forbid")
    psi_warn: float = Field(default=0.1, gt=0)
    psi_alert: float = Field(default=0.25, gt=0)


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | Text = ""  # one text, or one per language ({es, en}) for the clinicians' app
    train: str
    test: str | None = None
    test_size: float = Field(default=0.25, gt=0, lt=1)  # used only when there is no test file
    target: Target
    features: list[Feature] = Field(min_length=1)
    threshold: float = Field(default=0.5, gt=0, lt=1)
    risk_bands: list[RiskBand] = Field(min_length=1)
    # Results published for the same data and split, shown beside ours: {name: {metric: value}}.
    published_baselines: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Performance by subgroup (numeric bands here; every categorical feature is added automatically).
    subgroups: list[Subgroup] = Field(default_factory=list)
    external: list[External] = Field(default_factory=list)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        names = [f.name for f in self.features]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate feature names: {sorted(dupes)}")
        uppers = [b.upper for b in self.risk_bands]
        if uppers != sorted(uppers) or len(set(uppers)) != len(uppers) or uppers[-1] != 1.0:
            raise ValueError("risk_bands must have increasing 'upper' limits ending at 1.0")
        numeric = {f.name for f in self.features if f.type == "numeric"}
        for g in self.subgroups:
            if g.feature not in numeric:
                raise ValueError(f"subgroup feature '{g.feature}' is not a numeric feature")
        ext = [e.name for e in self.external]
        if len(set(ext)) != len(ext):
            raise ValueError("external cohorts need distinct names")
        return self

    def path(self, name: str | None) -> Path | None:
        if name is None:
            return None
        p = Path(name)
        return p if p.is_absolute() else self.base_dir / p


SPEC_FEATURE_KEYS = {"name", "type", "integer", "unit", "min", "max", "categories", "optional", "label", "help"}


def feature_spec(config: DatasetConfig) -> list[dict[str, Any]]:
    """The features as the model's spec (``model.json``) carries them: what common.validation's rules read."""
    return [f.model_dump(include=SPEC_FEATURE_KEYS) for f in config.features]


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def load_config(path: str | Path) -> DatasetConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"dataset config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"dataset config {path} must be a YAML mapping")
    raw["base_dir"] = path.resolve().parent
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"dataset config {path}: {_one_line(exc)}") from None
