"""The browser client end to end, in the system's headless Chromium on loopback: the page runs the mobile
segment in onnxruntime-web and offloads to a live edge, or answers on the phone when the branch is confident;
``profile --runtime browser`` measures a model inside Chromium and writes a profile that ``plan`` takes.

Skipped where Chromium, Playwright or the vendored onnxruntime-web (``make web``) is missing, except in CI
(CI=true), where a missing piece is a failure: ``.ci/run`` installs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.browser import classify, needs_browser, open_page, png, reference

pytestmark = needs_browser()


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[Any, list[str]]]:
    from dnnsplit.browser.chromium import chromium_page

    with chromium_page() as (page, console):
        yield page, console


@pytest.fixture(scope="module")
def artifacts() -> Path:
    directory = Path(os.environ.get("DNNSPLIT_TEST_ARTIFACTS", "test-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_page_offloads_to_the_edge_and_matches_run(
    two_tier: Path, tmp_path: Path, browser, artifacts
) -> None:
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    # An odd size and aspect: the page's resize and centre crop must be Pillow's to the bit.
    image = png(tmp_path / "noise.png", np.random.default_rng(3).integers(0, 256, (45, 61, 3)))
    expected, _ = reference(two_tier, image)
    logits = expected["logits"][0]
    with serving(two_tier, ServeSettings(tier="edge", web=True)) as server:
        open_page(page, server.url)
        assert page.get_attribute("#backend", "data-backend") == "wasm"  # headless, --disable-gpu
        result = classify(page, image)
        served = server.service.served
    assert result["path"] == "edge" and served == 1
    assert [c["class"] for c in result["top"]] == list(np.argsort(-logits)[:5])
    np.testing.assert_allclose(result["logits"], logits, rtol=1e-5, atol=1e-5)
    assert page.inner_text("#top1") == str(int(np.argmax(logits)))
    stages = result["stages"]
    # the 8x32x32 float32 boundary (32768 bytes), deflated by the page's CompressionStream; 10 logits back
    assert stages["up_coding"] == "deflate" and 1000 < stages["up_bytes"] < 32768 and stages["down_bytes"] > 40
    assert stages["mobile_ms"] > 0 and stages["edge_ms"] > 0 and stages["download_bytes"] > 0
    page.screenshot(path=str(artifacts / "web-offload.png"), full_page=True)


def test_a_jpeg_photo_gives_the_logits_of_run(two_tier: Path, tmp_path: Path, browser) -> None:
    """A larger JPEG (decoded by Chromium and by Pillow, both libjpeg-turbo) downscaled 8x."""
    from PIL import Image

    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    pixels = np.random.default_rng(4).integers(0, 256, (300, 400, 3)).astype(np.uint8)
    pixels[100:200, 100:300] = (200, 30, 30)
    image = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(image, quality=85)
    expected, _ = reference(two_tier, image)
    with serving(two_tier, ServeSettings(tier="edge", web=True)) as server:
        open_page(page, server.url)
        result = classify(page, image)
    np.testing.assert_allclose(result["logits"], expected["logits"][0], rtol=1e-5, atol=1e-5)


def test_three_tiers_the_edge_forwards_to_the_cloud(three_tier: Path, tmp_path: Path, browser) -> None:
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    image = png(tmp_path / "noise.png", np.random.default_rng(8).integers(0, 256, (40, 40, 3)))
    expected, _ = reference(three_tier, image)
    with (
        serving(three_tier, ServeSettings(tier="cloud")) as cloud,
        serving(three_tier, ServeSettings(tier="edge", web=True, next_url=cloud.url)) as edge,
    ):
        open_page(page, edge.url)
        result = classify(page, image)
        assert edge.service.served == 1 and cloud.service.served == 1
    np.testing.assert_allclose(result["logits"], expected["logits"][0], rtol=1e-5, atol=1e-5)
    # The edge's part includes its round trip to the cloud (Server-Timing: compute-edge + forward).
    assert result["stages"]["edge_ms"] > 0


def test_webgpu_falls_back_to_wasm_and_says_so(two_tier: Path, tmp_path: Path, browser) -> None:
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    image = png(tmp_path / "noise.png", np.random.default_rng(5).integers(0, 256, (32, 32, 3)))
    with serving(two_tier, ServeSettings(tier="edge", web=True, token="s3cret")) as server:
        # No GPU in headless Chromium (--disable-gpu): asking for WebGPU must end on wasm, saying why.
        page.goto(f"{server.url}/web/?backend=webgpu&token=s3cret")
        page.wait_for_selector("#status[data-state=ready], #status[data-state=error]")
        assert page.get_attribute("#backend", "data-backend") == "wasm"
        assert "webgpu failed" in page.inner_text("#backend")
        assert classify(page, image)["path"] == "edge"  # the token from ?token= reached the edge
        page.goto(f"{server.url}/web/?backend=wasm")  # no token: the edge refuses, the page says so
        page.wait_for_selector("#status[data-state=ready]")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#status[data-state=error]")
        assert "401" in page.inner_text("#status")


def test_camera_frame_goes_through_the_split(two_tier: Path, artifacts) -> None:
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    # Chromium's fake camera (a moving test pattern) stands in for the phone's, permission granted.
    fake = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    with (
        serving(two_tier, ServeSettings(tier="edge", web=True)) as server,
        chromium_page(extra_args=fake) as (
            page,
            _console,
        ),
    ):
        open_page(page, server.url)
        page.click("#camera")
        page.wait_for_selector("#snap:not([hidden])")
        page.click("#snap")
        page.wait_for_selector("#status[data-state=done], #status[data-state=error]")
        assert page.get_attribute("#status", "data-state") == "done", page.inner_text("#status")
        result = page.evaluate("window.dnnsplitResult")
        assert server.service.served == 1
        page.screenshot(path=str(artifacts / "web-camera.png"), full_page=True)
    assert result["path"] == "edge" and len(result["top"]) == 5 and len(result["logits"]) == 10
    probabilities = [c["probability"] for c in result["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-9
    assert result["top"][0]["class"] == int(np.argmax(result["logits"]))


def _digit_images(tmp_path: Path, directory: Path) -> tuple[Path, Path]:
    """A digit the branch answers on the phone, and one it sends to the edge (per the Python chain)."""
    from sklearn.datasets import load_digits

    digits = load_digits().images
    exits = offloads = None
    for i, digit in enumerate(digits[:200]):
        gray = np.kron(digit / 16.0 * 255.0, np.ones((4, 4)))  # 8x8 -> 32x32
        image = png(tmp_path / f"digit{i}.png", np.repeat(gray[:, :, None], 3, axis=2))
        _, exited = reference(directory, image)
        if exited and exits is None:
            exits = image
        if not exited and offloads is None:
            offloads = image
        if exits and offloads:
            return exits, offloads
    pytest.fail("no digit exits early or none goes to the edge: the branch fixture changed")


def test_confident_branch_answers_without_the_edge(
    tiny_branch: Path, tmp_path: Path, browser, artifacts
) -> None:
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    exits, offloads = _digit_images(tmp_path, tiny_branch)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    with serving(tiny_branch, ServeSettings(tier="edge", web=True)) as server:
        open_page(page, server.url)
        # The branch runs on the bit kernels (XNOR/popcount in WebAssembly SIMD), and the page says so.
        assert page.get_attribute("#branch-engine", "data-engine") == "kernels", page.inner_text("#branch-engine")
        early = classify(page, exits)
        assert early["branch"] == "kernels"
        assert server.service.served == 0
        assert not [u for u in requests if "/v1/infer" in u]
        assert page.get_attribute("#path", "data-path") == "early-exit"
        page.screenshot(path=str(artifacts / "web-early-exit.png"), full_page=True)
        remote = classify(page, offloads)
        assert server.service.served == 1
    expected, _ = reference(tiny_branch, exits)
    assert early["path"] == "early-exit"
    assert early["top"][0]["class"] == int(np.argmax(next(iter(expected.values()))[0]))
    expected, _ = reference(tiny_branch, offloads)
    assert remote["path"] == "edge"
    np.testing.assert_allclose(remote["logits"], next(iter(expected.values()))[0], rtol=1e-4, atol=1e-4)


def _run_bit_kernels(page: Any, program_url: str, x: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The branch program at ``program_url`` on the bit kernels in the page: its logits and the named tensors."""
    return page.evaluate(
        """async ([url, x, names]) => {
            const { BitBranch } = await import('./bitkernels.js');
            const branch = await BitBranch.create(await (await fetch(url)).arrayBuffer());
            const out = branch.run(new Float32Array(x));
            return { logits: Array.from(out.branch_logits), tensors: Object.fromEntries(names.map((n) => [n, Array.from(branch.tensor(n))])) };
        }""",
        [program_url, x.reshape(-1).tolist(), names],
    )


def test_bit_kernels_match_onnxruntime(tiny_branch: Path, browser) -> None:
    """The branch on the kernels in Chromium against onnxruntime's +/-1 model on the same stem output:
    every binarized activation bit-exact, the float tensors and the logits within 1e-5."""
    import onnx
    import onnxruntime as ort

    from dnnsplit.branching.kernels import branch_model, compile_branch
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    mobile = tiny_branch / "mobile.onnx"
    program = compile_branch(mobile)
    tensors = program.header["tensors"]
    bits = [n for n, t in tensors.items() if t["kind"] == "bits"]
    floats = [n for n, t in tensors.items() if t["kind"] == "f32" and not t.get("view")]
    reference = branch_model(mobile)
    known = {o.name for o in reference.graph.output}
    reference.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in bits + floats if n not in known)
    session = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    full = ort.InferenceSession(str(mobile), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    with serving(tiny_branch, ServeSettings(tier="edge", web=True)) as server:
        open_page(page, server.url)
        for trial in range(3):
            image = rng.standard_normal((1, 3, 16, 16)).astype(np.float32) * (1 + trial)
            features = full.run(["stem_output"], {"input": image})[0]
            expected = dict(zip(names, session.run(None, {"stem_output": features}), strict=True))
            got = _run_bit_kernels(page, "kernels/branch.dnbk", features, bits + floats)
            for name in bits:
                np.testing.assert_array_equal(got["tensors"][name], expected[name].reshape(-1), err_msg=name)
            for name in floats:
                ref = expected[name].reshape(-1)
                np.testing.assert_allclose(got["tensors"][name], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=name)
            logits = expected["branch_logits"].reshape(-1)
            np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())


@pytest.mark.parametrize(
    ("name", "kernels"),
    [("resnet18", {"binconv"}), ("mobilenet_v2", {"binconv", "dw"})],
)
def test_bit_kernels_match_onnxruntime_on_torchvision_widths(
    name: str, kernels: set[str], tmp_path: Path, browser
) -> None:
    """Untrained branches at 32x32 of resnet18 (64 to 512 channels: rows of 5 to 36 words, patches with
    every tap inside and border ones, strided and 1x1 convolutions, the residual adds) and mobilenet_v2
    (depthwise layers on the bit-plane kernel, 16 to 192 channels, partial 128-channel blocks); the
    binarized activations bit-exact and the logits within 1e-5 of onnxruntime."""
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision

    from dnnsplit.branching.builder import prepare_branch
    from dnnsplit.branching.export import export_branch
    from dnnsplit.branching.kernels import branch_model, compile_branch
    from dnnsplit.branching.points import resolve_point, split_at, trace
    from dnnsplit.profiling.browser_runtime import local_page_server

    torch.manual_seed(0)
    gm = trace(getattr(torchvision.models, name)(num_classes=10).eval())
    stem, rest = split_at(gm, resolve_point(gm, None))
    with torch.no_grad():
        branch, _ = prepare_branch(rest, stem(torch.randn(8, 3, 32, 32)), True)
    export_branch(stem, branch.eval(), rest, 0.5, (1, 3, 32, 32), tmp_path)
    program = compile_branch(tmp_path / "mobile.onnx")
    if name == "resnet18":
        assert {64, 128, 256, 512} <= {op["I"] for op in program.header["ops"] if op["op"] == "binconv"}
    bits = [n for n, t in program.header["tensors"].items() if t["kind"] == "bits"]
    reference = branch_model(tmp_path / "mobile.onnx")
    reference.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in bits)
    session = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    x = np.random.default_rng(3).standard_normal(program.header["input"]["shape"]).astype(np.float32)
    expected = dict(zip(names, session.run(None, {program.header["input"]["name"]: x}), strict=True))
    page, _console = browser
    with local_page_server(b"", {"/branch.dnbk": program.to_bytes()}) as url:
        page.goto(f"{url}/profile.html")
        got = _run_bit_kernels(page, "/branch.dnbk", x, bits)
        ran = page.evaluate(
            """async () => {
                const { BitBranch } = await import('./bitkernels.js');
                const branch = await BitBranch.create(await (await fetch('/branch.dnbk')).arrayBuffer());
                return branch.steps.filter((s) => s.op.op.startsWith('binconv')).map((s) => s.kernel ?? 'binconv');
            }"""
        )
    assert set(ran) == kernels
    for name in bits:
        np.testing.assert_array_equal(got["tensors"][name], expected[name].reshape(-1), err_msg=name)
    logits = expected["branch_logits"].reshape(-1)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())


def test_branch_falls_back_to_onnxruntime_web(tiny_branch: Path, tmp_path: Path, browser) -> None:
    """?kernels=off (what a browser without WebAssembly SIMD gets): the whole mobile segment in
    onnxruntime-web, the same answer, and the page says which ran."""
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    exits, _ = _digit_images(tmp_path, tiny_branch)
    with serving(tiny_branch, ServeSettings(tier="edge", web=True)) as server:
        open_page(page, server.url, "?kernels=off")
        assert page.get_attribute("#branch-engine", "data-engine") == "onnxruntime"
        assert "turned off" in page.inner_text("#branch-engine")
        slow = classify(page, exits)
        open_page(page, server.url)
        fast = classify(page, exits)
    assert slow["branch"] == "onnxruntime" and fast["branch"] == "kernels"
    assert slow["path"] == fast["path"] == "early-exit"
    np.testing.assert_allclose(fast["logits"], slow["logits"], rtol=1e-5, atol=1e-5)


def test_web_serves_only_the_mobile_segments(two_tier: Path) -> None:
    import httpx

    from dnnsplit.runtime.server import ServeSettings, serving

    with serving(two_tier, ServeSettings(tier="edge", web=True)) as server:
        config = httpx.get(f"{server.url}/web/config.json").json()
        assert [s["file"] for s in config["mobile"]] == ["01-mobile.onnx"]
        assert config["boundary"][0]["name"] == "/stem/stem.2/Relu_output_0"
        mobile = httpx.get(f"{server.url}/web/segments/01-mobile.onnx", headers={"accept-encoding": "gzip"})
        assert mobile.status_code == 200 and mobile.content == (two_tier / "01-mobile.onnx").read_bytes()
        assert mobile.headers["content-encoding"] == "gzip"
        assert httpx.get(f"{server.url}/web/segments/02-edge.onnx").status_code == 404
        page = httpx.get(f"{server.url}/web/")
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        runtime = httpx.get(f"{server.url}/web/vendor/ort-wasm-simd-threaded.wasm")
        assert runtime.headers["content-type"] == "application/wasm"


def test_serve_flag_errors_are_one_line(cli, two_tier: Path, tmp_path: Path) -> None:
    code, _out, err = cli("serve", two_tier, "--profiles-dir", tmp_path)
    assert code == 2 and "add --web" in err and "Traceback" not in err
    code, _out, err = cli("serve", two_tier, "--web", "--profile-model", "torchvision:resnet18")
    assert code == 2 and "--profiles-dir" in err


def test_browser_profile_is_a_valid_profile_that_plan_takes(cli, tiny_onnx: Path, tmp_path: Path) -> None:
    browser_file, host_file = tmp_path / "browser.json", tmp_path / "host.json"
    code, _out, err = cli(
        "profile", tiny_onnx, "--runtime", "browser", "--threads", "1", "--repeat", "20",
        "--output", browser_file,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(browser_file.read_text())
    assert doc["schema"] == "dnnsplit/profile@1"
    device = doc["device"]
    assert device["runtime"] == "browser" and device["backend"] == "wasm"
    assert device["browser"].startswith(("Chromium", "Google Chrome", "HeadlessChrome"))
    assert device["versions"]["onnxruntime-web"] and device["threads"] == 1
    layers = doc["layers"]
    assert [la["op"] for la in layers][:2] == ["Conv", "Relu"]
    assert all(la["latency_ms"] >= 0 for la in layers) and layers[0]["latency_ms"] > 0
    total = sum(la["latency_ms"] for la in layers)
    # One thread: with two on this 2-core machine, a kernel waits for its slower thread whenever the other
    # core is busy, and per-layer medians stop adding up to the whole model's median.
    assert 0.85 <= total / doc["total"]["latency_ms"] <= 1.15, (total, doc["total"])
    assert cli("profile", tiny_onnx, "--threads", "2", "--repeat", "5", "--output", host_file)[0] == 0
    code, out, err = cli("plan", host_file, "--profile", f"mobile={browser_file}", "--format", "json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["devices"]["mobile"]["compute"] == f"measured: {browser_file}"


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_profile_page_posts_a_phone_profile_back(
    two_tier: Path, tiny_model, tmp_path: Path, browser, token: str | None
) -> None:
    from dnnsplit.profiling.profile import Profile
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    settings = ServeSettings(tier="edge", web=True, profiles_dir=str(tmp_path / "phones"), token=token)
    with serving(two_tier, settings) as server:
        # With a token the page sends it (from ?token=) for the model download as well as the post.
        page.goto(f"{server.url}/web/profile.html" + (f"?token={token}" if token else ""))
        page.fill("#repeat", "5")
        page.click("#start")
        page.wait_for_selector("#status[data-state=done], #status[data-state=error]", timeout=120_000)
        assert page.get_attribute("#status", "data-state") == "done", page.inner_text("#status")
        saved = page.evaluate("window.dnnsplitSaved")
    files = list((tmp_path / "phones").iterdir())
    assert [str(f) for f in files] == [saved["file"]] and files[0].name.startswith("tiny_cnn-wasm-")
    profile = Profile.load(files[0])
    assert profile.device["runtime"] == "browser" and profile.device["backend"] == "wasm"
    assert [la.name for la in profile.layers] == [la.name for la in tiny_model.graph.layers]
    assert profile.settings["repeat"] == 5 and saved["layers"] == len(profile.layers)
    assert profile.layer_sum_ms > 0 and saved["latency_ms"] == pytest.approx(profile.latency_ms, abs=1e-5)


def test_profiles_post_refuses_garbage(two_tier: Path, tmp_path: Path) -> None:
    import httpx

    from dnnsplit.runtime.server import ServeSettings, serving

    with serving(two_tier, ServeSettings(tier="edge", web=True)) as server:
        answer = httpx.post(f"{server.url}/web/profiles", json={"events": []})
        assert answer.status_code == 404 and "--profiles-dir" in answer.json()["error"]
    settings = ServeSettings(tier="edge", web=True, profiles_dir=str(tmp_path / "p"))
    with serving(two_tier, settings) as server:
        answer = httpx.post(f"{server.url}/web/profiles", json={"events": []})
        assert answer.status_code == 422 and "whole_ms" in answer.json()["error"]
        assert httpx.post(f"{server.url}/web/profiles", content=b"{").status_code == 400
        assert list((tmp_path / "p").iterdir()) == []
    settings = ServeSettings(tier="edge", web=True, profiles_dir=str(tmp_path / "p"), token="s3cret")
    with serving(two_tier, settings) as server:
        assert httpx.post(f"{server.url}/web/profiles", json={"events": []}).status_code == 401
        authorized = {"authorization": "Bearer s3cret"}
        assert httpx.post(f"{server.url}/web/profiles", json={}, headers=authorized).status_code == 422
