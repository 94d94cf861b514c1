"""``split --plan`` for a plan that chose a trained bottleneck (``boundary_codec.codec: bottleneck``).

The plan was made on the original model's profile with the bottleneck's two layers inserted
(``partition.bottleneck_option``); the segments are the bottleneck's model.onnx cut at its int8 ``code``:
the sending tier runs the stem, the encoder and the int8 quantisation, the receiving one the dequantisation,
the decoder and the rest. Validation checks that the chain computes model.onnx (exactly: the same graph
cut in two) and reports its top-1 agreement with the original model on the same inputs, beside the
bottleneck's test-split agreement from bottleneck.yaml. The manifest says which codec the boundary uses
(``codec: bottleneck``, ``bottleneck``: the directory, its sha256, the code) and the lossless coding of
its message (``coding``): the plan's, except raw (``identity``) when zstd made the code bigger on the
test split, which the manifest notes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from dnnsplit.bottleneck.bottleneck_file import FILE, BottleneckFile, load_bottleneck
from dnnsplit.errors import UsageError
from dnnsplit.models.export import file_sha256
from dnnsplit.partition.bottleneck_option import DECODER_LAYER, ENCODER_LAYER
from dnnsplit.partition.plan_file import PlanFile
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.splitting.split import (
    SplitResult,
    SplitSettings,
    check_plan_model,
    segments_from_cut_lists,
    split_model,
)

CODEC = "bottleneck"


def uses_bottleneck(plan_file: PlanFile | None) -> bool:
    """Whether the plan chose a trained bottleneck as its boundary codec."""
    block = None if plan_file is None else plan_file.document.get("boundary_codec")
    return bool(block) and block.get("codec") == CODEC


def locate(directory: str, plan: Path) -> Path:
    """The bottleneck directory a plan names: as written (relative to here), else beside the plan file."""
    given = Path(directory)
    if given.is_dir() or given.is_absolute():
        return given
    beside = plan.parent / given
    return beside if beside.is_dir() else given


def code_tiers(plan_file: PlanFile) -> tuple[str, str]:
    """(sending, receiving) tier of the code: the plan's only cut must be the one at the code."""
    assignment = plan_file.assignment
    if ENCODER_LAYER not in assignment or DECODER_LAYER not in assignment:
        raise UsageError(
            f"{plan_file.path} says its codec is a bottleneck but assigns no bottleneck layers",
            "plan again with --bottleneck",
        )
    sender, receiver = assignment[ENCODER_LAYER], assignment[DECODER_LAYER]
    order = list(plan_file.problem.tiers)
    used = set(assignment.values())
    if order.index(sender) >= order.index(receiver) or used != {sender, receiver}:
        raise UsageError(
            f"{plan_file.path} cuts the bottleneck model elsewhere than at its code (tiers used: "
            f"{', '.join(t for t in order if t in used)})",
            "split it by hand (`dnnsplit split DIR/model.onnx --cut code`), or plan with two tiers",
        )
    return sender, receiver


def wire_coding(document: BottleneckFile, planned: str) -> tuple[str, str | None]:
    """The coding of the code's message, and a note when it falls back to raw from the plan's."""
    if planned != "identity" and document.bytes.mean >= document.bytes.int8:
        return "identity", (
            f"the code goes raw (identity), not {planned}: on the test split {planned} made it bigger "
            f"({document.bytes.mean:.0f} B coded against {document.bytes.int8} B raw)"
        )
    return planned, None


def split_with_bottleneck(
    prepared: Any,
    output: Path,
    settings: SplitSettings,
    plan: Path,
    plan_file: PlanFile,
    progress: ProgressFn = no_progress,
) -> SplitResult:
    """Split the bottleneck model the plan chose at its code (see the module docstring)."""
    from dnnsplit.profiling import prepare_model

    check_plan_model(plan_file, prepared.exported.sha256)
    block = plan_file.document["boundary_codec"]
    info = block.get("bottleneck") or {}
    directory = locate(str(info.get("directory", "")), plan)
    document = load_bottleneck(directory)
    if file_sha256(directory / FILE) != info.get("sha256"):
        raise UsageError(
            f"{directory / FILE} is not the bottleneck {plan_file.path} priced (sha256 differs)",
            "plan again with this bottleneck, or pass the plan's",
        )
    sender, receiver = code_tiers(plan_file)
    if settings.compress is not None:
        raise UsageError(
            f"--compress {settings.compress} and the plan's bottleneck are two codecs for one boundary",
            "drop --compress",
        )
    coding, note = wire_coding(document, str(block.get("lossless") or "identity"))
    model_path = document.path(directory, "model")
    bottleneck_model = prepare_model(str(model_path), None, progress)
    segment_of, _ = segments_from_cut_lists(bottleneck_model.graph, [[document.code.name]])
    origin: dict[str, Any] = {
        "plan": str(plan),
        "plan_sha256": file_sha256(plan),
        "coding": coding,
        "codec": CODEC,
        "bottleneck": {
            "directory": str(directory),
            "sha256": info["sha256"],
            "at": document.at,
            "code": {"name": document.code.name, "shape": list(document.code.shape), "dtype": "int8"},
            "original": dict(prepared.model_block()),
            "test_agreement": document.accuracy.agreement,
            "test_drop_points": document.accuracy.drop_points,
            **({"note": note} if note else {}),
        },
    }
    return split_model(
        bottleneck_model.exported.path,
        bottleneck_model.graph,
        segment_of,
        [sender, receiver],
        bottleneck_model.model_block(),
        origin,
        output,
        replace(settings, compress=None),
        progress,
        reference=Path(prepared.exported.path),
    )
