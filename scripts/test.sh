#!/usr/bin/env bash
# Set up and run the whole test suite: lint, then pytest. Needs Postgres on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Spark batch engine is an optional extra; its tests run here.
.venv/bin/pip install -q -r requirements-spark.txt
# The browser test drives Debian's Chromium (Playwright cannot download browsers here).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
.venv/bin/ruff check .
# Two pytest workers (pytest-xdist), one test file each at a time so module fixtures are shared: most slow tests
# wait on servers, so two run in about two thirds of the time of one. PYTEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
