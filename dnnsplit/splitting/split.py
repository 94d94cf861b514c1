"""``split_model``: a model and a plan (or hand-given cuts) in, a directory of checked ONNX segments out.

The directory is built beside its final place and renamed into it only when every segment is written,
simplified (unless asked not to), ``onnx.checker`` clean and validated against the whole model; a failure
half-way leaves nothing behind. A validation mismatch still writes the directory (to look into), with
``validation.passed: false``; the CLI exits 1 on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.codecs import check_mode
from dnnsplit.errors import UsageError
from dnnsplit.models.export import file_sha256
from dnnsplit.output_dir import SPLIT, claim, staged
from dnnsplit.partition.plan_file import PlanFile
from dnnsplit.partition.problem import TIER_ORDER
from dnnsplit.profiling.graph import LayerGraph
from dnnsplit.profiling.profile import group_key
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.splitting.compress import boundary_tensors, calibrate, compress_boundaries
from dnnsplit.splitting.cuts import segments_from_cuts, segments_from_tiers
from dnnsplit.splitting.extract import EXTERNAL_DATA_BYTES, extract_segments, initializer_bytes, plan_segments
from dnnsplit.splitting.manifest import FILE, Manifest, SegmentEntry, Validation


@dataclass(frozen=True)
class SplitSettings:
    simplify: bool = True
    validate: int = 3  # inputs to compare the chain with the whole model on; 0 skips validation
    inputs: str | None = None  # a .npy file or a folder of images; None: random inputs
    seed: int = 0
    tolerance: float = 1e-4  # max |whole - chained| relative to max |whole|
    force: bool = False
    compress: str | None = None  # "fp16" | "int8": boundary tensors sent compressed
    min_agreement: float = 1.0  # with compression: share of inputs whose top-1 class must match

    def check(self) -> None:
        if self.validate < 0:
            raise UsageError(f"--validate must be >= 0 (got {self.validate})", "pass --validate 3, say")
        if not self.tolerance > 0:
            raise UsageError(f"--tolerance must be > 0 (got {self.tolerance})", "pass --tolerance 1e-4")
        check_mode(self.compress)
        if not 0 <= self.min_agreement <= 1:
            raise UsageError(f"--min-agreement must be in [0, 1] (got {self.min_agreement})", "pass 0.9, say")


@dataclass(frozen=True)
class SplitResult:
    manifest: Manifest
    directory: Path


def check_plan_model(plan: PlanFile, sha256: str) -> None:
    planned = plan.model_sha256
    if planned and planned != sha256:
        raise UsageError(
            f"{plan.path} is a plan for another model "
            f"(sha256 {planned[:12]}..., this model {sha256[:12]}...)",
            "plan this model (or pass the model the plan was made for)",
        )


def layer_labels(graph: LayerGraph, plan: PlanFile, label_of_row: dict[str, int]) -> dict[str, int]:
    """A label per graph layer from a label per plan row (a row is a node, module or block: the profile's
    ``--group``); layers of rows the plan lacks stay out (``segments_from_tiers`` names them)."""
    group = str(plan.document.get("profile", {}).get("group") or "node")
    labels = {}
    for i, layer in enumerate(graph.layers):
        row = group_key(graph, i, group)
        if row in label_of_row:
            labels[layer.name] = label_of_row[row]
    return labels


def segments_from_plan(graph: LayerGraph, plan: PlanFile, sha256: str) -> tuple[dict[str, int], list[str]]:
    """Segment of every layer and the tier of every segment, from a plan of the same model."""
    check_plan_model(plan, sha256)
    tiers = list(plan.problem.tiers)
    tier_of_layer = layer_labels(
        graph, plan, {name: tiers.index(tier) for name, tier in plan.assignment.items()}
    )
    segment_of = segments_from_tiers(graph, tier_of_layer)
    used = sorted({tier_of_layer[la.name] for la in graph.layers})
    return segment_of, [tiers[t] for t in used]


def segments_from_cut_lists(
    graph: LayerGraph, cuts: Sequence[Sequence[str]]
) -> tuple[dict[str, int], list[str]]:
    segment_of = segments_from_cuts(graph, cuts)
    count = len(cuts) + 1
    names = list(TIER_ORDER[:count]) if count <= len(TIER_ORDER) else [f"part{k + 1}" for k in range(count)]
    return segment_of, names


def prepare_output(directory: Path, force: bool) -> None:
    """Refuse an output that is not empty (without ``force``) or, with ``force``, is anything but a split."""
    claim(directory, SPLIT, force)


def plan_origin(plan: Path, plan_file: PlanFile) -> dict[str, Any]:
    """The manifest's ``origin`` of a split made by ``plan``: the file, its sha256, and the lossless coding
    the plan priced its boundaries with (``plan --boundaries``), which is what the client sends."""
    origin: dict[str, Any] = {"plan": str(plan), "plan_sha256": file_sha256(plan)}
    chosen = plan_file.document.get("boundary_codec")
    if chosen:
        origin["coding"] = chosen["lossless"]
    return origin


def split_prepared(
    prepared: Any,
    output: Path,
    settings: SplitSettings,
    progress: ProgressFn = no_progress,
    plan: Path | None = None,
    plan_file: PlanFile | None = None,
    cut_lists: Sequence[Sequence[str]] = (),
) -> SplitResult:
    """Split a PreparedModel by a plan file (``plan`` and its loaded ``plan_file``) or by cut lists:
    what ``dnnsplit split`` and the pipeline's split stage both do."""
    sha = prepared.exported.sha256
    if plan_file is not None and plan is not None:
        segment_of, tiers = segments_from_plan(prepared.graph, plan_file, sha)
        origin: dict[str, Any] = plan_origin(plan, plan_file)
    else:
        segment_of, tiers = segments_from_cut_lists(prepared.graph, [list(c) for c in cut_lists])
        origin = {"cuts": [list(c) for c in cut_lists]}
    return split_model(
        prepared.exported.path,
        prepared.graph,
        segment_of,
        tiers,
        prepared.model_block(),
        origin,
        output,
        settings,
        progress,
    )


def split_model(
    onnx_path: Path,
    graph: LayerGraph,
    segment_of: dict[str, int],
    tiers: list[str],
    model_info: dict[str, Any],
    origin: dict[str, Any],
    directory: str | Path,
    settings: SplitSettings | None = None,
    progress: ProgressFn = no_progress,
    elastic: dict[str, Any] | None = None,
    reference: Path | None = None,
) -> SplitResult:
    """Write the segments of ``graph`` (one per segment index in ``segment_of``) and the manifest.

    ``elastic`` (an ``ElasticSpec.to_dict()``): the segments are its pieces; the manifest carries the block
    and validation checks every candidate's chain against the whole model. ``reference``: another model
    (the original of a bottleneck model) whose top-1 validation also compares the chain with."""
    import onnx

    settings = settings or SplitSettings()
    settings.check()
    target = Path(directory)
    prepare_output(target, settings.force)
    specs = plan_segments(graph, segment_of)
    progress("extracting segments", 0, len(specs))
    model = onnx.load(str(onnx_path))
    parts = extract_segments(model, graph, specs)
    del model  # the whole model's weights are not needed past here: big models stay within memory
    if settings.compress:
        progress("compressing boundaries", 0, 1)
        codes = None
        if settings.compress == "int8":
            names = [t.name for t in boundary_tensors(specs)]
            samples, _ = validation_inputs(
                graph.inputs[0].shape, replace(settings, validate=max(settings.validate, 3))
            )
            codes = calibrate(onnx_path, names, samples)
        parts, specs = compress_boundaries(parts, specs, settings.compress, codes)
    with staged(target, SPLIT, settings.force) as staging:
        entries = []
        for k, (spec, part) in enumerate(zip(specs, parts, strict=True)):
            progress("writing segments", k, len(specs))
            file = f"{k + 1:02d}-{tiers[k]}.onnx"
            part, simplified, notes = _simplify(part, settings.simplify)
            _save(part, staging / file)
            onnx.checker.check_model(str(staging / file))
            entries.append(
                SegmentEntry(
                    index=k,
                    tier=tiers[k],
                    file=file,
                    sha256=file_sha256(staging / file),
                    bytes=_size_of(staging, file),
                    layers=len(spec.layers),
                    inputs=spec.inputs,
                    outputs=spec.outputs,
                    sources=spec.sources,
                    targets=spec.targets,
                    simplified=simplified,
                    notes=tuple(notes),
                    data_sha256=_data_sha256(staging, file),
                )
            )
        manifest = Manifest(
            model=model_info,
            origin={**origin, "compress": settings.compress},
            input=graph.inputs[0],
            outputs=tuple(graph.outputs),
            segments=tuple(entries),
            elastic=elastic,
        )
        manifest.save(staging)
        if settings.validate:
            progress("validating", 0, settings.validate)
            validation = validate_chain(onnx_path, staging, settings, reference)
            manifest = Manifest(**{**manifest.__dict__, "validation": validation})
            manifest.save(staging)
    return SplitResult(manifest, target)


def _simplify(part: Any, enabled: bool) -> tuple[Any, bool, list[str]]:
    if not enabled:
        return part, False, []
    if initializer_bytes(part) > EXTERNAL_DATA_BYTES:
        return part, False, ["not simplified: over 2 GB (onnxsim needs the model in one protobuf)"]
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(part)
    except Exception as exc:  # noqa: BLE001 - any onnxsim failure keeps the working, unsimplified segment
        return part, False, [f"onnxsim failed, kept unsimplified: {type(exc).__name__}: {str(exc)[:200]}"]
    if not ok:
        return part, False, ["onnxsim's check failed, kept unsimplified"]
    return simplified, True, []


def _save(model: Any, path: Path) -> None:
    import onnx

    if initializer_bytes(model) > EXTERNAL_DATA_BYTES:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
        )
    else:
        onnx.save_model(model, str(path))


def _data_sha256(directory: Path, file: str) -> str | None:
    data = directory / f"{file}.data"
    return file_sha256(data) if data.exists() else None


def _size_of(directory: Path, file: str) -> int:
    data = directory / f"{file}.data"
    return (directory / file).stat().st_size + (data.stat().st_size if data.exists() else 0)


def validation_inputs(shape: tuple[int, ...], settings: SplitSettings) -> tuple[list[np.ndarray], str]:
    """Inputs (batch 1 each) to compare on: random with a fixed seed, a .npy file, or a folder of images."""
    if settings.inputs is None:
        rng = np.random.default_rng(settings.seed)
        samples = [rng.standard_normal((1, *shape[1:])).astype(np.float32) for _ in range(settings.validate)]
        return samples, f"random normal (seed {settings.seed})"
    from dnnsplit.images import load_inputs

    batch = load_inputs(settings.inputs, shape)
    return [batch[i : i + 1] for i in range(min(len(batch), settings.validate))], str(settings.inputs)


def validate_chain(
    onnx_path: Path, directory: Path, settings: SplitSettings, reference: Path | None = None
) -> Validation:
    """Compare the chained segments in ``directory`` with the whole model on the validation inputs (and
    their top-1 with ``reference``'s, a model with the same input and first output, when given)."""
    from dnnsplit.onnxrt import ort_session
    from dnnsplit.splitting.chain import SegmentChain

    chain = SegmentChain.load(directory)
    whole = ort_session(onnx_path)
    names = [o.name for o in whole.get_outputs()]
    samples, source = validation_inputs(chain.manifest.input.shape, settings)
    # An elastic split: every candidate's chain (pieces before its boundary here, the rest from what
    # crosses it) must compute the whole model; a plain split has one chain.
    cuts = [
        (str(c["name"]), int(c["boundary"])) for c in (chain.manifest.elastic or {}).get("candidates", [])
    ]
    max_abs = max_rel = 0.0
    per_cut = {name: 0.0 for name, _ in cuts}
    agree = total = same_as_reference = 0
    other = None if reference is None else ort_session(reference)
    for x in samples:
        expected = dict(zip(names, whole.run(names, {chain.input_name: x}), strict=True))
        runs = [(None, chain.run(x)[0])] + [(name, chain.run_cut(x, k)) for name, k in cuts]
        if other is not None:
            theirs = other.run(None, {other.get_inputs()[0].name: x})[0]
            same_as_reference += int(
                np.array_equal(np.argmax(theirs, -1), np.argmax(runs[0][1][names[0]], -1))
            )
        for label, got in runs:
            for name, want in expected.items():
                diff = float(
                    np.max(np.abs(want.astype(np.float64) - got[name].astype(np.float64)), initial=0.0)
                )
                scale = float(np.max(np.abs(want), initial=0.0)) or 1.0
                max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / scale)
                if label is not None:
                    per_cut[label] = max(per_cut[label], diff / scale)
            first = names[0]
            agree += int(np.array_equal(np.argmax(expected[first], axis=-1), np.argmax(got[first], axis=-1)))
            total += 1
    agreement = agree / total if total else 1.0
    compressed = settings.compress is not None
    return Validation(
        per_cut=per_cut if cuts else None,
        inputs=len(samples),
        source=source,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        tolerance=settings.tolerance,
        passed=agreement >= settings.min_agreement if compressed else max_rel <= settings.tolerance,
        top1_agreement=agreement,
        criterion="top1_agreement" if compressed else "max_rel_diff",
        reference_top1_agreement=None if other is None else same_as_reference / max(len(samples), 1),
        reference=None if reference is None else str(reference),
    )


__all__ = [
    "FILE",
    "SplitResult",
    "SplitSettings",
    "split_model",
    "segments_from_plan",
    "segments_from_cut_lists",
]
