"""Measure what every candidate boundary tensor costs under every codec, on real data.

For a prepared model and samples of its test split:

* bytes: each float32 tensor a layer makes and a later layer reads is sent, per sample, the way the runtime
  sends it (the lossy step, then one safetensors message, then the lossless coding) and the message's
  length recorded; mean and p95 over the samples;
* times: the host's wall time of encoding (lossy step + message + lossless coding) and decoding (the
  reverse), median over the samples; the planner scales them per tier (``latency_scale``);
* accuracy: the model run with the lossy step applied at every candidate boundary at once (``scope:
  all-boundaries``), against the float32 model: test top-1 change in points and top-1 agreement. One cut
  codes only the tensors crossing it, so this bounds the drop of any one cut from above in practice
  (errors of many codings add up) at the price of two extra model runs, not one per tensor;
* the input: each frame as the phone would send it, a JPEG of the model-input-sized image (Pillow,
  ``quality``), mean and p95 bytes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.codecs import pack, unpack
from dnnsplit.images import IMAGENET_MEAN, IMAGENET_STD
from dnnsplit.partition.boundary_costs import (
    LOSSLESS_CODINGS,
    LOSSY,
    BoundaryCodec,
    BoundaryCosts,
    InputCosts,
    TensorCosts,
)
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.runtime.wire import decode, encode
from dnnsplit.splitting.compress import (
    calibrate,
    code_initializers,
    decode_nodes,
    encode_nodes,
    session_with_outputs,
)

SCOPE = "all-boundaries"
DEFAULT_SAMPLES = 16
DEFAULT_ACCURACY_SAMPLES = 200
DEFAULT_JPEG_QUALITY = 90


@dataclass(frozen=True)
class MeasureSettings:
    samples: int = DEFAULT_SAMPLES  # for bytes and times
    accuracy_samples: int = DEFAULT_ACCURACY_SAMPLES
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    codecs: tuple[str, ...] = LOSSY
    codings: tuple[str, ...] = LOSSLESS_CODINGS
    threads: int | None = None


def candidate_tensors(graph: Any) -> list[Any]:
    """Float32 tensors one layer makes and a later one reads: where a cut can fall."""
    consumers = graph.consumers
    found = []
    for layer in graph.layers:
        for t in layer.outputs:
            if t.dtype == "float32" and consumers.get(t.name):
                found.append(t)
    return found


def _lossy(value: np.ndarray, codec: str, code: tuple[float, int] | None) -> np.ndarray:
    if codec == "fp16":
        return value.astype(np.float16)
    if codec == "int8":
        assert code is not None
        scale, zero = code
        return np.clip(np.round(value / scale) + zero, 0, 255).astype(np.uint8)
    return value


def _restore(sent: np.ndarray, codec: str, code: tuple[float, int] | None) -> np.ndarray:
    if codec == "fp16":
        return sent.astype(np.float32)
    if codec == "int8":
        assert code is not None
        scale, zero = code
        return (sent.astype(np.float32) - zero) * np.float32(scale)
    return sent


def _sent_bytes(
    name: str, values: Sequence[np.ndarray], codec: str, coding: str, code: tuple[float, int] | None
) -> tuple[list[int], float, float]:
    """Per-sample message bytes, mean encode ms, mean decode ms of ``name`` sent with (codec, coding)."""
    sizes, enc, dec = [], [], []
    for value in values:
        t0 = time.perf_counter()
        body = pack(encode({f"{name}__{codec}": _lossy(value, codec, code)}), coding)
        t1 = time.perf_counter()
        raw = unpack(body, coding, 1 << 40)
        _restore(next(iter(decode(raw)[0].values())), codec, code)
        t2 = time.perf_counter()
        sizes.append(len(body))
        enc.append((t1 - t0) * 1000)
        dec.append((t2 - t1) * 1000)
    return sizes, enc, dec


def coded_model(
    model_path: Path, names: Sequence[str], codec: str, codes: dict[str, tuple[float, int]]
) -> bytes:
    """The model with ``codec`` applied to every tensor in ``names`` (encode then decode, where it is made):
    what the rest of the model sees after the tensor crossed a cut with that codec."""
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    wanted = set(names)
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        renamed = []
        for i, out in enumerate(node.output):
            if out in wanted:
                node.output[i] = f"{out}__pre"
                renamed.append(out)
        graph.node.append(node)
        for name in renamed:  # right after its producer: the graph stays topologically sorted
            pre, sent = f"{name}__pre", f"{name}__{codec}"
            graph.node.extend(encode_nodes(pre, sent, codec))
            graph.node.extend(decode_nodes(sent, name, codec))
            graph.initializer.extend(code_initializers(pre, codec, {pre: codes[name]} if codes else None))
            graph.initializer.extend(code_initializers(name, codec, codes or None))
    return model.SerializeToString()


def _top1(session: Any, images: np.ndarray) -> np.ndarray:
    input_name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name
    return np.array([int(np.argmax(session.run([output], {input_name: x[None]})[0])) for x in images])


def frame_jpeg_bytes(images: np.ndarray, quality: int) -> list[int]:
    """Each normalised image as the frame it came from, JPEG-coded (Pillow) at ``quality``: its bytes."""
    from PIL import Image

    channels = images.shape[1]
    mean = np.array(IMAGENET_MEAN[:channels] if channels == 3 else IMAGENET_MEAN[:1], np.float32)
    std = np.array(IMAGENET_STD[:channels] if channels == 3 else IMAGENET_STD[:1], np.float32)
    sizes = []
    for x in images:
        pixels = np.clip((x * std[:, None, None] + mean[:, None, None]) * 255 + 0.5, 0, 255).astype(np.uint8)
        frame = Image.fromarray(pixels[0] if channels == 1 else pixels.transpose(1, 2, 0))
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell())
    return sizes


def _stats(values: Sequence[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.percentile(values, 95))


def measure_boundaries(
    prepared: Any,
    images: np.ndarray,
    labels: np.ndarray,
    settings: MeasureSettings,
    data_label: str,
    progress: ProgressFn = no_progress,
) -> BoundaryCosts:
    """The ``dnnsplit/boundaries@1`` costs of ``prepared``'s candidate boundaries on ``images`` (normalised,
    NxCxHxW) with their ``labels``: the first ``settings.samples`` for bytes and times, the first
    ``settings.accuracy_samples`` for accuracy and the input's JPEG."""
    from dnnsplit.onnxrt import ort_session
    from dnnsplit.profiling.sysinfo import host_info

    path = Path(prepared.exported.path)
    tensors = candidate_tensors(prepared.graph)
    names = [t.name for t in tensors]
    sample_images = images[: settings.samples]
    accuracy_images = images[: settings.accuracy_samples]
    accuracy_labels = labels[: settings.accuracy_samples]
    progress("calibrating int8", 0, 1)
    codes = calibrate(path, names, [x[None] for x in sample_images])
    session = session_with_outputs(path, names, settings.threads)
    input_name = session.get_inputs()[0].name
    pairs = [(c, ll) for c in settings.codecs for ll in settings.codings]
    sizes: dict[tuple[str, str, str], list[int]] = {}
    enc: dict[tuple[str, str, str], list[float]] = {}
    dec: dict[tuple[str, str, str], list[float]] = {}
    for i, x in enumerate(sample_images):
        progress("measuring bytes and times", i, len(sample_images))
        values = dict(zip(names, session.run(names, {input_name: x[None]}), strict=True))
        for name in names:
            for codec, coding in pairs:
                key = (name, codec, coding)
                got, e, d = _sent_bytes(name, [values[name]], codec, coding, codes.get(name))
                sizes.setdefault(key, []).extend(got)
                enc.setdefault(key, []).extend(e)
                dec.setdefault(key, []).extend(d)
    del session
    progress("measuring accuracy", 0, len(settings.codecs))
    base = _top1(ort_session(path, settings.threads), accuracy_images)
    base_top1 = float(np.mean(base == accuracy_labels) * 100)
    accuracy: dict[str, tuple[float, float]] = {"none": (0.0, 1.0)}
    for k, codec in enumerate(c for c in settings.codecs if c != "none"):
        progress("measuring accuracy", k + 1, len(settings.codecs))
        coded = ort_session(coded_model(path, names, codec, codes), settings.threads)
        got = _top1(coded, accuracy_images)
        top1 = float(np.mean(got == accuracy_labels) * 100)
        accuracy[codec] = (base_top1 - top1, float(np.mean(got == base)))
    jpeg = frame_jpeg_bytes(accuracy_images, settings.jpeg_quality)
    table = {}
    for t in tensors:
        options = []
        for codec, coding in pairs:
            key = (t.name, codec, coding)
            mean, p95 = _stats(sizes[key])
            drop, agreement = accuracy[codec]
            # times: the median, as a scheduler's hiccup on a shared host is not the codec's cost
            encode_ms, decode_ms = float(np.median(enc[key])), float(np.median(dec[key]))
            options.append(BoundaryCodec(codec, coding, mean, p95, encode_ms, decode_ms, drop, agreement))
        table[t.name] = TensorCosts(t.name, t.bytes, tuple(options))
    jpeg_mean, jpeg_p95 = _stats(jpeg)
    model_input = prepared.graph.inputs[0]
    return BoundaryCosts(
        model=prepared.model_block(),
        host=host_info("onnxruntime", settings.threads or 0),
        samples={
            "data": data_label,
            "split": "test",
            "bytes_and_times": len(sample_images),
            "accuracy": len(accuracy_images),
        },
        base_top1=base_top1,
        accuracy_scope=SCOPE,
        tensors=table,
        input=InputCosts(model_input.bytes, jpeg_mean, jpeg_p95, settings.jpeg_quality, len(jpeg)),
    )


def split_images(data: str, input_shape: Sequence[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images of ``data``'s test split (digits or imagefolder:PATH), normalised, and
    their labels: the same split `dnnsplit eval` tests on."""
    from dnnsplit.training.data import load_data

    splits = load_data(data, input_shape, seed=0, augment=False)
    images, labels = [], []
    for x, y in splits.test:  # type: ignore[attr-defined]
        images.append(np.asarray(x, dtype=np.float32))
        labels.append(int(y))
        if len(images) >= count:
            break
    return np.stack(images), np.array(labels)
