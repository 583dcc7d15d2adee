#!/usr/bin/env bash
# Set up, then start the whole platform locally: MLflow UI :5000, API :8002, Streamlit :8501.
# The API trains and registers a champion first if the registry has none. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# A champion first, if the registry has none (prints the run, the version and the held-out metrics).
MLFLOW_TRACKING_URI="${LOCAL_BACKEND_URI:-sqlite:///mlflow.db}" MLFLOW_ARTIFACT_ROOT="${LOCAL_ARTIFACTS:-}" \
  python -m pipeline.bootstrap
echo "MLflow UI  http://127.0.0.1:${MLFLOW_PORT:-5000}"
echo "API        http://127.0.0.1:${API_PORT:-8002}/docs  (authentication OFF: loopback only; API_AUTH=on to test keys)"
echo "Clinicians http://127.0.0.1:${UI_PORT:-8501}"
exec honcho -f Procfile.dev start
