"""Registry verbs: register a version, gate it against the champion, promote and roll back aliases.

Command line (also MLproject entry points ``promote`` and ``rollback``):
    python -m pipeline.registry promote --version 3 [--name diabetes-t2]
    python -m pipeline.registry rollback [--name diabetes-t2]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from common import signing
from common.backend import tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_TAG = "previous_champion"  # on the registered model: what rollback returns to


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    champion_version: str | None = None
    champion_auc: float | None = None


def current_champion(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def gate(
    client: MlflowClient,
    name: str,
    new_auc: float,
    X_test: pd.DataFrame,
    y_test: np.ndarray,
    min_auc: float,
    max_auc_drop: float,
) -> GateResult:
    """Pass when the AUC clears the floor and is not worse than the champion's, scored now on the
    same test data, by more than ``max_auc_drop``."""
    result = GateResult(passed=True)
    if new_auc < min_auc:
        result.passed = False
        result.reasons.append(f"ROC AUC {new_auc:.4f} is below the floor {min_auc:.4f}")
    champ = current_champion(client, name)
    if champ is None:
        result.reasons.append("no current champion")
        return result
    result.champion_version = champ
    try:
        # Verified before its code is imported: this process holds the signing key.
        model = signing.load_verified(client, name, champ)
        p = np.asarray(model.predict(X_test)["probability"], dtype=float)
        result.champion_auc = float(roc_auc_score(y_test, p))
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable", never a promotion
        result.passed = False
        why = str(exc) if isinstance(exc, signing.UntrustedModel) else type(exc).__name__
        result.reasons.append(f"champion v{champ} cannot be scored on this test data ({why}); promote by hand")
        return result
    if new_auc < result.champion_auc - max_auc_drop:
        result.passed = False
        result.reasons.append(
            f"ROC AUC {new_auc:.4f} is worse than champion v{champ} ({result.champion_auc:.4f}) "
            f"by more than {max_auc_drop}"
        )
    else:
        result.reasons.append(f"champion v{champ} scores ROC AUC {result.champion_auc:.4f} on the same data")
    return result


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Point ``champion`` at ``version``, remembering the previous champion for rollback."""
    client.get_model_version(name, version)  # raises a clear error for an unknown version
    previous = current_champion(client, name)
    if previous == str(version):
        return
    if previous is not None:
        client.set_registered_model_tag(name, PREVIOUS_TAG, previous)
    client.set_registered_model_alias(name, CHAMPION, str(version))


def rollback(client: MlflowClient, name: str) -> str:
    """Point ``champion`` back at the previous champion; returns that version."""
    previous = client.get_registered_model(name).tags.get(PREVIOUS_TAG)
    if not previous:
        raise MlflowException(f"registered model '{name}' has no previous champion to roll back to")
    promote(client, name, previous)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["promote", "rollback"])
    parser.add_argument("--name", default="diabetes-t2")
    parser.add_argument("--version")
    args = parser.parse_args(argv)
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    try:
        if args.command == "promote":
            if not args.version:
                parser.error("promote needs --version")
            # Promoting by hand vouches for the version: sign its files (verdict "manual") BEFORE the alias
            # moves, so an API with signing on never sees an unsigned champion.
            if signing.sign_registered_version(client, args.name, args.version, "manual"):
                print(f"signed {args.name} version {args.version} (promoted by hand)")
            else:
                print(f"warning: {signing.KEY_VARIABLE} is not set; version {args.version} is not signed and an "
                      "API with signing on will refuse it", file=sys.stderr)  # fmt: skip
            promote(client, args.name, args.version)
            print(f"{args.name}@{CHAMPION} -> version {args.version}")
        else:
            version = rollback(client, args.name)
            print(f"{args.name}@{CHAMPION} rolled back to version {version}")
    except MlflowException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
