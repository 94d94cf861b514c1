"""``make_branch``: a trained backbone in, a directory with mobile.onnx, edge.onnx and branch.yaml out.

Stages: split the traced model at the branch point, binarize a copy of the rest, train it (resumable:
the state after every epoch is kept in ``DIR/.train/``), calibrate the exit threshold on the validation
split, report on the test split, export and validate in onnxruntime, measure sizes and latencies.
The three artifacts are written to a staging folder and moved into place together at the end, with
branch.yaml last: a directory without branch.yaml holds no finished branch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnsplit.branching.binary import calibrate_thresholds, freeze
from dnnsplit.branching.branch_file import (
    BINARY_ACTIVATIONS,
    FILE,
    BoundaryTensor,
    BranchAccuracy,
    BranchFile,
    BranchLatency,
    BranchSizes,
)
from dnnsplit.branching.builder import binary_layers, prepare_branch
from dnnsplit.branching.export import BOUNDARY, EDGE_OUTPUT, INPUT, export_branch, validate_branch
from dnnsplit.branching.manifest import branch_manifest
from dnnsplit.branching.points import resolve_point, split_at, trace
from dnnsplit.branching.policy import (
    CURVE_THRESHOLDS,
    calibrate_threshold,
    check_max_drop,
    exit_figures,
)
from dnnsplit.branching.train import BranchEpoch, BranchTrainSettings, BranchTrainState, train_branch
from dnnsplit.errors import BudgetError, UsageError
from dnnsplit.fileio import dump_document
from dnnsplit.limits import check_threads
from dnnsplit.models.export import export_model, file_sha256
from dnnsplit.models.loading import LoadedModel
from dnnsplit.onnxrt import median_run_ms
from dnnsplit.output_dir import BRANCH, claim
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.splitting.manifest import FILE as MANIFEST
from dnnsplit.training.data import DataSplits, check_classes

STATE_DIR = ".train"
CALIBRATION_BATCH = 256


@dataclass(frozen=True)
class BranchSettings:
    at: str | None = None
    activations: str = "binary"  # or "real": binary weights over real inputs (BINARY_ACTIVATIONS)
    max_accuracy_drop: float = 0.01
    train: BranchTrainSettings = BranchTrainSettings()
    force: bool = False
    threads: int | None = None
    latency_repeat: int = 20

    def check(self) -> None:
        check_max_drop(self.max_accuracy_drop)
        check_threads(self.threads)
        if self.activations not in BINARY_ACTIVATIONS:
            raise UsageError(
                f"--activations must be one of {', '.join(BINARY_ACTIVATIONS)} (got '{self.activations}')",
                "pass --activations binary (XNOR-Net) or real (binary weights only)",
            )
        if self.train.epochs < 1:
            raise UsageError(
                f"--epochs must be at least 1 (got {self.train.epochs})", "pass --epochs 30, say"
            )
        if not self.train.temperature > 0:
            raise UsageError(f"--temperature must be > 0 (got {self.train.temperature})", "pass 4, say")


@dataclass(frozen=True)
class BranchResult:
    directory: Path
    document: BranchFile
    history: list[BranchEpoch]
    resumed_from_epoch: int


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One ``dnnsplit branch`` per output directory at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(
                f"output '{directory}' is in use by another dnnsplit branch", "wait for it or pick another"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    (directory / ".lock").unlink(missing_ok=True)


# What `dnnsplit branch` writes into DIR, and all that --force removes there (branch.yaml first: a
# directory without it holds no finished branch).
OWN_FILES = (FILE, "mobile.onnx", "edge.onnx", MANIFEST, STATE_DIR)


def _check_output(directory: Path, force: bool, fingerprint: str) -> bool:
    """Whether training resumes from ``DIR/.train``; refuse a directory that holds something else.

    With ``force``, a directory holding a branch (finished or not) loses the files a branch consists of;
    anything else in it stays, and a directory holding no branch is refused.
    """
    claim(directory, BRANCH, force=True, into=True)  # free, or a branch: else refused, forced or not
    entries = {p.name for p in directory.iterdir()} - set(BRANCH.transient) if directory.is_dir() else set()
    if not entries:
        return False
    state = directory / STATE_DIR / "state.pt"
    if force:
        for name in OWN_FILES:
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return False
    if FILE in entries:
        raise UsageError(
            f"output '{directory}' already holds a branch", "pick a new directory or pass --force"
        )
    if entries == {STATE_DIR} and state.is_file():
        saved = (
            (directory / STATE_DIR / "fingerprint").read_text().strip()
            if (directory / STATE_DIR / "fingerprint").is_file()
            else ""
        )
        if saved != fingerprint:
            raise UsageError(
                f"output '{directory}' holds an unfinished branch of another model or settings",
                "pass --force to start over, or the same settings to resume",
            )
        return True
    raise UsageError(f"output '{directory}' exists and is not empty", "pick a new directory or pass --force")


def _fingerprint(model_sha: str, settings: BranchSettings, data: str, at: str) -> str:
    payload = json.dumps([model_sha, asdict(settings.train), data, at, settings.activations], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _stack(loader: torch.utils.data.DataLoader, limit: int) -> torch.Tensor:
    parts, seen = [], 0
    for images, _ in loader:
        parts.append(images)
        seen += len(images)
        if seen >= limit:
            break
    return torch.cat(parts)[:limit]


def _logits(
    stem: nn.Module, head: nn.Module, loader: torch.utils.data.DataLoader
) -> tuple[torch.Tensor, torch.Tensor]:
    outs, labels = [], []
    with torch.no_grad():
        for images, y in loader:
            outs.append(head(stem(images)))
            labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def _export_stem(stem: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    from dnnsplit.branching.export import _export

    _export(stem, torch.zeros(shape), path, [INPUT], [BOUNDARY])


def make_branch(
    loaded: LoadedModel,
    data: DataSplits,
    directory: str | Path,
    settings: BranchSettings,
    progress: ProgressFn | None = None,
) -> BranchResult:
    """Build, train, calibrate, export and validate a binarized early-exit branch for ``loaded``."""
    settings.check()
    module = loaded.torch_module("branching")
    shape = loaded.known_input_shape()
    directory = Path(directory)
    model = module.eval()
    note = progress or no_progress
    with torch.no_grad():
        out = model(torch.zeros((2, *shape[1:])))
    check_classes(data, int(out.shape[1]))
    note("exporting the backbone", 0, 1, "")
    exported = export_model(loaded)
    gm = trace(model)
    point = resolve_point(gm, settings.at)
    fingerprint = _fingerprint(exported.sha256, settings, str(data.source), point.name)
    claim(directory, BRANCH, force=True, into=True)  # before the lock file goes into it
    with _locked(directory):
        resume = _check_output(directory, settings.force, fingerprint)
        return _make(loaded, exported, data, directory, settings, note, gm, point, shape, fingerprint, resume)


def _make(
    loaded: LoadedModel,
    exported: Any,
    data: DataSplits,
    directory: Path,
    settings: BranchSettings,
    note: ProgressFn,
    gm: torch.fx.GraphModule,
    point: Any,
    shape: tuple[int, ...],
    fingerprint: str,
    resume: bool,
) -> BranchResult:
    torch.manual_seed(settings.train.seed)
    stem, rest = split_at(gm, point)
    if settings.train.joint:  # joint training changes the stem and rest: work on copies
        import copy

        stem, rest = copy.deepcopy(stem), copy.deepcopy(rest)
    calibration = _stack(data.loader("train", 64), CALIBRATION_BATCH)
    with torch.no_grad():
        branch, layers = prepare_branch(rest, stem(calibration), settings.activations == "binary")
    state_dir = directory / STATE_DIR
    state_file = state_dir / "state.pt"
    state, optimizer_state, start_epoch = BranchTrainState(), None, 0
    if resume:
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        branch.load_state_dict(saved["branch"])
        if settings.train.joint:
            stem.load_state_dict(saved["stem"])
            rest.load_state_dict(saved["rest"])
        state = BranchTrainState(
            epoch=int(saved["epoch"]),
            history=[BranchEpoch(**h) for h in saved["history"]],
            best_val_accuracy=float(saved["best_val_accuracy"]),
            best_branch=saved["best_branch"],
        )
        optimizer_state = saved["optimizer"]
        start_epoch = state.epoch
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "fingerprint").write_text(fingerprint + "\n")

    def save_state(st: BranchTrainState, opt: dict[str, Any]) -> None:
        payload = {
            "branch": branch.state_dict(),
            "epoch": st.epoch,
            "history": [asdict(h) for h in st.history],
            "best_val_accuracy": st.best_val_accuracy,
            "best_branch": st.best_branch,
            "optimizer": opt,
        }
        if settings.train.joint:
            payload.update(stem=stem.state_dict(), rest=rest.state_dict())
        tmp = state_dir / "state.pt.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, state_file)

    if state.epoch < settings.train.epochs:
        state = train_branch(
            stem, rest, branch, data, settings.train, note, state, save_state, optimizer_state
        )
    elif state.best_branch is not None:
        branch.load_state_dict(state.best_branch)
    for m in (stem, rest, branch):
        m.eval()
    with torch.no_grad():  # trained thresholds may sit on an activation level: move them off it
        calibrate_thresholds(branch, stem(calibration), median=False)

    note("calibrating the exit threshold", 0, 1, "")
    val_loader, test_loader = data.loader("val", 256), data.loader("test", 256)
    val_branch, val_labels = _logits(stem, branch, val_loader)
    val_main, _ = _logits(stem, rest, val_loader)
    threshold = calibrate_threshold(val_branch, val_main, val_labels, settings.max_accuracy_drop)
    val_figures = exit_figures(threshold, val_branch, val_main, val_labels)
    test_branch, test_labels = _logits(stem, branch, test_loader)
    test_main, _ = _logits(stem, rest, test_loader)
    test_figures = exit_figures(threshold, test_branch, test_main, test_labels)
    thresholds = sorted({*CURVE_THRESHOLDS, threshold})
    curve = [exit_figures(t, test_branch, test_main, test_labels).as_dict() for t in thresholds]

    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
    try:
        note("exporting mobile.onnx and edge.onnx", 0, 1, "")
        files = export_branch(stem, branch, rest, threshold, shape, staging)
        note("validating in onnxruntime", 0, 1, "")
        validation = validate_branch(
            files, stem, branch, rest, threshold, data.loader("test", 64), settings.threads
        )
        note("measuring latency", 0, 1, "")
        stem_path = staging / "stem.onnx"
        _export_stem(stem, shape, stem_path)
        one = (1, *shape[1:])
        stem_ms = median_run_ms(stem_path, one, settings.threads, settings.latency_repeat, warmup=3)
        mobile_ms = median_run_ms(files.mobile, one, settings.threads, settings.latency_repeat, warmup=3)
        with torch.no_grad():
            features = stem(torch.zeros(one))
        rest_ms = median_run_ms(
            files.edge, tuple(features.shape), settings.threads, settings.latency_repeat, warmup=3
        )
        stem_path.unlink()
        frozen = freeze(branch)
        scale_bytes = sum(m.scale.numel() * 4 for m in frozen.modules() if hasattr(m, "signs"))
        from dnnsplit.profiling.sysinfo import cpu_model

        document = BranchFile(
            model={"source": loaded.source, "sha256": exported.sha256, "name": loaded.name},
            at=point.name,
            data=str(data.source),
            num_classes=data.num_classes,
            input_shape=list(shape),
            boundary=BoundaryTensor(BOUNDARY, [int(v) for v in features.shape], int(features[0].numel() * 4)),
            output_bytes_per_sample=data.num_classes * 4,
            threshold=threshold,
            exit_rate=test_figures.exit_rate,
            accuracy=BranchAccuracy(
                backbone=test_figures.backbone_accuracy,
                branch_exited=test_figures.branch_exited_accuracy,
                overall=test_figures.overall_accuracy,
            ),
            sizes=BranchSizes(
                mobile_onnx_bytes=os.path.getsize(files.mobile),
                edge_onnx_bytes=os.path.getsize(files.edge),
                branch_float_bytes=files.packing.float_bytes,
                branch_packed_bytes=files.packing.packed_bytes + scale_bytes,
                full_model_bytes=os.path.getsize(exported.path),
            ),
            latency=BranchLatency(
                stem_ms=stem_ms,
                branch_ms=max(mobile_ms - stem_ms, 0.0),
                rest_ms=rest_ms,
                threads=settings.threads,
                cpu=cpu_model(),
            ),
            files={
                "mobile": "mobile.onnx",
                "edge": "edge.onnx",
                "mobile_sha256": file_sha256(files.mobile),
                "edge_sha256": file_sha256(files.edge),
                "edge_output": EDGE_OUTPUT,
            },
            calibration={
                "split": "val",
                "samples": len(val_labels),
                "max_accuracy_drop": settings.max_accuracy_drop,
                **{k: v for k, v in val_figures.as_dict().items() if k != "threshold"},
            },
            validation={"split": "test", **asdict(validation), "passed": validation.passed},
            training={
                **asdict(settings.train),
                "activations": settings.activations,
                "epochs_run": state.epoch,
                "best_val_branch_accuracy": state.best_val_accuracy,
                "binary_layers": len(binary_layers(branch)),
                "classifier": layers.classifier,
            },
            curve=curve,
        )
        (staging / FILE).write_text(dump_document(document.to_dict(), "yaml"), encoding="utf-8")
        branch_manifest(staging, document.model, threshold, test_figures.exit_rate).save(staging)
        for name in ("mobile.onnx", "edge.onnx", MANIFEST, FILE):  # branch.yaml last: marks a finished branch
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    result = BranchResult(directory, document, state.history, start_epoch)
    if not validation.passed:
        raise BranchValidationError(result)
    return result


class BranchValidationError(BudgetError):
    """onnxruntime and PyTorch disagree on some exit decision or answer: exit code 1."""

    def __init__(self, result: BranchResult) -> None:
        v = result.document.validation
        super().__init__(
            f"onnxruntime disagrees with PyTorch on {v['exit_mismatches']} exit decisions and "
            f"{v['answer_mismatches']} answers out of {v['samples']}",
            f"see {result.directory / FILE}",
        )
        self.result = result
