"""Export the bottleneck model to ONNX (the int8 code a named tensor) and its two sides, and check them.

``model.onnx`` is the whole model, input -> ``code`` (int8) -> ``logits``: ``dnnsplit split --cut code``
splits it like any model. ``encoder.onnx`` (input -> code, the phone) and ``decoder.onnx`` (code ->
logits, the edge) are cut out of it with onnx's own extractor, so the two chained are model.onnx.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from dnnsplit.bottleneck.layers import CODE_NAME, BottleneckModel
from dnnsplit.models.export import INPUT_NAME, write_onnx
from dnnsplit.models.loading import LoadedModel
from dnnsplit.onnxrt import ort_session

OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class BottleneckFiles:
    model: Path
    encoder: Path
    decoder: Path


def _name_code(path: Path) -> None:
    """Rename the output of the one Cast to int8 (the code) to ``code`` everywhere in ``path``."""
    model = onnx.load(str(path))
    casts = [
        n
        for n in model.graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.INT8 for a in n.attribute)
    ]
    if len(casts) != 1:
        raise AssertionError(f"expected one Cast to int8 in the exported model, found {len(casts)}")
    old = casts[0].output[0]
    for node in model.graph.node:
        node.input[:] = [CODE_NAME if name == old else name for name in node.input]
        node.output[:] = [CODE_NAME if name == old else name for name in node.output]
    for info in model.graph.value_info:
        if info.name == old:
            info.name = CODE_NAME
    onnx.save(model, str(path))


def export_bottleneck(loaded: LoadedModel, model: BottleneckModel, directory: Path) -> BottleneckFiles:
    """Write model.onnx, encoder.onnx and decoder.onnx of ``model`` (eval mode) into ``directory``."""
    model.eval()
    shape = loaded.known_input_shape()
    with torch.no_grad():
        example_output = model(torch.zeros(shape))
    whole = directory / "model.onnx"
    write_onnx(dataclasses.replace(loaded, module=model), model, example_output, whole)
    _name_code(whole)
    # Shapes inferred once, so the extracted halves declare the code's shape (batch axis symbolic).
    onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(whole))), str(whole))
    onnx.checker.check_model(str(whole))
    files = BottleneckFiles(whole, directory / "encoder.onnx", directory / "decoder.onnx")
    onnx.utils.extract_model(str(whole), str(files.encoder), [INPUT_NAME], [CODE_NAME])
    onnx.utils.extract_model(str(whole), str(files.decoder), [CODE_NAME], [OUTPUT_NAME])
    return files


def bottleneck_parts(files: BottleneckFiles, directory: Path) -> tuple[Path, Path]:
    """The bottleneck's own layers cut out of model.onnx into ``directory``: the encoder (the cut's
    features -> code) and the decoder (code -> the features the rest reads). The planner charges these,
    not encoder.onnx / decoder.onnx, which also hold the stem and the rest."""
    model = onnx.load(str(files.model))
    by_name = {n.name: n for n in model.graph.node}
    features = by_name["/encoder/conv/Conv"].input[0]
    decoded = by_name["/decoder/out/Conv"].output[0]
    encoder, decoder = directory / "encoder-layers.onnx", directory / "decoder-layers.onnx"
    onnx.utils.extract_model(str(files.model), str(encoder), [features], [CODE_NAME])
    onnx.utils.extract_model(str(files.model), str(decoder), [CODE_NAME], [decoded])
    return encoder, decoder


@dataclass(frozen=True)
class ChainCheck:
    """onnxruntime's encoder -> decoder chain against the torch model, over some inputs."""

    samples: int
    code_elements_differing: int  # int8 code elements where onnxruntime and torch round differently
    code_elements: int
    max_logit_diff: float
    top1_mismatches: int
    tolerance: float

    @property
    def passed(self) -> bool:
        # A float difference of 1e-7 may round one code element the other way: allowed for a few, as long
        # as the answers agree and the logits stay within the tolerance.
        return (
            self.top1_mismatches == 0
            and self.code_elements_differing <= max(1, self.code_elements // 10_000)
            and self.max_logit_diff <= self.tolerance
        )


def check_chain(
    files: BottleneckFiles,
    model: BottleneckModel,
    inputs: np.ndarray,
    threads: int | None = None,
    tolerance: float = 1e-3,
) -> ChainCheck:
    """Run ``inputs`` through encoder.onnx then decoder.onnx and through the torch model; compare."""
    encoder, decoder = ort_session(files.encoder, threads), ort_session(files.decoder, threads)
    code = encoder.run(None, {INPUT_NAME: inputs})[0]
    logits = decoder.run(None, {CODE_NAME: code})[0]
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        torch_code = model.code(x).numpy()
        torch_logits = model(x).numpy()
        # The decoder's own fidelity on the very same code (no rounding difference can enter).
        same_code_logits = model.decode(torch.from_numpy(code)).numpy()
    scale = max(float(np.abs(torch_logits).max()), 1.0)
    return ChainCheck(
        samples=len(inputs),
        code_elements_differing=int((code != torch_code).sum()),
        code_elements=int(code.size),
        max_logit_diff=float(np.abs(logits - same_code_logits).max()) / scale,
        top1_mismatches=int((logits.argmax(1) != torch_logits.argmax(1)).sum()),
        tolerance=tolerance,
    )
