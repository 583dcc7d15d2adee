"""The ceiling for benchmarks/serving_benchmark.py: a bare ASGI app on the serving API's HTTP stack.

    .venv/bin/python benchmarks/bare_asgi.py --port 8090 [--workers 1]

Any request (body read in full) gets the same small JSON: no framework, no parsing, no model, so the req/s it
reaches is what gunicorn + ``serving.worker.Worker`` (uvicorn, uvloop, httptools, no access log) can carry on this
machine, and the distance to it is what the API itself costs. Gunicorn options as ``python -m serving``'s:
preloaded app, keep-alive 5 s, TCP_NODELAY on the listening socket.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

BODY = b'{"predictions":[{"probability":0.5,"label":0,"risk_level":"low"}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:  # the request body is read, as any real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)

    from gunicorn.app.base import BaseApplication

    def when_ready(server: Any) -> None:
        # Same reason as serving/__main__.py: without it, Nagle + delayed ACK stall keep-alive responses.
        for listener in server.LISTENERS:
            sock = getattr(listener, "sock", None)
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{args.host}:{args.port}",
                "workers": args.workers,
                "worker_class": "serving.worker.Worker",
                "preload_app": True,
                "keepalive": 5,
                "accesslog": None,
                "control_socket_disable": True,
                "loglevel": "warning",
                "when_ready": when_ready,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
