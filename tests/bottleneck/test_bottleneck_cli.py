"""`dnnsplit bottleneck` end to end on the small CNN trained on digits, its reader, and its bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from dnnsplit.bottleneck.bottleneck_file import load_bottleneck
from dnnsplit.errors import UsageError
from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.trained import TINY


def test_bottleneck_directory_holds_the_figures_and_checked_files(tiny_bottleneck: Path) -> None:
    assert sorted(p.name for p in tiny_bottleneck.iterdir()) == [
        "bottleneck.safetensors",
        "bottleneck.yaml",
        "decoder.onnx",
        "encoder.onnx",
        "model.onnx",
    ]
    doc = load_bottleneck(tiny_bottleneck)
    assert (doc.at, doc.channels, doc.cut_shape, doc.code.shape) == ("block1", 4, [1, 32, 8, 8], [1, 4, 8, 8])
    assert (doc.code.dtype, doc.code.coding, doc.code.zero_point) == ("int8", "zstd", 0)
    b = doc.bytes
    assert (b.float32, b.int8, b.samples) == (32 * 8 * 8 * 4, 4 * 8 * 8, 360)
    assert b.min <= b.mean <= b.p95 <= b.max
    assert b.reduction >= 10  # float32 -> int8 alone is 32x fewer bytes; zstd adds a frame, then saves more
    a = doc.accuracy
    assert a.drop_points == pytest.approx((a.base_top1 - a.top1) * 100, abs=1e-3)
    assert a.base_top1 > 0.9 and 0 < a.agreement <= 1 and a.samples == 360
    assert doc.validation["passed"] and doc.validation["top1_mismatches"] == 0
    assert doc.training["epochs"] == 1 and len(doc.training["history"]) == 1
    assert doc.times_ms.encode >= doc.times_ms.encoder_onnx > 0 and doc.times_ms.threads == 1


def test_recorded_figures_are_what_the_files_give_on_the_test_split(
    tiny_bottleneck: Path, tiny_checkpoint: Path
) -> None:
    import torch

    from dnnsplit.bottleneck.coding import encode_code
    from dnnsplit.models import ModelOptions, load_model
    from dnnsplit.onnxrt import ort_session
    from dnnsplit.training.data import load_data

    doc = load_bottleneck(tiny_bottleneck)
    original = load_model(str(tiny_checkpoint), ModelOptions(arch=TINY)).module.eval()
    test = load_data("digits", (1, 3, 16, 16)).loader("test", 360)
    images, labels = next(iter(test))
    codes = ort_session(tiny_bottleneck / "encoder.onnx", 1).run(None, {"input": images.numpy()})[0]
    assert codes.dtype == np.int8
    sizes = [len(encode_code(codes[i : i + 1], doc.code.level)) for i in range(len(codes))]
    assert doc.bytes.mean == pytest.approx(np.mean(sizes)) and doc.bytes.p95 == pytest.approx(
        np.percentile(sizes, 95)
    )
    predicted = ort_session(tiny_bottleneck / "decoder.onnx", 1).run(None, {"code": codes})[0].argmax(1)
    with torch.no_grad():
        base = original(images).argmax(1).numpy()
    assert doc.accuracy.base_top1 == pytest.approx(float((base == labels.numpy()).mean()))
    assert doc.accuracy.top1 == pytest.approx(float((predicted == labels.numpy()).mean()))
    assert doc.accuracy.agreement == pytest.approx(float((predicted == base).mean()))
    # model.onnx is encoder.onnx then decoder.onnx.
    whole = ort_session(tiny_bottleneck / "model.onnx", 1).run(None, {"input": images.numpy()[:16]})[0]
    assert np.array_equal(whole.argmax(1), predicted[:16])


def test_weights_file_holds_the_bottleneck_only(tiny_bottleneck: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_bottleneck / "bottleneck.safetensors"), "pt") as fh:
        keys = set(fh.keys())
        meta = fh.metadata()
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder"}  # no rest: it was not fine-tuned
    assert "encoder.conv.weight" in keys and fh is not None
    assert meta["schema"] == "dnnsplit/bottleneck-weights@1" and meta["channels"] == "4"


def test_split_cuts_model_onnx_at_the_int8_code(cli, tiny_bottleneck: Path, tmp_path: Path) -> None:
    code, stdout, stderr = cli("cuts", tiny_bottleneck / "model.onnx", "--format", "json")
    assert code == 0, stderr
    assert "code" in stdout
    out = tmp_path / "segments"
    code, _, stderr = cli("split", tiny_bottleneck / "model.onnx", "--cut", "code", "--output", out)
    assert code == 0, stderr
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    mobile, edge = manifest["segments"]
    mobile_model = onnx.load(str(out / mobile["file"]))
    assert [o.name for o in mobile_model.graph.output] == ["code"]
    assert mobile_model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    assert [i.name for i in onnx.load(str(out / edge["file"])).graph.input] == ["code"]


def test_reader_refuses_damaged_foreign_and_incomplete_bottlenecks(
    tiny_bottleneck: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bottleneck, copy)
    assert load_bottleneck(copy / "bottleneck.yaml") == load_bottleneck(tiny_bottleneck)
    raw = bytearray((copy / "encoder.onnx").read_bytes())
    raw[-1] ^= 0xFF
    (copy / "encoder.onnx").write_bytes(bytes(raw))
    with pytest.raises(UsageError, match="encoder.onnx does not match the sha256"):
        load_bottleneck(copy)
    (copy / "encoder.onnx").unlink()
    with pytest.raises(UsageError, match="encoder.onnx is missing"):
        load_bottleneck(copy)
    document = yaml.safe_load((tiny_bottleneck / "bottleneck.yaml").read_text())
    del document["bytes"]["p95"]
    (copy / "bottleneck.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(UsageError, match=r"missing field 'bytes.p95'"):
        load_bottleneck(copy)
    document["schema"] = "dnnsplit/branch@1"
    (copy / "bottleneck.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(UsageError, match="not a dnnsplit/bottleneck file"):
        load_bottleneck(copy)
    with pytest.raises(UsageError, match="not found"):
        load_bottleneck(tmp_path / "nowhere")


def test_bad_inputs_are_one_line_errors_and_write_nothing(
    cli, tiny_checkpoint: Path, tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    base = ("bottleneck", tiny_checkpoint, "--arch", TINY, "--epochs", "1", "--output", out)
    assert_usage_error(cli(*base, "--at", "no_such_layer", "--channels", "4"), "'no_such_layer'", "block1")
    assert_usage_error(cli(*base, "--at", "block1", "--channels", "32"), "--channels 32", "32 channels")
    assert_usage_error(cli(*base, "--at", "block1", "--channels", "0"), "--channels")
    assert_usage_error(cli(*base, "--at", "block1", "--channels", "4", "--stride", "3"), "--stride")
    assert_usage_error(cli(*base, "--at", "flatten", "--channels", "4"), "not a feature map")
    assert_usage_error(
        cli("bottleneck", tiny_onnx, "--at", "x", "--channels", "4", "--output", out), "ONNX file", "PyTorch"
    )
    import sys

    monkeypatch.setitem(sys.modules, "compressai", None)
    monkeypatch.setitem(sys.modules, "compressai.entropy_models", None)
    assert_usage_error(
        cli(*base, "--at", "block1", "--channels", "4", "--lambda", "0.1"), "compressai", "--lambda 0"
    )
    assert not out.exists()
    (out / "mine").mkdir(parents=True)
    assert_usage_error(cli(*base, "--at", "block1", "--channels", "4"), "not empty")
    assert_usage_error(cli(*base, "--at", "block1", "--channels", "4", "--force"), "not a bottleneck")
    assert sorted(p.name for p in out.iterdir()) == ["mine"]


def test_fine_tuned_strided_bottleneck_keeps_its_tail_and_the_original_teacher(
    cli, tiny_checkpoint: Path, tiny_bottleneck: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open

    out = tmp_path / "ft"
    flags = ("--at", "block1", "--channels", "4", "--epochs", "1", "--threads", "1", "--stride", "2")
    code, _, stderr = cli("bottleneck", tiny_checkpoint, "--arch", TINY, *flags, "--fine-tune", "-o", out)
    assert code == 0, stderr
    doc = load_bottleneck(out)
    assert doc.code.shape == [1, 4, 4, 4] and doc.bytes.int8 == 64 and doc.stride == 2
    with safe_open(str(out / "bottleneck.safetensors"), "pt") as fh:
        parts = {k.split(".")[0] for k in fh.keys()}
    assert parts == {"encoder", "decoder", "rest"}  # the fine-tuned tail is part of the bottleneck
    # The original stayed the teacher: its accuracy is the same as in the frozen run.
    assert doc.accuracy.base_top1 == load_bottleneck(tiny_bottleneck).accuracy.base_top1
    assert doc.training["fine_tune"] is True and doc.validation["passed"]
    # --force replaces a bottleneck, and only a bottleneck.
    code, _, stderr = cli("bottleneck", tiny_checkpoint, "--arch", TINY, *flags, "-o", out, "--force")
    assert code == 0, stderr
    with safe_open(str(out / "bottleneck.safetensors"), "pt") as fh:
        assert {k.split(".")[0] for k in fh.keys()} == {"encoder", "decoder"}
