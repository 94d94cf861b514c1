"""``make_bottleneck``: a trained model and a cut in; the bottleneck model and its figures out.

Stages: split the traced model at the cut, insert an encoder and a decoder, train them by distillation
(:mod:`dnnsplit.bottleneck.train`), export model.onnx / encoder.onnx / decoder.onnx and check the chain
against PyTorch, then measure on the test split through onnxruntime and zstd (what the phone and the edge
will run): the coded bytes per sample, the accuracy and agreement with the original, the time per side.
Everything is written into a staging folder and swapped in at the end (dnnsplit.output_dir), so a failed
or interrupted run leaves no half-written output.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnnsplit.bottleneck.bottleneck_file import (
    FILE,
    BottleneckAccuracy,
    BottleneckFile,
    BottleneckTimes,
    CodeBytes,
    CodeSpec,
)
from dnnsplit.bottleneck.coding import ZSTD_LEVEL, measure_coded
from dnnsplit.bottleneck.export import ChainCheck, bottleneck_parts, check_chain, export_bottleneck
from dnnsplit.bottleneck.layers import CODE_NAME, CODE_STEP, BottleneckModel, Decoder, Encoder, feature_shape
from dnnsplit.bottleneck.rate import rate_model
from dnnsplit.bottleneck.train import BottleneckTrainResult, BottleneckTrainSettings, train_bottleneck
from dnnsplit.branching.points import resolve_point, split_at, trace
from dnnsplit.errors import BudgetError, UsageError
from dnnsplit.fileio import dump_document
from dnnsplit.limits import check_threads
from dnnsplit.models.export import INPUT_NAME, export_model, file_sha256
from dnnsplit.models.loading import LoadedModel
from dnnsplit.onnxrt import median_run_ms, ort_session
from dnnsplit.output_dir import BOTTLENECK, claim, staged
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.training.data import DataSplits, check_classes

CHECKPOINT = "bottleneck.safetensors"
WEIGHTS_SCHEMA = "dnnsplit/bottleneck-weights@1"
STRIDES = (1, 2)
CHECK_SAMPLES = 64  # test inputs the onnxruntime chain is compared with PyTorch on


@dataclass(frozen=True)
class BottleneckSettings:
    at: str
    channels: int
    stride: int = 1
    train: BottleneckTrainSettings = BottleneckTrainSettings()
    zstd_level: int = ZSTD_LEVEL
    force: bool = False
    threads: int | None = None
    latency_repeat: int = 20

    def check(self) -> None:
        """Every setting in range (a usage error naming the flag otherwise); compressai when it is needed."""
        check_threads(self.threads)
        if self.channels < 1:
            raise UsageError(f"--channels must be at least 1 (got {self.channels})", "pass --channels 8, say")
        if self.stride not in STRIDES:
            raise UsageError(f"--stride must be 1 or 2 (got {self.stride})", "pass --stride 1 or 2")
        if self.train.epochs < 1:
            raise UsageError(
                f"--epochs must be at least 1 (got {self.train.epochs})", "pass --epochs 10, say"
            )
        if not self.train.rate_lambda >= 0:
            raise UsageError(
                f"--lambda must be >= 0 (got {self.train.rate_lambda})", "pass --lambda 0.01, say"
            )
        if not self.train.lr > 0:
            raise UsageError(f"--lr must be > 0 (got {self.train.lr})", "pass --lr 0.003, say")
        if not 1 <= self.zstd_level <= 22:
            raise UsageError(f"--zstd-level must be 1..22 (got {self.zstd_level})", "pass 3 (zstd's default)")
        if self.train.rate_lambda > 0:
            rate_model(1)  # compressai missing: the one-line error now, before any work


@dataclass(frozen=True)
class BottleneckResult:
    directory: Path
    document: BottleneckFile
    history: BottleneckTrainResult


def _cut(
    loaded: LoadedModel, at: str, channels: int, fine_tune: bool
) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """(point, stem, rest, cut shape): the traced model split at ``at``, checked to take a bottleneck."""
    module = loaded.torch_module("dnnsplit bottleneck (training)").eval()
    gm = trace(module)
    point = resolve_point(gm, at)
    stem, rest = split_at(gm, point)
    if fine_tune:  # the rest learns: a copy, so the original model stays the teacher
        rest = copy.deepcopy(rest)
    shape = feature_shape(stem, loaded.known_input_shape())
    if len(shape) != 4:
        raise UsageError(
            f"the tensor after '{point.name}' has shape {list(shape)}, not a feature map NxCxHxW",
            "cut after a convolution stage (e.g. layer1, layer2 of a resnet)",
        )
    if channels >= shape[1]:
        raise UsageError(
            f"--channels {channels} does not shrink the {shape[1]} channels after '{point.name}'",
            f"pass fewer than {shape[1]}",
        )
    return point, stem, rest, shape


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads for training set to ``threads`` (None: as they are), then restored.

    On a shared machine it matters: resnet18 at 32x32, one epoch on 2 cores under a load average of 15
    took 196 s with torch's 2 threads and 20 s with one (the threads wait on each other at every op).
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_bottleneck(
    loaded: LoadedModel,
    data: DataSplits,
    directory: str | Path,
    settings: BottleneckSettings,
    progress: ProgressFn | None = None,
) -> BottleneckResult:
    """Train, export, validate and measure a bottleneck of ``settings.channels`` at ``settings.at``."""
    settings.check()
    note = progress or no_progress
    directory = Path(directory)
    claim(directory, BOTTLENECK, settings.force)  # a directory it may not write: refused before training
    teacher = loaded.torch_module("dnnsplit bottleneck (training)").eval()
    input_shape = loaded.known_input_shape()
    with torch.no_grad():
        check_classes(data, int(teacher(torch.zeros((2, *input_shape[1:]))).shape[1]))
    point, stem, rest, cut_shape = _cut(loaded, settings.at, settings.channels, settings.train.fine_tune)
    note("exporting the original model", 0, 1, "")
    original = export_model(loaded)
    torch.manual_seed(settings.train.seed)
    model = BottleneckModel(
        stem,
        Encoder(cut_shape[1], settings.channels, settings.stride),
        Decoder(
            settings.channels, cut_shape[1], (cut_shape[2], cut_shape[3]) if settings.stride > 1 else None
        ),
        rest,
        CODE_STEP,
    )
    rate = rate_model(settings.channels) if settings.train.rate_lambda > 0 else None
    started = time.perf_counter()
    with _torch_threads(settings.threads):
        history = train_bottleneck(model, teacher, data, settings.train, rate, note)
    train_seconds = time.perf_counter() - started
    with staged(directory, BOTTLENECK, settings.force) as staging:
        note("exporting model.onnx, encoder.onnx, decoder.onnx", 0, 1, "")
        files = export_bottleneck(loaded, model, staging)
        _save_weights(model, rate, settings, original.sha256, point.name, staging / CHECKPOINT)
        note("validating in onnxruntime", 0, 1, "")
        check_inputs, _ = next(iter(data.loader("test", CHECK_SAMPLES)))
        chain = check_chain(files, model, check_inputs.numpy(), settings.threads)
        note("measuring bytes and accuracy on the test split", 0, 1, "")
        figures = _measure(files, teacher, data, settings)
        note("measuring latency", 0, 1, "")
        times = _times(files, input_shape, figures["first_code"], figures["bytes"], settings)
        code_shape = list(figures["first_code"].shape)
        document = BottleneckFile(
            model={"source": loaded.source, "name": loaded.name, "sha256": original.sha256},
            at=point.name,
            channels=settings.channels,
            stride=settings.stride,
            data=str(data.source),
            num_classes=data.num_classes,
            input_shape=list(input_shape),
            cut_shape=list(cut_shape),
            code=CodeSpec(CODE_NAME, code_shape, "int8", "zstd", settings.zstd_level, CODE_STEP, 0),
            bytes=CodeBytes(
                mean=figures["bytes"].mean,
                p95=figures["bytes"].p95,
                min=figures["bytes"].minimum,
                max=figures["bytes"].maximum,
                int8=int(np.prod(code_shape)),
                float32=int(np.prod(cut_shape)) * 4,
                samples=figures["bytes"].samples,
            ),
            accuracy=figures["accuracy"],
            times_ms=times,
            files={
                "model": files.model.name,
                "encoder": files.encoder.name,
                "decoder": files.decoder.name,
                "checkpoint": CHECKPOINT,
            },
            sha256={
                "model": file_sha256(files.model),
                "encoder": file_sha256(files.encoder),
                "decoder": file_sha256(files.decoder),
                "checkpoint": file_sha256(staging / CHECKPOINT),
            },
            training={
                **asdict(settings.train),
                "best_epoch": history.best_epoch,
                "best_val_agreement": history.best_val_agreement,
                "seconds": round(train_seconds, 2),
                "history": [asdict(h) for h in history.history],
            },
            validation={"split": "test", **asdict(chain), "passed": chain.passed},
        )
        (staging / FILE).write_text(dump_document(document.to_dict(), "yaml"), encoding="utf-8")
    # A failed check still leaves the finished output for a look; the exit code says it failed.
    result = BottleneckResult(directory, document, history)
    if not chain.passed:
        raise BottleneckValidationError(result, chain)
    return result


def _measure(
    files: Any, teacher: torch.nn.Module, data: DataSplits, settings: BottleneckSettings
) -> dict[str, Any]:
    """Over the test split, through onnxruntime and zstd: coded bytes per sample, accuracy, agreement."""
    encoder = ort_session(files.encoder, settings.threads)
    decoder = ort_session(files.decoder, settings.threads)
    codes: list[np.ndarray] = []
    same = correct = base_correct = seen = 0
    with torch.no_grad():
        for images, labels in data.loader("test", 64):
            code = encoder.run(None, {INPUT_NAME: images.numpy()})[0]
            predicted = decoder.run(None, {CODE_NAME: code})[0].argmax(1)
            base = teacher(images).argmax(1).numpy()
            y = labels.numpy()
            same += int((predicted == base).sum())
            correct += int((predicted == y).sum())
            base_correct += int((base == y).sum())
            seen += len(y)
            codes.extend(code[i : i + 1] for i in range(len(code)))
    coded = measure_coded(codes, settings.zstd_level)
    base_top1, top1 = base_correct / seen, correct / seen
    accuracy = BottleneckAccuracy(
        base_top1=base_top1,
        top1=top1,
        drop_points=round((base_top1 - top1) * 100, 4),
        agreement=same / seen,
        samples=seen,
    )
    return {"bytes": coded, "accuracy": accuracy, "first_code": codes[0]}


def _times(
    files: Any, input_shape: tuple[int, ...], code: np.ndarray, coded: Any, settings: BottleneckSettings
) -> BottleneckTimes:
    import tempfile

    from dnnsplit.profiling.sysinfo import cpu_model

    one = (1, *input_shape[1:])
    repeat = settings.latency_repeat
    encoder_ms = median_run_ms(files.encoder, one, settings.threads, repeat, warmup=3)
    decoder_ms = median_run_ms(
        files.decoder, tuple(code.shape), settings.threads, repeat, warmup=3, feed=code
    )
    with tempfile.TemporaryDirectory(prefix="dnnsplit-bottleneck-") as scratch:
        encoder_part, decoder_part = bottleneck_parts(files, Path(scratch))
        features = ort_session(encoder_part, settings.threads).get_inputs()[0].shape
        cut = tuple(int(v) if isinstance(v, int) else 1 for v in features)
        encoder_layers = median_run_ms(encoder_part, cut, settings.threads, repeat, warmup=3)
        decoder_layers = median_run_ms(
            decoder_part, tuple(code.shape), settings.threads, repeat, warmup=3, feed=code
        )
    return BottleneckTimes(
        encode=encoder_ms + coded.compress_ms,
        decode=coded.decompress_ms + decoder_ms,
        encoder_onnx=encoder_ms,
        decoder_onnx=decoder_ms,
        zstd_compress=coded.compress_ms,
        zstd_decompress=coded.decompress_ms,
        threads=settings.threads,
        cpu=cpu_model(),
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
    )


def _save_weights(
    model: BottleneckModel,
    rate: torch.nn.Module | None,
    settings: BottleneckSettings,
    model_sha256: str,
    at: str,
    path: Path,
) -> None:
    """The trained weights (encoder, decoder, the rate model, the rest when fine-tuned) as safetensors."""
    from safetensors.torch import save_file

    parts: dict[str, torch.nn.Module] = {"encoder": model.encoder, "decoder": model.decoder}
    if rate is not None:
        parts["rate"] = rate
    if settings.train.fine_tune:
        parts["rest"] = model.rest
    tensors = {
        f"{prefix}.{name}": t.detach().contiguous().clone()
        for prefix, part in parts.items()
        for name, t in part.state_dict().items()
    }
    metadata = {
        "schema": WEIGHTS_SCHEMA,
        "model_sha256": model_sha256,
        "at": at,
        "channels": str(settings.channels),
        "stride": str(settings.stride),
        "step": repr(model.step),
    }
    save_file(tensors, str(path), metadata=metadata)


class BottleneckValidationError(BudgetError):
    """onnxruntime's encoder -> decoder chain disagrees with PyTorch: exit code 1."""

    def __init__(self, result: BottleneckResult, chain: ChainCheck) -> None:
        super().__init__(
            f"onnxruntime's encoder -> decoder chain differs from PyTorch ({chain.top1_mismatches} answers, "
            f"{chain.code_elements_differing} code elements, logits within {chain.max_logit_diff:.2g} of "
            f"{chain.tolerance:g}) on {chain.samples} test inputs",
            f"see {result.directory / FILE}",
        )
        self.result = result
