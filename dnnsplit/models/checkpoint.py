"""The checkpoint file, ``dnnsplit/checkpoint@1``: written, read and (for pruned models) resized in one place.

A dnnsplit checkpoint is a dict that ``torch.load(..., weights_only=True)`` reads (tensors, strings, numbers
and lists only): ``schema``, ``arch`` (the MODEL string that rebuilds the architecture), ``num_classes``,
``input_shape``, ``state_dict``, and for a pruned variant ``pruned``: the channel attributes of every module
pruning changed. Any other keys a writer adds (training figures) are kept as ``extra``.

Reading also takes what users bring: a plain state_dict, a dict holding one under ``state_dict`` (other
training scripts), and with ``trust_pickle`` a whole pickled ``nn.Module``. A dict that names a schema must
name this one.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnsplit.errors import UsageError
from dnnsplit.fileio import atomic_path

SCHEMA = "dnnsplit/checkpoint@1"
_FIELDS = ("schema", "arch", "num_classes", "input_shape", "state_dict", "pruned")

# Attributes torch-pruning changes, per module type.
_CHANNEL_ATTRS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}


@dataclass(frozen=True)
class Checkpoint:
    """Weights and what rebuilds the module they fit (every field but ``state_dict`` may be unknown)."""

    state_dict: dict[str, torch.Tensor]
    arch: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    pruned: dict[str, dict[str, int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def write_checkpoint(
    path: str | Path,
    module: nn.Module,
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    pruned: Mapping[str, Mapping[str, int]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``module``'s weights with what is needed to rebuild it, atomically."""
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "arch": arch,
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
    }
    if pruned:
        payload["pruned"] = {name: {a: int(v) for a, v in attrs.items()} for name, attrs in pruned.items()}
    clash = set(extra or {}) & set(_FIELDS)
    if clash:
        raise ValueError(f"extra checkpoint keys {sorted(clash)} would overwrite the format's own")
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Checkpoint | nn.Module:
    """The checkpoint at ``path``; a pickled ``nn.Module`` only with ``trust_pickle`` (it runs code)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"file not found: {path}", "check the path to the checkpoint")
    obj = _torch_load(p, weights_only=not trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    checkpoint = _from_object(obj, p)
    if checkpoint is None:
        raise UsageError(
            f"{path} holds neither an nn.Module nor a state_dict", "save model.state_dict() with torch.save"
        )
    return checkpoint


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Only the weights of a checkpoint or state_dict file (``--weights``), never a pickle."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {path}", "check the --weights path")
    checkpoint = _from_object(_torch_load(p, weights_only=True), p)
    if checkpoint is None:
        raise UsageError(f"{path} is not a state_dict", "save model.state_dict() with torch.save")
    return checkpoint.state_dict


def recorded_arch(path: str | Path) -> str | None:
    """The ``arch`` a dnnsplit checkpoint records; None for anything else (not read as an error)."""
    try:
        checkpoint = read_checkpoint(path)
    except UsageError:
        return None
    return checkpoint.arch if isinstance(checkpoint, Checkpoint) else None


def _torch_load(path: Path, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if weights_only:
            raise UsageError(
                f"{path} holds pickled Python objects (e.g. a whole nn.Module); loading them can run code",
                "save a state_dict instead, or pass --trust-pickle if you trust the file",
            ) from exc
        raise UsageError(
            f"{path} is not a PyTorch checkpoint ({exc})", "pass a file saved with torch.save"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on files it cannot read
        raise UsageError(
            f"{path} is neither an ONNX model nor a PyTorch checkpoint",
            "pass a .onnx file or a file saved with torch.save",
        ) from exc


def _from_object(obj: Any, path: Path) -> Checkpoint | None:
    if not isinstance(obj, Mapping):
        return None
    if "state_dict" not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return Checkpoint(state_dict=dict(obj))  # a bare state_dict
        return None
    state_dict = obj["state_dict"]
    if not isinstance(state_dict, Mapping):
        return None
    schema = obj.get("schema")
    if schema is not None and schema != SCHEMA:
        raise UsageError(
            f"{path} is a checkpoint of schema {schema!r}, this dnnsplit reads {SCHEMA}",
            "write it again with this version of dnnsplit (dnnsplit train), or save a plain state_dict",
        )
    try:
        shape = obj.get("input_shape")
        pruned = obj.get("pruned") or {}
        return Checkpoint(
            state_dict=dict(state_dict),
            arch=None if obj.get("arch") in (None, "") else str(obj["arch"]),
            num_classes=None if obj.get("num_classes") is None else int(obj["num_classes"]),
            input_shape=tuple(int(v) for v in shape) if shape else None,
            pruned={str(n): {str(a): int(v) for a, v in attrs.items()} for n, attrs in pruned.items()},
            extra={k: v for k, v in obj.items() if k not in _FIELDS},
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{path} is a damaged checkpoint (bad arch, num_classes, input_shape or pruned: {exc})",
            "write it again with dnnsplit train or dnnsplit prune",
        ) from exc


def channel_attributes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel attributes of every module of a type torch-pruning resizes."""
    result = {}
    for name, module in model.named_modules():
        attrs = next((a for t, a in _CHANNEL_ATTRS.items() if isinstance(module, t)), None)
        if attrs:
            result[name] = {a: int(getattr(module, a)) for a in attrs}
    return result


def changed_attributes(pruned: nn.Module, original: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The channel attributes of ``pruned`` that differ from ``original`` (its unpruned architecture's)."""
    now = channel_attributes(pruned)
    return {name: attrs for name, attrs in now.items() if original.get(name) != attrs}


def resize_modules(model: nn.Module, changed: dict[str, dict[str, int]], state_dict: dict[str, Any]) -> None:
    """Give ``model``'s modules the channel counts in ``changed`` and parameters of the saved shapes."""
    for name, attrs in changed.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise UsageError(
                f"the checkpoint resizes module '{name[:80]}', which its architecture does not have",
                "pass the --arch the pruned model came from",
            ) from exc
        for attr, value in attrs.items():
            if attr not in next((a for t, a in _CHANNEL_ATTRS.items() if isinstance(module, t)), ()):
                raise UsageError(
                    f"the checkpoint sets '{attr[:40]}' of module '{name[:80]}', which pruning never changes",
                    "write the checkpoint again with dnnsplit prune",
                )
            setattr(module, attr, int(value))
        prefix = f"{name}." if name else ""
        for key in list(module._parameters):
            saved = state_dict.get(prefix + key)
            if saved is not None and module._parameters[key] is not None:
                module._parameters[key] = nn.Parameter(torch.empty_like(saved))
        for key in list(module._buffers):
            saved = state_dict.get(prefix + key)
            if saved is not None and module._buffers[key] is not None:
                module._buffers[key] = torch.empty_like(saved)
