"""The branch directory as a split: a ``manifest.yaml`` so `run`, `serve` and `infer` take it as they are.

Two segments: ``mobile.onnx`` (mobile tier: input -> stem output, branch logits, entropy, exit flag) and
``edge.onnx`` (edge tier: stem output -> logits). The manifest's ``early_exit`` block tells the runtime
that a sample whose ``exit`` flag is set is answered by ``branch_logits`` without the edge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from dnnsplit.branching.export import BOUNDARY, EDGE_OUTPUT, INPUT, MOBILE_OUTPUTS
from dnnsplit.models.export import file_sha256
from dnnsplit.profiling.graph import TensorSpec
from dnnsplit.splitting.manifest import Manifest, SegmentEntry

_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.BOOL: "bool", onnx.TensorProto.UINT8: "uint8"}


def _specs(values: Any) -> tuple[TensorSpec, ...]:
    """Per-sample specs (batch = 1) of graph inputs or outputs."""
    specs = []
    for v in values:
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in v.type.tensor_type.shape.dim]
        specs.append(
            TensorSpec(v.name, (1, *dims[1:]) if dims else (), _DTYPES[v.type.tensor_type.elem_type])
        )
    return tuple(specs)


def _segment(
    directory: Path,
    index: int,
    tier: str,
    file: str,
    sources: dict[str, int | None],
    targets: dict[str, list[int | str]],
) -> SegmentEntry:
    path = directory / file
    model = onnx.load(str(path), load_external_data=False)
    return SegmentEntry(
        index=index,
        tier=tier,
        file=file,
        sha256=file_sha256(path),
        bytes=os.path.getsize(path),
        layers=len(model.graph.node),
        inputs=_specs(model.graph.input),
        outputs=_specs(model.graph.output),
        sources=sources,
        targets=targets,
        simplified=False,
        notes=("binary weights bit-packed; not simplified (onnxsim would unpack them)",)
        if index == 0
        else (),
    )


def branch_manifest(directory: Path, model: dict[str, Any], threshold: float, exit_rate: float) -> Manifest:
    """The manifest of the branch files in ``directory``."""
    _, logits, _, flag = MOBILE_OUTPUTS
    mobile = _segment(
        directory,
        0,
        "mobile",
        "mobile.onnx",
        {INPUT: None},
        {BOUNDARY: [1], logits: [], "entropy": [], flag: []},
    )
    edge = _segment(directory, 1, "edge", "edge.onnx", {BOUNDARY: 0}, {EDGE_OUTPUT: ["result"]})
    return Manifest(
        model=model,
        origin={"branch": "branch.yaml"},
        input=mobile.inputs[0],
        outputs=edge.outputs,
        segments=(mobile, edge),
        validation=None,
        notes=("validated against PyTorch on the test split: see branch.yaml",),
        early_exit={
            "flag": flag,
            "logits": logits,
            "answers": EDGE_OUTPUT,
            "threshold": threshold,
            "exit_rate": exit_rate,
        },
    )
