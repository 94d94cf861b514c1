"""The elastic runtime end to end: the emulated link slows mid-stream and the cut follows it; an edge that
lacks a cut; a damaged elastic split; what /metrics shows."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import decide
from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime.elastic import ElasticClient, ElasticSettings
from dnnsplit.runtime.estimate import EstimatorSettings, Observation
from dnnsplit.runtime.server import ServeSettings, serving
from tests.fixtures.elastic import PHONE_SCALE, elastic_split

FAST = LinkSpec(100.0, 100.0, 2.0, name="fast")
SLOW = LinkSpec(0.1, 0.1, 2.0, name="slow")
FAST_PRIOR = 5.85  # the plan's uplink (4g), until an upload is long enough to measure the link


@pytest.fixture(scope="module")
def elastic(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return elastic_split(tiny_model, tmp_path_factory.mktemp("elastic") / "split")


def test_the_cut_follows_the_link_when_it_slows_mid_stream(elastic: Path, whole, sample: np.ndarray) -> None:
    # A probe whenever no request has measured the link: the plan's prior is 4g (60 ms round trip), this link
    # has 2 ms, and the client learns that only from the link (all-local sends nothing), whatever this
    # machine's speed. (4 kB probes: 0.33 s at the slow rate, so that the test does not wait long.)
    eager = ElasticSettings(estimator=EstimatorSettings(probe_idle_s=0.0, probe_bytes=(4096, 262_144)))
    with (
        serving(elastic, ServeSettings(tier="edge")) as edge,
        ElasticClient(elastic, edge.url, link=FAST, slowdown=PHONE_SCALE, settings=eager) as client,
    ):
        assert client.starts == (0, 1) and client.notes == []  # the edge starts at every offloading cut
        frames = []
        for i in range(15):
            if i == 8:
                client.client.link.retune(SLOW)
            frames.append(client.infer(sample))
        # The phone keeps the frames now and probes the link beside them, until it reads the slow rate.
        deadline = time.monotonic() + 10
        while abs(client.estimator.context().up_mbps / 0.1 - 1) > 0.25 and time.monotonic() < deadline:
            frames.append(client.infer(sample))
        metrics = httpx.get(f"{edge.url}/metrics").text
    want = whole(sample)
    for i, f in enumerate(frames):  # every frame answered, by the edge, with the whole model's logits ...
        # ... but the one whose upload the slowed link caught: abandoned at its deadline, finished here
        assert (f.result.fallback is None and f.note is None) or (i == 8 and f.result.abandoned), f.note
        np.testing.assert_allclose(f.result.outputs["logits"], want, rtol=1e-5, atol=1e-6)
    cuts = [f.cut for f in frames]
    seen = [(f.cut, f"{f.latency_ms:.0f} ms", f.decision.context) for f in frames]  # on failure
    # Fast link: the raw input goes to the edge (the phone is 300x slower than the host) ...
    assert set(cuts[2:8]) == {"all-edge"}, seen
    # ... and once 12 kB take 1 s, the first frame on the slow link (its probe, or its own upload) sees it
    # and the next keeps the input on the phone (cut-1 and all-local, both about the phone's time, may swap
    # on a loaded machine). A step needs two samples when the uplink was measured before.
    assert set(cuts[10:]) <= {"cut-1", "all-local"}, seen
    switched = next(i for i in range(8, 15) if cuts[i] != "all-edge")
    assert switched <= 9 + (frames[7].decision.context.up_mbps != FAST_PRIOR), seen
    assert client.estimator.context().up_mbps == pytest.approx(0.1, rel=0.25), seen
    assert frames[-1].to_dict()["estimate"]["up_mbps"] == frames[-1].decision.context.up_mbps
    for f in frames[9:]:  # cut-1 sends the 32-byte pooled features, all-local nothing
        assert f.result.stages.up_bytes < 1000
    # The probes of the slow link (0.33 s each) ran beside the frames kept here, not in their time.
    local = [f for f in frames[10:] if f.cut == "all-local"]
    assert local and max(f.latency_ms for f in local) < 300, seen
    assert any(f.probe_ms is not None and f.probe_ms > 300 for f in frames[10:]), seen
    served = sum(1 for f in frames if f.cut == "all-edge" and not f.result.abandoned)  # (abandoned: not served)
    assert f'dnnsplit_cut_requests_total{{cut="all-edge",start="0",tier="edge"}} {served}.0' in metrics
    if "cut-1" in cuts:
        assert f'dnnsplit_cut_requests_total{{cut="cut-1",start="1",tier="edge"}} {cuts.count("cut-1")}.0' in metrics
    assert 'dnnsplit_client_estimate{quantity="up_mbps",tier="edge"}' in metrics


def test_the_edge_counts_only_the_splits_own_cut_names(elastic: Path, sample: np.ndarray) -> None:
    from dnnsplit.runtime import route
    from dnnsplit.runtime.wire import encode
    from dnnsplit.splitting.manifest import Manifest

    manifest = Manifest.load(elastic)
    with serving(elastic, ServeSettings(tier="edge")) as edge:
        for name in ("made-up-1", "made-up-2"):
            meta = {"manifest": route.digest(manifest), "start": "0", "cut": name, "estimate": "not json"}
            assert httpx.post(f"{edge.url}/v1/infer", content=encode({"input": sample}, meta)).status_code == 200
        meta = {"manifest": route.digest(manifest), "start": "2"}  # all-local: nothing starts there
        refused = httpx.post(f"{edge.url}/v1/infer", content=encode({"input": sample}, meta))
        metrics = httpx.get(f"{edge.url}/metrics").text
    assert refused.status_code == 422 and refused.json()["code"] == "unserved_cut"
    assert refused.json()["starts"] == [0, 1]
    assert 'dnnsplit_cut_requests_total{cut="other",start="0",tier="edge"} 2.0' in metrics
    assert "made-up" not in metrics


def test_an_edge_lacking_a_cut_gets_the_best_one_it_has(
    elastic: Path, whole, sample: np.ndarray, monkeypatch
) -> None:
    # A phone measured 100x slower than its profile: any offloading cut beats running here, all-edge most.
    eager = ElasticSettings(estimator=EstimatorSettings(probe_idle_s=0.0))  # and a probe before every frame

    def slow_phone(client: ElasticClient) -> ElasticClient:
        for _ in range(2):  # (the client timed its phone once at start: a step takes two samples)
            client.estimator.observe(Observation(phone_profiled_ms=1.0, phone_ms=100.0))
        return client

    # An edge started on the last piece only: it cannot take the raw input (all-edge).
    with serving(elastic, ServeSettings(tier="edge", segments=(1,))) as edge:
        with slow_phone(ElasticClient(elastic, edge.url, link=FAST, settings=eager)) as client:
            assert client.starts == (1,) and "all-edge not available" in client.notes[0]
            frames = [client.infer(sample) for _ in range(3)]
        # (an offloading frame waits for its probe; one kept here runs it beside, reported on a later frame)
        assert all(f.probe_ms is not None for f in frames if f.cut != "all-local"), [f.to_dict() for f in frames]
        assert client.estimator.rtt.samples >= 3
        assert all(f.note is None for f in frames) and "all-edge" not in {f.cut for f in frames}
        # The first frame would go all-edge (the phone is slow); the edge lacks it, so cut-1 runs. Later
        # frames measure the phone's real speed; whatever they pick is the best the edge has.
        assert frames[0].cut == "cut-1"
        for f in frames:
            # (by name: the decision charged cut-1 what it really sent, the plan's 32 bytes plus the header)
            best = decide(client.priced(), f.decision.context, [1, 2]).candidate
            assert f.decision.candidate.name == best.name or f.decision.kept
        # A client that could not ask first is refused at the request, and runs the frame again at once.
        monkeypatch.setattr(ElasticClient, "_edge_starts", lambda self: None)
        with slow_phone(ElasticClient(elastic, edge.url, link=FAST)) as blind:
            first = blind.infer(sample)
            second = blind.infer(sample)
    assert first.cut == "cut-1" and "the edge lacks cut all-edge" in first.note and "ran cut-1" in first.note
    assert blind.starts == (1,) and second.cut == "cut-1" and second.note is None
    for f in (*frames, first, second):
        np.testing.assert_allclose(f.result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)


def test_no_edge_runs_all_local_and_a_dead_edge_falls_back(elastic: Path, sample: np.ndarray) -> None:
    with ElasticClient(elastic, None) as alone:
        assert alone.infer(sample).cut == "all-local"
    with ElasticClient(elastic, "http://127.0.0.1:9", link=FAST, slowdown=PHONE_SCALE) as client:
        assert client.starts is None  # cannot ask: every cut may be tried
        for _ in range(2):  # a very slow phone (it was timed once at start: a step takes two samples)
            client.estimator.observe(Observation(phone_profiled_ms=1.0, phone_ms=100.0))
        frame = client.infer(sample)
    assert frame.result.fallback is not None and "unreachable" in frame.note
    assert frame.result.outputs["logits"].shape == (1, 10)


def test_a_damaged_elastic_split_is_one_clear_error(elastic: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    shutil.copytree(elastic, missing)
    (missing / "02-mobile.onnx").unlink()
    with pytest.raises(UsageError, match="02-mobile.onnx is missing"):
        ElasticClient(missing, None)
    changed = tmp_path / "changed"
    shutil.copytree(elastic, changed)
    data = bytearray((changed / "01-mobile.onnx").read_bytes())
    data[-1] ^= 1
    (changed / "01-mobile.onnx").write_bytes(bytes(data))
    with pytest.raises(UsageError, match="01-mobile.onnx does not match its sha256"):
        ElasticClient(changed, None)
    with pytest.raises(UsageError, match="not an elastic one"):
        plain = tmp_path / "plain"
        shutil.copytree(elastic, plain)
        text = (plain / "manifest.yaml").read_text()
        (plain / "manifest.yaml").write_text(text[: text.index("elastic:")])
        ElasticClient(plain, None)


def test_infer_streams_frames_and_says_which_cut_ran(cli, elastic: Path, tmp_path: Path) -> None:
    import json

    frames = tmp_path / "frames"
    frames.mkdir()
    np.save(frames.with_suffix(".npy"), np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    with serving(elastic, ServeSettings(tier="edge")) as edge:
        code, stdout, stderr = cli(
            "infer", elastic, "--edge", edge.url, "--frames", frames.with_suffix(".npy"), "--stream", "5",
            "--link", "wifi", "--format", "json",
        )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert [f["frame"] for f in document["frames"]] == [0, 1, 2, 3, 4]
    for f in document["frames"]:
        assert f["cut"] in {"all-edge", "cut-1", "all-local"} and set(f["estimate"]) >= {"up_mbps", "rtt_ms"}
        assert f["latency_ms"] > 0 and len(f["top"]) == 5  # --top
    assert document["summary"]["frames"] == 5 and sum(document["summary"]["cuts"].values()) == 5
    code, stdout, stderr = cli("infer", elastic, "--edge", "http://127.0.0.1:9", "--frames", frames, "--input", frames)
    assert code == 2 and "give either --input or --frames" in stderr


def test_jpeg_frames_go_up_as_jpeg_and_the_decision_charges_their_bytes(
    cli, elastic: Path, edge_only: Path, tmp_path: Path
) -> None:
    import json

    from dnnsplit.images import load_frames
    from dnnsplit.partition.elastic import predict_ms
    from tests.runtime.test_image_input import _jpeg, _picture

    frames = tmp_path / "jpegs"
    frames.mkdir()
    for k in range(2):
        (frames / f"{k}.jpg").write_bytes(_jpeg(_picture(seed=k)))
    loaded = load_frames(frames, (1, 3, 32, 32))
    sizes = [len(j) for j in loaded.jpegs]
    with serving(elastic, ServeSettings(tier="edge")) as edge:
        # The link measured whenever no request has (the plan's prior is 4g: a 60 ms round trip keeps
        # everything here until a probe reads this link's 2 ms).
        eager = ElasticSettings(estimator=EstimatorSettings(probe_idle_s=0.0))
        with ElasticClient(elastic, edge.url, link=FAST, slowdown=PHONE_SCALE, settings=eager) as client:
            ran = [client.infer(loaded.tensors[k : k + 1], loaded.jpegs[k]) for k in (0, 1, 0, 1)]
            priced = client.priced()
    # all-edge is charged the mean of the JPEGs seen, not the 12 kB float32 input, and sends each one
    assert priced.candidate_at(0).up_bytes == round((sizes[0] + sizes[1]) / 2)
    assert priced.candidate_at(0).up_bytes < client.spec.candidate_at(0).up_bytes / 3
    frame = ran[-1]
    assert frame.decision.costs["all-edge"] == pytest.approx(
        predict_ms(priced, priced.candidate_at(0), frame.decision.context)
    )
    assert [f.cut for f in ran[1:]].count("all-edge") >= 2, [(f.cut, f.decision.costs) for f in ran]
    for k, f in enumerate(ran):
        if f.cut == "all-edge":
            assert f.result.stages.up_bytes == sizes[k % 2] and f.result.fallback is None
    # the CLI: --input-coding jpeg (the default) sends the file, tensor the float32 input; same answer
    runs = {}
    with serving(edge_only, ServeSettings(tier="edge")) as edge:
        for coding in ("jpeg", "tensor"):
            code, stdout, stderr = cli(
                "infer", edge_only, "--edge", edge.url, "--input", frames / "0.jpg", "--input-coding", coding,
                "--format", "json",
            )  # fmt: skip
            assert code == 0, stderr
            runs[coding] = json.loads(stdout)
        code, _, stderr = cli("infer", edge_only, "--edge", edge.url, "--input", frames / "0.jpg", "--input-coding", "png")
        assert code == 2 and "--input-coding must be jpeg or tensor" in stderr
    assert runs["jpeg"]["stages"]["up_bytes"] == sizes[0]
    assert runs["tensor"]["stages"]["up_bytes"] > 3 * 32 * 32 * 4
    assert runs["jpeg"]["top"] == runs["tensor"]["top"]  # a JPEG file: the same tensor on the edge


MEDIUM = LinkSpec(20.0, 20.0, 2.0, name="medium")


def _learn_the_fast_link(client: ElasticClient) -> None:
    """Two probes of the 20 Mbit/s link (sized for the plan's 5.85: 29 kB, 12 ms)."""
    for _ in range(2):
        client.probe()
    assert client.estimator.context().up_mbps > 12 and client.estimator.context().rtt_ms < 20


def test_a_request_stuck_on_a_link_that_dropped_is_abandoned_and_finished_here(
    elastic: Path, whole, sample: np.ndarray
) -> None:
    """All-edge on a 20 Mbit/s link; the link drops to 0.1 Mbit/s: the next upload (12 kB, 1 s) runs past its
    deadline (3x its prediction + 100 ms), is abandoned and finished on the phone; what the link took of
    it drops the estimate at once, so the frame after keeps the input on the phone. No frame is lost."""
    with (
        serving(elastic, ServeSettings(tier="edge")) as edge,
        ElasticClient(elastic, edge.url, link=MEDIUM, slowdown=PHONE_SCALE) as client,
    ):
        _learn_the_fast_link(client)
        frames = [client.infer(sample) for _ in range(3)]
        assert [f.cut for f in frames[1:]] == ["all-edge", "all-edge"]
        client.client.link.retune(LinkSpec(0.1, 0.1, 2.0, name="slower"))
        frames += [client.infer(sample) for _ in range(3)]
        metrics = httpx.get(f"{edge.url}/metrics").text
    stuck = frames[3]
    predicted_remote = stuck.decision.predicted_ms - client.spec.phone_ms(0)
    assert stuck.cut == "all-edge" and stuck.result.abandoned and "abandoned after" in stuck.note
    assert stuck.result.stages.total_ms < 3 * predicted_remote + 100 + 1000  # not the 1 s upload and more
    assert stuck.changes == ("uplink",), (stuck.to_dict(), client.estimator.up.value)
    assert stuck.to_dict()["abandoned"] is True
    assert frames[4].decision.context.up_mbps < 0.2 and frames[4].cut in {"cut-1", "all-local"}
    assert not any(f.result.abandoned for f in frames[4:])
    for f in frames:
        np.testing.assert_allclose(f.result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
    from dnnsplit.runtime.elastic import summarize

    summary = summarize([f.cut for f in frames], [f.result for f in frames], [f.note for f in frames])
    assert summary.abandoned == 1 and summary.fallbacks == 1 and summary.frames == 6
    assert 'dnnsplit_requests_total{path="/v1/infer",status="499",tier="edge"}' in metrics or stuck.result.abandoned


def test_a_long_upload_is_measured_while_it_goes(elastic: Path, sample: np.ndarray) -> None:
    """No deadline: an all-edge upload of 12 kB at 0.1 Mbit/s (about 1 s) is timed every 0.25 s, so the
    step is complete before the answer is in, from the upload's own bytes."""
    patient = ElasticSettings(deadline_factor=0)
    with (
        serving(elastic, ServeSettings(tier="edge")) as edge,
        ElasticClient(elastic, edge.url, link=MEDIUM, slowdown=PHONE_SCALE, settings=patient) as client,
    ):
        _learn_the_fast_link(client)
        for _ in range(3):
            client.infer(sample)
        client.client.link.retune(LinkSpec(0.1, 0.1, 2.0, name="slower"))
        windows: list[float] = []
        observe = client.estimator.observe_upload
        client.estimator.observe_upload = lambda n, ms, now=None: windows.append(n * 8 / ms / 1000) or observe(n, ms)
        frame = client.infer(sample)
    assert frame.cut == "all-edge" and frame.result.fallback is None and not frame.result.abandoned
    # (the emulated link paces in 1 kB chunks, 82 ms each here: a 0.25 s window holds 3 or 4 of them)
    assert len(windows) >= 2 and all(0.6 < w / 0.1 < 1.4 for w in windows), windows
    assert float(np.mean(windows)) == pytest.approx(0.1, rel=0.15), windows
    assert "uplink" in frame.changes and frame.result.stages.upload_ms > 800
    assert client.estimator.context().up_mbps == pytest.approx(0.1, rel=0.3)


def test_an_elastic_split_sends_its_boundaries_with_the_plans_coding(tiny_model, whole, tmp_path: Path) -> None:
    """A plan priced with zstd on the boundaries (``plan --boundaries``): the elastic split's manifest says
    so and its client sends every cut coded (here: a dark frame, 12 kB of zeros, in a few dozen bytes)."""
    import yaml

    from dnnsplit.partition.plan_file import load_plan
    from dnnsplit.splitting.elastic import split_elastic
    from dnnsplit.splitting.manifest import Manifest
    from dnnsplit.splitting.split import SplitSettings
    from tests.fixtures.elastic import tiny_plan

    plan = tiny_plan(tiny_model, tmp_path / "plan.yaml")
    document = yaml.safe_load(plan.read_text())
    document["boundary_codec"] = {"codec": "none", "lossless": "zstd", "tensors": [], "weighed": []}
    plan.write_text(yaml.safe_dump(document))
    directory = tmp_path / "coded"
    split_elastic(tiny_model, directory, SplitSettings(simplify=False, validate=1), plan, load_plan(plan))
    assert Manifest.load(directory).origin["coding"] == "zstd"
    dark = np.zeros((1, 3, 32, 32), dtype=np.float32)
    with (
        serving(directory, ServeSettings(tier="edge")) as edge,
        ElasticClient(directory, edge.url, link=MEDIUM, slowdown=PHONE_SCALE) as client,
    ):
        assert client.client.coding == "zstd"
        _learn_the_fast_link(client)
        frames = [client.infer(dark) for _ in range(3)]
    offloaded = [f for f in frames if f.cut != "all-local"]
    assert offloaded, [f.cut for f in frames]
    for f in offloaded:
        assert f.result.fallback is None and f.result.stages.up_bytes < 1000
        np.testing.assert_allclose(f.result.outputs["logits"], whole(dark), rtol=1e-5, atol=1e-6)
    assert client.priced().candidate_at(offloaded[-1].decision.candidate.boundary).up_bytes < 1000


def test_probes_read_a_shaped_link_past_its_burst(elastic: Path) -> None:
    """A 0.2 Mbit/s link whose shaper lets 3 kB through at once after an idle spell (tbf's burst): a 4 kB
    body reads it nearly 2x too fast; the second half of a 16 kB body (the smallest probe) reads its rate,
    and two probes put the estimate there."""
    from dnnsplit.runtime.estimate import EDGE_HEADER, parse_edge_header
    from dnnsplit.runtime.link import EmulatedLink, TokenBucket

    rate = 0.2e6 / 8
    shaped = LinkSpec(0.2, 0.2, 2.0, name="shaped")
    with serving(elastic, ServeSettings(tier="edge")) as edge:
        link = EmulatedLink(shaped)
        read = {}
        for size in (4096, 16_384):
            link.up = TokenBucket(rate, burst_bytes=3000)  # a fresh bucket: idle, its burst to spend
            answer = httpx.post(
                f"{edge.url}/v1/probe", content=link.upload(bytes(size)), headers={"content-length": str(size)}
            )
            read[size] = parse_edge_header(answer.headers[EDGE_HEADER])
        whole_body = read[4096]["read-bytes"] * 8 / (read[4096]["read-ms"] * 1000)
        assert whole_body > 1.5 * 0.2, read
        second_half = read[16_384]["tail-bytes"] * 8 / (read[16_384]["tail-ms"] * 1000)
        assert second_half == pytest.approx(0.2, rel=0.1), read
        # (a phone as slow as its profile: else the tiny model runs here in less than any round trip, and
        # only 1 kB round-trip probes are sent, the uplink's rate being no matter)
        with ElasticClient(elastic, edge.url, link=shaped, slowdown=PHONE_SCALE) as client:
            # The plan's 4g round trip (60 ms) makes the phone faster than any offload whatever the rate: the
            # first probe is 1 kB, for the round trip (2 ms here). Then the first rate probe is sized for the
            # plan's 4g (100 ms at 5.85 Mbit/s: 73 kB, 2.9 s here): past its deadline it is given up, and what
            # the link took of it drops the estimate; the next ones are 16 kB and time the link.
            took = []
            for _ in range(5):
                client.client.link.up = TokenBucket(rate, burst_bytes=3000)
                took.append(client.probe())
            assert took[0] is not None and took[0] < 100 and took[1] is None, took
            assert all(ms is not None and ms > 300 for ms in took[2:]), took
            assert client.estimator.context().up_mbps == pytest.approx(0.2, rel=0.15), took
