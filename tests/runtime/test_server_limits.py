"""A tier server against slow, greedy and sloppy clients (issue 23): header and body deadlines, the connection
cap that keeps /healthz answering, load shedding with Retry-After, the /web/profiles body limit, the profiling
model behind the token, aborted requests, non-finite inputs and the flags' values.

Deadlines are set to fractions of a second here; a raw socket plays the client that an HTTP library would
not let us be."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from dnnsplit.browser import REQUIRED, VENDOR
from dnnsplit.runtime import route
from dnnsplit.runtime.server import ServeSettings, TierService, serving
from dnnsplit.runtime.wire import CONTENT_TYPE, encode
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures.assertions import assert_usage_error
from tests.runtime.conftest import SKIP

ROOT = Path(__file__).resolve().parents[2]
WEB = all((VENDOR / name).is_file() for name in REQUIRED)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (b"" when it closes without a word)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _body(manifest: Manifest, value: float = 0.0) -> bytes:
    tensor = np.full((1, 8, 32, 32), value, np.float32)
    return encode({SKIP: tensor}, {"manifest": route.digest(manifest)})


def _count(metrics: str, status: str) -> float:
    prefix = f'dnnsplit_requests_total{{path="/v1/infer",status="{status}",tier="edge"}} '
    return sum(float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix))


def test_a_body_shorter_than_its_content_length_gets_408(two_tier: Path) -> None:
    with serving(two_tier, ServeSettings(tier="edge", body_timeout_s=0.3)) as edge:
        sock = _connect(edge.url)
        sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
        answer = _answer(sock)  # before: nothing came back, ever (the socket's 10 s timeout)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"--body-timeout" in answer and b"connection: close" in answer.lower()
        metrics = httpx.get(f"{edge.url}/metrics").text
        assert _count(metrics, "408") == 1 and _count(metrics, "500") == 0


def test_slow_headers_get_408_and_a_silent_connection_is_closed(two_tier: Path) -> None:
    with serving(two_tier, ServeSettings(tier="edge", header_timeout_s=0.3)) as edge:
        slow, silent = _connect(edge.url), _connect(edge.url)
        slow.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
        answer = _answer(slow)
        assert answer.startswith(b"HTTP/1.1 408") and b"--header-timeout" in answer, answer[:200]
        assert _answer(silent) == b""
        # A client that keeps its connection busy is not cut: each request has its own deadline.
        with httpx.Client(base_url=edge.url) as http:
            for _ in range(3):
                assert http.get("/healthz").status_code == 200
                time.sleep(0.2)
        assert 'dnnsplit_dropped_connections_total{reason="header_timeout",tier="edge"} 2.0' in (
            httpx.get(f"{edge.url}/metrics").text
        )


def _one_answer(sock: socket.socket) -> bytes:
    """One keep-alive answer: its headers and Content-Length bytes of body (b"" if the server closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_past_the_cap_a_slow_newcomer_evicts_a_silent_connection_not_a_client_that_was_served(
    two_tier: Path,
) -> None:
    with serving(two_tier, ServeSettings(tier="edge", max_connections=4, header_timeout_s=60)) as edge:
        served = _connect(edge.url)
        request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        served.sendall(request)
        assert _one_answer(served).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)  # idle on its keep-alive connection longer than any newcomer below has waited
        silent = [_connect(edge.url) for _ in range(10)]
        time.sleep(0.2)
        served.sendall(request)  # the same connection: it was not the one evicted
        assert _one_answer(served).startswith(b"HTTP/1.1 200")
        assert httpx.get(f"{edge.url}/healthz").status_code == 200
        metrics = httpx.get(f"{edge.url}/metrics").text
        assert 'dnnsplit_dropped_connections_total{reason="evicted",tier="edge"}' in metrics
        for sock in silent:
            sock.close()


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_healthz_answers_while_300_unfinished_requests_outnumber_the_descriptors(
    two_tier: Path, tmp_path: Path
) -> None:
    """The issue's case: 300 requests that never finish, on a server allowed 256 open files."""
    port = _free_port()
    command = [sys.executable, "-m", "dnnsplit.cli.main", "serve", str(two_tier), "--port", str(port)]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, preexec_fn=_low_fd_limit)
    url = f"http://127.0.0.1:{port}"
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        for k in range(300):
            sock = _connect(url)
            if k % 2:
                sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nxx")
            else:
                sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\n")
            held.append(sock)
        time.sleep(0.5)
        for _ in range(5):  # before: the server could accept nothing more and the probe timed out
            assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
        body = _body(Manifest.load(two_tier))
        answer = httpx.post(
            f"{url}/v1/infer", content=body, headers={"content-type": CONTENT_TYPE}, timeout=5
        )
        assert answer.status_code == 200, answer.text
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'dnnsplit_dropped_connections_total{reason="evicted",tier="edge"}' in metrics
        assert _count(metrics, "500") == 0
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_past_the_queue_requests_get_503_with_retry_after(two_tier: Path) -> None:
    manifest = Manifest.load(two_tier)
    service = TierService(manifest, two_tier, ServeSettings(tier="edge", concurrency=1, max_queue=1))
    entered, release = threading.Event(), threading.Event()
    run = service.chain.run_segments

    def held_compute(*args, **kwargs):  # the first request computes until the test lets it go
        entered.set()
        release.wait(10)
        return run(*args, **kwargs)

    service.chain.run_segments = held_compute
    from dnnsplit.runtime.server import BackgroundServer

    body, answers = _body(manifest), {}

    def post(name: str) -> None:
        answers[name] = httpx.post(f"{server.url}/v1/infer", content=body, timeout=20)

    with BackgroundServer(service) as server:
        first = threading.Thread(target=post, args=("first",))
        first.start()
        assert entered.wait(10)
        second = threading.Thread(target=post, args=("second",))
        second.start()
        deadline = time.monotonic() + 10
        while service.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        shed = httpx.post(f"{server.url}/v1/infer", content=body, timeout=5)
        assert shed.status_code == 503, shed.text
        assert int(shed.headers["retry-after"]) >= 1 and shed.json()["code"] == "overloaded"
        assert "--max-queue" in shed.json()["error"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        release.set()
        first.join(20)
        second.join(20)
        assert answers["first"].status_code == 200 and answers["second"].status_code == 200


def test_non_finite_inputs_get_422_unless_allowed(two_tier: Path) -> None:
    manifest = Manifest.load(two_tier)
    with serving(two_tier, ServeSettings(tier="edge")) as edge:
        for value in (float("nan"), float("inf"), -float("inf")):
            answer = httpx.post(f"{edge.url}/v1/infer", content=_body(manifest, value))
            assert answer.status_code == 422, answer.text
            assert answer.json()["code"] == "non_finite" and SKIP in answer.json()["error"]
        assert httpx.post(f"{edge.url}/v1/infer", content=_body(manifest, 1.0)).status_code == 200
    with serving(two_tier, ServeSettings(tier="edge", allow_non_finite=True)) as edge:
        assert httpx.post(f"{edge.url}/v1/infer", content=_body(manifest, float("nan"))).status_code == 200


def test_an_aborted_request_is_not_counted_as_500(two_tier: Path) -> None:
    with serving(two_tier, ServeSettings(tier="edge")) as edge:
        sock = _connect(edge.url)
        sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
        time.sleep(0.2)
        sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{edge.url}/metrics").text
            if _count(metrics, "499") or _count(metrics, "500"):
                break
            time.sleep(0.05)
        assert _count(metrics, "499") == 1 and _count(metrics, "500") == 0, metrics


@pytest.mark.skipif(not WEB, reason="no vendored onnxruntime-web (make web)")
def test_profiles_post_refuses_an_oversized_body_before_reading_it(
    two_tier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnsplit.runtime.web import profiles

    monkeypatch.setattr(profiles, "MAX_POST_BYTES", 64 * 1024)
    settings = ServeSettings(tier="edge", web=True, profiles_dir=str(tmp_path / "p"))
    with serving(two_tier, settings) as server:
        # Declared too large: refused on the headers alone (before, the server waited for 300 MB).
        sock = _connect(server.url)
        sock.sendall(b"POST /web/profiles HTTP/1.1\r\nhost: x\r\ncontent-length: 300000000\r\n\r\n")
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # No length (chunked): read up to the limit and refused there, the rest never waited for.
        sock = _connect(server.url)
        sock.sendall(b"POST /web/profiles HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"x" * 4096
        for _ in range(20):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 413") and b"65536" in answer, answer[:300]
        assert list((tmp_path / "p").iterdir()) == []


@pytest.mark.skipif(not WEB, reason="no vendored onnxruntime-web (make web)")
def test_the_profiling_model_needs_the_token(two_tier: Path, tmp_path: Path) -> None:
    settings = ServeSettings(tier="edge", web=True, profiles_dir=str(tmp_path / "p"), token="s3cret")
    with serving(two_tier, settings) as server:
        url = f"{server.url}/web/profile/model.onnx"
        assert httpx.get(url).status_code == 401  # before: the whole model, to anyone
        assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
        model = httpx.get(url, headers={"authorization": "Bearer s3cret"})
        assert model.status_code == 200 and len(model.content) > 1000


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--port", "70000"], ["--port", "65535"]),
        (["--max-body-mb", "inf"], ["--max-body-mb"]),
        (["--timeout", "inf"], ["--timeout"]),
        (["--token", ""], ["--token", "empty"]),
        (["--header-timeout", "0"], ["--header-timeout"]),
        (["--body-timeout", "nan"], ["--body-timeout"]),
        (["--max-connections", "0"], ["--max-connections"]),
        (["--max-connections", "100000000"], ["--max-connections", "ulimit"]),
        (["--max-queue", "-1"], ["--max-queue"]),
    ],
)
def test_serve_flag_values_are_one_line_errors(
    cli, two_tier: Path, flags: list[str], needles: list[str]
) -> None:
    with socket.socket() as taken:  # should a value get through, the server fails to bind instead of serving
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = ["--port", str(taken.getsockname()[1])] if "--port" not in flags else []
        assert_usage_error(cli("serve", two_tier, *port, *flags), *needles)


def test_infer_flag_values_are_one_line_errors(cli, two_tier: Path, tmp_path: Path) -> None:
    frame = tmp_path / "x.npy"
    np.save(frame, np.zeros((3, 32, 32), np.float32))
    edge = ("infer", two_tier, "--edge", "http://127.0.0.1:1", "--input", frame)
    assert_usage_error(cli(*edge, "--timeout", "inf"), "--timeout")
    assert_usage_error(cli(*edge, "--token", ""), "--token", "empty")
