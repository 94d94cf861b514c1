"""Resolve a MODEL argument into a PyTorch module or an ONNX file.

MODEL forms (accepted by every command):
  torchvision:NAME          a torchvision classification model (random init with --seed, --weights FILE)
  path/to/model.onnx        an ONNX file
  path/to/checkpoint.pt     a state_dict (with --arch torchvision:NAME, or a dnnsplit checkpoint that
                            records its architecture) or, with --trust-pickle, a pickled nn.Module
  package.module:factory    an import path to a callable returning an nn.Module

A checkpoint is data, and so is the architecture it records: it is built only when it is torchvision:NAME
(a name checked against the zoo), one the user named (``--arch``, ``trusted_archs``) or with
--trust-pickle. An import path or file path taken from the file would run code (or a loop) the file chose.
"""

from __future__ import annotations

import importlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnsplit.errors import UsageError
from dnnsplit.models.checkpoint import read_checkpoint, read_state_dict, recorded_arch, resize_modules
from dnnsplit.models.torchvision_zoo import build, check_name, default_input_shape

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class ModelOptions:
    """Options that shape how a MODEL argument is loaded."""

    seed: int = 0
    weights: str | None = None
    num_classes: int | None = None
    arch: str | None = None
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None
    # Architectures the user named elsewhere (their MODEL in a pipeline config): a checkpoint may record them.
    trusted_archs: tuple[str, ...] = ()


@dataclass
class LoadedModel:
    """A model ready for export/profiling: a torch module, or an ONNX file as given."""

    source: str
    kind: str  # torchvision | checkpoint | import | onnx
    name: str
    input_shape: tuple[int, ...] | None
    module: nn.Module | None = None
    onnx_path: Path | None = None

    def torch_module(self, needed_for: str) -> nn.Module:
        """The PyTorch module, for a command that needs one (an ONNX file has none: a usage error)."""
        if self.module is None:
            raise UsageError(
                f"{needed_for} needs a PyTorch model, and {self.source} is an ONNX file",
                "pass torchvision:NAME, a .pt checkpoint or package.module:factory",
            )
        return self.module

    def known_input_shape(self) -> tuple[int, ...]:
        """The input shape, for a command that must build inputs itself (a usage error when unknown)."""
        if self.input_shape is None:
            raise UsageError(
                f"no input shape is known for {self.source}", "pass --input-shape, e.g. 1x3x32x32"
            )
        return tuple(int(v) for v in self.input_shape)


def load_model(spec: str, options: ModelOptions | None = None) -> LoadedModel:
    """Load ``spec`` (any MODEL form) with ``options``."""
    options = options or ModelOptions()
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec, options)
    lowered = spec.lower()
    if lowered.endswith(ONNX_SUFFIXES):
        return _load_onnx(spec, options)
    if lowered.endswith(TORCH_SUFFIXES) or os.path.isfile(spec):
        return _load_checkpoint(spec, options)
    if ":" in spec and not os.path.exists(spec):
        return _load_import_path(spec, options)
    raise UsageError(
        f"file not found: {spec}",
        "pass torchvision:NAME, a .onnx file, a .pt checkpoint or package.module:factory",
    )


def _load_torchvision(spec: str, options: ModelOptions) -> LoadedModel:
    name = spec.split(":", 1)[1]
    check_name(name)
    module = build(name, num_classes=options.num_classes, seed=options.seed)
    if options.weights:
        _load_state_dict_file(module, options.weights, what=f"torchvision:{name}")
    shape = options.input_shape or default_input_shape(name)
    return LoadedModel(source=spec, kind="torchvision", name=name, input_shape=shape, module=module)


def _load_onnx(spec: str, options: ModelOptions) -> LoadedModel:
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"file not found: {spec}", "check the path to the ONNX file")
    from dnnsplit.models.onnx_file import check_onnx_file

    check_onnx_file(path)
    return LoadedModel(
        source=spec, kind="onnx", name=path.stem, input_shape=options.input_shape, onnx_path=path.resolve()
    )


def _load_checkpoint(spec: str, options: ModelOptions) -> LoadedModel:
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"file not found: {spec}", "check the path to the checkpoint")
    if _looks_like_onnx(path):
        return _load_onnx(spec, options)
    checkpoint = read_checkpoint(path, trust_pickle=options.trust_pickle)
    if isinstance(checkpoint, nn.Module):
        shape = options.input_shape
        return LoadedModel(
            source=spec, kind="checkpoint", name=path.stem, input_shape=shape, module=checkpoint.eval()
        )
    arch = options.arch or (check_recorded(checkpoint.arch, spec, options) if checkpoint.arch else None)
    if not arch:
        raise UsageError(
            f"{spec} is a state_dict without an architecture",
            "pass --arch torchvision:NAME (or an import path)",
        )
    arch_model = load_model(
        str(arch),
        ModelOptions(
            seed=options.seed,
            num_classes=options.num_classes or checkpoint.num_classes,
            input_shape=options.input_shape,
            trust_pickle=options.trust_pickle,
            trusted_archs=options.trusted_archs,
        ),
    )
    assert arch_model.module is not None
    if checkpoint.pruned:  # a pruned variant (dnnsplit prune): fewer channels than the architecture
        resize_modules(arch_model.module, checkpoint.pruned, checkpoint.state_dict)
    _apply_state_dict(arch_model.module, checkpoint.state_dict, what=str(arch), source=spec)
    shape = options.input_shape or checkpoint.input_shape or arch_model.input_shape
    return LoadedModel(
        source=spec, kind="checkpoint", name=path.stem, input_shape=shape, module=arch_model.module.eval()
    )


def arch_reference(loaded: LoadedModel) -> str:
    """The MODEL string that rebuilds ``loaded``'s architecture (random weights), as checkpoints record."""
    if loaded.kind in ("torchvision", "import"):
        return loaded.source
    if loaded.kind == "checkpoint":
        arch = recorded_arch(loaded.source)
        if arch:
            return arch
    raise UsageError(
        f"cannot record the architecture of {loaded.source} ({loaded.kind})",
        "train from torchvision:NAME, package.module:factory or a dnnsplit checkpoint",
    )


def check_recorded(reference: Any, source: str, options: ModelOptions, hint: str | None = None) -> str:
    """``reference``, a MODEL string a file records, if building it runs no code the file chose.

    torchvision:NAME is safe (the name must be in the zoo); anything else (an import path, a file path)
    must be one the user named, or come with --trust-pickle.
    """
    text = str(reference)
    if text.startswith("torchvision:") or options.trust_pickle or text in options.trusted_archs:
        return text
    shown = re.sub(r"[^\w.:/\\-]", "?", text)[:120]
    raise UsageError(
        f"{source} names its architecture '{shown}', not torchvision:NAME: building it would run code "
        "the file chose",
        hint or f"if you trust it, pass --arch {shown} (a pipeline config: model.arch) or --trust-pickle",
    )


def _looks_like_onnx(path: Path) -> bool:
    """ONNX files are protobuf; PyTorch checkpoints are zip archives (or legacy pickles)."""
    if zipfile.is_zipfile(path):
        return False
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means "not ONNX"
        return False
    return len(model.graph.node) > 0


def _load_state_dict_file(module: nn.Module, path: str, what: str) -> None:
    _apply_state_dict(module, read_state_dict(path), what=what, source=path)


def _apply_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str, source: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} with another shape (e.g. {k}: {tuple(state_dict[k].shape)} vs "
                f"{tuple(own[k].shape)})"
            )
        raise UsageError(
            f"the keys of {source} don't fit {what}: " + ", ".join(parts),
            "pass the --arch (and --num-classes) the checkpoint was trained with",
        )
    module.load_state_dict(state_dict)


def _load_import_path(spec: str, options: ModelOptions) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"cannot import '{module_name}' from '{spec}' ({exc})",
            "check the module is on PYTHONPATH and the path is written package.module:factory",
        ) from exc
    factory: Any = mod
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"'{module_name}' has no attribute '{attr}'", "check the factory's name")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(
            f"'{spec}' is not callable", "point to a function or class that returns an nn.Module"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        module = factory() if not isinstance(factory, nn.Module) else factory
    if not isinstance(module, nn.Module):
        raise UsageError(
            f"'{spec}' returned {type(module).__name__}, not an nn.Module", "return an nn.Module"
        )
    if options.weights:
        _load_state_dict_file(module, options.weights, what=spec)
    return LoadedModel(
        source=spec, kind="import", name=attr, input_shape=options.input_shape, module=module.eval()
    )
