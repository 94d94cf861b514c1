"""The branch as a program for the bit kernels (``static/bitkernels.wasm``): XNOR/popcount in the browser.

:func:`compile_branch` reads a branch's ``mobile.onnx`` (as `dnnsplit branch` writes it) and lowers the
part from ``stem_output`` to ``branch_logits`` into a list of kernel calls:

- ``GreaterOrEqual(x, t) -> Where(1, -1) -> Conv/MatMul(bits)``: ``binarize`` (float -> HWC bits) and
  ``binconv`` (XNOR + popcount), reading the weights' packed bits as the file stores them (the ``uint8``
  initializer at the top of each unpacking subgraph, :mod:`dnnsplit.branching.packing`);
- the following ``Mul`` (scale) / ``Add`` (bias, the folded BatchNorm) / ``Relu`` go into the binary
  convolution's epilogue, and a ``GreaterOrEqual -> Where`` after it (the next layer's input threshold)
  too: the convolution then writes bits, never floats;
- the real-valued layers (the classifier, pooling, residual adds, a binary-weight layer over real
  inputs, whose +/-1 weights are also read from their bits) as float kernels.

The program is one file: ``DNBK``, a little-endian u32 format version and u32 header length, the JSON
header (``dnnsplit/bitkernels@1``: tensors, ops, parameters), zero padding to 16 bytes, then the
parameter blob (float32 thresholds, scales, biases and classifier weights; the packed weight bits copied
byte for byte). A graph with an operator the kernels lack raises :class:`Unsupported`; the client then
runs the branch in onnxruntime-web. ``stem.onnx`` (:func:`stem_model`) is the file's input -> stem_output
part, which the client runs in onnxruntime-web before the kernels.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from dnnsplit.branching.export import BOUNDARY, INPUT

FORMAT = "dnnsplit/bitkernels@1"
MAGIC = b"DNBK"
VERSION = 1
LOGITS = "branch_logits"
ALIGN = 16

_UNPACK_OPS = {"Reshape", "Sub", "Mul", "Cast", "Slice", "Mod", "BitShift", "Unsqueeze"}
_ALIASES = {"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze"}
_BINARY_CODES = {"Add": 0, "Mul": 1, "Sub": 2, "Div": 3}


class Unsupported(ValueError):
    """The graph has something the bit kernels do not run (the client falls back to onnxruntime-web)."""


@dataclass(frozen=True)
class Packed:
    """A +/-1 weight tensor as the branch file stores it: MSB-first bits of the flat tensor."""

    bits: np.ndarray
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Program:
    header: dict[str, Any]
    blob: bytes

    def to_bytes(self) -> bytes:
        head = json.dumps(self.header, separators=(",", ":")).encode()
        prefix = MAGIC + struct.pack("<II", VERSION, len(head)) + head
        prefix += b"\0" * (-len(prefix) % ALIGN)
        return prefix + self.blob

    @property
    def binary_layers(self) -> int:
        return sum(1 for op in self.header["ops"] if op["op"] in ("binconv", "binconv_grouped"))


def read_program(data: bytes) -> Program:
    """The inverse of :meth:`Program.to_bytes`."""
    if data[:4] != MAGIC:
        raise ValueError("not a bit-kernel program (no DNBK magic)")
    version, length = struct.unpack("<II", data[4:12])
    if version != VERSION:
        raise ValueError(f"bit-kernel program version {version}, expected {VERSION}")
    header = json.loads(data[12 : 12 + length])
    start = 12 + length
    start += -start % ALIGN
    return Program(header, data[start:])


class _Blob:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.params: list[dict[str, Any]] = []

    def add(self, array: np.ndarray, dtype: str) -> int:
        raw = np.ascontiguousarray(array, dtype=np.float32 if dtype == "f32" else np.uint8).tobytes()
        self.params.append({"offset": self.size, "bytes": len(raw), "dtype": dtype})
        self.parts.append(raw + b"\0" * (-len(raw) % ALIGN))
        self.size += len(self.parts[-1])
        return len(self.params) - 1

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
    return [1, *dims[1:]] if dims else []


class _Compiler:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consts: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        outputs = {o.name: o for o in graph.output}
        if BOUNDARY not in outputs or LOGITS not in outputs:
            raise Unsupported(f"not a branch's mobile.onnx (no {BOUNDARY} / {LOGITS} output)")
        self.input_shape = _dims(outputs[BOUNDARY])
        if len(self.input_shape) != 4:
            raise Unsupported(f"{BOUNDARY} is not a 4-d tensor")
        self.blob = _Blob()
        self.tensors: dict[str, dict[str, Any]] = {}
        self.ops: list[dict[str, Any]] = []
        self.alias: dict[str, str] = {}
        self.made_by: dict[str, dict[str, Any]] = {}
        self.pending_ge: dict[str, tuple[str, Any]] = {}
        self.nodes = self._needed()
        self.uses: dict[str, int] = {}
        for node in self.nodes:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.uses[LOGITS] = self.uses.get(LOGITS, 0) + 1

    # -- constants ---------------------------------------------------------------------------------
    def const(self, name: str) -> Any:
        """A constant's value (np.ndarray or Packed), or None when the tensor is computed at run time."""
        if name in self.consts:
            return self.consts[name]
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            value = numpy_helper.to_array(_attrs(node)["value"])
        elif node.op_type == "Identity" and self.const(node.input[0]) is not None:
            value = self.const(node.input[0])
        elif node.op_type == "Reshape" and self._packed_source(node) is not None:
            bits = self._packed_source(node)
            shape = tuple(int(v) for v in self.const(node.input[1]))
            value = Packed(bits, shape)
        else:
            return None
        self.consts[name] = value
        return value

    def _packed_source(self, reshape: onnx.NodeProto) -> np.ndarray | None:
        node = reshape
        for _ in range(12):
            src = node.input[0]
            if src in self.consts:
                array = self.consts[src]
                ok = node.op_type == "Unsqueeze" and isinstance(array, np.ndarray) and array.dtype == np.uint8
                return array if ok else None
            node = self.producer.get(src)
            if node is None or node.op_type not in _UNPACK_OPS:
                return None
        return None

    def _needed(self) -> list[onnx.NodeProto]:
        needed: set[str] = set()
        stack = [LOGITS]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name == BOUNDARY or self.const(name) is not None:
                continue
            seen.add(name)
            node = self.producer.get(name)
            if node is None:
                raise Unsupported(f"{LOGITS} depends on '{name}', which is not {BOUNDARY}")
            needed.add(node.name or id(node).__str__())
            stack.extend(i for i in node.input if i)
        return [n for n in self.graph.node if (n.name or id(n).__str__()) in needed]

    # -- tensors -----------------------------------------------------------------------------------
    def real(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def tensor(self, name: str) -> dict[str, Any]:
        name = self.real(name)
        if name not in self.tensors:
            raise Unsupported(f"'{name}' is not a tensor the kernels have made")
        return self.tensors[name]

    def f32(self, name: str, shape: list[int]) -> str:
        self.tensors[name] = {"kind": "f32", "shape": [int(v) for v in shape]}
        return name

    def bits(self, name: str, h: int, w: int, c: int) -> str:
        self.tensors[name] = {"kind": "bits", "shape": [1, c, h, w], "cb": (c + 7) // 8}
        return name

    def emit(self, op: dict[str, Any], *outputs: str) -> dict[str, Any]:
        self.ops.append(op)
        for out in outputs:
            self.made_by[out] = op
        return op

    @staticmethod
    def planes(shape: list[int]) -> tuple[int, int]:
        """(C, HW) of a [1, C, ...] tensor: per-channel constants broadcast along C."""
        c = shape[1] if len(shape) > 1 else 1
        hw = 1
        for d in shape[2:]:
            hw *= d
        return c, hw

    def per_channel(self, value: np.ndarray, shape: list[int]) -> tuple[np.ndarray, int] | None:
        """(values, bmode) of a constant broadcast onto ``shape``: 0 same shape, 1 per channel, 2 scalar."""
        value = np.asarray(value, dtype=np.float32)
        if value.size == 1:
            return value.reshape(1), 2
        if value.ndim > len(shape):
            return None
        full = value.reshape((1,) * (len(shape) - value.ndim) + value.shape)
        try:
            if list(np.broadcast_shapes(full.shape, tuple(shape))) != list(shape):
                return None
        except ValueError:
            return None
        if len(shape) > 1 and all(d == 1 for i, d in enumerate(full.shape) if i != 1):
            return full.reshape(-1), 1
        return np.broadcast_to(full, shape).reshape(-1), 0

    # -- lowering ----------------------------------------------------------------------------------
    def run(self) -> Program:
        n, c, h, w = self.input_shape
        self.f32(BOUNDARY, self.input_shape)
        for node in self.nodes:
            lower = getattr(self, f"op_{node.op_type}", None)
            if lower is None:
                raise Unsupported(f"no bit kernel for {node.op_type} ({node.name})")
            lower(node, _attrs(node))
        logits = self.real(LOGITS)
        if self.tensor(logits)["kind"] != "f32":
            raise Unsupported(f"{LOGITS} is not a float tensor")
        header = {
            "format": FORMAT,
            "input": {"name": BOUNDARY, "shape": self.input_shape},
            "outputs": {LOGITS: logits},
            "tensors": self.tensors,
            "ops": self.ops,
            "params": self.blob.params,
        }
        return Program(header, self.blob.bytes())

    def _conv_geometry(self, a: dict[str, Any], shape: list[int], kshape: tuple[int, ...]) -> dict[str, Any]:
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise Unsupported("Conv with auto_pad")
        kh, kw = kshape[-2:]
        sh, sw = a.get("strides", [1, 1])
        dh, dw = a.get("dilations", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        _, _, h, w = shape
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        return {
            "KH": kh,
            "KW": kw,
            "strides": [sh, sw],
            "pads": [pt, pl],
            "dil": [dh, dw],
            "OH": oh,
            "OW": ow,
        }

    def op_GreaterOrEqual(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        t = self.const(node.input[1])
        if not isinstance(t, np.ndarray) or self.const(node.input[0]) is not None:
            raise Unsupported("GreaterOrEqual that is not a per-channel threshold")
        self.pending_ge[node.output[0]] = (node.input[0], t)

    def op_Where(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        cond, one, minus = node.input
        ge = self.pending_ge.get(cond)
        if (
            ge is None
            or float(np.asarray(self.const(one))) != 1.0
            or float(np.asarray(self.const(minus))) != -1.0
        ):
            raise Unsupported("Where that is not a +/-1 binarization")
        x, t = ge
        src = self.real(x)
        info = self.tensor(src)
        if info["kind"] != "f32":
            raise Unsupported("binarization of a non-float tensor")
        shape = info["shape"]
        c, hw = self.planes(shape)
        thr = np.broadcast_to(np.asarray(t, dtype=np.float32).reshape(-1), (c,)) if t.size in (1, c) else None
        if thr is None:
            raise Unsupported("a threshold that is not per channel")
        h, w = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
        out = node.output[0]
        producer = self.made_by.get(src)
        if (
            producer is not None
            and producer["op"] in ("binconv", "binconv_grouped")
            and producer["out"] == src
            and self.uses.get(src, 0) == 1
            and src != LOGITS
        ):
            # The next layer's threshold in the convolution's epilogue: it writes bits, not floats.
            producer["othr"] = self.blob.add(thr, "f32")
            producer["obits"] = self.bits(out, h, w, c)
            producer["out"] = None
            del self.tensors[src]
            self.made_by[out] = producer
            return
        self.emit(
            {"op": "binarize", "x": src, "t": self.blob.add(thr, "f32"), "out": self.bits(out, h, w, c)}, out
        )

    def op_Conv(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        x = self.real(node.input[0])
        info = self.tensor(x)
        weight = self.const(node.input[1])
        bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if weight is None or (len(node.input) > 2 and node.input[2] and bias is None):
            raise Unsupported("Conv with weights computed at run time")
        shape = info["shape"]
        if len(shape) != 4:
            raise Unsupported("Conv on a tensor that is not 4-d")
        kshape = weight.shape if isinstance(weight, Packed) else tuple(weight.shape)
        o, i = int(kshape[0]), int(kshape[1])
        group = int(a.get("group", 1))
        geo = self._conv_geometry(a, shape, kshape)
        out = node.output[0]
        if info["kind"] == "bits":
            if not isinstance(weight, Packed):
                raise Unsupported("binary input with real weights")
            op = {
                "op": "binconv" if group == 1 else "binconv_grouped",
                "x": x,
                "w": self.blob.add(weight.bits, "u8"),
                "repack": "conv",
                "O": o,
                "I": i,
                "group": group,
                **geo,
                "scale": None,
                "bias": None if bias is None else self.blob.add(bias, "f32"),
                "relu": 0,
                "out": self.f32(out, [1, o, geo["OH"], geo["OW"]]),
                "othr": None,
                "obits": None,
            }
            self.emit(op, out)
            return
        op = {
            "op": "conv",
            "x": x,
            "wf": None if isinstance(weight, Packed) else self.blob.add(weight, "f32"),
            "wbits": self.blob.add(weight.bits, "u8") if isinstance(weight, Packed) else None,
            "O": o,
            "group": group,
            **geo,
            "bias": None if bias is None else self.blob.add(bias, "f32"),
            "out": self.f32(out, [1, o, geo["OH"], geo["OW"]]),
        }
        self.emit(op, out)

    def op_MatMul(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        self._linear(node, node.input[1], None, layout=1)

    def op_Gemm(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise Unsupported("Gemm with transA, alpha or beta")
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        self._linear(node, node.input[1], bias, layout=0 if a.get("transB", 0) else 1)

    def _linear(self, node: onnx.NodeProto, wname: str, bname: str | None, layout: int) -> None:
        x = self.real(node.input[0])
        info = self.tensor(x)
        weight = self.const(wname)
        bias = self.const(bname) if bname else None
        if weight is None or (bname and bias is None):
            raise Unsupported(f"{node.op_type} with weights computed at run time")
        shape = info["shape"]
        kshape = weight.shape if isinstance(weight, Packed) else tuple(weight.shape)
        if len(shape) != 2 or len(kshape) != 2:
            raise Unsupported(f"{node.op_type} that is not [1, K] x [K, N]")
        k, n = (kshape[1], kshape[0]) if layout == 0 else (kshape[0], kshape[1])
        out = self.f32(node.output[0], [1, int(n)])
        if bias is not None and np.asarray(bias).size != n:
            raise Unsupported("a Gemm bias that is not one per output")
        bias_p = None if bias is None else self.blob.add(np.asarray(bias).reshape(-1), "f32")
        if info["kind"] == "bits":
            if not isinstance(weight, Packed) or layout != 1:
                raise Unsupported("binary input with real or transposed weights")
            op = {
                "op": "binconv",
                "x": x,
                "w": self.blob.add(weight.bits, "u8"),
                "repack": "matmul",
                "O": int(n),
                "I": int(k),
                "group": 1,
                "KH": 1,
                "KW": 1,
                "strides": [1, 1],
                "pads": [0, 0],
                "dil": [1, 1],
                "OH": 1,
                "OW": 1,
                "scale": None,
                "bias": bias_p,
                "relu": 0,
                "out": out,
                "othr": None,
                "obits": None,
            }
            self.emit(op, out)
            return
        op = {
            "op": "linear",
            "x": x,
            "wf": None if isinstance(weight, Packed) else self.blob.add(weight, "f32"),
            "wbits": self.blob.add(weight.bits, "u8") if isinstance(weight, Packed) else None,
            "layout": layout,
            "K": int(k),
            "N": int(n),
            "bias": bias_p,
            "out": out,
        }
        self.emit(op, out)

    def _fusable(self, src: str) -> dict[str, Any] | None:
        producer = self.made_by.get(src)
        if (
            producer is not None
            and producer["op"] in ("binconv", "binconv_grouped")
            and producer["out"] == src
            and self.uses.get(src, 0) == 1
            and src != LOGITS
        ):
            return producer
        return None

    def _elementwise(self, node: onnx.NodeProto, a_: dict[str, Any]) -> None:
        a_name, b_name = node.input
        a_const, b_const = self.const(a_name), self.const(b_name)
        code = _BINARY_CODES[node.op_type]
        if a_const is not None and b_const is not None:
            raise Unsupported(f"{node.op_type} of two constants")
        if a_const is not None:  # constant on the left
            a_name, b_name, a_const, b_const = b_name, a_name, None, a_const
            code = {0: 0, 1: 1, 2: 4, 3: 5}[code]
        a = self.real(a_name)
        info = self.tensor(a)
        if info["kind"] != "f32":
            raise Unsupported(f"{node.op_type} of binary activations")
        shape = info["shape"]
        c, hw = self.planes(shape)
        out = node.output[0]
        if b_const is not None:
            if isinstance(b_const, Packed):
                raise Unsupported(f"{node.op_type} with packed weights")
            fit = self.per_channel(b_const, shape)
            if fit is None:
                raise Unsupported(f"{node.op_type} with a constant of shape {list(np.shape(b_const))}")
            values, bmode = fit
            conv = self._fusable(a) if bmode == 1 else None
            if (
                conv is not None
                and code == 1
                and conv["scale"] is None
                and conv["bias"] is None
                and not conv["relu"]
            ):
                conv["scale"] = self.blob.add(values, "f32")
            elif conv is not None and code == 0 and conv["bias"] is None and not conv["relu"]:
                conv["bias"] = self.blob.add(values, "f32")
            else:
                conv = None
            if conv is not None:
                self._rename(a, out, conv)
                return
            op = {"op": "binary", "a": a, "b": None, "bp": self.blob.add(values, "f32"), "bmode": bmode}
        else:
            b = self.real(b_name)
            if self.tensor(b)["kind"] != "f32" or self.tensor(b)["shape"] != shape:
                raise Unsupported(f"{node.op_type} of tensors of different shapes")
            op = {"op": "binary", "a": a, "b": b, "bp": None, "bmode": 0}
        op.update(code=code, C=c, HW=hw, out=self.f32(out, shape))
        self.emit(op, out)

    def _rename(self, old: str, new: str, conv: dict[str, Any]) -> None:
        self.tensors[new] = self.tensors.pop(old)
        conv["out"] = new
        self.made_by[new] = conv

    op_Add = op_Mul = op_Sub = op_Div = _elementwise

    def op_Relu(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        x = self.real(node.input[0])
        conv = self._fusable(x)
        if conv is not None and not conv["relu"]:
            conv["relu"] = 1
            self._rename(x, node.output[0], conv)
            return
        self._clip(x, node.output[0], 0.0, float("inf"))

    def op_Clip(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        lo = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min", -np.inf)
        hi = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max", np.inf)
        if lo is None or hi is None:
            raise Unsupported("Clip with bounds computed at run time")
        self._clip(self.real(node.input[0]), node.output[0], float(np.asarray(lo)), float(np.asarray(hi)))

    def _clip(self, x: str, out: str, lo: float, hi: float) -> None:
        info = self.tensor(x)
        if info["kind"] != "f32":
            raise Unsupported("Relu/Clip of binary activations")
        n = int(np.prod(info["shape"]))
        # JSON has no infinity: None stands for it.
        bound = [None if np.isinf(lo) else lo, None if np.isinf(hi) else hi]
        self.emit(
            {
                "op": "clip",
                "x": x,
                "n": n,
                "lo": bound[0],
                "hi": bound[1],
                "out": self.f32(out, info["shape"]),
            },
            out,
        )

    def _pool(
        self, node: onnx.NodeProto, x: str, mode: int, k: list[int], s: list[int], p: list[int]
    ) -> None:
        info = self.tensor(x)
        if info["kind"] != "f32" or len(info["shape"]) != 4:
            raise Unsupported(f"{node.op_type} of a tensor that is not 4-d float")
        _, c, h, w = info["shape"]
        oh = (h + p[0] + p[2] - k[0]) // s[0] + 1
        ow = (w + p[1] + p[3] - k[1]) // s[1] + 1
        out = self.f32(node.output[0], [1, c, oh, ow])
        self.emit(
            {
                "op": "pool",
                "x": x,
                "mode": mode,
                "kernel": k,
                "strides": s,
                "pads": p[:2],
                "OH": oh,
                "OW": ow,
                "out": out,
            },
            out,
        )

    def op_MaxPool(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or len(node.output) > 1:
            raise Unsupported("MaxPool with ceil_mode, dilations or indices")
        self._pool(
            node,
            self.real(node.input[0]),
            0,
            list(a["kernel_shape"]),
            list(a.get("strides", [1, 1])),
            list(a.get("pads", [0, 0, 0, 0])),
        )

    def op_AveragePool(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        if a.get("ceil_mode", 0):
            raise Unsupported("AveragePool with ceil_mode")
        mode = 1 if a.get("count_include_pad", 0) else 2
        self._pool(
            node,
            self.real(node.input[0]),
            mode,
            list(a["kernel_shape"]),
            list(a.get("strides", [1, 1])),
            list(a.get("pads", [0, 0, 0, 0])),
        )

    def op_GlobalAveragePool(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        x = self.real(node.input[0])
        shape = self.tensor(x)["shape"]
        if len(shape) != 4:
            raise Unsupported("GlobalAveragePool of a tensor that is not 4-d")
        self._pool(node, x, 2, [shape[2], shape[3]], [1, 1], [0, 0, 0, 0])

    def op_ReduceMean(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        x = self.real(node.input[0])
        shape = self.tensor(x)["shape"]
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = [int(v) for v in np.asarray(self.const(node.input[1])).reshape(-1)]
        if len(shape) != 4 or sorted(v % 4 for v in axes or []) != [2, 3]:
            raise Unsupported("ReduceMean that is not over H and W")
        self._pool(node, x, 2, [shape[2], shape[3]], [1, 1], [0, 0, 0, 0])
        if not a.get("keepdims", 1):
            self.tensors[node.output[0]]["shape"] = shape[:2]

    def _alias(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        x = self.real(node.input[0])
        info = self.tensor(x)
        if info["kind"] != "f32":
            raise Unsupported(f"{node.op_type} of binary activations")
        shape = info["shape"]
        total = int(np.prod(shape))
        if node.op_type == "Flatten":
            axis = a.get("axis", 1)
            new = [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]
        elif node.op_type in ("Identity", "Dropout"):
            new = list(shape)
        else:
            # Reshape/Squeeze/Unsqueeze of a batch-1 tensor: the same floats in the same order. The new
            # shape keeps the batch and puts everything else in one dimension when it is [1, -1]-like.
            squeezed = [d for d in shape[1:] if d != 1]
            new = [1, total] if len(squeezed) <= 1 else None
            if new is None:
                raise Unsupported(f"{node.op_type} of a tensor with more than one non-1 dimension")
        if int(np.prod(new)) != total:
            raise Unsupported(f"{node.op_type} that changes the size")
        self.tensors[node.output[0]] = {"kind": "f32", "shape": new, "view": x}
        self.emit({"op": "view", "x": x, "out": node.output[0]}, node.output[0])

    op_Flatten = op_Reshape = op_Identity = op_Dropout = op_Squeeze = op_Unsqueeze = _alias

    def op_BatchNormalization(self, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        x = self.real(node.input[0])
        gamma, beta, mean, var = (np.asarray(self.const(n), dtype=np.float64) for n in node.input[1:5])
        gain = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
        info = self.tensor(x)
        c, hw = self.planes(info["shape"])
        mid = node.output[0] + "__bn"
        self.emit(
            {
                "op": "binary",
                "a": x,
                "b": None,
                "bp": self.blob.add(gain, "f32"),
                "bmode": 1,
                "code": 1,
                "C": c,
                "HW": hw,
                "out": self.f32(mid, info["shape"]),
            },
            mid,
        )
        out = node.output[0]
        self.emit(
            {
                "op": "binary",
                "a": mid,
                "b": None,
                "bp": self.blob.add(beta - mean * gain, "f32"),
                "bmode": 1,
                "code": 0,
                "C": c,
                "HW": hw,
                "out": self.f32(out, info["shape"]),
            },
            out,
        )


def compile_branch(mobile: str | Path | onnx.ModelProto) -> Program:
    """The bit-kernel program of a branch's ``mobile.onnx`` (path or loaded model)."""
    model = mobile if isinstance(mobile, onnx.ModelProto) else onnx.load(str(mobile))
    return _Compiler(model).run()


def stem_model(mobile: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """``mobile.onnx`` cut to its input -> ``stem_output`` part (run in onnxruntime-web first)."""
    from onnx.utils import Extractor

    model = mobile if isinstance(mobile, onnx.ModelProto) else onnx.load(str(mobile))
    return Extractor(model).extract_model([INPUT], [BOUNDARY])


def branch_model(mobile: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """``mobile.onnx`` cut to its ``stem_output`` -> ``branch_logits`` part: the reference the kernels
    are checked against, and what onnxruntime-web runs when the branch alone is timed."""
    from onnx.utils import Extractor

    model = mobile if isinstance(mobile, onnx.ModelProto) else onnx.load(str(mobile))
    return Extractor(model).extract_model([BOUNDARY], [LOGITS])


@dataclass(frozen=True)
class KernelFiles:
    """What the browser client downloads to run a branch on the kernels (bytes and sha256 of each)."""

    stem: bytes
    program: bytes
    binary_layers: int

    def describe(self, name: str, data: bytes) -> dict[str, Any]:
        return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def kernel_files(mobile: str | Path) -> KernelFiles:
    """stem.onnx and the program for ``mobile``; :class:`Unsupported` where the kernels cannot run it."""
    model = onnx.load(str(mobile))
    program = _Compiler(model).run()
    return KernelFiles(stem_model(model).SerializeToString(), program.to_bytes(), program.binary_layers)
