"""Pure statistics of the model report: bootstrap intervals (vectorised metrics equal the plain ones, and
cover the truth at about the nominal rate), decision curve against a hand computation, subgroup flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import evaluate
from pipeline.config import DatasetConfig


def simulated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fixed score p and outcomes drawn from a slightly different truth (so calibration is imperfect)."""
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(1.2 * x - 0.8)))
    truth = 1 / (1 + np.exp(-(1.5 * x - 0.6)))
    return p, (rng.random(n) < truth).astype(int)


def test_weighted_metrics_at_unit_weights_equal_the_plain_metrics() -> None:
    rng = np.random.default_rng(3)
    p, y = simulated(300, rng)
    p = np.round(p, 2)  # ties, which the rank-based AUC must count as halves
    plain = evaluate.metrics(y, p, 0.4)
    vec = evaluate.weighted_metrics(y, p, 0.4, np.ones((1, len(y))))
    for name in evaluate.CI_METRICS:
        assert vec[name][0] == pytest.approx(plain[name], abs=1e-9), name
    # A weight of 2 is the same as the row appearing twice.
    w = rng.integers(0, 3, len(y)).astype(float)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    doubled = evaluate.metrics(y[rep], p[rep], 0.4)
    vec = evaluate.weighted_metrics(y, p, 0.4, w[None, :])
    for name in evaluate.CI_METRICS:
        assert vec[name][0] == pytest.approx(doubled[name], abs=1e-9), name


@pytest.mark.slow
def test_metric_intervals_cover_the_population_value_at_about_95_percent() -> None:
    rng = np.random.default_rng(7)
    big_p, big_y = simulated(400_000, rng)
    truth = evaluate.metrics(big_y, big_p, 0.5)
    sims, hits = 120, {k: 0 for k in ("roc_auc", "brier", "sensitivity", "calibration_slope")}
    for i in range(sims):
        p, y = simulated(300, rng)
        ci = evaluate.metric_intervals(y, p, 0.5, n_boot=300, seed=i)
        for k in hits:
            hits[k] += ci[k][0] <= truth[k] <= ci[k][1]
    for k, h in hits.items():
        # 95 % nominal; with 120 simulations the binomial sd is 2 points, so 0.87-0.995 is ~4 sd.
        assert 0.87 <= h / sims <= 0.995, (k, h / sims)


def test_decision_curve_matches_a_hand_computation() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.25, 0.1, 0.05, 0.05, 0.01])
    dc = evaluate.decision_curve(y, p, np.array([0.2, 0.5]))
    # t = 0.2: treated p >= 0.2 -> 0.9, 0.6, 0.2 (cases) and 0.7, 0.3, 0.25 (non-cases): 3 TP, 3 FP.
    # NB = 3/10 - 3/10 * 0.2/0.8 = 0.3 - 0.075 = 0.225; treat all = 0.3 - 0.7 * 0.25 = 0.125.
    # t = 0.5: treated 0.9, 0.6 (cases), 0.7 (non-case): NB = 2/10 - 1/10 * 1 = 0.1; treat all = 0.3 - 0.7 = -0.4.
    np.testing.assert_allclose(dc["net_benefit_model"], [0.225, 0.1])
    np.testing.assert_allclose(dc["net_benefit_treat_all"], [0.125, -0.4])
    np.testing.assert_allclose(dc["net_benefit_treat_none"], [0.0, 0.0])
    summary = evaluate.decision_summary(y, p, {"decision threshold": 0.5})
    assert summary["at_cut_points"][0]["net_benefit_model"] == pytest.approx(0.1)
    assert set(evaluate.DC_THRESHOLDS[[0, -1]]) == {0.05, 0.6}


def subgroup_config() -> DatasetConfig:
    return DatasetConfig.model_validate(
        {
            "name": "sim",
            "train": "x.csv",
            "target": {"column": "y", "positive": 1},
            "features": [
                {"name": "edad", "type": "numeric", "label": {"es": "Edad", "en": "Age"}},
                {"name": "sexo", "type": "categorical", "categories": ["F", "M"], "label": {"es": "S", "en": "S"}},
            ],
            "risk_bands": [
                {"name": "low", "upper": 0.5, "label": {"es": "b", "en": "l"}},
                {"name": "high", "upper": 1.0, "label": {"es": "a", "en": "h"}},
            ],  # fmt: skip
            "subgroups": [{"feature": "edad", "edges": [40, 60]}],
        }
    )


def test_a_subgroup_the_model_cannot_rank_is_flagged_and_the_others_are_not() -> None:
    rng = np.random.default_rng(11)
    n = 1200
    age = rng.uniform(20, 80, n)
    x = rng.normal(size=n)
    truth = 1 / (1 + np.exp(-(2.0 * x - 0.5)))
    y = (rng.random(n) < truth).astype(int)
    # Above 60 the score is noise: the model is useless there.
    p = np.where(age >= 60, rng.uniform(0.05, 0.95, n), truth)
    X = pd.DataFrame({"edad": age, "sexo": rng.choice(["F", "M"], n)})
    X.loc[:9, "edad"] = np.nan
    overall = evaluate.metrics(y, p, 0.5)["roc_auc"]
    rows = evaluate.subgroup_report(subgroup_config(), X, y, p, overall, n_boot=200, seed=0)
    by = {(r["feature"], r["band"]): r for r in rows}
    assert set(by) == {("edad", "< 40"), ("edad", "40-60"), ("edad", ">= 60"), ("edad", "missing"),
                       ("sexo", "F"), ("sexo", "M")}  # fmt: skip
    assert by[("edad", ">= 60")]["flag"] is True
    assert by[("edad", ">= 60")]["ci"]["roc_auc"][1] < overall
    assert not any(r["flag"] for k, r in by.items() if k != ("edad", ">= 60"))
    assert by[("edad", "missing")]["n"] == 10 and "metrics" not in by[("edad", "missing")]  # too few to judge
    assert sum(r["n"] for k, r in by.items() if k[0] == "edad") == n


def test_curves_stored_for_the_app_are_the_reports_curves() -> None:
    """The numbers the app draws: the ROC curve's area is the reported AUC, the calibration points are quantile bins
    of the predictions (mean predicted vs observed fraction), the decision curve is ``decision_curve``'s."""
    rng = np.random.default_rng(5)
    p, y = simulated(400, rng)
    dc = evaluate.decision_curve(y, p)
    c = evaluate.curves(y, p, dc)
    fpr, tpr = np.array(c["roc"]["fpr"]), np.array(c["roc"]["tpr"])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0) and np.all(np.diff(fpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(evaluate.metrics(y, p, 0.5)["roc_auc"], abs=2e-3)  # points rounded to 4 decimals
    edges = np.quantile(p, np.linspace(0, 1, 9))
    bins = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, 7)
    assert c["calibration"]["predicted"] == pytest.approx([p[bins == b].mean() for b in range(8)], abs=1e-4)
    assert c["calibration"]["observed"] == pytest.approx([y[bins == b].mean() for b in range(8)], abs=1e-4)
    assert c["decision"]["model"] == pytest.approx(dc["net_benefit_model"].tolist(), abs=1e-4)
    assert c["decision"]["treat_all"] == pytest.approx(dc["net_benefit_treat_all"].tolist(), abs=1e-4)
