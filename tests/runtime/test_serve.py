"""Tier servers on free loopback ports: chains equal the whole model, bad requests get the right 4xx, auth,
forwarding failures, and the client's fallback."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime import route
from dnnsplit.runtime.client import CollaborativeClient, RemoteRefused
from dnnsplit.runtime.server import ServeSettings, serving
from dnnsplit.runtime.wire import CONTENT_TYPE, decode, encode
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures.tiny_cli import RELU, SKIP


def test_two_tier_chain_equals_the_whole_model(two_tier: Path, whole, sample: np.ndarray) -> None:
    batch = np.concatenate([sample, sample * 0.5, -sample])
    with (
        serving(two_tier, ServeSettings(tier="edge")) as edge,
        CollaborativeClient(two_tier, edge.url) as client,
    ):
        result = client.infer(batch)
        assert result.fallback is None
        np.testing.assert_allclose(result.outputs["logits"], whole(batch), rtol=1e-5, atol=1e-6)
        local, _ = SegmentChain.load(two_tier).run(batch)
        np.testing.assert_array_equal(result.outputs["logits"], local["logits"])  # same sessions, same bits
        s = result.stages
        assert [r.tier for r in result.local] == ["mobile"]
        assert s.up_bytes > 3 * 8 * 32 * 32 * 4 and s.down_bytes > 3 * 10 * 4  # the skip tensor, the logits
        assert set(s.remote_compute_ms) == {"edge"} and s.remote_compute_ms["edge"] > 0
        assert s.total_ms >= s.mobile_ms + s.upload_ms + s.remote_ms + s.return_ms - 0.01
        health = httpx.get(f"{edge.url}/healthz").json()
        assert health == {"status": "ok", "tier": "edge", "served": 1}
        served = httpx.get(f"{edge.url}/v1/manifest").json()["served"]
        assert served["accepts"] == [
            {"name": SKIP, "shape": [1, 8, 32, 32], "dtype": "float32", "bytes": 32768}
        ]
        assert served["max_body_bytes"] == 32768 * 8 + 64 * 1024


def test_three_tier_chain_relays_the_skip_tensor_to_the_cloud(
    three_tier: Path, whole, sample: np.ndarray
) -> None:
    manifest = Manifest.load(three_tier)
    # The cloud reads the skip tensor made on mobile: the edge must pass it on.
    assert [t.name for t in route.crossing(manifest, 2)] == [RELU, SKIP]
    with (
        serving(three_tier, ServeSettings(tier="cloud")) as cloud,
        serving(three_tier, ServeSettings(tier="edge", next_url=cloud.url)) as edge,
        CollaborativeClient(three_tier, edge.url) as client,
    ):
        result = client.infer(sample)
        assert result.fallback is None and set(result.stages.remote_compute_ms) == {"edge", "cloud"}
        assert result.stages.forward_ms is not None and result.stages.forward_ms > 0
        np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
        metrics = httpx.get(f"{cloud.url}/metrics").text
        assert 'dnnsplit_requests_total{path="/v1/infer",status="200",tier="cloud"} 1.0' in metrics
        # An edge without --next hands the cloud's boundary back; the client says what is missing.
        with serving(three_tier, ServeSettings(tier="edge")) as lone:
            body = encode({SKIP: np.zeros((1, 8, 32, 32), np.float32)}, {"manifest": route.digest(manifest)})
            answer = httpx.post(f"{lone.url}/v1/infer", content=body)
            tensors, meta = decode(answer.content)
            assert meta["complete"] == "false" and set(tensors) == {RELU, SKIP}
            with (
                CollaborativeClient(three_tier, lone.url) as partial,
                pytest.raises(RemoteRefused, match="--next"),
            ):
                partial.infer(sample)


def test_every_malformed_request_gets_its_4xx_and_the_server_stays_up(two_tier: Path) -> None:
    manifest = Manifest.load(two_tier)
    good = np.zeros((1, 8, 32, 32), np.float32)
    digest = {"manifest": route.digest(manifest)}
    cases = [
        (encode({SKIP: good, "extra": good}), 422, "unknown_tensor", "'extra'"),
        (encode({"other": good}), 422, "unknown_tensor", "'other'"),
        (encode({}), 422, "missing_tensor", SKIP),
        (encode({SKIP: np.zeros((1, 8, 16, 16), np.float32)}), 422, "wrong_shape", "1x8x16x16"),
        (encode({SKIP: good.astype(np.float64)}), 422, "wrong_dtype", "float64"),
        (encode({SKIP: np.zeros((3, 8, 32, 32), np.float32)}), 413, "batch_too_large", "batch 3"),
        (encode({SKIP: good}) + b"\x00" * 4, 400, "bad_payload", "malformed"),
        (b"this is not safetensors", 400, "bad_payload", "malformed"),
        (encode({SKIP: np.zeros((10, 8, 32, 32), np.float32)}), 413, "body_too_large", "--max-body-mb"),
        (encode({SKIP: good}, {"manifest": "0123456789abcdef"}), 409, "other_split", "0123456789abcdef"),
    ]
    settings = ServeSettings(tier="edge", max_batch=2, max_body_mb=0.3)
    with serving(two_tier, settings) as edge, httpx.Client(base_url=edge.url) as http:
        for body, status, code, needle in cases:
            answer = http.post("/v1/infer", content=body, headers={"content-type": CONTENT_TYPE})
            assert answer.status_code == status, (code, answer.text)
            error = answer.json()
            assert error["code"] == code and needle in error["error"], error
            assert http.get("/healthz").status_code == 200
        assert http.post("/v1/infer", content=encode({SKIP: good}, digest)).status_code == 200
        assert http.get("/v1/nothing").status_code == 404 and "error" in http.get("/v1/nothing").json()
        assert http.get("/v1/infer").status_code == 405
        metrics = http.get("/metrics").text
        for status, count in (("422", 5), ("413", 2), ("400", 2), ("409", 1), ("200", 1)):
            assert f'path="/v1/infer",status="{status}",tier="edge"}} {count}.0' in metrics, status
        assert (
            "dnnsplit_request_duration_seconds_count" in metrics
            and "dnnsplit_received_bytes_total" in metrics
        )


def test_bearer_token(two_tier: Path, sample: np.ndarray) -> None:
    with serving(two_tier, ServeSettings(tier="edge", token="s3cret")) as edge:
        body = encode({SKIP: np.zeros((1, 8, 32, 32), np.float32)})
        for headers, status in (
            ({}, 401),
            ({"authorization": "Bearer nope"}, 401),
            ({"authorization": "Basic s3cret"}, 401),
        ):
            answer = httpx.post(f"{edge.url}/v1/infer", content=body, headers=headers)
            assert answer.status_code == status and answer.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in answer.json()["error"]
        auth = {"authorization": "Bearer s3cret"}
        assert httpx.post(f"{edge.url}/v1/infer", content=body, headers=auth).status_code == 200
        assert httpx.get(f"{edge.url}/v1/manifest").status_code == 401
        assert httpx.get(f"{edge.url}/metrics").status_code == 401
        assert httpx.get(f"{edge.url}/metrics", headers=auth).status_code == 200
        assert httpx.get(f"{edge.url}/healthz").status_code == 200  # probes need no token
        with CollaborativeClient(two_tier, edge.url, token="s3cret") as client:
            assert client.infer(sample).fallback is None
        with (
            CollaborativeClient(two_tier, edge.url, token="wrong") as client,
            pytest.raises(RemoteRefused, match="token"),
        ):
            client.infer(sample)
    with pytest.raises(UsageError, match="without authentication"):
        ServeSettings(host="0.0.0.0").check()
    ServeSettings(host="0.0.0.0", token="t").check()
    ServeSettings(host="::1").check()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_falls_back_when_the_edge_is_down_slow_or_failing(
    three_tier: Path, whole, sample: np.ndarray
) -> None:
    expected = whole(sample)
    with CollaborativeClient(three_tier, f"http://127.0.0.1:{_closed_port()}") as client:
        result = client.infer(sample)
    assert "unreachable" in result.fallback and "ran the remaining segments here" in result.fallback
    assert [r.tier for r in result.local] == ["mobile", "edge", "cloud"]
    np.testing.assert_allclose(result.outputs["logits"], expected, rtol=1e-5, atol=1e-6)
    # The edge is up but its next tier is not: 502 from the edge, and the client still answers.
    with serving(
        three_tier, ServeSettings(tier="edge", next_url=f"http://127.0.0.1:{_closed_port()}")
    ) as edge:
        with CollaborativeClient(three_tier, edge.url) as client:
            result = client.infer(sample)
        assert "502" in result.fallback and "unreachable" in result.fallback
        np.testing.assert_allclose(result.outputs["logits"], expected, rtol=1e-5, atol=1e-6)
    # A slow cloud behind the edge, past the client's timeout: the edge-cloud link is emulated with a 2 s
    # round trip. (Stretching the cloud's compute instead depended on how long its tiny segment took:
    # sometimes under 0.3 s even 5000x over, and the test then failed about 1 run in 4.)
    backhaul = LinkSpec(up_mbps=1000, down_mbps=1000, rtt_ms=2000, radio=None)
    with serving(three_tier, ServeSettings(tier="cloud")) as cloud:
        with serving(three_tier, ServeSettings(tier="edge", next_url=cloud.url, link=backhaul)) as edge:
            with CollaborativeClient(three_tier, edge.url, timeout_s=0.3) as client:
                result = client.infer(sample)
            assert "did not answer within 0.3 s" in result.fallback
            np.testing.assert_allclose(result.outputs["logits"], expected, rtol=1e-5, atol=1e-6)


def test_an_all_edge_split_sends_the_raw_input(edge_only: Path, whole, sample: np.ndarray) -> None:
    with (
        serving(edge_only, ServeSettings(tier="edge")) as edge,
        CollaborativeClient(edge_only, edge.url) as client,
    ):
        result = client.infer(sample)
        assert result.local == [] and result.fallback is None
        assert result.stages.up_bytes > sample.nbytes
        np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
