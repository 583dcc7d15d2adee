"""The inference log process: takes the rows every API worker scored (serving/inference_ship.py frames, on a Unix
socket) and writes them with the log's Writer (serving/inference_log.py: batches, COPY, spool, replay, exactly
once). One per API service, started and restarted by ``python -m serving`` (``spawn``/``Supervisor``) before the
workers fork; it exits when asked (SIGTERM: what it holds is written, or spooled) or when its parent is gone.

    python -m serving.inference_logd --socket PATH [--parent PID]

Its settings are the API's (``INFERENCE_*``, ``APP_DATABASE_URL``/``DATABASE_URL``); its counters go to the same
``PROMETHEUS_MULTIPROC_DIR``, so ``/metrics`` and ``/health`` (spool-full markers carry its pid) see it as they saw
the workers' writers. The socket lives in a directory only the service's user can open (0700): the frames carry
patients' features.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("serving.inference_log")

RECV_BYTES = 1 << 20
PARENT_CHECK_S = 0.5
DRAIN_S = 5.0  # at a stop, how long connections still open may keep sending


def serve(path: str, parent: int | None) -> int:
    from serving import inference_log
    from serving.inference_ship import Decoder

    cfg = inference_log.config()
    writer = inference_log.Writer(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)  # a previous process's socket (it died): this one takes its place
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.settimeout(PARENT_CHECK_S)
    readers: list[threading.Thread] = []

    def read(conn: socket.socket) -> None:
        decoder = Decoder()
        conn.settimeout(PARENT_CHECK_S)
        deadline = None
        try:
            while True:
                if stop.is_set():
                    deadline = deadline or time.monotonic() + DRAIN_S
                    if time.monotonic() > deadline:
                        break
                try:
                    data = conn.recv(RECV_BYTES)
                except TimeoutError:
                    continue
                if not data:
                    break  # the worker closed its end (it stopped, or is restarting)
                try:
                    items = decoder.feed(data)
                except Exception as exc:  # noqa: BLE001 - a stream we cannot read: drop this connection only
                    log.error("inference log process: an unreadable frame (%s); connection dropped", type(exc).__name__)
                    break
                for item in items:
                    writer.submit(item)
        except OSError:
            pass
        finally:
            if decoder.pending_bytes:
                log.warning("inference log process: a connection ended inside a frame (%d bytes)",
                            decoder.pending_bytes)  # fmt: skip
            conn.close()

    log.info("inference log process %d listening", os.getpid())
    try:
        while not stop.is_set():
            if parent and not inference_log._alive(parent):
                log.warning("inference log process: the API is gone; stopping")
                break
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    break
                raise
            t = threading.Thread(target=read, args=(conn,), name="inference-log-reader", daemon=True)
            t.start()
            readers = [r for r in readers if r.is_alive()] + [t]
    finally:
        stop.set()
        listener.close()
        for t in readers:
            t.join(DRAIN_S + 1)
        writer.close()  # what it holds goes to the table, or to the spool
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


# ---- in the gunicorn master --------------------------------------------------------------------------------
class Supervisor:
    """Starts the log process and starts it again if it exits (a crash, an out-of-memory kill); ``stop`` asks it
    to finish (SIGTERM) and waits for it. The socket's directory is private and removed at the end."""

    def __init__(self, env: dict[str, str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="dm2-logd-"))  # short: a Unix socket path is at most 107 bytes
        os.chmod(self.dir, 0o700)
        self.path = str(self.dir / "sock")
        self.env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="inference-logd-supervisor", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self._spawn()
        self._wait_listening()
        self._thread.start()

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "serving.inference_logd", "--socket", self.path, "--parent", str(os.getpid())]
        self._proc = subprocess.Popen(cmd, env=self.env)

    def _wait_listening(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not os.path.exists(self.path):
            if self._proc is not None and self._proc.poll() is not None:
                return  # it died at start: the supervisor tries again, the workers keep their rows meanwhile
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            proc = self._proc
            # returncode 0 may mean gunicorn's reaper collected it first (waitpid(-1)): it exited all the same
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                self.restarts += 1
                log.error("inference log process exited (%s); starting another", proc.returncode)
                _mark_dead(proc.pid)
                self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("inference log process did not stop within %.0f s; killed", timeout_s)
                proc.kill()
                proc.wait(5)
        if proc is not None:
            _mark_dead(proc.pid)
        try:
            for p in self.dir.iterdir():
                p.unlink()
            self.dir.rmdir()
        except OSError:
            pass

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _mark_dead(pid: int) -> None:
    """Its live gauges (spool bytes) leave /metrics with it; its counters stay summed in."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The API's inference log process")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--parent", type=int, default=0)
    args = ap.parse_args(argv)
    level = (os.environ.get("LOG_LEVEL") or "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its migration check at each start is not news
    return serve(args.socket, args.parent or None)


if __name__ == "__main__":
    sys.exit(main())
