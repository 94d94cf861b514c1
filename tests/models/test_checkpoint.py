"""dnnsplit/checkpoint@1 in one module: written, read back, schema checked, pruned models resized."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dnnsplit.errors import UsageError
from dnnsplit.models import ModelOptions, load_model
from dnnsplit.models.checkpoint import (
    SCHEMA,
    Checkpoint,
    changed_attributes,
    channel_attributes,
    read_checkpoint,
    read_state_dict,
    resize_modules,
    write_checkpoint,
)
from tests.fixtures.tiny_models import TinyResidual

TINY = "tests.fixtures.tiny_models:tiny_cnn"


def test_written_checkpoint_reads_back_whole(tmp_path: Path) -> None:
    module = TinyResidual()
    path = tmp_path / "m.pt"
    write_checkpoint(path, module, TINY, 10, (1, 3, 32, 32), extra={"test_accuracy": 0.5})
    got = read_checkpoint(path)
    assert isinstance(got, Checkpoint)
    assert (got.arch, got.num_classes, got.input_shape, got.pruned) == (TINY, 10, (1, 3, 32, 32), {})
    assert got.extra == {"test_accuracy": 0.5}
    assert all(torch.equal(got.state_dict[k], v) for k, v in module.state_dict().items())
    assert torch.load(path, weights_only=True)["schema"] == SCHEMA
    with pytest.raises(ValueError, match="overwrite"):
        write_checkpoint(path, module, TINY, 10, (1, 3, 32, 32), extra={"arch": "os:abort"})


def test_another_schema_is_refused_and_plain_state_dicts_are_taken(tmp_path: Path) -> None:
    module = TinyResidual()
    foreign = tmp_path / "future.pt"
    torch.save({"schema": "dnnsplit/checkpoint@9", "arch": TINY, "state_dict": module.state_dict()}, foreign)
    with pytest.raises(UsageError, match="checkpoint@9"):
        read_checkpoint(foreign)
    plain = tmp_path / "plain.pt"
    torch.save(module.state_dict(), plain)
    assert set(read_state_dict(plain)) == set(module.state_dict())
    other_tool = tmp_path / "lightning.pt"  # a dict holding a state_dict, no schema: a user's own file
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, other_tool)
    got = read_checkpoint(other_tool)
    assert isinstance(got, Checkpoint) and got.arch is None and got.extra == {"epoch": 3}


def test_damaged_fields_are_one_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"schema": SCHEMA, "arch": TINY, "num_classes": "ten", "state_dict": {}}, path)
    with pytest.raises(UsageError, match="damaged checkpoint"):
        read_checkpoint(path)


def test_a_pruned_checkpoint_loads_at_its_own_channel_counts(tmp_path: Path) -> None:
    original = TinyResidual()
    attrs = channel_attributes(original)
    pruned = TinyResidual()
    pruned.conv_a = nn.Conv2d(8, 4, 3, padding=1)  # 8 -> 4 output channels, as torch-pruning would leave it
    pruned.conv_b = nn.Conv2d(4, 8, 3, padding=1)
    changed = changed_attributes(pruned, attrs)
    assert changed == {
        "conv_a": {"in_channels": 8, "out_channels": 4, "groups": 1},
        "conv_b": {"in_channels": 4, "out_channels": 8, "groups": 1},
    }
    path = tmp_path / "pruned.pt"
    write_checkpoint(path, pruned, TINY, 10, (1, 3, 32, 32), pruned=changed)
    loaded = load_model(str(path), ModelOptions(trusted_archs=(TINY,)))
    assert loaded.module is not None
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.module.eval()(x), pruned.eval()(x), atol=1e-6)


def test_resizing_what_the_architecture_lacks_is_refused() -> None:
    model = TinyResidual()
    with pytest.raises(UsageError, match="does not have"):
        resize_modules(model, {"nowhere": {"out_channels": 3}}, {})
    with pytest.raises(UsageError, match="pruning never changes"):
        resize_modules(model, {"conv_a": {"__class__": 3}}, {})


def test_commands_that_need_a_module_refuse_an_onnx_file_in_one_place(tiny_onnx: Path) -> None:
    loaded = load_model(str(tiny_onnx))
    for what in ("training", "pruning", "branching", "--runtime torch"):
        with pytest.raises(UsageError, match=f"^{what} needs a PyTorch model, and .* is an ONNX file"):
            loaded.torch_module(what)
