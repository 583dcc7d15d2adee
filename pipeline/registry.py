"""Registry verbs: register a version, gate it against the champion, promote and roll back aliases.

Command line (also MLproject entry points ``promote`` and ``rollback``):
    python -m pipeline.registry promote --version 3 [--name diabetes-t2]
    python -m pipeline.registry rollback [--name diabetes-t2]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from common.backend import tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_TAG = "previous_champion"  # on the registered model: what rollback returns to


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
        result.add(f"ROC AUC {new_auc:.4f} is below the floor {min_auc:.4f}", "below_floor", auc=new_auc, floor=min_auc)
    champ = current_champion(client, name)
    if champ is None:
        result.add("no current champion", "no_champion")
        return result
    result.champion_version = champ
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
        p = np.asarray(model.predict(X_test)["probability"], dtype=float)
        result.champion_auc = float(roc_auc_score(y_test, p))
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable", never a promotion
        result.passed = False
        result.add(
            f"champion v{champ} cannot be scored on this test data ({type(exc).__name__}); promote by hand",
            "champion_unscorable",
            version=champ,
        )
        return result
    if new_auc < result.champion_auc - max_auc_drop:
        result.passed = False
        result.add(
            f"ROC AUC {new_auc:.4f} is worse than champion v{champ} ({result.champion_auc:.4f}) "
            f"by more than {max_auc_drop}",
            "worse_than_champion",
            auc=new_auc,
            version=champ,
            champion_auc=result.champion_auc,
            max_drop=max_auc_drop,
        )
    else:
        result.add(
            f"champion v{champ} scores ROC AUC {result.champion_auc:.4f} on the same data",
            "champion_score",
            version=champ,
            champion_auc=result.champion_auc,
        )
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
