"""Run render.yaml's services on this machine, as Render would start them: each service's exact
startCommand, PORT set, ``fromDatabase`` resolved to a given Postgres URL, ``fromService … hostport`` to
loopback ports, ``generateValue`` to a random secret, and the disk's mountPath to a local folder.

Used by the deployment smoke test and the memory benchmark; Render itself cannot be reached from here.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_secrets(services: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """One random value per ``generateValue`` variable, made once so ``fromService … envVarKey`` copies it."""
    return {
        (name, var["key"]): secrets.token_urlsafe(24)
        for name, svc in services.items()
        for var in svc.get("envVars", [])
        if var.get("generateValue")
    }


def service_env(
    svc: dict[str, Any],
    ports: dict[str, int],
    database_url: str,
    disk_root: Path,
    generated: dict[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in ("DATABASE_URL", "PORT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # what Render's build installed
    mount = svc.get("disk", {}).get("mountPath")
    for var in svc.get("envVars", []):
        key = var["key"]
        if "value" in var:
            value = str(var["value"])
            env[key] = value.replace(mount, str(disk_root), 1) if mount and value.startswith(mount) else value
        elif "fromDatabase" in var:
            if var["fromDatabase"]["property"] != "connectionString":
                raise ValueError(f"{svc['name']}.{key}: only connectionString is rehearsed")
            env[key] = database_url
        elif "fromService" in var:
            ref = var["fromService"]
            if "envVarKey" in ref:  # another service's variable; only generated ones are rehearsed
                env[key] = (generated or {})[(ref["name"], ref["envVarKey"])]
            elif ref.get("property") == "hostport":
                env[key] = f"127.0.0.1:{ports[ref['name']]}"
            else:
                raise ValueError(f"{svc['name']}.{key}: only hostport and envVarKey are rehearsed")
        elif var.get("generateValue"):
            env[key] = (generated or {}).get((svc["name"], key)) or secrets.token_urlsafe(24)
    env["PORT"] = str(ports[svc["name"]])  # Render sets PORT (to the Blueprint's own value when it has one)
    env["RENDER_SERVICE_NAME"] = svc["name"]
    env["MODEL_CACHE_DIR"] = str(disk_root / "serving-cache")  # the instance's own disk, not the repo's
    return env


@dataclass
class Rehearsal:
    services: dict[str, dict[str, Any]]
    ports: dict[str, int]
    generated: dict[tuple[str, str], str] = field(default_factory=dict)  # the secrets Render would generate
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def stop(self) -> None:
        import signal

        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start(
    database_url: str, workdir: Path, blueprint: Path = ROOT / "render.yaml", only: set[str] | None = None
) -> Rehearsal:
    """Start every web service of the Blueprint, or those named in ``only`` (each in its own process group,
    logs in ``workdir``)."""
    declared = yaml.safe_load(blueprint.read_text())["services"]
    services = {s["name"]: s for s in declared if not only or s["name"] in only}
    rehearsal = Rehearsal(services, {name: free_port() for name in services}, generate_secrets(services))
    for name, svc in services.items():
        log = workdir / f"{name}.log"
        rehearsal.logs[name] = log
        with log.open("wb") as fh:
            rehearsal.procs[name] = subprocess.Popen(
                ["bash", "-c", svc["startCommand"]],
                cwd=ROOT,
                start_new_session=True,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=service_env(svc, rehearsal.ports, database_url, workdir / name, rehearsal.generated),
            )
    return rehearsal
