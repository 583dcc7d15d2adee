"""Issue 8's abuse cases against the real server (``python -m serving``: gunicorn + one uvicorn worker, loopback):
the wide CSV, the Parquet bomb, a slow sender, 2,000 half-open uploads, and a client that leaves mid-upload. Each
is refused or cut off within the request timeout, the worker's peak memory (VmHWM, from /proc) stays under
350 MiB, the worker is the same process afterwards (never killed), and a normal request still gets 200.

BODY_READ_TIMEOUT_S is 2 s and KEEPALIVE_TIMEOUT_S 1 s here so the slow cases finish in seconds; every other
limit is at its default (MAX_BODY_BYTES 5 MB, MAX_ROWS 10,000, MAX_COLUMNS 1000, MAX_VALUE_CHARS 256,
MAX_DECODED_BYTES 32 MB, MAX_CONNECTIONS 100, REQUEST_TIMEOUT_S 10 s). The rules themselves, one by one:
tests/unit/test_input_limits.py."""

from __future__ import annotations

import io
import selectors
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from tests.conftest import EXAMPLE_PATIENT, run_pipeline
from tests.integration.test_serving import Server, clean_env, start_server

FAST_TRAIN = ("--cv-repeats", "1", "--cv-folds", "3", "--family", "logistic", "--C", "1", "--calibration", "none")
REQUEST_TIMEOUT_S = 10.0  # the default: every attack must end within it
BODY_READ_TIMEOUT_S = 2.0
KEEPALIVE_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 100
MEMORY_LIMIT_MIB = 350
HEAD = (
    "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nContent-Length: {n}\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("abuse")
    env = clean_env(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts")
    out = run_pipeline(env, *FAST_TRAIN)
    assert out.returncode == 0, out.stderr[-3000:]
    srv = start_server(
        env,
        tmp / "cache",
        tmp / "server.log",
        WEB_CONCURRENCY="1",
        INFERENCE_LOG="off",  # not the subject here
        BODY_READ_TIMEOUT_S=str(BODY_READ_TIMEOUT_S),
        KEEPALIVE_TIMEOUT_S=str(KEEPALIVE_TIMEOUT_S),
    )
    yield srv
    srv.stop()


def workers(server: Server) -> list[int]:
    pid = server.proc.pid
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def peak_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM): every moment of every attack, not a sample."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


@pytest.fixture
def guard(server: Server) -> Iterator[list[int]]:
    """The worker before the attack; afterwards: the same worker, its peak memory under the limit, a normal
    request answered."""
    before = workers(server)
    assert len(before) == 1
    yield before
    assert workers(server) == before, "the worker was replaced (killed) during the attack"
    assert peak_mib(before[0]) < MEMORY_LIMIT_MIB, f"worker peak {peak_mib(before[0]):.0f} MiB"
    r = server.post("/invocations", json={"dataframe_records": [EXAMPLE_PATIENT]})
    assert r.status_code == 200, r.text


def timed_post(server: Server, body: bytes, content_type: str) -> tuple[requests.Response, float]:
    t0 = time.monotonic()
    r = requests.post(server.url + "/invocations", data=body, headers={"Content-Type": content_type}, timeout=30)
    return r, time.monotonic() - t0


def test_wide_csv_is_refused_before_parsing(server: Server, guard: list[int]) -> None:
    # The body: 4.9 MB, 500,000 columns (it took 15 s and 840 MiB when pandas parsed it).
    n = 500_000
    body = (",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("1" * n) + "\n").encode()
    assert 4_500_000 < len(body) <= 5_000_000
    r, elapsed = timed_post(server, body, "text/csv")
    assert r.status_code == 413 and "too many CSV columns" in r.json()["message"], r.text
    assert elapsed < 2.0, elapsed  # a count of commas on the first line, not a parse
    print(f"\nwide CSV: {r.status_code} in {elapsed:.2f} s, worker peak {peak_mib(guard[0]):.0f} MiB")


def _parquet(table: pa.Table, **kw: object) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd", **kw)
    return out.getvalue()


def test_parquet_bombs_are_refused_before_decoding(server: Server, guard: list[int]) -> None:
    rows = 10_000  # MAX_ROWS: the row count passes
    bombs = {
        # the issue's: one 9,000-character value 10,000 times, dictionary-encoded: 90 MB decoded
        "90 MB of one long value": (pa.table({"glucosa": pa.array(["x" * 9000] * rows)}), {}, 90_000_000),
        # values within MAX_VALUE_CHARS in 200 columns that are not the model's: 400 MB never decoded
        "400 MB in other columns": (
            pa.table({f"c{i}": pa.array(["y" * 200] * rows) for i in range(200)}),
            {},
            400_000_000,
        ),
        # the model's own columns as text within MAX_VALUE_CHARS: decoded (17.5 MB), then refused as text
        "the model's columns as text": (
            pa.table({k: pa.array([f"{i % 50:06d}" + "t" * 244 for i in range(rows)]) for k in EXAMPLE_PATIENT}),
            {},
            17_500_000,
        ),
        # no dictionary, delta-encoded: each value rebuilt from the previous one
        "delta-encoded": (
            pa.table({"c": pa.array([f"{'z' * 240}{i:05d}" for i in range(rows)])}),
            {"use_dictionary": False, "column_encoding": {"c": "DELTA_BYTE_ARRAY"}},
            2_450_000,
        ),
        "a list column": (pa.table({"glucosa": pa.array([[1.0] * 1000] * rows)}), {}, 80_000_000),
    }
    for name, (table, kw, decoded) in bombs.items():
        body = _parquet(table, **kw)
        assert len(body) < 250_000 and decoded > 100 * len(body), (name, len(body))
        r, elapsed = timed_post(server, body, "application/vnd.apache.parquet")
        assert r.status_code in (400, 413), (name, r.text)
        assert elapsed < 2.0, (name, elapsed)
        print(f"\nParquet {name}: {len(body)} bytes → {r.status_code} in {elapsed:.2f} s: {r.json()['message']}")
    print(f"worker peak {peak_mib(guard[0]):.0f} MiB")


def test_json_bombs_are_refused(server: Server, guard: list[int]) -> None:
    bombs = {
        # 1.6 M empty objects (about 110 MB as Python dicts): counted on the bytes, refused before parsing
        "objects": b"[" + b"{}," * 1_600_000 + b"{}]",
        # 1 M two-letter strings in one column (about 60 MB parsed): parsed, then refused for its rows
        "strings": b'{"inputs": {"glucosa": [' + b'"ab",' * 640_000 + b'"ab"]}}',
    }
    for name, body in bombs.items():
        assert len(body) <= 5_000_000
        r, elapsed = timed_post(server, body, "application/json")
        assert r.status_code == 413 and elapsed < 2.0, (name, r.text, elapsed)
        print(f"\nJSON {name}: 413 in {elapsed:.2f} s: {r.json()['message']}")
    print(f"worker peak {peak_mib(guard[0]):.0f} MiB")


def _read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    t0, data = time.monotonic(), b""
    sock.settimeout(timeout_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data, time.monotonic() - t0


def test_slow_sender_is_cut_off(server: Server, guard: list[int]) -> None:
    # The issue's: 1000 bytes dribbled over 90 s. Here one byte every 0.09 s until the server answers.
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(HEAD.format(ct="application/json", n=1000).encode())
    t0, answer = time.monotonic(), b""
    sock.settimeout(0.09)
    for _ in range(1000):
        try:
            sock.send(b" ")
            answer += sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # closed by the server
            break
        if answer:
            break
    rest, _ = _read_until_closed(sock, 5)
    elapsed = time.monotonic() - t0
    answer += rest
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"BODY_READ_TIMEOUT_S" in answer and b"connection: close" in answer.lower()
    assert BODY_READ_TIMEOUT_S - 0.1 <= elapsed < BODY_READ_TIMEOUT_S + 2, elapsed
    print(f"\nslow sender: 408 after {elapsed:.2f} s")


def test_slow_or_oversized_heads_and_idle_connections_are_closed(server: Server, guard: list[int]) -> None:
    idle = socket.create_connection(("127.0.0.1", server.port))  # connects and sends nothing
    data, elapsed = _read_until_closed(idle, 10)
    assert data == b"" and KEEPALIVE_TIMEOUT_S - 0.1 <= elapsed < KEEPALIVE_TIMEOUT_S + 1.5, elapsed
    slow = socket.create_connection(("127.0.0.1", server.port))  # a head a byte at a time
    t0, answer = time.monotonic(), b""
    slow.settimeout(0.1)
    for byte in b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200:
        try:
            slow.send(bytes([byte]))
            answer = slow.recv(65536)
            break
        except TimeoutError:
            continue
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert BODY_READ_TIMEOUT_S - 0.1 <= time.monotonic() - t0 < BODY_READ_TIMEOUT_S + 1.5
    big = socket.create_connection(("127.0.0.1", server.port))  # 10 MB of headers (uvicorn kept them all)
    big.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(10_000):
            big.sendall(b"X-Junk: " + b"a" * 1000 + b"\r\n")
    except OSError:
        pass
    data, _ = _read_until_closed(big, 5)
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    for s in (idle, slow, big):
        s.close()


def test_two_thousand_half_open_uploads(server: Server, guard: list[int]) -> None:
    """Each sends its head and 1,000 of 100,000 promised bytes, then waits. Beyond MAX_CONNECTIONS they are answered
    503 at once; the others 408 once BODY_READ_TIMEOUT_S has passed; all are closed well within the request
    timeout."""
    head = HEAD.format(ct="application/json", n=100_000).encode()
    t0 = time.monotonic()
    socks = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", server.port))
        try:
            s.sendall(head + b'{"dataframe_records": [' + b" " * 977)
        except OSError:  # already refused and closed by the server
            pass
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    answers = {s: b"" for s in socks}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    statuses: Counter[str] = Counter()
    while answers and time.monotonic() - t0 < REQUEST_TIMEOUT_S + 5:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                answers[s] += chunk
                continue
            statuses[answers.pop(s)[:12].decode(errors="replace") or "closed"] += 1
            sel.unregister(s)
            s.close()
    elapsed = time.monotonic() - t0
    for s in answers:
        s.close()
    assert not answers, f"{len(answers)} connections still open after {elapsed:.1f} s"
    assert elapsed < REQUEST_TIMEOUT_S, elapsed
    # "closed": refused, its 503 lost to the reset of a connection closed with the client's bytes unread
    assert set(statuses) <= {"HTTP/1.1 503", "HTTP/1.1 408", "closed"}, statuses
    assert statuses["HTTP/1.1 408"] <= MAX_CONNECTIONS, statuses
    cut = [x for x in server.get("/metrics").text.splitlines() if x.startswith("serving_connections_cut_total")]
    assert any('reason="too_many_connections"' in x for x in cut), cut
    print(f"\n2,000 half-open uploads: {dict(statuses)}, all closed after {elapsed:.2f} s, "
          f"worker peak {peak_mib(guard[0]):.0f} MiB")  # fmt: skip


def test_a_client_leaving_mid_upload_is_not_a_server_error(server: Server, guard: list[int]) -> None:
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(HEAD.format(ct="application/json", n=5000).encode() + b'{"dataframe_records": [')
        time.sleep(0.2)
        s.close()
    time.sleep(0.5)
    lines = server.get("/metrics").text.splitlines()
    counts = {x.split('status="')[1][:3]: float(x.split()[-1]) for x in lines
              if x.startswith("serving_requests_total") and 'route="/invocations"' in x}  # fmt: skip
    assert counts.get("499", 0) >= 3 and "500" not in counts, counts
    log = server.log.read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log and "unhandled" not in log
