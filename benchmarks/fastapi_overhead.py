"""What FastAPI's per-request machinery costs a route, in process (no network, no model). The same trivial
endpoint as a plain Starlette route; as serving's ``LeanRoute`` (declared with FastAPI, served as a Starlette
route) on the app and inside an included APIRouter; as an ordinary FastAPI route with no dependency, with
three ``async`` dependencies, and with one plain-``def`` dependency (run in a thread pool).

    .venv/bin/python benchmarks/fastapi_overhead.py [--n 20000] [--out PATH]

Prints µs per request (median of 5 rounds, alternating variants so machine load hits all alike) and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.routes import LeanRoute  # noqa: E402 - needs the project root on sys.path

BODY = b"{}"


async def _endpoint(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def _a(request: Request) -> object:
    return request.app


async def _b(request: Request) -> int:
    return 1


async def _c(request: Request) -> str:
    return "x"


def _sync(request: Request) -> int:
    return 1


def build() -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})
    app.add_route("/starlette", _endpoint, methods=["POST"])
    app.router.routes.append(LeanRoute("/lean", _endpoint, methods=["POST"]))
    included = APIRouter(route_class=LeanRoute)
    included.post("/lean-in-included-router")(_endpoint)
    app.include_router(included)
    app.post("/fastapi")(_endpoint)

    @app.post("/fastapi-3-async-deps")
    async def three(
        request: Request,
        a: Annotated[object, Depends(_a)],
        b: Annotated[int, Depends(_b)],
        c: Annotated[str, Depends(_c)],
    ) -> Response:
        return Response(BODY, media_type="application/json")

    @app.post("/fastapi-1-sync-dep")
    async def sync(request: Request, b: Annotated[int, Depends(_sync)]) -> Response:
        return Response(BODY, media_type="application/json")

    return app


async def per_request_us(app: FastAPI, path: str, n: int) -> float:
    async def receive() -> dict:
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    async def send(message: dict) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"8")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    t = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - t) / n * 1e6


async def run(n: int) -> dict[str, float]:
    app = build()
    paths = ["/starlette", "/lean", "/lean-in-included-router", "/fastapi", "/fastapi-3-async-deps"]
    paths.append("/fastapi-1-sync-dep")
    for p in paths:
        await per_request_us(app, p, 500)  # warm-up
    rounds: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(5):
        for p in paths:
            rounds[p].append(await per_request_us(app, p, n if "sync" not in p else n // 10))
    return {p: round(statistics.median(v), 1) for p, v in rounds.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fastapi_overhead.json"))
    args = ap.parse_args()
    result = asyncio.run(run(args.n))
    for path, us in result.items():
        print(f"{path:24s} {us:8.1f} µs/request")
    Path(args.out).write_text(json.dumps({"us_per_request": result, "n": args.n}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
