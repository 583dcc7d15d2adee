"""The README's run command: `bash scripts/run.sh` starts MLflow UI, API and Streamlit with honcho on an
embedded SQLite registry, and Ctrl-C stops every process. The registry is given a champion first (fast options),
so the script's bootstrap finds it and starts at once; bootstrap's own training on an empty registry is tested in
tests/integration/test_bootstrap.py and tests/e2e/test_deploy_smoke.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import requests

from tests.conftest import FAST_TRAIN, ROOT, backend_env, run_pipeline
from tests.deploy_helpers import example_patient, free_port, stop, wait_healthy


def listen_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening socket on ``port``, read from /proc/net/tcp (state 0A = LISTEN)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hexport = local.split(":")
        if state == "0A" and int(hexport, 16) == port:
            out.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_script_starts_the_stack_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    ports = {"MLFLOW_PORT": free_port(), "API_PORT": free_port(), "UI_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "DATABASE_URL"}
    env.update({k: str(v) for k, v in ports.items()})
    env.update({
        "LOCAL_BACKEND_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",  # a throwaway registry, not the developer's
        "LOCAL_ARTIFACTS": str(tmp_path / "mlruns"),
        "MODEL_CACHE_DIR": str(tmp_path / "serving-cache"),
    })  # fmt: skip
    trained = run_pipeline(backend_env(env["LOCAL_BACKEND_URI"], tmp_path / "mlruns"), *FAST_TRAIN)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = tmp_path / "stack.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, start_new_session=True,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{ports['MLFLOW_PORT']}/health", [proc], 180, [log])
        wait_healthy(f"http://127.0.0.1:{ports['UI_PORT']}/_stcore/health", [proc], 180, [log])
        health = wait_healthy(f"http://127.0.0.1:{ports['API_PORT']}/health", [proc], 600, [log]).json()
        assert health["status"] == "ok" and health["model"]["version"] == "1"
        # The MLflow UI answers on its own port (the page, not just the health check).
        assert requests.get(f"http://127.0.0.1:{ports['MLFLOW_PORT']}/", timeout=5).status_code == 200
        api = f"http://127.0.0.1:{ports['API_PORT']}"
        info = requests.get(f"{api}/model/info", timeout=5).json()
        r = requests.post(f"{api}/predict", json=example_patient(info["features"]), timeout=10)
        assert r.status_code == 200 and 0 < r.json()["predictions"][0]["probability"] < 1
        # The MLflow UI can show the run's artifacts (plots, card) from the local artifact folder.
        card = requests.get(f"http://127.0.0.1:{ports['MLFLOW_PORT']}/get-artifact",
                            params={"path": "model_card.md", "run_uuid": info["run_id"]}, timeout=10)  # fmt: skip
        assert card.status_code == 200 and "Model card" in card.text
        assert (tmp_path / "mlflow.db").exists()
        # Loopback only: a laptop must not offer an open, writable registry to its network.
        for p in ports.values():
            assert listen_addresses(p) == {"127.0.0.1"}, (p, listen_addresses(p))
        # The README's data-scientist command works on the same registry while the stack runs.
        direct = run_pipeline(backend_env(env["LOCAL_BACKEND_URI"], tmp_path / "mlruns"), *FAST_TRAIN)
        assert direct.returncode == 0, direct.stderr[-3000:]
        assert "registered: diabetes-t2 version 2" in direct.stdout
    finally:
        code = stop(proc, signal.SIGINT, timeout_s=30)  # what Ctrl-C in the terminal sends
    assert code in (0, 130, -signal.SIGINT), log.read_text()[-3000:]
    assert not any(port_open(p) for p in ports.values()), log.read_text()[-3000:]
    leftover = subprocess.run(["pgrep", "-f", "--", f"--port {ports['MLFLOW_PORT']}"], capture_output=True, text=True)
    assert leftover.returncode == 1 and leftover.stdout.strip() == "", leftover  # 1: no process matched
