"""The client does not trust the edge (issue 23, point 5): ``--timeout`` is a deadline for the whole request,
and an answer that is not the split's outputs (names, shapes, dtypes, batch, size) is a fallback.

The edges here are raw sockets on loopback that answer one request per connection the way a broken or
hostile edge would: a byte every 0.2 s (for at most 5 s, then they hang up), or a well-formed safetensors
answer with the wrong tensors in it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from dnnsplit.runtime import route
from dnnsplit.runtime.client import CollaborativeClient
from dnnsplit.runtime.wire import CONTENT_TYPE, encode
from dnnsplit.splitting.manifest import Manifest

DRIP_S = 0.2
DRIP_FOR_S = 5.0


def _http(body: bytes, length: int | None = None) -> tuple[bytes, bytes]:
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: {CONTENT_TYPE}\r\n"
        f"content-length: {len(body) if length is None else length}\r\n\r\n"
    ).encode()
    return head, body


def _answer(directory: Path, tensors: dict[str, np.ndarray]) -> bytes:
    digest = route.digest(Manifest.load(directory))
    return encode(tensors, {"manifest": digest, "complete": "true", "tier": "edge"})


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)


@contextmanager
def fake_edge(respond: Callable[[socket.socket], None]) -> Iterator[tuple[str, list[str]]]:
    """An edge on loopback that reads each request, then lets ``respond`` write to the socket; the list
    says per connection whether the edge finished (``done``) or the client hung up on it (``hung up``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()
    ends: list[str] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                _read_request(conn)
                try:
                    respond(conn)
                    ends.append("done")
                except OSError:
                    ends.append("hung up")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", ends
    finally:
        stop.set()
        thread.join()
        listener.close()


def dripping(head: bytes, body: bytes, drip_head: bool) -> Callable[[socket.socket], None]:
    """Send ``head`` (at once, or dripped) and ``body`` a byte every DRIP_S, for at most DRIP_FOR_S."""

    def respond(conn: socket.socket) -> None:
        data = head + body
        sent = 0 if drip_head else len(head)
        if not drip_head:
            conn.sendall(head)
        stop = time.monotonic() + DRIP_FOR_S
        while sent < len(data) and time.monotonic() < stop:
            conn.sendall(data[sent : sent + 1])
            sent += 1
            time.sleep(DRIP_S)

    return respond


def answering(head: bytes, body: bytes) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(head + body)


@pytest.mark.parametrize("drip_head", [True, False], ids=["status-line-and-headers", "body"])
def test_an_edge_that_drip_feeds_its_answer_is_given_up_at_the_deadline(
    two_tier: Path, whole, sample: np.ndarray, drip_head: bool
) -> None:
    head, body = _http(_answer(two_tier, {"logits": np.zeros((1, 10), np.float32)}))
    with fake_edge(dripping(head, body, drip_head)) as (url, ends):
        with CollaborativeClient(two_tier, url, timeout_s=1.0) as client:
            result = client.infer(sample)
    assert result.fallback is not None and "did not answer within 1 s" in result.fallback, result.fallback
    assert [r.tier for r in result.local] == ["mobile", "edge"]
    np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
    # The client hung up at its deadline, while the edge was still dripping (it would have for 5 s).
    assert ends == ["hung up"]


WRONG = {
    "shape": ({"logits": np.zeros((1, 5), np.float32)}, "tensor 'logits' has shape 1x5, the manifest says Nx10"),
    "dtype": ({"logits": np.zeros((1, 10), np.float64)}, "tensor 'logits' is float64, the manifest says float32"),
    "batch": ({"logits": np.zeros((2, 10), np.float32)}, "batch 2 for a request of 1"),
    "extra tensor": (
        {"logits": np.zeros((1, 10), np.float32), "input": np.zeros((1, 3, 32, 32), np.float32)},
        "unknown tensor(s) 'input'",
    ),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_an_answer_that_is_not_the_splits_outputs_is_a_fallback(
    two_tier: Path, whole, sample: np.ndarray, kind: str
) -> None:
    tensors, reason = WRONG[kind]
    with fake_edge(answering(*_http(_answer(two_tier, tensors)))) as (url, _ends):
        with CollaborativeClient(two_tier, url) as client:
            result = client.infer(sample)
    assert result.fallback is not None and "sent a wrong answer" in result.fallback, result.fallback
    assert reason in result.fallback
    np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)


def test_an_answer_larger_than_the_split_can_send_is_not_read(two_tier: Path, whole, sample: np.ndarray) -> None:
    body = _answer(two_tier, {"logits": np.zeros((1, 10), np.float32)})
    with fake_edge(answering(*_http(body, length=10**9))) as (url, _ends):
        with CollaborativeClient(two_tier, url) as client:
            result = client.infer(sample)
    assert result.fallback is not None and "1000000000+ bytes, more than an answer" in result.fallback
    np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)


def test_infer_falls_back_from_a_dripping_edge_and_says_so(cli, two_tier: Path, tmp_path: Path) -> None:
    frame = tmp_path / "x.npy"
    np.save(frame, np.random.default_rng(3).standard_normal((3, 32, 32)).astype(np.float32))
    code, stdout, stderr = cli("run", two_tier, "--input", frame, "--format", "json")
    assert code == 0, stderr
    expected = [c["class"] for c in json.loads(stdout)["top"]]
    head, body = _http(_answer(two_tier, {"logits": np.zeros((1, 10), np.float32)}))
    with fake_edge(dripping(head, body, drip_head=False)) as (url, _ends):
        code, stdout, stderr = cli(
            "infer", two_tier, "--edge", url, "--input", frame, "--timeout", "1", "--format", "json"
        )
    assert code == 0, stderr
    assert "fallback:" in stderr and "did not answer within 1 s (--timeout, for the whole request)" in stderr
    result = json.loads(stdout)
    assert [c["class"] for c in result["top"]] == expected and result["fallback"]
    import typer

    from dnnsplit.cli.main import app

    options = {p.name: p for p in typer.main.get_command(app).commands["infer"].params}  # type: ignore[attr-defined]
    assert "Deadline in seconds for the whole request" in (options["timeout"].help or "")
