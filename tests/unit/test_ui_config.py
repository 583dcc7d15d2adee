"""The Streamlit server configuration the app ships with (.streamlit/config.toml, read from the project root)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_usage_statistics_and_an_upload_limit_sized_for_512_mb() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["browser"]["gatherUsageStats"] is False
    limit_mb = config["server"]["maxUploadSize"]
    measured = json.loads((ROOT / "benchmarks" / "results" / "ui_upload_memory.json").read_text())
    app_mb = 335  # the app after every page has been used, as tests/test_ui_e2e.py measured it
    assert app_mb + limit_mb * measured["growth_per_csv_mb"] < 0.85 * 512  # headroom on a 512 MB instance
    assert config["client"]["showErrorDetails"] == "none"
