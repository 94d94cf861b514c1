"""Store binary (+/-1) weights of an ONNX model as bits, unpacked inside the graph with standard ops.

Each float +/-1 initializer feeding a Conv, Gemm or MatMul becomes a uint8 initializer holding 8
weights per byte (most significant bit first, 1 = +1), followed by

    Unsqueeze -> BitShift(RIGHT, [7..0]) -> Mod 2 -> Reshape [-1] -> Slice [:n] -> Cast float
    -> Mul 2 -> Sub 1 -> Reshape (original shape)

All of these are opset-11..17 operators with integer kernels in onnxruntime and onnxruntime-web (wasm).
Their inputs are all constants, so onnxruntime folds the subgraph once when the session is created:
the file is ~32x smaller and inference costs nothing extra. Don't run onnxsim's constant folding on
the packed file: it would unpack the weights again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHT_CONSUMERS = {"Conv": 1, "Gemm": 1, "MatMul": 1}
MIN_PACKED = 64  # tiny tensors are not worth nine nodes


@dataclass(frozen=True)
class PackReport:
    """How many tensors were packed and the bytes before (float32) and after (bits)."""

    tensors: int
    weights: int
    float_bytes: int
    packed_bytes: int


def pack_bits(values: np.ndarray) -> np.ndarray:
    """+/-1 values -> uint8, 8 per byte, most significant bit first (1 means +1)."""
    return np.packbits((values.reshape(-1) > 0).astype(np.uint8), bitorder="big")


def unpack_bits(packed: np.ndarray, count: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``count`` values of +/-1 as float32."""
    bits = np.unpackbits(packed.reshape(-1), bitorder="big")[:count]
    return bits.astype(np.float32) * 2.0 - 1.0


def _is_binary(array: np.ndarray) -> bool:
    return array.dtype == np.float32 and array.size >= MIN_PACKED and bool(np.all(np.abs(array) == 1.0))


def binary_initializers(model: onnx.ModelProto) -> list[str]:
    """Names of the +/-1 float initializers used as Conv/Gemm/MatMul weights."""
    inits = {init.name: init for init in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        slot = WEIGHT_CONSUMERS.get(node.op_type)
        if slot is None or len(node.input) <= slot:
            continue
        name = node.input[slot]
        if name in inits and name not in names and _is_binary(numpy_helper.to_array(inits[name])):
            names.append(name)
    return names


def pack_model(model: onnx.ModelProto) -> PackReport:
    """Replace every binary weight initializer of ``model`` (in place) by bits and an unpacking subgraph."""
    graph = model.graph
    names = binary_initializers(model)
    if not names:
        return PackReport(0, 0, 0, 0)
    inits = {init.name: init for init in graph.initializer}
    shared = {
        "dnnsplit_pack_shifts": numpy_helper.from_array(
            np.arange(7, -1, -1, dtype=np.uint8), "dnnsplit_pack_shifts"
        ),
        "dnnsplit_pack_two_u8": numpy_helper.from_array(np.array(2, dtype=np.uint8), "dnnsplit_pack_two_u8"),
        "dnnsplit_pack_axes": numpy_helper.from_array(np.array([1], dtype=np.int64), "dnnsplit_pack_axes"),
        "dnnsplit_pack_flat": numpy_helper.from_array(np.array([-1], dtype=np.int64), "dnnsplit_pack_flat"),
        "dnnsplit_pack_zero": numpy_helper.from_array(np.array([0], dtype=np.int64), "dnnsplit_pack_zero"),
        "dnnsplit_pack_two_f": numpy_helper.from_array(
            np.array(2.0, dtype=np.float32), "dnnsplit_pack_two_f"
        ),
        "dnnsplit_pack_one_f": numpy_helper.from_array(
            np.array(1.0, dtype=np.float32), "dnnsplit_pack_one_f"
        ),
    }
    new_nodes: list[onnx.NodeProto] = []
    weights = float_bytes = packed_bytes = 0
    keep = [init for init in graph.initializer if init.name not in names]
    for name in names:
        array = numpy_helper.to_array(inits[name])
        packed = pack_bits(array)
        weights += array.size
        float_bytes += array.size * 4
        packed_bytes += packed.nbytes
        p = f"{name}__bits"
        keep.append(numpy_helper.from_array(packed, p))
        keep.append(numpy_helper.from_array(np.array([array.size], dtype=np.int64), f"{p}_count"))
        keep.append(numpy_helper.from_array(np.array(array.shape, dtype=np.int64), f"{p}_shape"))
        steps = [
            ("Unsqueeze", [p, "dnnsplit_pack_axes"], f"{p}_col", {}),
            ("BitShift", [f"{p}_col", "dnnsplit_pack_shifts"], f"{p}_shifted", {"direction": "RIGHT"}),
            ("Mod", [f"{p}_shifted", "dnnsplit_pack_two_u8"], f"{p}_bit", {}),
            ("Reshape", [f"{p}_bit", "dnnsplit_pack_flat"], f"{p}_flat", {}),
            ("Slice", [f"{p}_flat", "dnnsplit_pack_zero", f"{p}_count"], f"{p}_used", {}),
            ("Cast", [f"{p}_used"], f"{p}_float", {"to": TensorProto.FLOAT}),
            ("Mul", [f"{p}_float", "dnnsplit_pack_two_f"], f"{p}_double", {}),
            ("Sub", [f"{p}_double", "dnnsplit_pack_one_f"], f"{p}_signs", {}),
            ("Reshape", [f"{p}_signs", f"{p}_shape"], name, {}),
        ]
        for op, inputs, output, attrs in steps:
            new_nodes.append(helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs))
    del graph.initializer[:]
    graph.initializer.extend(keep + list(shared.values()))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)  # the unpacking runs first: every consumer comes after it
    return PackReport(len(names), weights, float_bytes, packed_bytes)


def compact_names(model: onnx.ModelProto) -> int:
    """Give every node, initializer and intermediate tensor of ``model`` a short name (in place).

    The exporter's names (``/branch/features.17/conv.2/Mul_output_0``) take more room than many of the
    weights once those are bits: 147 kB of a 694 kB mobilenet_v2 mobile.onnx. The graph's inputs and
    outputs keep their names (they are the file's interface). Returns the bytes saved.
    """
    graph = model.graph
    subgraph = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(a.type in subgraph for n in graph.node for a in n.attribute):
        return 0  # subgraphs may refer to outer names: leave such a model as it is
    before = model.ByteSize()
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in renamed:
            renamed[name] = f"v{len(renamed)}"
        return renamed[name]

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for info in graph.value_info:
        info.name = short(info.name)
    return before - model.ByteSize()
