"""Lossless coding of boundary messages on the wire: the shared vectors, exact round trips, and a server that
refuses unknown codings (415), bombs (413) and corrupt or mis-declared bodies (400), and stays up."""

from __future__ import annotations

import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import zstandard

from dnnsplit.codecs import LOSSLESS, CodingRefused, pack, unpack
from dnnsplit.errors import UsageError
from dnnsplit.runtime import route
from dnnsplit.runtime.client import CollaborativeClient
from dnnsplit.runtime.server import ServeSettings, serving
from dnnsplit.runtime.wire import CONTENT_TYPE, MAX_RATIO, WireError, coded_body, decoded_body, encode
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures import coding_vectors
from tests.fixtures.tiny_cli import SKIP


def test_the_vector_file_is_current_and_python_decodes_it_byte_for_byte() -> None:
    vectors = coding_vectors.load()
    assert {(v["name"], v["coding"]) for v in vectors} == {
        (name, coding) for name in coding_vectors.messages() for coding in ("zstd", "deflate")
    }
    fresh = coding_vectors.messages()
    for v in vectors:
        assert v["raw"] == fresh[v["name"]], v["name"]  # the messages have not drifted from the file
        assert unpack(v["coded"], v["coding"], len(v["raw"])) == v["raw"]
        if v["coding"] == "deflate":  # zlib's output at one level is fixed: the same bytes as the file
            assert pack(v["raw"], "deflate") == v["coded"]
        assert unpack(pack(v["raw"], v["coding"]), v["coding"], len(v["raw"])) == v["raw"]
    int8 = next(v for v in vectors if v["name"] == "int8-relu" and v["coding"] == "zstd")
    assert len(int8["coded"]) < 0.75 * len(int8["raw"])  # half the values are ReLU zeros


@pytest.mark.parametrize("coding", LOSSLESS)
def test_round_trips_are_exact_and_the_limit_holds(coding: str) -> None:
    rng = np.random.default_rng(1)
    for data in (b"", rng.bytes(10_000), bytes(200_000), rng.bytes(5) * 3000):
        coded = pack(data, coding)
        assert unpack(coded, coding, len(data)) == data
        if data:
            with pytest.raises(CodingRefused) as refused:
                unpack(coded, coding, len(data) - 1)
            assert refused.value.reason == "too_large"


def test_a_bomb_stops_at_the_limit_and_corrupt_streams_are_named() -> None:
    bomb = zlib.compress(bytes(50_000_000), 9)  # 50 MB of zeros in ~50 kB
    with pytest.raises(CodingRefused, match="more than the limit of 1000000"):
        unpack(bomb, "deflate", 1_000_000)
    # zstd without the content size in its frame (a streaming writer): the reader stops at the limit too
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(50_000_000))
    with pytest.raises(CodingRefused, match="more than the limit"):
        unpack(streamed, "zstd", 1_000_000)
    good = pack(b"x" * 1000, "zstd")
    for coding, bad in (("zstd", good[:-3]), ("zstd", b"not zstd"), ("deflate", b"not zlib"),
                        ("deflate", pack(b"x" * 1000, "deflate")[:-2])):
        with pytest.raises(CodingRefused) as refused:
            unpack(bad, coding, 10_000)
        assert refused.value.reason == "corrupt", (coding, bad)
    with pytest.raises(UsageError, match="unknown lossless coding 'br'"):
        coded_body(b"x", "br")


def test_decoded_body_reads_the_headers() -> None:
    raw = encode({"a": np.zeros((1, 64), np.uint8)})
    body, headers = coded_body(raw, "zstd")
    assert headers == {"content-encoding": "zstd", "x-decoded-length": str(len(raw))}
    assert decoded_body(body, headers, 10_000) == raw
    assert decoded_body(raw, {}, 10_000) == raw and coded_body(raw) == (raw, {})
    with pytest.raises(WireError) as ratio:  # within the size limit, far past MAX_RATIO: a bomb
        big = zstandard.ZstdCompressor().compress(bytes(50_000_000))  # zstd codes zeros ~10,000x
        assert MAX_RATIO * len(big) < 50_000_000
        decoded_body(big, {"content-encoding": "zstd"}, 10**9)
    assert ratio.value.status == 413 and ratio.value.code == "decoded_too_large"


def test_the_client_codes_its_upload_and_the_answer_is_the_same(two_tier: Path, sample: np.ndarray) -> None:
    batch = np.maximum(np.concatenate([sample, -sample]), 0)  # ReLU-like input: zeros code well
    with serving(two_tier, ServeSettings(tier="edge")) as edge:
        results = {}
        for coding in LOSSLESS:
            with CollaborativeClient(two_tier, edge.url, coding=coding) as client:
                results[coding] = client.infer(batch)
                assert results[coding].fallback is None
        for coding in ("zstd", "deflate"):
            np.testing.assert_array_equal(results[coding].outputs["logits"], results["identity"].outputs["logits"])
            assert results[coding].stages.up_bytes < results["identity"].stages.up_bytes
        assert httpx.get(f"{edge.url}/healthz").json()["served"] == 3


def test_the_edge_forwards_coded_to_the_cloud(three_tier: Path, whole, sample: np.ndarray) -> None:
    with (
        serving(three_tier, ServeSettings(tier="cloud")) as cloud,
        serving(three_tier, ServeSettings(tier="edge", next_url=cloud.url, coding="zstd")) as edge,
        CollaborativeClient(three_tier, edge.url, coding="deflate") as client,
    ):
        result = client.infer(sample)
        assert result.fallback is None and set(result.stages.remote_compute_ms) == {"edge", "cloud"}
        np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
        forwarded = httpx.get(f"{edge.url}/metrics").text
        sent = next(float(line.split()[-1]) for line in forwarded.splitlines()
                    if line.startswith("dnnsplit_forwarded_bytes_total"))
        manifest = Manifest.load(three_tier)
        assert 0 < sent < sum(t.bytes for t in route.crossing(manifest, 2))  # coded: under the raw tensors


def test_bad_codings_get_their_4xx_and_the_server_stays_up(two_tier: Path) -> None:
    manifest = Manifest.load(two_tier)
    raw = encode({SKIP: np.zeros((1, 8, 32, 32), np.float32)}, {"manifest": route.digest(manifest)})
    zstd, deflate = pack(raw, "zstd"), pack(raw, "deflate")
    huge = zlib.compress(bytes(20_000_000), 9)  # 20 MB of zeros in 20 kB: over the 1 MB limit
    cases = [
        (raw, {"content-encoding": "br"}, 415, "unknown_coding", "'br'"),
        (raw, {"content-encoding": "gzip"}, 415, "unknown_coding", "zstd, deflate"),
        (huge, {"content-encoding": "deflate"}, 413, "decoded_too_large", "limit"),
        (deflate, {"content-encoding": "deflate", "x-decoded-length": "10000000000"}, 413, "body_too_large",
         "declares 10000000000"),
        (deflate, {"content-encoding": "deflate", "x-decoded-length": "100"}, 413, "decoded_too_large",
         "limit of 100"),
        (deflate, {"content-encoding": "deflate", "x-decoded-length": str(len(raw) + 5)}, 400, "bad_length",
         "declares"),
        (deflate, {"content-encoding": "deflate", "x-decoded-length": "many"}, 400, "bad_length", "many"),
        (zstd[: len(zstd) // 2], {"content-encoding": "zstd"}, 400, "bad_coding", "zstd"),
        (b"garbage" * 10, {"content-encoding": "deflate"}, 400, "bad_coding", "deflate"),
        (raw, {"content-encoding": "zstd"}, 400, "bad_coding", "zstd"),  # declared coded, sent raw
    ]
    with serving(two_tier, ServeSettings(tier="edge", max_body_mb=1)) as edge, httpx.Client(
        base_url=edge.url
    ) as http:
        for body, headers, status, code, needle in cases:
            answer = http.post("/v1/infer", content=body, headers={"content-type": CONTENT_TYPE, **headers})
            assert answer.status_code == status, (code, answer.text)
            assert answer.json()["code"] == code and needle in answer.json()["error"], answer.json()
            if status == 415:
                assert answer.headers["accept-encoding"] == "identity, zstd, deflate"
            assert http.get("/healthz").status_code == 200
        for body, coding in ((zstd, "zstd"), (deflate, "deflate"), (raw, "identity")):
            answer = http.post("/v1/infer", content=body, headers={"content-encoding": coding})
            assert answer.status_code == 200, answer.text
        assert http.get("/healthz").json()["served"] == 3


def test_the_client_codes_as_the_splits_plan_says_unless_told(two_tier: Path, sample: np.ndarray) -> None:
    from dataclasses import replace

    manifest = Manifest.load(two_tier)
    planned = replace(manifest, origin={**manifest.origin, "coding": "zstd"})  # split by a plan that chose zstd
    with serving(two_tier, ServeSettings(tier="edge")) as edge:
        with CollaborativeClient(two_tier, edge.url, manifest=planned) as client:
            assert client.coding == "zstd"
            coded = client.infer(np.maximum(sample, 0))
        with CollaborativeClient(two_tier, edge.url, manifest=planned, coding="identity") as client:
            raw = client.infer(np.maximum(sample, 0))
    assert coded.fallback is None and coded.stages.up_bytes < raw.stages.up_bytes
    np.testing.assert_array_equal(coded.outputs["logits"], raw.outputs["logits"])
    with pytest.raises(UsageError, match="unknown lossless coding"):
        CollaborativeClient(two_tier, None, coding="lz4")
