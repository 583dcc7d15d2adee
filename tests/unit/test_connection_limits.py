"""serving.worker.Protocol, the connection bounds uvicorn lacks, driven in process: uvicorn's own config and
server state, the real httptools parser and an event loop, with a transport that records what the server writes
(the one stand-in: no socket). The real server under attack: tests/integration/test_abuse_limits.py."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from serving.worker import MAX_HEAD_BYTES, ConnectionLimits, Protocol, Worker, protocol_class

LIMITS = ConnectionLimits(read_timeout_s=0.3, keepalive_s=0.2, max_connections=2)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8002)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: dict, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _connect(config: Config, state: ServerState) -> tuple[Protocol, Transport]:
    proto = config.http_protocol_class(config=config, server_state=state, app_state={})
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport


def _setup() -> tuple[Config, ServerState]:
    protocol = protocol_class(LIMITS)
    protocol.SWEEP_S = 0.02  # deadlines are checked by a sweep: a fine one here, for exact timings
    config = Config(app=_app, http=protocol, timeout_keep_alive=LIMITS.keepalive_s, log_config=None)
    config.load()
    return config, ServerState()


def test_idle_slow_head_oversized_head_and_too_many_connections() -> None:
    async def main() -> None:
        config, state = _setup()
        idle, idle_t = _connect(config, state)  # sends nothing
        slow, slow_t = _connect(config, state)  # starts a head and stalls
        slow.data_received(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        third, third_t = _connect(config, state)  # over MAX_CONNECTIONS=2: refused at once
        assert third_t.closed and third_t.written.startswith(b"HTTP/1.1 503 ")
        third.connection_lost(None)
        await asyncio.sleep(LIMITS.keepalive_s + 0.05)
        assert idle_t.closed and idle_t.written == b""  # idle: closed without a word
        assert not slow_t.closed
        await asyncio.sleep(LIMITS.read_timeout_s - LIMITS.keepalive_s + 0.05)
        assert slow_t.closed and slow_t.written.startswith(b"HTTP/1.1 408 ")
        for p in (idle, slow):
            p.connection_lost(None)
        big, big_t = _connect(config, state)
        big.data_received(b"GET /health HTTP/1.1\r\n")
        for _ in range(MAX_HEAD_BYTES // 1000 + 1):
            big.data_received(b"X-Junk: " + b"a" * 990 + b"\r\n")
            if big_t.closed:
                break
        assert big_t.written.startswith(b"HTTP/1.1 431 ")
        big.connection_lost(None)

    asyncio.run(main())


def test_a_request_in_time_is_untouched_and_a_body_left_unread_is_cut_off() -> None:
    async def main() -> None:
        config, state = _setup()
        proto, transport = _connect(config, state)
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
        await asyncio.sleep(0.05)
        assert transport.written.startswith(b"HTTP/1.1 200 ") and not transport.closed
        # Another request whose body stops halfway: the app's own 408 (serving.limits.BodyGuard) is not here, so
        # the protocol's backstop closes it once the read timeout and its grace have passed.
        transport.written = b""
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        await asyncio.sleep(LIMITS.read_timeout_s + 0.5)
        assert not transport.closed
        await asyncio.sleep(0.6)
        assert transport.closed
        proto.connection_lost(None)

    asyncio.run(main())


def test_the_worker_hands_the_limits_to_uvicorn() -> None:
    import logging

    from gunicorn.config import Config as GunicornConfig
    from gunicorn.glogging import Logger

    class App:  # the gunicorn application of serving.__main__ carries them
        connection_limits = LIMITS

    cfg = GunicornConfig()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.access")]
    saved = {lg.name: (lg.handlers, lg.propagate) for lg in loggers}
    try:
        worker = Worker(0, 0, [], App(), 30, cfg, Logger(cfg))
    finally:  # the worker class re-wires uvicorn's loggers to gunicorn's, as in a real worker
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
    assert issubclass(worker.config.http, Protocol) and worker.config.http.limits == LIMITS
    assert worker.config.timeout_keep_alive == LIMITS.keepalive_s
