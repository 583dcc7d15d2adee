"""``python -m serving``: gunicorn (process manager) with uvicorn workers, the app preloaded in the master.

Why this shape:
- ``preload_app``: the master imports MLflow/pandas and loads the model once; forked workers share those
  pages copy-on-write, so two workers cost little more than one (PSS, what a container limit counts).
- uvloop + httptools, no access log: per-request overhead is most of a 1-row request's cost.
- TCP_NODELAY on the listening socket (inherited by accepted connections on Linux): uvicorn binds through
  gunicorn's socket here, and asyncio only sets TCP_NODELAY itself when the socket's proto is IPPROTO_TCP,
  which sockets created as ``socket(AF_INET, SOCK_STREAM)`` do not report; without it Nagle + delayed ACK
  stalls responses on reused keep-alive connections by ~40 ms.
- one model watcher thread per worker (threads do not survive fork), started by the app's lifespan in each
  worker, which also drops the connections and locks a worker inherits from the master.
- the connection limits (KEEPALIVE_TIMEOUT_S, BODY_READ_TIMEOUT_S, MAX_CONNECTIONS) reach each worker through the
  gunicorn application (``connection_limits``): uvicorn-worker passes none of them to uvicorn (serving.worker).
- gunicorn's ``timeout`` (the worker's heartbeat) stays well above REQUEST_TIMEOUT_S: large bodies are parsed in a
  thread, so the event loop keeps beating while a request runs and an overrun answers 504 instead of costing the
  worker its life.
- the inference log's writer runs in a process of its own (serving/inference_logd.py), started here before the
  workers fork and started again if it exits; workers hand it their rows on a Unix socket
  (serving/inference_ship.py). A writer thread inside each worker cost a 1-row request a quarter of its CPU.
  ``INFERENCE_LOG_PROCESS=off`` keeps the writer in the workers, as before.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from serving.settings import Settings, SettingsError


def _prepare_metrics_dir() -> str:
    # Must be set before prometheus_client is imported anywhere (it picks its value class at import).
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)  # stale files from a previous run would be summed in
        os.makedirs(path, exist_ok=True)
        return path
    path = tempfile.mkdtemp(prefix="serving-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, True)  # ours: not left behind in /tmp when the service stops
    return path


def _start_log_process() -> None:
    """The inference log's own process, before gunicorn forks the workers (they find its socket in the
    environment). Stopped at exit, after gunicorn has stopped the workers and they have sent what they held."""
    from serving import inference_log
    from serving.inference_logd import Supervisor

    os.environ.pop(inference_log.SOCKET_ENV, None)  # only ever the socket of the process started here
    if not inference_log.config().enabled:
        return
    if (os.environ.get("INFERENCE_LOG_PROCESS") or "on").strip().lower() in ("off", "0", "false", "no"):
        return
    supervisor = Supervisor()
    supervisor.start()
    os.environ[inference_log.SOCKET_ENV] = supervisor.path
    atexit.register(supervisor.stop)


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
    )
    _prepare_metrics_dir()
    settings.apply_mlflow_defaults()
    # Refuse to start (before gunicorn) with a security setting that cannot be honoured, e.g. API_AUTH=off
    # on an address other than loopback. Imported here: after PROMETHEUS_MULTIPROC_DIR is set.
    from serving.auth import AuthConfig
    from serving.security_headers import allowed_origins

    try:
        AuthConfig.from_env(settings.host)
        allowed_origins(os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from gunicorn.app.base import BaseApplication

    from serving.app import create_app
    from serving.mlflow_adapter import listening_sockets
    from serving.model_store import ModelStore
    from serving.worker import ConnectionLimits

    store = ModelStore(settings)
    _start_log_process()

    def when_ready(server: Any) -> None:
        for sock in listening_sockets(server):
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def child_exit(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class Server(BaseApplication):
        # Read by serving.worker.Worker (uvicorn-worker passes none of these to uvicorn).
        connection_limits = ConnectionLimits(
            read_timeout_s=settings.body_read_timeout_s,
            keepalive_s=settings.keepalive_timeout_s,
            max_connections=settings.max_connections,
        )

        def load_config(self) -> None:
            options = {
                "bind": f"{settings.host}:{settings.port}",
                "workers": settings.workers,
                "worker_class": "serving.worker.Worker",
                "preload_app": True,
                # gunicorn kills a worker stuck past this: the hard bound behind the cooperative REQUEST_TIMEOUT_S
                "timeout": max(30, int(settings.request_timeout_s * 3)),
                "graceful_timeout": 10,
                "accesslog": None,
                "control_socket_disable": True,  # no shared ~/.gunicorn socket between several local servers
                "loglevel": settings.log_level,
                "when_ready": when_ready,
                "child_exit": child_exit,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # The app first: it registers the listener that prepares each version (validator, /model/info,
            # OpenAPI) before the version is served, so a version it cannot prepare is never made current.
            app = create_app(settings, store)
            store.load_initial()
            # Move everything loaded so far out of the garbage collector's reach: a collection in a worker
            # would otherwise write to every object's header and un-share the master's pages (copy-on-write).
            gc.collect()
            gc.freeze()
            return app

    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
