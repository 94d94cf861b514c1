"""The bottleneck end to end (issue 20): `plan --bottleneck` on the tiny CNN's profile chooses it when it pays
and refuses it over the accuracy bound; `split --plan` then cuts the bottleneck's model.onnx at the int8
code, validated against it and compared with the original; `serve` + the client run it with the int8 code
coded as the plan says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from dnnsplit.bottleneck.bottleneck_file import load_bottleneck
from dnnsplit.partition.bottleneck_option import DECODER_LAYER, ENCODER_LAYER
from tests.fixtures.trained import TINY

STEM = ("/conv1/", "/relu/", "/maxpool/", "/block1/")  # the layers up to the cut at block1


@pytest.fixture(scope="module")
def heavy_rest_profile(cli_session, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN's profile with its times set by hand: a light stem, a heavy rest (10 ms a layer), so
    that on 3g sending the small code beats sending the input and computing on the phone."""
    path = tmp_path_factory.mktemp("bottleneck-profile") / "profile.json"
    code, _, stderr = cli_session(
        "profile", tiny_checkpoint, "--arch", TINY, "--repeat", "3", "--warmup", "1", "--output", path
    )
    assert code == 0, stderr
    data = json.loads(path.read_text())
    for layer in data["layers"]:
        stem = layer["name"].startswith(STEM)
        layer["latency_ms"] = layer["latency_p90_ms"] = 0.01 if stem else 10.0
    data["total"]["latency_ms"] = sum(la["latency_ms"] for la in data["layers"])
    data.pop("calibration", None)
    path.write_text(json.dumps(data))
    return path


def _split(cli, checkpoint: Path, plan: Path, out: Path, *flags: str) -> tuple[int, str]:
    code, _, stderr = cli("split", checkpoint, "--arch", TINY, "--plan", plan, "--output", out, *flags)
    return code, stderr


def _plan(cli, profile: Path, bottleneck: Path, out: Path, *flags: str) -> dict:
    code, _, stderr = cli(
        "plan",
        profile,
        "--bottleneck",
        bottleneck,
        "--network",
        "3g",
        "--session-requests",
        "0",
        "--output",
        out,
        *flags,
    )
    assert code == 0, stderr
    return yaml.safe_load(out.read_text())


def test_the_costs_are_bottleneck_yaml_s_figures(tiny_bottleneck: Path) -> None:
    doc = load_bottleneck(tiny_bottleneck)
    costs = doc.costs(tiny_bottleneck)
    assert (costs.at, costs.cut_bytes, costs.int8_bytes) == ("block1", 32 * 8 * 8 * 4, 4 * 8 * 8)
    assert costs.coded_mean == doc.bytes.mean and costs.accuracy_drop == doc.accuracy.drop_points
    # the runtime's message: the safetensors header around the 256 code bytes
    from dnnsplit.runtime.wire import encode

    assert costs.header_bytes == len(encode({"code": np.zeros((1, 4, 8, 8), np.int8)})) - 256
    # the bottleneck's own layers were timed, and are a small part of encoder.onnx / decoder.onnx
    assert 0 < costs.encoder_ms <= doc.times_ms.encoder_onnx * 1.5 and 0 < costs.decoder_ms
    assert costs.encoder_weight_bytes == 4 * (4 * 32 + 4)


def test_plan_chooses_the_bottleneck_and_split_and_serve_run_it(
    cli_session, heavy_rest_profile: Path, tiny_bottleneck: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    plan = _plan(
        cli_session, heavy_rest_profile, tiny_bottleneck, tmp_path / "plan.yaml", "--max-accuracy-drop", "100"
    )
    block = plan["boundary_codec"]
    assert block["codec"] == "bottleneck" and block["bottleneck"]["chosen"]
    assert block["bottleneck"]["tensor"] == "/block1/block1.5/Relu_output_0"
    tier = {la["name"]: la["tier"] for la in plan["layers"]}
    assert tier[ENCODER_LAYER] == "mobile" and tier[DECODER_LAYER] == "edge"
    crossing = [b["tensor"] for b in block["boundaries"]]
    assert crossing == ["code"]

    out = tmp_path / "segments"
    code, stderr = _split(cli_session, tiny_checkpoint, tmp_path / "plan.yaml", out, "--validate", "4")
    assert code == 0, stderr
    assert "agreement with the original model" in stderr
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["codec"] == "bottleneck" and manifest["coding"] == block["lossless"]
    assert manifest["bottleneck"]["sha256"] == block["bottleneck"]["sha256"]
    assert manifest["model"]["sha256"] == load_bottleneck(tiny_bottleneck).sha256["model"]
    mobile, edge = manifest["segments"]
    assert (mobile["tier"], edge["tier"]) == ("mobile", "edge")
    mobile_model = onnx.load(str(out / mobile["file"]))
    assert [o.name for o in mobile_model.graph.output] == ["code"]
    assert mobile_model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    v = manifest["validation"]
    assert v["passed"] and v["max_rel_diff"] <= 1e-4 and v["criterion"] == "max_rel_diff"
    assert 0 <= v["reference_top1_agreement"] <= 1 and v["reference"].endswith(".onnx")

    from dnnsplit.onnxrt import ort_session
    from dnnsplit.runtime.client import CollaborativeClient
    from dnnsplit.runtime.server import ServeSettings, serving

    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    whole = ort_session(tiny_bottleneck / "model.onnx").run(None, {"input": x})[0]
    with serving(out, ServeSettings(tier="edge")) as server, CollaborativeClient(out, server.url) as client:
        assert client.coding == manifest["coding"]
        result = client.infer(x)
    assert result.fallback is None
    np.testing.assert_allclose(result.outputs["logits"], whole, rtol=1e-5, atol=1e-5)
    assert result.stages.up_bytes < 2 * (256 + 200)  # two int8 codes in one message, not float32


def test_over_the_accuracy_bound_the_plan_and_split_stay_plain(
    cli_session, heavy_rest_profile: Path, tiny_bottleneck: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    drop = load_bottleneck(tiny_bottleneck).accuracy.drop_points
    bound = max(drop - 0.5, 0.0)  # just under the bottleneck's own drop
    plan = _plan(
        cli_session,
        heavy_rest_profile,
        tiny_bottleneck,
        tmp_path / "plan.yaml",
        "--max-accuracy-drop",
        str(bound),
    )
    block = plan["boundary_codec"]
    assert block["codec"] == "none" and not block["bottleneck"]["chosen"]
    assert f"{drop:.2f} points" in block["bottleneck"]["refused"]
    assert ENCODER_LAYER not in {la["name"] for la in plan["layers"]}
    out = tmp_path / "segments"
    code, stderr = _split(cli_session, tiny_checkpoint, tmp_path / "plan.yaml", out)
    assert code == 0, stderr
    assert "codec" not in yaml.safe_load((out / "manifest.yaml").read_text())


def test_a_plan_with_a_swapped_bottleneck_is_refused(
    cli_session, heavy_rest_profile: Path, tiny_bottleneck: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    _plan(
        cli_session, heavy_rest_profile, tiny_bottleneck, tmp_path / "plan.yaml", "--max-accuracy-drop", "100"
    )
    doc = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    doc["boundary_codec"]["bottleneck"]["sha256"] = "0" * 64
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    code, stderr = _split(cli_session, tiny_checkpoint, tmp_path / "bad.yaml", tmp_path / "segments")
    assert code == 2 and "sha256 differs" in stderr and not (tmp_path / "segments").exists()


def test_the_code_goes_raw_when_zstd_grew_it_on_the_test_split(tiny_bottleneck: Path) -> None:
    from dataclasses import replace

    from dnnsplit.bottleneck.split_plan import wire_coding

    doc = load_bottleneck(tiny_bottleneck)
    grown = replace(doc, bytes=replace(doc.bytes, int8=64, mean=73.0))
    coding, note = wire_coding(grown, "zstd")
    assert coding == "identity" and "73 B coded against 64 B raw" in note
    assert wire_coding(replace(doc, bytes=replace(doc.bytes, int8=256, mean=180.0)), "zstd") == ("zstd", None)
    assert wire_coding(grown, "identity") == ("identity", None)
