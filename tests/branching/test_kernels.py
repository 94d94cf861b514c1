"""The bit-kernel program compiled from a branch's mobile.onnx, and the committed bitkernels.wasm.

The kernels themselves run in headless Chromium: tests/runtime/test_web.py checks them against
onnxruntime (test_bit_kernels_match_onnxruntime)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from dnnsplit.branching.kernels import (
    FORMAT,
    Unsupported,
    branch_model,
    compile_branch,
    kernel_files,
    read_program,
    stem_model,
)
from dnnsplit.branching.packing import binary_initializers

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "web" / "kernels" / "bitkernels.json"


def test_the_committed_module_is_the_build_of_the_committed_source() -> None:
    """`make wasm` records the source's and the module's sha256: a changed source needs a rebuild."""
    record = json.loads(RECORD.read_text())
    source, module = ROOT / record["source"], ROOT / record["module"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == record["source_sha256"], "run make wasm"
    assert hashlib.sha256(module.read_bytes()).hexdigest() == record["module_sha256"], "run make wasm"
    assert "-msimd128" in record["flags"] and record["compiler"].startswith("Debian clang")
    assert module.read_bytes()[:4] == b"\0asm" and module.parent.name == "static"  # shipped in the package


def test_program_reads_the_packed_bits_as_the_branch_file_stores_them(tiny_branch: Path) -> None:
    mobile = onnx.load(str(tiny_branch / "mobile.onnx"))
    program = compile_branch(mobile)
    header = program.header
    assert header["format"] == FORMAT and header["input"]["name"] == "stem_output"
    assert read_program(program.to_bytes()).header == header
    ops = [op["op"] for op in header["ops"]]
    assert program.binary_layers == ops.count("binconv") >= 2 and "linear" in ops  # the real classifier
    # Every packed weight tensor's bytes are in the blob, byte for byte (no unpacking to float).
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in mobile.graph.initializer}
    packed = [a.tobytes() for a in inits.values() if a.dtype == np.uint8 and a.size > 8]
    params = header["params"]
    blobs = {
        program.blob[params[op["w"]]["offset"] : params[op["w"]]["offset"] + params[op["w"]]["bytes"]]
        for op in header["ops"]
        if op["op"].startswith("binconv")
    }
    assert blobs == set(packed)
    # The folded batch-norm threshold: a binary conv that feeds only the next one writes bits.
    assert any(op["op"] == "binconv" and op["obits"] and op["out"] is None for op in header["ops"])


def test_stem_and_branch_cut_the_mobile_file(tiny_branch: Path) -> None:
    import onnxruntime as ort

    mobile = tiny_branch / "mobile.onnx"
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    full = ort.InferenceSession(str(mobile), providers=["CPUExecutionProvider"])
    features, logits, *_ = full.run(None, {"input": x})
    stem = ort.InferenceSession(stem_model(mobile).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(stem.run(None, {"input": x})[0], features)
    branch = ort.InferenceSession(
        branch_model(mobile).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(branch.run(None, {"stem_output": features})[0], logits, rtol=1e-6, atol=1e-6)
    built = kernel_files(mobile)
    assert built.binary_layers >= 2 and not binary_initializers(onnx.load_from_string(built.stem))


def test_a_file_without_a_branch_is_unsupported(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g", [x], [y]))
    with pytest.raises(Unsupported, match="not a branch"):
        compile_branch(model)
