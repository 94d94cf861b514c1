"""Export a PyTorch model to ONNX with module paths in node names, cached by content hash."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dnnsplit import __version__
from dnnsplit.errors import UsageError
from dnnsplit.limits import check_input_size
from dnnsplit.models.loading import LoadedModel
from dnnsplit.models.onnx_file import onnx_input_shape
from dnnsplit.models.shapes import format_shape

OPSET = 17
INPUT_NAME = "input"
MODULES_KEY = "dnnsplit.modules"
SOURCE_KEY = "dnnsplit.source"
CONTAINER_TYPES = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX file on disk with the facts later stages need."""

    path: Path
    sha256: str
    input_shape: tuple[int, ...]
    cached: bool


def cache_dir() -> Path:
    """``$DNNSPLIT_CACHE`` or ``~/.cache/dnnsplit``."""
    root = os.environ.get("DNNSPLIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dnnsplit"
    )
    return Path(root)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    """Content hash of architecture + weights + export settings: the cache key."""
    digest = hashlib.sha256()
    header = [__version__, torch.__version__, str(OPSET), format_shape(input_shape), repr(module)]
    digest.update("\n".join(header).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def module_table(module: nn.Module) -> dict[str, dict[str, object]]:
    """Per module path: class name, own parameter count, whether it is a container."""
    table: dict[str, dict[str, object]] = {}
    seen: set[int] = set()
    for path, sub in module.named_modules():
        own = 0
        for p in sub.parameters(recurse=False):
            if id(p) not in seen:  # tied weights count once, as torchvision's num_params does
                seen.add(id(p))
                own += p.numel()
        table[path] = {"type": type(sub).__name__, "params": own, "container": type(sub) in CONTAINER_TYPES}
    return table


def export_model(
    loaded: LoadedModel,
    *,
    use_cache: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> ExportedModel:
    """Return an ONNX file for ``loaded``: the file itself for ONNX input, else a (cached) export."""
    if loaded.onnx_path is not None:
        shape = onnx_input_shape(loaded.onnx_path, loaded.input_shape)
        return ExportedModel(loaded.onnx_path, file_sha256(loaded.onnx_path), shape, cached=True)
    module = loaded.module
    assert module is not None
    if loaded.input_shape is None:
        raise UsageError(
            f"no default input shape is known for '{loaded.source}'", "pass --input-shape, e.g. 1x3x224x224"
        )
    shape = tuple(loaded.input_shape)
    module.eval()
    key = model_fingerprint(module, shape)
    target = cache_dir() / "onnx" / f"{key}.onnx"
    if use_cache and target.is_file():
        return ExportedModel(target, file_sha256(target), shape, cached=True)
    if on_stage:
        on_stage("checking the input shape")
    check_input_size(shape, "input shape")  # a checkpoint's recorded shape has not been checked yet
    try:
        with torch.no_grad():
            out = module(torch.zeros(shape))
    except Exception as exc:  # noqa: BLE001 - any forward failure means the shape does not fit
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, MemoryError) or "can't allocate memory" in first:
            raise UsageError(
                f"input shape {format_shape(shape)} needs more memory than this machine has ({first[:120]})",
                "pass a smaller --input-shape",
            ) from None
        raise UsageError(
            f"the model rejects input shape {format_shape(shape)}: {first[:200]}",
            "pass an --input-shape the model accepts, e.g. 1x3x224x224",
        ) from exc
    if on_stage:
        on_stage("exporting to ONNX")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_onnx(loaded, module, out, target)
    return ExportedModel(target, file_sha256(target), shape, cached=False)


def write_onnx(loaded: LoadedModel, module: nn.Module, example_output: object, target: Path) -> None:
    """Export ``module`` (in eval mode, batch axis dynamic) to ``target`` atomically, as export_model does."""
    shape = tuple(loaded.input_shape or ())
    example = torch.zeros(shape)
    outputs = example_output if isinstance(example_output, tuple | list) else (example_output,)
    output_names = ["logits"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamo=False,  # the TorchScript exporter keeps module scopes in node names
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *output_names]},
                do_constant_folding=True,
            )
        _finalise(tmp, loaded, module)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _finalise(path: Path, loaded: LoadedModel, module: nn.Module) -> None:
    """Drop exporter artifacts and record the module table for later stages."""
    import onnx

    model = onnx.load(str(path))
    _drop_initializer_identities(model.graph)
    for key, value in ((SOURCE_KEY, loaded.source), (MODULES_KEY, json.dumps(module_table(module)))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))  # by path: checking a large model in memory is 3x slower


def _drop_initializer_identities(graph: object) -> None:
    """The exporter shares equal initializers through Identity nodes; point consumers at the source."""
    initializers = {init.name for init in graph.initializer}  # type: ignore[attr-defined]
    outputs = {o.name for o in graph.output}  # type: ignore[attr-defined]
    alias: dict[str, str] = {}
    keep = []
    for node in graph.node:  # type: ignore[attr-defined]
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(keep)  # type: ignore[attr-defined]
