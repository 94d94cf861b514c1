"""``serve --engine ray``: the tiny three-tier split as a Ray Serve application (edge ingress -> cloud by a
DeploymentHandle) on a real local Ray instance (``@serve.batch`` needs one: local testing mode has no
batching), driven by the unchanged Python and browser clients; the limits and token auth of the
single-process server; the config file for ``serve deploy``; one clear line where Ray is missing.

One Ray instance (2 CPUs, a small object store, no dashboard) and one application serve the whole module:
starting Ray and deploying take most of its time.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from dnnsplit.errors import UsageError
from dnnsplit.runtime import route
from dnnsplit.runtime.client import CollaborativeClient
from dnnsplit.runtime.ray_config import AppPlan, RaySettings, app_args, serve_config
from dnnsplit.runtime.server import ServeSettings
from dnnsplit.runtime.wire import CONTENT_TYPE, decode, encode
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures.browser import browser_missing, classify, open_page, png, reference
from tests.fixtures.tiny_cli import SKIP

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[int]:
    """A local Ray instance with Serve's proxy on a free port; shut down after the module."""
    pytest.importorskip("ray.serve")
    import ray
    from ray import serve

    from dnnsplit.runtime.ray_app import start_ray

    port = _free_port()
    start_ray(["edge", "cloud"], RaySettings(local_cpus=2), object_store_memory=80 * 1024 * 1024)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def app(ray_instance: int, three_tier: Path) -> Iterator[str]:
    """The three-tier split on Ray: token, browser client, batching (a 50 ms window), half a CPU a replica."""
    from dnnsplit.runtime.ray_app import ray_serving

    settings = ServeSettings(tier="edge", port=ray_instance, token=TOKEN, web=True, max_batch=MAX_BATCH)
    with ray_serving(three_tier, settings, RaySettings(batch_wait_ms=50, replica_cpus=0.5)) as url:
        yield url


def test_python_client_through_ray_equals_the_whole_model(app: str, three_tier: Path, whole, sample) -> None:
    batch = np.concatenate([sample, -sample])
    with CollaborativeClient(three_tier, app, token=TOKEN) as client:
        result = client.infer(batch)
    assert result.fallback is None
    np.testing.assert_allclose(result.outputs["logits"], whole(batch), rtol=1e-5, atol=1e-6)
    # Both tiers computed remotely: the edge's deployment, then the cloud's through its handle.
    assert set(result.stages.remote_compute_ms) == {"edge", "cloud"}
    assert result.stages.forward_ms is not None and result.stages.forward_ms > 0
    served = httpx.get(f"{app}/v1/manifest", headers=AUTH).json()["served"]
    assert served["tier"] == "edge" and served["next"] == "ray:cloud"
    # num_cpus 0.5 -> 1 intra-op thread, set explicitly (not onnxruntime's host-sized pool).
    assert served["onnxruntime_threads"] == {"intra_op": 1, "inter_op": 1}
    assert httpx.get(f"{app}/healthz").json()["tier"] == "edge"


def test_replicas_run_at_the_serving_process_priority(app: str) -> None:
    """Ray renices its workers to 15 by default; a replica at 15 loses a busy core 28 to 1 to any process at
    the default priority. The local instance runs them at this process's niceness."""
    titles = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                titles[int(proc.name)] = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
    replicas = [pid for pid, title in titles.items() if "ServeReplica:" in title]
    assert replicas, "no Serve replica process found"
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in replicas} == {mine}


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(
    app: str, three_tier: Path, whole
) -> None:
    manifest = Manifest.load(three_tier)
    mobile = SegmentChain(manifest, three_tier, None, route.local_prefix(manifest))
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((1 + k % 2, 3, 32, 32)).astype(np.float32) for k in range(MAX_BATCH)]

    def one(x: np.ndarray) -> np.ndarray:
        available = {manifest.input.name: x}
        mobile.run_segments(available, route.local_prefix(manifest))
        body = encode({SKIP: available[SKIP]}, {"manifest": route.digest(manifest)})
        answer = httpx.post(
            f"{app}/v1/infer", content=body, headers={**AUTH, "content-type": CONTENT_TYPE}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        tensors, meta = decode(answer.content)
        assert meta["complete"] == "true"
        return tensors["logits"]

    before = httpx.get(f"{app}/v1/manifest", headers=AUTH).json()["served"]["batching"]
    with ThreadPoolExecutor(len(inputs)) as pool:
        answers = list(pool.map(one, inputs))
    for x, logits in zip(inputs, answers, strict=True):
        assert logits.shape == (len(x), 10)
        np.testing.assert_allclose(logits, whole(x), rtol=1e-4, atol=1e-5)
    after = httpx.get(f"{app}/v1/manifest", headers=AUTH).json()["served"]["batching"]
    assert after["max_batch_requests"] == MAX_BATCH and after["wait_ms"] == 50
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == len(inputs)
    assert batches < requests  # at least two requests ran as one batch


def test_limits_and_token_auth_hold_on_ray(app: str, three_tier: Path) -> None:
    manifest = Manifest.load(three_tier)
    good = np.zeros((1, 8, 32, 32), np.float32)
    digest = {"manifest": route.digest(manifest)}
    with httpx.Client(base_url=app, timeout=60) as http:
        answer = http.post("/v1/infer", content=encode({SKIP: good}, digest))
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert http.get("/v1/manifest").status_code == 401 and http.get("/metrics").status_code == 401
        cases = [
            (encode({SKIP: good, "extra": good}), 422, "unknown_tensor"),
            (encode({SKIP: np.zeros((1, 8, 16, 16), np.float32)}), 422, "wrong_shape"),
            (encode({SKIP: np.zeros((MAX_BATCH + 1, 8, 32, 32), np.float32)}), 413, "batch_too_large"),
            (b"this is not safetensors", 400, "bad_payload"),
            (encode({SKIP: good}, {"manifest": "0123456789abcdef"}), 409, "other_split"),
            (encode({SKIP: good * np.nan}, digest), 422, "non_finite"),
        ]
        for body, status, code in cases:
            answer = http.post("/v1/infer", content=body, headers=AUTH)
            assert answer.status_code == status and answer.json()["code"] == code, answer.text
        max_body = http.get("/v1/manifest", headers=AUTH).json()["served"]["max_body_bytes"]
        huge = http.post("/v1/infer", content=b"\0" * (max_body + 1), headers=AUTH)
        assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
        metrics = http.get("/metrics", headers=AUTH).text
        assert 'dnnsplit_requests_total{path="/v1/infer",status="422",tier="edge"} 3.0' in metrics


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
def test_browser_client_through_ray(app: str, three_tier: Path, tmp_path: Path) -> None:
    from dnnsplit.browser.chromium import chromium_page

    image = png(tmp_path / "noise.png", np.random.default_rng(8).integers(0, 256, (40, 40, 3)))
    expected, _ = reference(three_tier, image)
    with chromium_page() as (page, _console):
        open_page(page, app, f"?token={TOKEN}")
        result = classify(page, image)
    assert result["path"] == "edge"
    np.testing.assert_allclose(result["logits"], expected["logits"][0], rtol=1e-5, atol=1e-5)
    assert result["stages"]["edge_ms"] > 0


def test_config_for_serve_deploy_places_tiers_and_keeps_the_token_out(
    cli, three_tier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "serve.yaml"
    code, _, err = cli(
        "serve", three_tier, "--engine", "ray", "--host", "0.0.0.0", "--token", TOKEN, "--port", "8000",
        "--replicas", "auto", "--max-replicas", "6", "--replica-cpus", "2", "--batch-wait-ms", "5",
        "--output", out,
    )  # fmt: skip
    assert code == 0, err
    text = out.read_text()
    assert text.startswith("# dnnsplit/ray-serve@1") and TOKEN not in text
    config = yaml.safe_load(text)
    pytest.importorskip("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)  # Ray's own schema for `serve deploy`
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    (application,) = config["applications"]
    assert application["import_path"] == "dnnsplit.runtime.ray_app:build"
    by_name = {d["name"]: d for d in application["deployments"]}
    assert set(by_name) == {"edge", "cloud"}
    for tier, deployment in by_name.items():
        assert deployment["ray_actor_options"] == {"num_cpus": 2.0, "resources": {f"dnnsplit-{tier}": 0.01}}
        assert deployment["autoscaling_config"] == {
            "min_replicas": 1, "max_replicas": 6, "target_ongoing_requests": 2.0,
        }  # fmt: skip
        assert "num_replicas" not in deployment
    # A node's replicas read the token from its environment; without it, one clear line.
    monkeypatch.delenv("DNNSPLIT_TOKEN", raising=False)
    with pytest.raises(UsageError, match="DNNSPLIT_TOKEN"):
        AppPlan.from_args(application["args"])
    monkeypatch.setenv("DNNSPLIT_TOKEN", TOKEN)
    plan = AppPlan.from_args(application["args"])
    assert plan.settings.token == TOKEN and plan.ray.replicas is None and plan.ray.threads == 2
    assert plan.directory == three_tier.resolve() and plan.settings.host == "0.0.0.0"


def test_config_round_trips_every_setting(three_tier: Path) -> None:
    from dnnsplit.partition.network import parse_link

    settings = ServeSettings(tier="edge", link=parse_link("4g"), max_batch=4, concurrency=2, port=9000)
    ray_settings = RaySettings(replicas=3, batch_wait_ms=2.5, replica_cpus=1.5)
    plan = AppPlan.from_args(yaml.safe_load(yaml.safe_dump(app_args(three_tier, settings, ray_settings))))
    assert plan.settings == settings and plan.ray == ray_settings and plan.ray.threads == 1
    deployments = serve_config(three_tier, settings, ray_settings)["applications"][0]["deployments"]
    assert [(d["name"], d["num_replicas"]) for d in deployments] == [("edge", 3), ("cloud", 3)]
    # With --next the cloud is another application (another cluster): only the edge is deployed here.
    remote = ServeSettings(tier="edge", next_url="http://cloud:8000")
    assert [d["name"] for d in serve_config(three_tier, remote, ray_settings)["applications"][0]["deployments"]] == ["edge"]
    with pytest.raises(UsageError, match="schema"):
        AppPlan.from_args({"schema": "dnnsplit/ray-serve@0"})


def test_missing_ray_is_one_line_and_exit_2(cli, three_tier: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    code, _, err = cli("serve", three_tier, "--engine", "ray")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "needs Ray Serve" in lines[0] and "pip install 'dnnsplit[ray]'" in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--replicas", "2"), "--replicas is for Ray Serve"),
        (("--batch-wait-ms", "5", "--output", "x.yaml"), "--batch-wait-ms, --output are for Ray Serve"),
        (("--engine", "ray", "--replicas", "many"), "neither a number nor 'auto'"),
        (("--engine", "ray", "--replicas", "0"), "at least 1"),
        (("--engine", "ray", "--threads", "2"), "--replica-cpus"),
        (("--engine", "ray", "--min-replicas", "5", "--max-replicas", "2"), "make no range"),
        (("--engine", "spark"), "not an engine"),
    ],
)
def test_engine_flag_errors_are_one_line(cli, three_tier: Path, args: tuple[str, ...], needle: str) -> None:
    code, _, err = cli("serve", three_tier, *args)
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_a_tier_that_is_not_served_here(three_tier: Path) -> None:
    from dnnsplit.runtime.ray_config import served_tiers

    manifest = Manifest.load(three_tier)
    assert served_tiers(manifest, ServeSettings(tier="cloud")) == ["cloud"]
    assert served_tiers(manifest, ServeSettings(tier="edge")) == ["edge", "cloud"]
    for tier, needle in (("mobile", "the client's"), ("gpu", "has no 'gpu'")):
        with pytest.raises(UsageError, match=needle):
            served_tiers(manifest, ServeSettings(tier=tier))


@pytest.mark.slow
def test_serve_engine_ray_runs_until_sigterm(three_tier: Path, sample, whole) -> None:
    """The command itself: its own local Ray instance, both tiers, a client's answer, SIGTERM -> exit 0."""
    import signal
    import subprocess
    import time

    pytest.importorskip("ray.serve")
    port = _free_port()
    cmd = [sys.executable, "-m", "dnnsplit.cli.main", "serve", str(three_tier), "--engine", "ray"]
    cmd += ["--port", str(port), "--ray-cpus", "2", "--replica-cpus", "0.5", "--batch-wait-ms", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        with CollaborativeClient(three_tier, url) as client:
            result = client.infer(sample)
        assert result.fallback is None and set(result.stages.remote_compute_ms) == {"edge", "cloud"}
        np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "on Ray Serve at" in err and "stopped" in err and "Traceback" not in err


@pytest.mark.slow
def test_ray_edge_forwards_over_http_to_a_cloud_elsewhere(
    ray_instance: int, three_tier: Path, whole, sample
) -> None:
    """--next URL: the cloud runs in another application (here the single-process server); the Ray edge
    reaches it over HTTP, as the uvicorn edge does, and only the edge is deployed."""
    from dnnsplit.runtime.ray_app import ray_serving
    from dnnsplit.runtime.server import serving

    with serving(three_tier, ServeSettings(tier="cloud")) as cloud:
        settings = ServeSettings(tier="edge", port=ray_instance, next_url=cloud.url)
        with (
            ray_serving(three_tier, settings, RaySettings(replica_cpus=0.5), "remote", "/remote") as url,
            CollaborativeClient(three_tier, url) as client,
        ):
            result = client.infer(sample)
            served = httpx.get(f"{url}/v1/manifest").json()["served"]
        assert cloud.service.served == 1
    assert result.fallback is None and set(result.stages.remote_compute_ms) == {"edge", "cloud"}
    np.testing.assert_allclose(result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
    assert served["next"] == cloud.url
