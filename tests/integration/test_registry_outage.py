"""The API started while its database registry is down recovers when the database comes back, without leaking
threads, and logs a registry outage in one line per check (real gunicorn workers, real Postgres behind a TCP
port the test switches between hanging, forwarding and refusing)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import FAST_TRAIN, backend_env, run_pipeline
from tests.integration.test_serving import start_server

pytestmark = pytest.mark.slow


class Switch:
    """A TCP port in front of Postgres: "hang" accepts connections and never answers (a database that hangs;
    psycopg2 has no connect timeout), "forward" relays to Postgres, "refuse" closes the port and every
    connection."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.mode = "hang"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(client)
            if self.mode == "forward":
                upstream = socket.create_connection(self.target)
                self.conns.append(upstream)
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _drop_connections(self) -> None:
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns.clear()

    def forward(self) -> None:
        self.mode = "forward"
        self._drop_connections()  # hung clients see an error and retry, now through to Postgres

    def refuse(self) -> None:
        self.server.close()
        self._drop_connections()


def _worker_threads(pid: int) -> dict[int, int]:
    """Thread count of each gunicorn worker (children of the master, but the inference log's process)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and b"inference_logd" not in (stat.parent / "cmdline").read_bytes():
                out[int(stat.parent.name)] = int(fields[17])  # num_threads
        except (OSError, IndexError, ValueError):
            continue
    return out


def _wait(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_started_while_registry_hangs_recovers_without_leaks_and_logs_outage_in_one_line(
    postgres_url: str, tmp_path: Path
) -> None:
    out = run_pipeline(backend_env(postgres_url, tmp_path / "artifacts"), *FAST_TRAIN)
    assert out.returncode == 0, out.stderr[-3000:]
    switch = Switch()
    uri = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{switch.port}")
    env = backend_env(uri, tmp_path / "artifacts")
    log = tmp_path / "server.log"
    srv = start_server(env, tmp_path / "cache", log, expect="down", RELOAD_INTERVAL_S="1", REGISTRY_TIMEOUT_S="1")
    try:
        time.sleep(3)  # both workers are up and have checked the hung registry at least once
        before = _worker_threads(srv.proc.pid)
        assert len(before) == 2, before
        time.sleep(8)  # ~4 more checks per worker against the hung database
        after = _worker_threads(srv.proc.pid)
        leaked = {pid: after.get(pid, 0) - n for pid, n in before.items()}
        assert all(n <= 1 for n in leaked.values()), f"threads leaked per worker: {leaked}"

        switch.forward()

        def both_workers_serve() -> bool:
            # Each request may land on either worker: all of several answers must be ok.
            try:
                return all(srv.get("/health").json()["status"] == "ok" for _ in range(8))
            except requests.RequestException:
                return False

        assert _wait(both_workers_serve, 30), log.read_text()[-3000:]
        samples = [x for x in srv.get("/metrics").text.splitlines() if x.startswith("serving_model_version{")]
        assert len(samples) == 2 and all(x.endswith(" 1.0") for x in samples), samples

        switch.refuse()
        mark = log.stat().st_size
        assert _wait(lambda: srv.get("/health").json()["registry_reachable"] is False, 20)
        time.sleep(3)  # a few failed checks per worker
        outage = log.read_bytes()[mark:].decode(errors="replace")
        assert "registry check failed" in outage
        assert "Traceback" not in outage and '  File "' not in outage, outage[-3000:]
        # Each of the 2 workers answers /health from its own last check, so a single request may reach a worker whose
        # check has not failed yet: wait for a degraded answer (still serving version 1) instead of taking the first.
        assert _wait(lambda: srv.get("/health").json()["status"] == "degraded", 20)
    finally:
        srv.stop()
        switch.refuse()
