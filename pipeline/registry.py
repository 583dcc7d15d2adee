"""Registry verbs: register a version, gate it against the served alias, promote and roll back.

The served alias is ``MODEL_ALIAS`` (the one the API follows; ``champion`` unless set). Every new version gets
``@challenger``; the served alias moves only through :func:`promote` (after the gate, or by hand) and
:func:`rollback`. Each promotion appends the version it replaces to the registered model's tag
``<alias>_history`` (comma-separated, oldest first), so repeated rollbacks walk back one step each —
v3 → v2 → v1 — and then say there is nothing earlier.

Command line (also the MLproject entry points ``promote`` and ``rollback``):
    python -m pipeline.registry promote --version 3 [--name NAME]
    python -m pipeline.registry rollback [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from common import signing
from common.settings import DEFAULT_MODEL_ALIAS
from pipeline.config import MAX_AUC_DROP, MIN_AUC
from pipeline.settings import CHALLENGER, PipelineSettings, load_settings

# Before histories, the one version a rollback of @champion returned to.
LEGACY_ALIAS, LEGACY_PREVIOUS_TAG = DEFAULT_MODEL_ALIAS, "previous_champion"
HISTORY_MAX = 200  # versions kept in the history tag (MLflow caps a tag value at 5000 characters)


@dataclass(frozen=True)
class GateRule:
    min_auc: float = MIN_AUC  # absolute ROC AUC floor
    max_auc_drop: float = MAX_AUC_DROP  # allowed ROC AUC loss against the served version


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # English, for logs and the `gate_reasons` tag
    # The same reasons as {"code": ..., **parameters}, so the clinicians' app can word them in its language.
    codes: list[dict[str, object]] = field(default_factory=list)
    champion_version: str | None = None
    champion_auc: float | None = None

    def add(self, text: str, code: str, **params: object) -> None:
        self.reasons.append(text)
        self.codes.append({"code": code, **params})

    def tags(self) -> dict[str, str]:
        """The model version tags that record this verdict."""
        return {
            "gate": "passed" if self.passed else "failed",
            "gate_reasons": "; ".join(self.reasons),
            "gate_reason_codes": json.dumps(self.codes),
        }


class NothingToRollBack(MlflowException):
    """The alias has no earlier version recorded."""


# ---- register -----------------------------------------------------------------------------------------
@contextmanager
def deleted_on_failure(client: MlflowClient, mv: ModelVersion) -> Iterator[None]:
    """Nothing half-registered: a version whose registration or gating did not finish is removed."""
    try:
        yield
    except BaseException:
        client.delete_model_version(mv.name, mv.version)
        raise


def register_version(client: MlflowClient, model_uri: str, name: str, tags: dict[str, str]) -> ModelVersion:
    """A new version of ``name`` from a logged model, with ``@challenger``. Every step a version needs before
    it may exist goes inside the ``with``: if one fails, the version is deleted."""
    mv = mlflow.register_model(model_uri, name, tags=tags)
    with deleted_on_failure(client, mv):
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return mv


# ---- gate ---------------------------------------------------------------------------------------------
def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def gate(
    client: MlflowClient,
    name: str,
    alias: str,
    new_auc: float,
    X_test: pd.DataFrame,
    y_test: np.ndarray,
    rule: GateRule,
) -> GateResult:
    """Pass when the AUC clears the floor and is not worse than the served version's, scored now on the same
    test data, by more than ``rule.max_auc_drop``."""
    result = GateResult(passed=new_auc >= rule.min_auc)
    if not result.passed:
        result.add(f"ROC AUC {new_auc:.4f} is below the floor {rule.min_auc:.4f}", "below_floor",
                   auc=new_auc, floor=rule.min_auc)  # fmt: skip
    result.champion_version = alias_version(client, name, alias)
    if result.champion_version is None:
        result.add(f"no current {alias}", "no_served", alias=alias)
    else:
        _against_served(client, result, name, alias, new_auc, X_test, y_test, rule.max_auc_drop)
    return result


def _against_served(client: MlflowClient, result: GateResult, name: str, alias: str, new_auc: float,
                    X_test: pd.DataFrame, y_test: np.ndarray, max_drop: float) -> None:  # fmt: skip
    served = f"{alias} v{result.champion_version}"
    try:
        # Verified before its code is imported (when this process holds the signing key).
        model = signing.load_verified(client, name, str(result.champion_version))
        p = np.asarray(model.predict(X_test)["probability"], dtype=float)
        result.champion_auc = auc = float(roc_auc_score(y_test, p))
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable", never a promotion
        result.passed = False
        why = str(exc) if isinstance(exc, signing.UntrustedModel) else type(exc).__name__
        result.add(f"{served} cannot be scored on this test data ({why}); promote by hand",
                   "served_unscorable", alias=alias, version=result.champion_version)  # fmt: skip
        return
    if new_auc < auc - max_drop:
        result.passed = False
        result.add(f"ROC AUC {new_auc:.4f} is worse than {served} ({auc:.4f}) by more than {max_drop}",
                   "worse_than_served", auc=new_auc, alias=alias, version=result.champion_version, served_auc=auc,
                   max_drop=max_drop)  # fmt: skip
    else:
        result.add(f"{served} scores ROC AUC {auc:.4f} on the same data", "served_score", alias=alias,
                   version=result.champion_version, served_auc=auc)  # fmt: skip


def gate_and_promote(
    client: MlflowClient, mv: ModelVersion, alias: str, new_auc: float, X_test: pd.DataFrame, y_test: np.ndarray,
    rule: GateRule,
) -> GateResult:  # fmt: skip
    """Gate a new version, record the verdict on it and promote it to ``alias`` if it passed."""
    with deleted_on_failure(client, mv):
        result = gate(client, mv.name, alias, new_auc, X_test, y_test, rule)
        for key, value in result.tags().items():
            client.set_model_version_tag(mv.name, mv.version, key, value)
        # Signed (files + verdict) before any alias can point at it; a no-op without MODEL_SIGNING_KEY.
        signing.sign_registered_version(client, mv.name, str(mv.version), "passed" if result.passed else "failed")
        if result.passed:
            promote(client, mv.name, str(mv.version), alias)
    return result


# ---- promote and roll back ----------------------------------------------------------------------------
def history_tag(alias: str) -> str:
    return f"{alias}_history"


def history(client: MlflowClient, name: str, alias: str) -> list[str]:
    """Versions ``alias`` pointed at before, oldest first."""
    tags = client.get_registered_model(name).tags
    raw = tags.get(history_tag(alias))
    if raw is None and alias == LEGACY_ALIAS:
        raw = tags.get(LEGACY_PREVIOUS_TAG, "")  # a registry written before histories existed
    return [v for v in (raw or "").split(",") if v]


def _set_history(client: MlflowClient, name: str, alias: str, versions: list[str]) -> None:
    client.set_registered_model_tag(name, history_tag(alias), ",".join(versions[-HISTORY_MAX:]))


def promote(client: MlflowClient, name: str, version: str, alias: str) -> None:
    """Point ``alias`` at ``version``, recording the version it replaces for rollback."""
    client.get_model_version(name, version)  # raises a clear error for an unknown version
    current = alias_version(client, name, alias)
    if current == str(version):
        return
    if current is not None:
        _set_history(client, name, alias, [*history(client, name, alias), current])
    client.set_registered_model_alias(name, alias, str(version))


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
        return True
    except MlflowException:
        return False


def rollback(client: MlflowClient, name: str, alias: str) -> str:
    """Point ``alias`` back at the version it named before the last promotion; returns that version.

    Each call goes one step further back. Versions deleted since, or equal to the current one, are skipped."""
    current = alias_version(client, name, alias)
    earlier = history(client, name, alias)
    while earlier:
        version = earlier.pop()
        if version != current and _exists(client, name, version):
            _set_history(client, name, alias, earlier)
            client.set_registered_model_alias(name, alias, version)
            return version
    now = f"v{current}" if current else "no version"
    raise NothingToRollBack(f"nothing to roll back to: {name}@{alias} is {now} and no earlier version is recorded")


# ---- command line -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None, settings: PipelineSettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["promote", "rollback"])
    parser.add_argument("--name", default="", help=f"registered model (default: MODEL_NAME, {settings.model_name})")
    parser.add_argument("--version", default="", help="promote: the version to serve")
    args = parser.parse_args(argv)
    args.name = args.name or settings.model_name
    if args.command == "promote" and not args.version:
        parser.error("promote needs --version")
    return args


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    args = parse_args(argv, settings)
    alias = settings.model_alias
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        if args.command == "promote":
            # Promoting by hand vouches for the version: sign its files (verdict "manual") BEFORE the alias
            # moves, so an API with signing on never sees an unsigned champion.
            client.get_model_version(args.name, args.version)  # an unknown version: one error line, no warning
            if signing.sign_registered_version(client, args.name, args.version, "manual"):
                print(f"signed {args.name} version {args.version} (promoted by hand)")
            else:
                print(f"warning: {signing.KEY_VARIABLE} is not set; version {args.version} is not signed and an "
                      "API with signing on will refuse it", file=sys.stderr)  # fmt: skip
            promote(client, args.name, args.version, alias)
            print(f"{args.name}@{alias} -> version {args.version}")
        else:
            print(f"{args.name}@{alias} rolled back to version {rollback(client, args.name, alias)}")
    except MlflowException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
