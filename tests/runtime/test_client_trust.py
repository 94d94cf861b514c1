"""The client does not trust the edge (issue 23, point 5): ``--timeout`` is a deadline for the whole request,
and an answer that is not the split's outputs (names, shapes, dtypes, batch, size) is a fallback.

The edges here are raw sockets on loopback that answer one request per connection the way a broken or
hostile edge would: a byte every 0.2 s (for at most 5 s, then they hang up), or a well-formed safetensors
answer with the wrong tensors in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dnnsplit.runtime.client import CollaborativeClient
from tests.fixtures.fake_edge import Respond, edge_answer, fake_edge, http_head
from tests.fixtures.fake_edge import dripping as drip

DRIP_S = 0.2
DRIP_FOR_S = 5.0


def _http(body: bytes, length: int | None = None) -> tuple[bytes, bytes]:
    return http_head(len(body) if length is None else length), body


def dripping(head: bytes, body: bytes, drip_head: bool) -> Respond:
    """Send ``head`` (at once, or dripped) and ``body`` a byte every DRIP_S, for at most DRIP_FOR_S."""
    return drip(head + body, 0 if drip_head else len(head), DRIP_S, DRIP_FOR_S)


def answering(head: bytes, body: bytes) -> Respond:
    return lambda conn: conn.sendall(head + body)


@pytest.mark.parametrize("drip_head", [True, False], ids=["status-line-and-headers", "body"])
def test_an_edge_that_drip_feeds_its_answer_is_given_up_at_the_deadline(
    two_tier: Path, whole, sample: np.ndarray, drip_head: bool
) -> None:
    head, body = _http(edge_answer(two_tier, {"logits": np.zeros((1, 10), np.float32)}))
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
    with fake_edge(answering(*_http(edge_answer(two_tier, tensors)))) as (url, _ends):
        with CollaborativeClient(two_tier, url) as client:
            result = client.infer(sample)
    assert result.fallback is not None and "sent a wrong answer" in result.fallback, result.fallback
    assert reason in result.fallback
    np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)


def test_an_answer_larger_than_the_split_can_send_is_not_read(two_tier: Path, whole, sample: np.ndarray) -> None:
    body = edge_answer(two_tier, {"logits": np.zeros((1, 10), np.float32)})
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
    head, body = _http(edge_answer(two_tier, {"logits": np.zeros((1, 10), np.float32)}))
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
