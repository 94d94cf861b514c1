"""The ONNX graph as a DAG of layers with per-layer op, module path, MACs, params and output tensors.

MACs count multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and two-operand Einsum (which
covers linear layers and attention's QK^T and AV products, whether the exporter writes them as MatMuls
or, as for MaxViT, as Einsums). Not counted: element-wise ops, activations, normalisation, pooling,
resizes and einsums with an ellipsis; these are memory-bound and small next to the counted ops, which is
also what torchvision's published GFLOPS count.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.models.onnx_file import graph_inputs, input_shape_of

_CALL_SUFFIX = re.compile(r"^(.*)_(\d+)$")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, per-sample shape (batch = 1) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


@dataclass
class Layer:
    """One ONNX node that computes on activations (constant-only nodes are folded away)."""

    name: str
    op: str
    module: str  # module path, e.g. "layer2.1.relu"
    scope: str  # module call, e.g. "layer2.1.relu_1" for the second call of that module
    block: str  # top-level block, e.g. "layer2.1"
    inputs: tuple[str, ...]  # activation tensors consumed (graph inputs or other layers' outputs)
    outputs: tuple[TensorSpec, ...]
    macs: int = 0
    params: int = 0

    @property
    def output_bytes(self) -> int:
        return sum(t.bytes for t in self.outputs)


@dataclass
class LayerGraph:
    """Layers in topological order, with the model's inputs and outputs."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layers: list[Layer]
    module_types: dict[str, str] = field(default_factory=dict)

    @cached_property
    def producer(self) -> dict[str, str]:
        """Tensor name -> name of the layer that produces it."""
        return {t.name: layer.name for layer in self.layers for t in layer.outputs}

    @cached_property
    def consumers(self) -> dict[str, list[str]]:
        """Tensor name -> names of the layers that consume it."""
        table: dict[str, list[str]] = defaultdict(list)
        for layer in self.layers:
            for name in layer.inputs:
                table[name].append(layer.name)
        return dict(table)

    @cached_property
    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @cached_property
    def tensors(self) -> dict[str, TensorSpec]:
        table = {t.name: t for t in self.inputs}
        for layer in self.layers:
            table.update({t.name: t for t in layer.outputs})
        return table

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def predecessors(self, layer: Layer) -> list[str]:
        seen: list[str] = []
        for name in layer.inputs:
            src = self.producer.get(name)
            if src is not None and src not in seen:
                seen.append(src)
        return seen

    def successors(self, layer: Layer) -> list[str]:
        seen: list[str] = []
        for t in layer.outputs:
            for dst in self.consumers.get(t.name, []):
                if dst not in seen:
                    seen.append(dst)
        return seen


def module_path_from_node_name(node_name: str) -> str:
    """``/layer2/layer2.1/relu_1/Relu`` -> ``layer2.1.relu_1`` (the call scope, suffixes kept)."""
    if not node_name.startswith("/"):
        return ""
    components = [c for c in node_name.split("/")[1:-1] if c]
    path: list[str] = []
    for comp in components:
        # The exporter writes each level relative to its nearest scoped ancestor: "layer2", "layer2.1".
        if path and comp.startswith(path[-1] + "."):
            path[-1] = comp
        else:
            path.append(comp)
    return ".".join(path)


def strip_call_suffixes(scope: str, modules: dict[str, Any]) -> str:
    """``layer2.1.relu_1`` -> ``layer2.1.relu`` when the module table says ``relu_1`` is a repeat call."""
    if not modules or scope in modules:
        return scope
    parts = scope.split(".")
    out: list[str] = []
    for part in parts:
        candidate = ".".join([*out, part])
        match = _CALL_SUFFIX.match(part)
        if candidate not in modules and match and ".".join([*out, match.group(1)]) in modules:
            out.append(match.group(1))
        else:
            out.append(part)
    return ".".join(out)


def block_of(module: str, modules: dict[str, dict[str, Any]]) -> str:
    """The top-level block holding ``module``: descend through containers (``layer1`` -> ``layer1.0``).

    A top-level module that wraps one container holding most of the model (ViT's ``encoder.layers``)
    is descended too, so its repeated blocks become separate rows.
    """
    if not module:
        return ""
    parts = module.split(".")
    if modules:
        i = 1
        while i < len(parts):
            prefix = ".".join(parts[:i])
            info = modules.get(prefix)
            if info is None:
                break
            if info.get("container"):
                i += 1
                continue
            child = ".".join(parts[: i + 1])
            # A non-container whose child is a container of blocks (encoder -> encoder.layers).
            if i == 1 and modules.get(child, {}).get("container") and i + 1 < len(parts):
                i += 2
                continue
            break
        return ".".join(parts[:i])
    # Without module types (an ONNX file), numeric path parts mark container items: features.3.
    i = 1
    while i < len(parts) and parts[i].isdigit():
        i += 1
    return ".".join(parts[:i])


def _call_block(scope: str, block: str) -> str:
    """The block as called: ``block`` with the call suffixes of ``scope`` (same components, ``relu_1``).

    A top-level module called twice (a shared ``relu``) is two blocks, not one: grouped as one, its two
    calls would sit on both sides of the layers between them, and the rows would form a cycle.
    """
    if not block:
        return block
    return ".".join(scope.split(".")[: len(block.split("."))]) if scope else block


def _dtype_name(elem_type: int) -> str:
    import onnx

    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))


def _static_shape(value_info: Any) -> tuple[int, ...] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            return None
    return tuple(dims)


def _infer_shapes(model: Any, input_shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Static per-sample shapes and dtypes of every tensor, for the given input shape.

    ONNX shape inference first; tensors it leaves symbolic are measured by running onnxruntime once.
    """
    import onnx

    fixed = _light_copy(model)
    first = graph_inputs(fixed)[0]
    for d, size in zip(first.type.tensor_type.shape.dim, input_shape, strict=False):
        d.Clear()
        d.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError:
        inferred = fixed  # fall back to running the model for every shape
    table: dict[str, tuple[tuple[int, ...], str]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shape = _static_shape(vi)
        if shape is not None and vi.type.tensor_type.elem_type:
            table[vi.name] = (shape, _dtype_name(vi.type.tensor_type.elem_type))
    for init in model.graph.initializer:
        table[init.name] = (tuple(int(d) for d in init.dims), _dtype_name(init.data_type))
    missing = [o for n in model.graph.node for o in n.output if o and o not in table]
    if missing:
        table.update(_shapes_by_running(model, input_shape, missing))
    return table


def _light_copy(model: Any) -> Any:
    """The model without the data of large initializers: shape inference needs only their dims.

    Copying and serialising 500 MB of VGG weights made shape inference take seconds; this takes none.
    Small initializers (shape vectors for Reshape and the like) keep their data for data propagation.
    """
    import onnx

    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    for init in model.graph.initializer:
        if int(np.prod(init.dims, dtype=np.int64)) <= 1024:
            graph.initializer.append(init)
        else:
            stub = graph.initializer.add()
            stub.name, stub.data_type = init.name, init.data_type
            stub.dims.extend(init.dims)
    return light


def _shapes_by_running(
    model: Any, input_shape: tuple[int, ...], names: list[str]
) -> dict[str, tuple[tuple[int, ...], str]]:
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    first = graph_inputs(probe)[0]
    for d, size in zip(first.type.tensor_type.shape.dim, input_shape, strict=False):
        d.Clear()
        d.dim_value = size
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    feed = {first.name: np.zeros(input_shape, dtype=_ort_dtype(first.type))}
    outs = session.run(names, feed)
    return {
        n: (tuple(int(d) for d in np.shape(v)), str(np.asarray(v).dtype))
        for n, v in zip(names, outs, strict=True)
    }


def _ort_dtype(type_string: str) -> Any:
    return {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}.get(
        type_string, np.float32
    )


def _macs(node: Any, shapes: dict[str, tuple[tuple[int, ...], str]]) -> int:
    def shape(name: str) -> tuple[int, ...] | None:
        entry = shapes.get(name)
        return entry[0] if entry else None

    out = shape(node.output[0]) if node.output else None
    if out is None:
        return 0
    out_elems = int(np.prod(out, dtype=np.int64))
    op = node.op_type
    if op == "Conv":
        w = shape(node.input[1])
        return out_elems * int(np.prod(w[1:], dtype=np.int64)) if w else 0
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64)) if x and w else 0
    if op == "Gemm":
        a = shape(node.input[0])
        if not a:
            return 0
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return out_elems * int(k)
    if op == "MatMul":
        a = shape(node.input[0])
        return out_elems * int(a[-1]) if a else 0
    if op == "Einsum" and len(node.input) == 2:
        return _einsum_macs(node, [shape(i) for i in node.input])
    return 0


def _einsum_macs(node: Any, shapes: list[tuple[int, ...] | None]) -> int:
    """A two-operand einsum does one multiply-add per combination of all its indices (MaxViT's attention)."""
    equation = next((a.s.decode() for a in node.attribute if a.name == "equation"), "")
    operands = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, dims in zip(operands, shapes, strict=False):
        if dims is None or "..." in letters or len(letters) != len(dims):
            return 0  # an ellipsis or an unknown shape: not counted (see the module doc)
        for letter, size in zip(letters, dims, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), int(size))  # broadcast dims of 1
    return int(np.prod(list(sizes.values()), dtype=np.int64))


def load_layer_graph(path: str | Path, input_shape: tuple[int, ...] | None = None) -> LayerGraph:
    """Build the layer DAG of an ONNX file (shapes per sample for ``input_shape``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return build_layer_graph(model, input_shape_of(model, Path(path), input_shape))


def _constant_sources(model: Any, initializers: Any) -> dict[str, set[str]]:
    """Tensor -> the initializers it is computed from, for every tensor that depends on no activation."""
    const_sources: dict[str, set[str]] = {name: {name} for name in initializers}
    for node in model.graph.node:
        real_inputs = [i for i in node.input if i]
        if all(i in const_sources for i in real_inputs):
            sources = set().union(*(const_sources[i] for i in real_inputs)) if real_inputs else set()
            for o in node.output:
                const_sources[o] = sources
    return const_sources


def node_layer_names(model: Any) -> list[str | None]:
    """The layer name of every node of ``model.graph.node`` (in file order); None for constant-only nodes.

    Constant nodes (all inputs constant) are folded away: they are no layer, and whichever part of a split
    model needs them gets its own copy. Unnamed or repeated node names get an index suffix.
    """
    const_sources = _constant_sources(model, {i.name for i in model.graph.initializer})
    names: list[str | None] = []
    names_seen: set[str] = set()
    index = 0
    for node in model.graph.node:
        real_inputs = [i for i in node.input if i]
        if all(i in const_sources for i in real_inputs):
            names.append(None)
            continue
        name = node.name or f"{node.op_type}_{index}"
        while name in names_seen:
            name = f"{name}_{index}"
        names_seen.add(name)
        names.append(name)
        index += 1
    return names


def build_layer_graph(model: Any, input_shape: tuple[int, ...]) -> LayerGraph:
    meta = {p.key: p.value for p in model.metadata_props}
    modules: dict[str, dict[str, Any]] = (
        json.loads(meta["dnnsplit.modules"]) if "dnnsplit.modules" in meta else {}
    )
    shapes = _infer_shapes(model, (1, *input_shape[1:]))
    initializers = {i.name: int(np.prod(i.dims, dtype=np.int64)) for i in model.graph.initializer}
    input_names = [i.name for i in graph_inputs(model)]

    def spec(name: str) -> TensorSpec:
        shape, dtype = shapes.get(name, ((), "float32"))
        return TensorSpec(name, shape, dtype)

    const_sources = _constant_sources(model, initializers)
    layers: list[Layer] = []
    for node, name in zip(model.graph.node, node_layer_names(model), strict=True):
        if name is None:
            continue
        scope = module_path_from_node_name(name)
        module = strip_call_suffixes(scope, modules)
        layers.append(
            Layer(
                name=name,
                op=node.op_type,
                module=module,
                scope=scope,
                block=_call_block(scope, block_of(module, modules)),
                inputs=tuple(i for i in node.input if i and i not in const_sources),
                outputs=tuple(spec(o) for o in node.output if o),
                macs=_macs(node, shapes),
            )
        )
        layers[-1].__dict__["_const_inputs"] = [i for i in node.input if i in const_sources]
    _assign_params(layers, modules, const_sources, initializers)
    for layer in layers:
        layer.__dict__.pop("_const_inputs", None)
    graph = LayerGraph(
        inputs=[spec(n) for n in input_names],
        outputs=[spec(o.name) for o in model.graph.output],
        layers=_topological(layers),
        module_types={k: str(v.get("type", "")) for k, v in modules.items()},
    )
    return graph


def _assign_params(
    layers: list[Layer],
    modules: dict[str, dict[str, Any]],
    const_sources: dict[str, set[str]],
    initializers: dict[str, int],
) -> None:
    if modules:
        # Parameters come from the PyTorch module table (exact, and immune to BN folding at export):
        # each module's own parameters go to the first layer that runs it, else to its nearest layer.
        for path, info in modules.items():
            count = int(info.get("params", 0))
            if not count:
                continue
            target = next((la for la in layers if la.module == path), None)
            if target is None:
                target = next((la for la in layers if la.module.startswith(path + ".") or not path), None)
            if target is None:
                parent = path
                while target is None and parent:
                    parent = parent.rpartition(".")[0]
                    target = next((la for la in layers if la.module == parent), None)
            (target or layers[0]).params += count
        return
    counted: set[str] = set()
    for layer in layers:
        for name in layer.__dict__.get("_const_inputs", []):
            for init in sorted(const_sources.get(name, ())):
                if init not in counted:
                    counted.add(init)
                    layer.params += initializers[init]


def _topological(layers: list[Layer]) -> list[Layer]:
    """ONNX requires topological node order; re-sort defensively (stable) in case a file breaks it."""
    produced = {t.name: layer.name for layer in layers for t in layer.outputs}
    done: set[str] = set()
    ordered: list[Layer] = []
    pending = list(layers)
    while pending:
        rest = []
        for layer in pending:
            if all(produced.get(i) in done or i not in produced for i in layer.inputs):
                ordered.append(layer)
                done.add(layer.name)
            else:
                rest.append(layer)
        if len(rest) == len(pending):
            raise UsageError("the ONNX graph has a cycle", "pass an acyclic model")
        pending = rest
    return ordered
