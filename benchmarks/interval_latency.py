"""Benchmark: what the per-prediction interval (params {"interval": true}) costs, against the same model
without it, in one run.

    .venv/bin/python benchmarks/interval_latency.py [--model-json PATH] [--repeats 2000] [--out PATH]

Without --model-json it trains the default model's family and hyperparameters (spline, 3 quantile knots,
C = 3, no recalibration) with its 100-member bootstrap ensemble in process. Measures, interleaved so load
on the machine hits both sides alike, the median and p99 latency of the MLflow pyfunc ``predict`` (a
1-row DataFrame, the /predict path's model call) and of the matrix fast path, for 1 and 1000 rows, with
and without the interval. Writes JSON and prints a table with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.data import load_split  # noqa: E402
from pipeline.risk_model import RiskModel  # noqa: E402


def trained_model() -> RiskModel:
    from pipeline.config import feature_spec
    from pipeline.train import TrainOptions, attach_ensemble, compile_additive, fit, set_reference

    config = load_config(ROOT / "data" / "pima" / "dataset.yaml")
    split = load_split(config)
    opts = TrainOptions(family="spline", C="3", n_knots="3", calibration="none", cv_repeats=1)
    fitted = fit(config, split.X_train, split.y_train, opts)
    spec = {"features": feature_spec(config), "threshold": config.threshold,
            "risk_bands": [b.model_dump() for b in config.risk_bands]}  # fmt: skip
    params = compile_additive(fitted, config, split.X_train)
    model = RiskModel()
    model.load_dict({"spec": spec, "params": params})
    set_reference(model, model.to_matrix(split.X_train))
    attach_ensemble(model, params, fitted, config, split.X_train, split.y_train, opts)
    return model


def timed(fn, repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-json", default="")
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "interval_latency.json"))
    args = p.parse_args()
    if args.model_json:
        model = RiskModel()
        model.load_dict(json.loads(Path(args.model_json).read_text(encoding="utf-8")))
    else:
        model = trained_model()
    config = load_config(ROOT / "data" / "pima" / "dataset.yaml")
    X_test = load_split(config).X_test
    one, many = X_test.head(1), X_test.sample(1000, replace=True, random_state=0).reset_index(drop=True)
    X_one, X_many = model.to_matrix(one), model.to_matrix(many)
    cases = {
        "pyfunc 1 row": lambda params: model.predict(None, one, params=params),
        "pyfunc 1000 rows": lambda params: model.predict(None, many, params=params),
        "matrix 1 row": lambda params: model.predict_matrix(X_one, interval=params["interval"]),
        "matrix 1000 rows": lambda params: model.predict_matrix(X_many, interval=params["interval"]),
    }
    results = {}
    for name, fn in cases.items():
        reps = args.repeats if "1 row" in name else max(args.repeats // 20, 20)
        base, ivl = [], []
        for _ in range(10):  # interleave: ten alternating blocks of each
            base.append(timed(lambda fn=fn: fn({"interval": False}), reps // 10))
            ivl.append(timed(lambda fn=fn: fn({"interval": True}), reps // 10))
        b, i = np.concatenate(base) * 1e6, np.concatenate(ivl) * 1e6
        results[name] = {
            "without_interval_us": {"p50": float(np.median(b)), "p99": float(np.percentile(b, 99))},
            "with_interval_us": {"p50": float(np.median(i)), "p99": float(np.percentile(i, 99))},
            "ratio_p50": float(np.median(i) / np.median(b)),
            "repeats": int(len(b)),
        }
    doc = {
        # Figures on a shared machine swing with its load: recorded so a reader can judge them.
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "members": int(model.ens_coef.shape[1] - 1),
        "basis_columns": int(model.ens_coef.shape[0]),
        "terms": sorted({t["kind"] for t in model.terms}),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"{doc['members']} members x {doc['basis_columns']} basis columns ({', '.join(doc['terms'])})")
    print("| case | p50 without (µs) | p50 with (µs) | ratio |\n|---|---|---|---|")
    for name, r in results.items():
        w, i = r["without_interval_us"]["p50"], r["with_interval_us"]["p50"]
        print(f"| {name} | {w:.0f} | {i:.0f} | {r['ratio_p50']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
