"""Boundary compression (JALAD / SPINN style): send fp16 or 8-bit tensors between segments, not float32.

The segment that makes a boundary tensor ends with a ``Cast`` to float16 (``fp16``, half the bytes) or a
``QuantizeLinear`` to uint8 (``int8``, a quarter); every later segment that reads it starts with the
matching ``Cast`` back or ``DequantizeLinear``, so inside the segments nothing changes. The sent tensor is
named ``<name>__fp16`` / ``<name>__int8``. int8 uses one asymmetric scale per tensor, calibrated on the
range the tensor takes over the calibration inputs (the validation inputs). The model input and non-float
tensors (shape vectors) are sent as they are.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.codecs import check_mode
from dnnsplit.profiling.graph import TensorSpec
from dnnsplit.splitting.extract import EXTERNAL_DATA_BYTES, SegmentSpec, initializer_bytes


def _sent_name(name: str, mode: str) -> str:
    return f"{name}__{mode}"


def boundary_tensors(specs: Sequence[SegmentSpec]) -> list[TensorSpec]:
    """Float32 tensors one segment makes and a later one reads: what compression applies to."""
    found: dict[str, TensorSpec] = {}
    for spec in specs:
        for t in spec.outputs:
            if t.dtype == "float32" and any(x != "result" for x in spec.targets[t.name]):
                found[t.name] = t
    return list(found.values())


def session_with_outputs(model_path: Any, names: Sequence[str], threads: int | None = None) -> Any:
    """An onnxruntime session on ``model_path`` that also returns the intermediate tensors ``names``."""
    import onnx

    from dnnsplit.onnxrt import ort_session

    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    if initializer_bytes(model) <= EXTERNAL_DATA_BYTES:
        return ort_session(model.SerializeToString(), threads)
    # over protobuf's 2 GB limit the proto cannot be serialised: go through a file with external data
    with tempfile.TemporaryDirectory(prefix="dnnsplit-calibrate-") as tmp:
        path = Path(tmp) / "calibrate.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="calibrate.onnx.data")
        return ort_session(path, threads)


def calibrate(
    model_path: Any, names: Sequence[str], samples: Sequence[np.ndarray]
) -> dict[str, tuple[float, int]]:
    """(scale, zero point) of an asymmetric uint8 code per tensor, from its range over ``samples``."""
    if not names:  # one segment: nothing crosses (and an empty output list would ask for every output)
        return {}
    session = session_with_outputs(model_path, names)
    input_name = session.get_inputs()[0].name
    low = {n: 0.0 for n in names}  # the range always holds 0, so zero is coded exactly (ReLU outputs)
    high = {n: 0.0 for n in names}
    for x in samples:
        for name, value in zip(names, session.run(list(names), {input_name: x}), strict=True):
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    return int8_codes(low, high)


def int8_codes(low: dict[str, float], high: dict[str, float]) -> dict[str, tuple[float, int]]:
    """(scale, zero point) per tensor of the range [low, high] (which holds 0)."""
    codes = {}
    for name in low:
        scale = (high[name] - low[name]) / 255.0 or 1.0
        codes[name] = (scale, int(np.clip(round(-low[name] / scale), 0, 255)))
    return codes


def compress_boundaries(
    parts: list[Any],
    specs: list[SegmentSpec],
    mode: str,
    codes: dict[str, tuple[float, int]] | None = None,
) -> tuple[list[Any], list[SegmentSpec]]:
    """Segments (ModelProtos, changed in place) and specs with every float32 boundary tensor compressed."""
    import onnx
    from onnx import TensorProto

    check_mode(mode)
    targets = {t.name: t for t in boundary_tensors(specs)}
    if mode == "int8" and codes is None:
        raise ValueError("int8 compression needs calibrated codes")
    sent_dtype = {"fp16": ("float16", TensorProto.FLOAT16), "int8": ("uint8", TensorProto.UINT8)}[mode]
    new_specs = []
    for part, spec in zip(parts, specs, strict=True):
        graph = part.graph
        # The maker: encode each boundary output, and send the code instead.
        outputs = []
        targets_of = {}
        for t in spec.outputs:
            if t.name not in targets:
                outputs.append(t)
                targets_of[t.name] = spec.targets[t.name]
                continue
            sent = TensorSpec(_sent_name(t.name, mode), t.shape, sent_dtype[0])
            graph.node.extend(encode_nodes(t.name, sent.name, mode))
            graph.initializer.extend(code_initializers(t.name, mode, codes))
            later = [x for x in spec.targets[t.name] if x != "result"]
            original = next(o for o in graph.output if o.name == t.name)
            encoded = onnx.ValueInfoProto()
            encoded.CopyFrom(original)
            encoded.name = sent.name
            encoded.type.tensor_type.elem_type = sent_dtype[1]
            if "result" in spec.targets[t.name]:
                outputs.append(t)
                targets_of[t.name] = ["result"]
                graph.output.append(encoded)
            else:
                graph.output.remove(original)
                graph.output.append(encoded)
            outputs.append(sent)
            targets_of[sent.name] = later
        # The readers: decode each compressed input first.
        inputs = []
        sources = {}
        decoders = []
        for t in spec.inputs:
            if t.name not in targets:
                inputs.append(t)
                sources[t.name] = spec.sources[t.name]
                continue
            sent = TensorSpec(_sent_name(t.name, mode), t.shape, sent_dtype[0])
            original = next(i for i in graph.input if i.name == t.name)
            original.name = sent.name
            original.type.tensor_type.elem_type = sent_dtype[1]
            decoders.extend(decode_nodes(sent.name, t.name, mode))
            graph.initializer.extend(code_initializers(t.name, mode, codes))
            inputs.append(sent)
            sources[sent.name] = spec.sources[t.name]
        for node in reversed(decoders):
            graph.node.insert(0, node)
        new_specs.append(
            replace(spec, inputs=tuple(inputs), outputs=tuple(outputs), sources=sources, targets=targets_of)
        )
    return parts, new_specs


def code_initializers(name: str, mode: str, codes: dict[str, tuple[float, int]] | None) -> list[Any]:
    from onnx import helper

    if mode != "int8":
        return []
    assert codes is not None
    scale, zero = codes[name]
    return [
        helper.make_tensor(f"{name}__scale", 1, [], [scale]),
        helper.make_tensor(f"{name}__zero_point", 2, [], [zero]),
    ]


def encode_nodes(name: str, sent: str, mode: str) -> list[Any]:
    from onnx import TensorProto, helper

    if mode == "fp16":
        return [helper.make_node("Cast", [name], [sent], to=TensorProto.FLOAT16, name=f"{sent}/Cast")]
    return [
        helper.make_node(
            "QuantizeLinear", [name, f"{name}__scale", f"{name}__zero_point"], [sent], name=f"{sent}/Quantize"
        )
    ]


def decode_nodes(sent: str, name: str, mode: str) -> list[Any]:
    from onnx import TensorProto, helper

    if mode == "fp16":
        return [helper.make_node("Cast", [sent], [name], to=TensorProto.FLOAT, name=f"{sent}/CastBack")]
    return [
        helper.make_node(
            "DequantizeLinear",
            [sent, f"{name}__scale", f"{name}__zero_point"],
            [name],
            name=f"{sent}/Dequantize",
        )
    ]
