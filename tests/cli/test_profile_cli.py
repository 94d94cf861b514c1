"""`dnnsplit profile`, `devices` and `models` through the CLI: outputs, formats and every bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.tiny_cli import TINY
from tests.fixtures.tiny_models import TinyResidual


def test_profile_writes_json_yaml_and_plot(cli, tmp_path: Path) -> None:
    out_json, out_yaml, plot = tmp_path / "p.json", tmp_path / "p.yaml", tmp_path / "p.png"
    code, stdout, _ = cli(
        "profile",
        TINY,
        "--input-shape",
        "1x3x32x32",
        "--repeat",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--output",
        out_json,
        "--plot",
        plot,
    )
    assert code == 0
    assert "whole model (measured)" in stdout and "per-layer sum / whole model" in stdout
    data = json.loads(out_json.read_text())
    assert data["schema"] == "dnnsplit/profile@1"
    assert data["input"] == {"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "bytes": 12288}
    assert data["total"]["params"] == sum(p.numel() for p in TinyResidual().parameters())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, _ = cli(
        "profile",
        TINY,
        "--input-shape",
        "1x3x32x32",
        "--repeat",
        "2",
        "--group",
        "block",
        "--output",
        out_yaml,
    )
    assert code == 0
    blocks = yaml.safe_load(out_yaml.read_text())
    assert blocks["group"] == "block" and [la["name"] for la in blocks["layers"]][0] == "stem.0"


@pytest.mark.parametrize("fmt", ["json", "yaml", "csv"])
def test_profile_formats_on_stdout(cli, fmt: str) -> None:
    code, stdout, _ = cli("profile", TINY, "--input-shape", "1x3x32x32", "--repeat", "2", "--format", fmt)
    assert code == 0
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(stdout)))
        assert rows[0]["name"] == "/stem/stem.0/Conv" and float(rows[0]["latency_ms"]) > 0
    else:
        data = json.loads(stdout) if fmt == "json" else yaml.safe_load(stdout)
        assert data["schema"] == "dnnsplit/profile@1" and len(data["layers"]) == data["total"]["layers"]


def test_profile_torch_runtime(cli) -> None:
    code, stdout, _ = cli(
        "profile",
        TINY,
        "--input-shape",
        "1x3x32x32",
        "--repeat",
        "3",
        "--runtime",
        "torch",
        "--format",
        "json",
    )
    assert code == 0
    data = json.loads(stdout)
    assert data["device"]["runtime"] == "torch" and data["device"]["versions"]["torch"]


def test_unknown_torchvision_name(cli) -> None:
    assert_usage_error(
        cli("profile", "torchvision:mobilenet_v4"), "mobilenet_v4", "did you mean", "mobilenet_v2"
    )


def test_missing_file(cli, tmp_path: Path) -> None:
    assert_usage_error(cli("profile", tmp_path / "nope.onnx"), "file not found")
    assert_usage_error(cli("profile", tmp_path / "nope.pt"), "file not found")


def test_file_that_is_neither_onnx_nor_torch(cli, tmp_path: Path) -> None:
    junk = tmp_path / "model.bin"
    junk.write_text("hello")
    assert_usage_error(cli("profile", junk), "neither an ONNX model nor a PyTorch checkpoint")
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("hello")
    assert_usage_error(cli("profile", fake_onnx), "not an ONNX model")


def test_onnx_that_fails_the_checker(cli, tmp_path: Path, tiny_onnx: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].input[0] = "dangling"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    assert_usage_error(cli("profile", bad), "fails onnx.checker")


@pytest.mark.parametrize("shape", ["224x224", "1x3x224", "1x3xax224", "0x3x224x224"])
def test_malformed_input_shape(cli, shape: str) -> None:
    assert_usage_error(
        cli("profile", "torchvision:resnet18", "--input-shape", shape), "malformed --input-shape"
    )


def test_input_shape_the_model_rejects(cli, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert_usage_error(
        cli("profile", "torchvision:resnet18", "--input-shape", "1x1x64x64", "--output", out),
        "rejects input shape",
    )
    assert not out.exists() and not list(tmp_path.iterdir())


def test_import_path_that_does_not_resolve(cli) -> None:
    assert_usage_error(cli("profile", "nosuchpkg.models:build"), "cannot import 'nosuchpkg.models'")
    assert_usage_error(cli("profile", "tests.fixtures.tiny_models:nope"), "has no attribute 'nope'")


def test_checkpoint_keys_that_do_not_fit_arch(cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save(TinyResidual().state_dict(), ckpt)
    assert_usage_error(
        cli("profile", ckpt, "--arch", "torchvision:resnet18"), "don't fit torchvision:resnet18"
    )
    assert_usage_error(cli("profile", ckpt), "without an architecture", "--arch")


def test_pickled_module_needs_trust_pickle(cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "whole.pt"
    torch.save(TinyResidual(), ckpt)
    assert_usage_error(cli("profile", ckpt, "--input-shape", "1x3x32x32"), "--trust-pickle")
    code, _, _ = cli("profile", ckpt, "--input-shape", "1x3x32x32", "--trust-pickle", "--repeat", "1")
    assert code == 0


def test_repeat_zero_and_bad_output_names(cli, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert_usage_error(cli("profile", TINY, "--repeat", "0", "--output", out), "--repeat must be at least 1")
    assert_usage_error(cli("profile", TINY, "--output", tmp_path / "p.txt"), ".json, .yaml or .yml")
    assert_usage_error(
        cli(
            "profile",
            TINY,
            "--output",
            tmp_path / "missing" / "p.json",
            "--input-shape",
            "1x3x32x32",
            "--repeat",
            "1",
        ),
        "does not exist",
    )
    assert not list(tmp_path.iterdir())


def test_bad_choice_is_a_usage_error(cli, tmp_path: Path) -> None:
    # click refuses a value outside the choices before dnnsplit runs: its message (a usage box, not our one
    # line) must name the option, the value and every choice, and nothing may be written.
    out = tmp_path / "p.json"
    code, _, stderr = cli("profile", TINY, "--runtime", "tvm", "--output", out)
    assert code == 2
    flat = " ".join(stderr.replace("│", " ").split())
    assert "Invalid value for '--runtime'" in flat and "'tvm'" in flat
    assert all(f"'{choice}'" in flat for choice in ("onnxruntime", "torch", "browser")), flat
    assert not out.exists()


def test_devices_lists_presets(cli, tmp_path: Path) -> None:
    code, stdout, _ = cli("devices", "--format", "json")
    assert code == 0
    devices = {d["name"]: d for d in json.loads(stdout)["devices"]}
    assert set(devices) == {"host", "mobile-web", "edge", "cloud"}
    assert devices["host"]["latency_scale"] == 1.0
    assert (
        devices["mobile-web"]["latency_scale"]
        > 1
        > devices["edge"]["latency_scale"]
        > devices["cloud"]["latency_scale"]
    )
    phone = tmp_path / "phone.yaml"
    phone.write_text("name: my-phone\nruntime: onnxruntime-web\nthreads: 4\nlatency_scale: 3.5\n")
    code, stdout, _ = cli("devices", phone, "--format", "yaml")
    assert code == 0 and yaml.safe_load(stdout)["devices"][-1]["latency_scale"] == 3.5
    phone.write_text("name: my-phone\nspeed: 3\n")
    assert_usage_error(cli("devices", phone), "unknown key 'speed'")
    assert_usage_error(cli("devices", "tablet"), "neither a device preset nor a file")


def test_models_lists_torchvision(cli) -> None:
    code, stdout, _ = cli("models", "--filter", "resnet", "--format", "json")
    assert code == 0
    rows = {r["model"]: r for r in json.loads(stdout)["models"]}
    assert rows["torchvision:resnet18"]["params"] == 11689512
    assert all("resnet" in name for name in rows)


def test_help_has_examples(cli) -> None:
    for command in ("profile", "devices", "models"):
        code, stdout, _ = cli(command, "--help")
        assert code == 0 and "Examples" in stdout and f"dnnsplit {command}" in stdout
