"""Cut an ONNX model into self-contained segments, one per group of layers, that chain by tensor name.

Each segment gets the model's opset and IR version, only the initializers (and constant nodes) it uses,
inputs and outputs with shapes and dtypes, and the dynamic batch axis of the source. Nodes are taken with
``onnx.utils.Extractor``, walking back from the segment's outputs to its inputs; the result is checked to
hold exactly the layers assigned to the segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.profiling.graph import LayerGraph, TensorSpec, node_layer_names

BATCH = "batch"
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room for the graph itself


@dataclass(frozen=True)
class SegmentSpec:
    """Which layers a segment runs and the tensors it takes and hands on (names from the source graph)."""

    index: int
    layers: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sources: dict[str, int | None] = field(default_factory=dict)  # input -> segment making it (None: model)
    targets: dict[str, list[int | str]] = field(default_factory=dict)  # output -> later segments / "result"


def plan_segments(graph: LayerGraph, segment_of: Mapping[str, int]) -> list[SegmentSpec]:
    """The inputs and outputs of every segment for a layer -> segment assignment (data flows forward)."""
    count = max(segment_of.values()) + 1
    where: dict[str, int | None] = {t.name: None for t in graph.inputs}
    for layer in graph.layers:
        for t in layer.outputs:
            where[t.name] = segment_of[layer.name]
    results = {t.name for t in graph.outputs}
    specs = []
    for k in range(count):
        members = [layer for layer in graph.layers if segment_of[layer.name] == k]
        if not members:
            raise UsageError(f"segment {k + 1} has no layers", "remove the empty boundary")
        inputs: list[str] = []
        sources: dict[str, int | None] = {}
        for layer in members:
            for name in layer.inputs:
                src = where[name]
                if src is not None and src > k:
                    raise UsageError(
                        f"layer '{layer.name}' in segment {k + 1} reads '{name}' from a later segment",
                        "data must flow forward: check the plan or the order of the cuts",
                    )
                if src != k and name not in sources:
                    inputs.append(name)
                    sources[name] = src
        outputs: list[str] = []
        targets: dict[str, list[int | str]] = {}
        for layer in members:
            for t in layer.outputs:
                later = sorted({segment_of[c] for c in graph.consumers.get(t.name, []) if segment_of[c] != k})
                to: list[int | str] = [*later, *(["result"] if t.name in results else [])]
                if to:
                    outputs.append(t.name)
                    targets[t.name] = to
        specs.append(
            SegmentSpec(
                index=k,
                layers=tuple(layer.name for layer in members),
                inputs=tuple(graph.tensors[n] for n in inputs),
                outputs=tuple(graph.tensors[n] for n in outputs),
                sources=sources,
                targets=targets,
            )
        )
    return specs


def initializer_bytes(model: Any) -> int:
    """Bytes of the weights held in the proto (what counts against protobuf's 2 GB limit)."""
    return sum(len(t.raw_data) for t in model.graph.initializer)


def batched_tensors(model: Any) -> tuple[set[str], set[str]]:
    """(tensors whose first dimension is the batch axis, tensors whose shape inference knows at all), by ONNX
    shape inference on the dynamic-batch model."""
    import onnx

    from dnnsplit.profiling.graph import _light_copy

    try:
        inferred = onnx.shape_inference.infer_shapes(_light_copy(model), strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError:
        inferred = model
    batched, known = set(), set()
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape"):
            known.add(vi.name)
        if dims and dims[0].HasField("dim_param"):
            batched.add(vi.name)
    return batched, known


def _value_info(spec: TensorSpec, batched: bool) -> Any:
    import numpy as np
    import onnx

    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    shape: list[int | str] = list(spec.shape)
    if batched and shape:
        shape[0] = BATCH
    return onnx.helper.make_tensor_value_info(spec.name, elem, shape)


def extract_segments(model: Any, graph: LayerGraph, specs: list[SegmentSpec]) -> list[Any]:
    """One ONNX ModelProto per segment spec, checked to hold exactly that segment's layers."""
    import onnx.utils

    extractor = onnx.utils.Extractor(model)
    batched, known = batched_tensors(model)
    graph_io = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    for t in [t for spec in specs for t in (*spec.inputs, *spec.outputs)]:
        if t.name in graph_io:
            continue  # the source's own value info, batch axis included
        # Boundary tensors get the source's batch axis where shape inference finds one; where it knows
        # nothing, a leading 1 of an activation (rank >= 2) is taken for the batch.
        guess = t.name not in known and len(t.shape) >= 2 and t.shape[0] == 1
        extractor.value_infos[t.name] = _value_info(t, t.name in batched or guess)
    names = node_layer_names(model)
    by_output = {o: name for node, name in zip(model.graph.node, names, strict=True) for o in node.output}
    segments = []
    for spec in specs:
        part = extractor.extract_model([t.name for t in spec.inputs], [t.name for t in spec.outputs])
        got = {by_output[node.output[0]] for node in part.graph.node if node.output}
        got.discard(None)
        if got != set(spec.layers):
            extra = sorted(got - set(spec.layers))[:3]
            lost = sorted(set(spec.layers) - got)[:3]
            raise RuntimeError(f"segment {spec.index + 1} extracted {extra} too many and lost {lost}")
        part.graph.name = f"segment {spec.index + 1}"
        part.producer_name = "dnnsplit"
        del part.metadata_props[:]
        for prop in model.metadata_props:
            part.metadata_props.add(key=prop.key, value=prop.value)
        segments.append(part)
    return segments
