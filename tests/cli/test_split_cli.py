"""`dnnsplit split`, `cuts` and `run` through the CLI: the profile -> plan -> split flow and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.profiles import chain_profile
from tests.fixtures.tiny_cli import FAST_PROFILE, MAIN, SHAPE, SKIP, TINY, plan_tiny


@pytest.fixture()
def plan_file(cli, tmp_path: Path) -> Path:
    return plan_tiny(cli, tmp_path)


def test_profile_plan_split_run(cli, plan_file: Path, tmp_path: Path) -> None:
    plan = yaml.safe_load(plan_file.read_text())
    on_mobile = [la["name"] for la in plan["layers"] if la["tier"] == "mobile"]
    assert on_mobile and len(on_mobile) < len(plan["layers"])  # a real split
    out = tmp_path / "segments"
    code, stdout, stderr = cli("split", TINY, *SHAPE, "--plan", plan_file, "--output", out)
    assert code == 0, stderr
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["schema"] == "dnnsplit/manifest@1"
    assert manifest["model"]["sha256"] == plan["model"]["sha256"]
    assert manifest["plan"] == str(plan_file) and len(manifest["plan_sha256"]) == 64
    assert [s["tier"] for s in manifest["segments"]] == ["mobile", "edge"]
    assert manifest["segments"][0]["layers"] == len(on_mobile)
    # What segment 1 sends on is exactly what the plan says crosses mobile-edge.
    sent = [t["name"] for t in manifest["segments"][0]["outputs"] if 1 in t["to"]]
    assert sorted(sent) == sorted(t["name"] for t in plan["cut_tensors"]["mobile-edge"]["up"])
    assert manifest["validation"]["passed"] and manifest["validation"]["max_rel_diff"] <= 1e-5
    assert "01-mobile.onnx" in stdout and "validation on 3 inputs" in stderr
    # Run the chain on a .npy and on an image.
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32))
    code, stdout, stderr = cli("run", out, "--input", x, "--format", "json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert len(result["top"]) == 5 and [s["tier"] for s in result["segments"]] == ["mobile", "edge"]
    assert result["segments"][0]["sent_bytes"] == sum(
        t["bytes"] for t in manifest["segments"][0]["outputs"] if 1 in t["to"]
    )
    probabilities = [c["probability"] for c in result["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-9
    image = tmp_path / "frame.png"
    _write_png(image)
    code, stdout, _ = cli("run", out, "--input", image)
    assert code == 0 and "Top 5" in stdout and "Segments" in stdout


def _write_png(path: Path, size: int = 48) -> None:
    from PIL import Image

    pixels = np.random.default_rng(size).integers(0, 256, (size, size + 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_split_by_cuts_validates_on_images(cli, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        _write_png(frames / f"{i}.png", size=40 + 8 * i)
    out = tmp_path / "three"
    code, stdout, stderr = cli(
        "split",
        TINY,
        *SHAPE,
        "--cut",
        SKIP,
        "--cut",
        f"{SKIP},/relu/Relu_output_0",
        "--output",
        out,
        "--inputs",
        frames,
        "--validate",
        "5",
        "--no-simplify",
        "--format",
        "json",
    )
    assert code == 0, stderr
    manifest = json.loads(stdout)
    assert manifest["cuts"] == [[SKIP], [SKIP, "/relu/Relu_output_0"]]
    assert manifest["validation"]["inputs"] == 2 and manifest["validation"]["source"] == str(frames)
    assert [s["simplified"] for s in manifest["segments"]] == [False] * 3
    skip = next(t for t in manifest["segments"][0]["outputs"] if t["name"] == SKIP)
    assert skip["to"] == [1, 2]  # the skip goes to both later segments


def test_cuts_lists_valid_cuts(cli) -> None:
    code, stdout, _ = cli("cuts", TINY, *SHAPE, "--format", "json")
    assert code == 0
    cuts = json.loads(stdout)["cuts"]
    assert cuts[4] == {"position": 4, "after": "/conv_b/Conv", "bytes": 65536, "tensors": [SKIP, MAIN]}
    code, stdout, _ = cli("cuts", TINY, *SHAPE, "--single", "--format", "csv")
    rows = stdout.strip().splitlines()
    assert rows[0] == "position,after,bytes,tensors" and all("," not in r.split(",", 3)[3] for r in rows[1:])
    assert len(rows) - 1 == sum(len(c["tensors"]) == 1 for c in cuts)


def test_split_validation_mismatch_exits_1(cli, tmp_path: Path, monkeypatch) -> None:
    from dnnsplit.splitting import split as split_module
    from dnnsplit.splitting.manifest import Validation

    def mismatch(*_args, **_kwargs) -> Validation:
        return Validation(3, "random", 0.5, 0.1, 1e-4, False)

    monkeypatch.setattr(split_module, "validate_chain", mismatch)
    out = tmp_path / "bad"
    code, _, stderr = cli("split", TINY, *SHAPE, "--cut", "/Add_output_0", "--output", out)
    assert code == 1
    assert "differ from the whole model by 0.1 (relative), over the tolerance 0.0001" in stderr
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["validation"]["passed"] is False  # written, to look into


def test_split_bad_inputs(cli, tmp_path: Path, plan_file: Path) -> None:
    out = tmp_path / "out"
    assert_usage_error(cli("split", TINY, *SHAPE, "--cut", MAIN, "--output", out), f"also read {SKIP}")
    assert_usage_error(cli("split", TINY, *SHAPE, "--cut", "nope", "--output", out), "unknown tensor 'nope'")
    assert_usage_error(cli("split", TINY, *SHAPE, "--output", out), "give either --plan or --cut")
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--plan", plan_file, "--cut", SKIP, "--output", out),
        "either --plan or --cut",
    )
    other = tmp_path / "other-plan.yaml"
    code, _, _ = cli("plan", str(_chain(tmp_path)), "--output", other)
    assert code == 0
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--plan", other, "--output", out), "a plan for another model"
    )
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--plan", tmp_path / "missing.yaml", "--output", out), "not found"
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert_usage_error(cli("split", TINY, *SHAPE, "--cut", SKIP, "--output", busy), "not empty", "--force")
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--cut", SKIP, "--output", out, "--inputs", tmp_path / "none.npy"),
        "not found",
    )
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 16, 16), dtype=np.float32))
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--cut", SKIP, "--output", out, "--inputs", wrong), "holds shape 2x3x16x16"
    )
    assert not out.exists()  # nothing half-written by any of the failures
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert_usage_error(cli("run", tmp_path / "nowhere", "--input", wrong), "is not a directory")


def _chain(tmp_path: Path) -> Path:
    path = tmp_path / "chain.json"
    chain_profile().save(path)
    return path


def test_image_preprocessing_matches_torchvision(tmp_path: Path) -> None:
    """Resize the short side to 256/224 of the crop, centre-crop, normalise: torchvision's ImageNet preset."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from dnnsplit.images import load_image

    # A smooth picture (gradients and a slow wave): resampling filters agree on it, unlike on noise.
    yy, xx = np.mgrid[0:300, 0:400]
    pixels = np.stack([xx * 255 / 400, yy * 255 / 300, 127 + 120 * np.sin(xx / 25.0 + yy / 40.0)], axis=-1)
    path = tmp_path / "frame.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    got = load_image(path, (1, 3, 224, 224))
    preset = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    want = preset(Image.open(path).convert("RGB")).unsqueeze(0).numpy()
    assert got.shape == want.shape == (1, 3, 224, 224)
    # PIL's and torch's bilinear antialiasing differ by a fraction of a grey level: compare in pixel units.
    assert np.abs(got - want).max() * 0.229 * 255 < 2.0


def test_plan_and_split_with_int8_boundaries(cli, tmp_path: Path) -> None:
    plan = plan_tiny(cli, tmp_path, "--compress", "int8")
    doc = yaml.safe_load(plan.read_text())
    assert doc["compress"] == "int8"
    out = tmp_path / "segments"
    code, _, stderr = cli("split", TINY, *SHAPE, "--plan", plan, "--output", out, "--validate", "4")
    assert code == 0, stderr
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["compress"] == "int8"  # taken from the plan
    sent = [t for t in manifest["segments"][0]["outputs"] if 1 in t["to"]]
    planned = doc["cut_tensors"]["mobile-edge"]["up"]
    assert sorted(t["bytes"] for t in sent) == sorted(t["bytes"] for t in planned)
    assert all(t["dtype"] == "uint8" for t in sent)
    assert manifest["validation"]["criterion"] == "top1_agreement" and manifest["validation"]["passed"]
    assert "top-1 agreement 100%" in stderr
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--cut", SKIP, "--output", tmp_path / "x", "--compress", "zip"),
        "unknown --compress 'zip'",
    )


def test_split_a_plan_made_per_block(cli, tmp_path: Path) -> None:
    """A plan whose rows are resnet18's blocks: every ONNX node of a block goes where its block goes."""
    phone = tmp_path / "phone.yaml"
    phone.write_text("name: slow-phone\nlatency_scale: 1000\ncompute_power_w: 3\nidle_power_w: 0.5\n")
    plan = tmp_path / "plan.yaml"
    code, _, stderr = cli(
        "plan",
        "torchvision:resnet18",
        "--group",
        "block",
        *FAST_PROFILE,
        "--private-input",
        "--device",
        f"mobile={phone}",
        "--network",
        "up=1000,down=1000,rtt=1",
        "--output",
        plan,
    )
    assert code == 0, stderr
    doc = yaml.safe_load(plan.read_text())
    rows = {la["name"]: la["tier"] for la in doc["layers"]}
    assert "layer1.0" in rows and rows["conv1"] == "mobile" and "edge" in rows.values()
    out = tmp_path / "segments"
    code, stdout, stderr = cli(
        "split", "torchvision:resnet18", "--plan", plan, "--output", out, "--format", "json"
    )
    assert code == 0, stderr
    manifest = json.loads(stdout)
    from dnnsplit.profiling import prepare_model

    graph = prepare_model("torchvision:resnet18").graph
    per_tier = {
        tier: sum(rows[la.block or la.name] == tier for la in graph.layers) for tier in ("mobile", "edge")
    }
    assert [(s["tier"], s["layers"]) for s in manifest["segments"]] == list(per_tier.items())
    assert per_tier["edge"] > len([r for r in rows.values() if r == "edge"])  # blocks of several nodes
    assert manifest["validation"]["passed"]


def test_a_module_called_twice_is_two_blocks(cli) -> None:
    """The tiny model's top-level relu runs twice; one row for both calls would make the rows a cycle."""
    code, stdout, stderr = cli("plan", TINY, *SHAPE, *FAST_PROFILE, "--group", "block", "--format", "json")
    assert code == 0, stderr
    names = [la["name"] for la in json.loads(stdout)["layers"]]
    assert "relu" in names and "relu_1" in names
