"""How much memory the app needs for one uploaded CSV of a given size: sizes `server.maxUploadSize`.

Runs, in this process, what the batch page does with an upload before and after scoring: decode and parse
(ui.batch.read_csv), validate every cell (ui.batch.validate), build the scored table and its CSV for people
(ui.scored). The API's answers are not part of the app's memory, so each valid row gets a fixed result here.
Prints the peak RSS growth per MB of CSV and writes benchmarks/results/ui_upload_memory.json.

    python -m benchmarks.ui_upload_memory [--mb 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import yaml

from ui import batch, scored

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ui_upload_memory.json"


def rss_mb() -> tuple[float, float]:
    status = Path("/proc/self/status").read_text()
    values = {k: float(v.split()[0]) / 1024 for k, v in (x.split(":", 1) for x in status.splitlines() if ":" in x)
              if k in ("VmRSS", "VmHWM")}  # fmt: skip
    return values["VmRSS"], values["VmHWM"]


def features() -> list[dict]:
    config = yaml.safe_load((ROOT / "data" / "pima" / "dataset.yaml").read_text(encoding="utf-8"))
    return [{k: f.get(k) for k in ("name", "type", "integer", "min", "max", "optional")} for f in config["features"]]


def csv_of(size_mb: float, feats: list[dict]) -> bytes:
    """A Spanish-locale export (`;`, decimal commas) with an id column, about ``size_mb`` MB, values drawn
    uniformly within each feature's range (one decimal, as clinics record them)."""
    rng = np.random.default_rng(0)
    header = ";".join(["id", *(f["name"] for f in feats)]) + "\n"
    lines, size, i = [header], len(header), 0
    while size < size_mb * 1e6:
        cells = [f"P{i:07d}"]
        for f in feats:
            x = rng.uniform(f["min"], f["max"])
            cells.append(str(int(x)) if f.get("integer") else f"{x:.1f}".replace(".", ","))
        line = ";".join(cells) + "\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines).encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0)
    args = parser.parse_args()
    feats = features()
    data = csv_of(args.mb, feats)
    base, _ = rss_mb()
    resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    check = batch.validate(batch.read_csv(data), feats)
    results = batch.score(
        check,
        lambda recs: {"model": {"version": "1"},
                      "predictions": [{"probability": 0.25, "risk_level": "low", "label": 0}] * len(recs)},
        10_000,
    )  # fmt: skip
    table, _ = scored.table(check, results, feats, [], "es", scored.HUMAN)
    out = scored.to_csv(table, "es", scored.HUMAN)
    seconds = time.monotonic() - t0
    now, peak = rss_mb()
    figures = {
        "csv_mb": round(len(data) / 1e6, 2),
        "rows": len(check.frame),
        "rss_before_mb": round(base, 1),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - base, 1),
        "growth_per_csv_mb": round((peak - base) / (len(data) / 1e6), 1),
        "seconds": round(seconds, 2),
        "output_mb": round(len(out) / 1e6, 2),
    }
    print(json.dumps(figures, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
