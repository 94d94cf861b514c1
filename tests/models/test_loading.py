"""Every MODEL form loads, and each bad one is a UsageError that names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnnsplit.errors import UsageError
from dnnsplit.models import ModelOptions, export_model, load_model, parse_input_shape
from tests.fixtures.tiny_models import TinyResidual


def test_parse_input_shape() -> None:
    assert parse_input_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_input_shape("2X3x32x32") == (2, 3, 32, 32)
    for bad in ["", "1x3x224", "1x3x0x4", "ax3x4x4", "1x3x4x4x5", "-1x3x4x4"]:
        with pytest.raises(UsageError, match="input-shape"):
            parse_input_shape(bad)


def test_torchvision_is_seeded_and_shaped() -> None:
    a = load_model("torchvision:resnet18", ModelOptions(seed=1, num_classes=7))
    b = load_model("torchvision:resnet18", ModelOptions(seed=1, num_classes=7))
    c = load_model("torchvision:resnet18", ModelOptions(seed=2, num_classes=7))
    assert a.input_shape == (1, 3, 224, 224)
    assert a.module.fc.out_features == 7
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)
    assert not torch.equal(a.module.conv1.weight, c.module.conv1.weight)


def test_default_input_shape_follows_weights_metadata() -> None:
    from dnnsplit.models.torchvision_zoo import default_input_shape

    assert default_input_shape("inception_v3") == (1, 3, 299, 299)
    assert default_input_shape("resnet50") == (1, 3, 224, 224)


def test_unknown_torchvision_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError) as info:
        load_model("torchvision:resnet19")
    assert "did you mean" in info.value.one_line() and "resnet18" in info.value.one_line()


def test_state_dict_with_arch_and_weights_only(tmp_path: Path) -> None:
    source = TinyResidual()
    torch.nn.init.constant_(source.fc.bias, 0.25)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = load_model(
        str(path), ModelOptions(arch="tests.fixtures.tiny_models:tiny_cnn", input_shape=(1, 3, 16, 16))
    )
    assert torch.equal(loaded.module.fc.bias, source.fc.bias)
    with pytest.raises(UsageError, match="--arch"):
        load_model(str(path))


def test_checkpoint_that_records_its_architecture(tmp_path: Path) -> None:
    model = load_model("torchvision:resnet18", ModelOptions(num_classes=10, seed=3)).module
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "arch": "torchvision:resnet18",
            "num_classes": 10,
            "input_shape": [1, 3, 32, 32],
            "state_dict": model.state_dict(),
        },
        path,
    )
    loaded = load_model(str(path))
    assert loaded.input_shape == (1, 3, 32, 32)
    assert torch.equal(loaded.module.conv1.weight, model.conv1.weight)


def test_checkpoint_keys_that_do_not_fit_arch(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(TinyResidual().state_dict(), path)
    with pytest.raises(UsageError, match="don't fit torchvision:resnet18"):
        load_model(str(path), ModelOptions(arch="torchvision:resnet18"))


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(TinyResidual(), path)
    with pytest.raises(UsageError, match="--trust-pickle"):
        load_model(str(path), ModelOptions(input_shape=(1, 3, 16, 16)))
    loaded = load_model(str(path), ModelOptions(trust_pickle=True, input_shape=(1, 3, 16, 16)))
    assert isinstance(loaded.module, TinyResidual)


def test_import_path_forms() -> None:
    loaded = load_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 16, 16)))
    assert isinstance(loaded.module, TinyResidual)
    with pytest.raises(UsageError, match="cannot import"):
        load_model("no_such_package.models:factory")
    with pytest.raises(UsageError, match="has no attribute"):
        load_model("tests.fixtures.tiny_models:missing")
    with pytest.raises(UsageError, match="not an nn.Module"):
        load_model("tests.fixtures.tiny_models:not_a_module")


def test_files_that_are_neither_onnx_nor_torch(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UsageError, match="neither an ONNX model nor a PyTorch checkpoint"):
        load_model(str(junk))
    with pytest.raises(UsageError, match="file not found"):
        load_model(str(tmp_path / "missing.onnx"))


def test_onnx_file_that_fails_the_checker(tmp_path: Path, tiny_onnx: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].input[0] = "no_such_tensor"  # dangling input: not topologically valid
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(UsageError, match="fails onnx.checker"):
        load_model(str(bad))


def test_export_is_cached_and_keeps_module_scopes() -> None:
    import onnx

    loaded = load_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 16, 16)))
    first = export_model(loaded)
    again = export_model(
        load_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 16, 16)))
    )
    assert again.cached and again.path == first.path and again.sha256 == first.sha256
    model = onnx.load(str(first.path))
    assert model.opset_import[0].version >= 17
    names = [n.name for n in model.graph.node]
    assert "/stem/stem.0/Conv" in names and "/relu_1/Relu" in names
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == [
        "logits"
    ]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_input_shape_the_model_rejects() -> None:
    loaded = load_model("torchvision:resnet18", ModelOptions(input_shape=(1, 5, 64, 64)))
    with pytest.raises(UsageError, match="rejects input shape 1x5x64x64"):
        export_model(loaded, use_cache=False)


TINY = "tests.fixtures.tiny_models:tiny_cnn"


def _recorded(tmp_path: Path, arch: str, name: str = "ckpt.pt") -> Path:
    """A dnnsplit checkpoint of TinyResidual's weights that records ``arch`` as its architecture."""
    path = tmp_path / name
    state = TinyResidual().state_dict()
    torch.save({"arch": arch, "num_classes": 10, "input_shape": [1, 3, 16, 16], "state_dict": state}, path)
    return path


def test_recorded_import_path_is_not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's arch is data: tempfile:mkdtemp would make a folder; it is refused before anything runs."""
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = _recorded(tmp_path, "tempfile:mkdtemp")
    with pytest.raises(UsageError, match="not torchvision:NAME") as info:
        load_model(str(path))
    assert "--arch tempfile:mkdtemp" in info.value.one_line() and "--trust-pickle" in info.value.one_line()
    assert list(scratch.iterdir()) == []


def test_recorded_path_arch_is_refused_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "loop.pt"
    _recorded(tmp_path, str(path), name="loop.pt")  # the checkpoint names itself: an endless load
    with pytest.raises(UsageError, match="not torchvision:NAME"):
        load_model(str(path))


def test_recorded_arch_the_user_vouches_for(tmp_path: Path) -> None:
    """The user's own --arch, an arch they named elsewhere (a pipeline's model) or --trust-pickle build it."""
    path = _recorded(tmp_path, TINY)
    for options in (
        ModelOptions(arch=TINY),
        ModelOptions(trusted_archs=(TINY,)),
        ModelOptions(trust_pickle=True),
    ):
        loaded = load_model(str(path), options)
        assert isinstance(loaded.module, TinyResidual) and loaded.input_shape == (1, 3, 16, 16)
    with pytest.raises(UsageError, match="not torchvision:NAME"):
        load_model(str(path), ModelOptions(trusted_archs=("tests.fixtures.tiny_models:other",)))


def test_recorded_os_abort_in_a_fresh_process(tmp_path: Path) -> None:
    """os:abort as a checkpoint's arch used to kill the process (SIGABRT); now one line and exit 2."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    path = _recorded(tmp_path, "os:abort")
    proc = subprocess.run(
        [sys.executable, "-m", "dnnsplit.cli.main", "cuts", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"},
        check=False,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "os:abort" in lines[0] and "not torchvision:NAME" in lines[0]
