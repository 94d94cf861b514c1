"""A trained bottleneck (``dnnsplit bottleneck``) as one more codec the planner weighs (plan --bottleneck).

The bottleneck model is the original with two layers inserted after the cut tensor ``T`` (the output of the
module the bottleneck was trained at): an *encoder* (``T`` -> the int8 ``code``) and a *decoder* (``code``
-> ``T'``, which every former consumer of ``T`` reads instead). The option's problem is the original's with
exactly these two layers and two tensors added, so the exact solver prices every cut of the bottleneck
model as it is: a cut crossing ``code`` sends its measured bytes (the encoder on the sending tier, the
decoder on the receiving one); any other cut runs both layers on one tier for nothing, which is why the
option never wins there (ties go to the plain codecs). Adding the option never makes the optimum worse:
the planner takes the best over every option.

Figures come from bottleneck.yaml (measured on the test split): ``bytes`` (the zstd-coded code, mean; with
``identity`` coding the raw int8 code) plus the safetensors message header the runtime wraps it in
(charged uncoded, an upper bound), the host times of the bottleneck's own layers and of zstd, scaled per
tier by the device's ``latency_scale`` like the profile's layers, and ``accuracy.drop_points`` against
``--max-accuracy-drop``. The encoder's weights are downloaded with the phone's segments like any layer's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.problem import LayerCost, Problem, Tensor

ENCODER_LAYER = "bottleneck/encoder"  # the layer names the option adds to the problem (and to plan.yaml)
DECODER_LAYER = "bottleneck/decoder"
DECODED_SUFFIX = "__decoded"  # T' is named after T
CODINGS = ("identity", "zstd")  # what bottleneck.yaml measured: the raw int8 code, and zstd of it


@dataclass(frozen=True)
class BottleneckCosts:
    """What the planner needs of a bottleneck (``BottleneckFile.costs`` gives it), times in host ms."""

    directory: str
    sha256: str  # of bottleneck.yaml: the plan records which bottleneck it priced
    at: str  # the module the bottleneck follows
    model_sha256: str | None
    model_source: str | None
    cut_bytes: int  # the float32 tensor at the cut, per sample
    code_name: str
    code_shape: tuple[int, ...]
    int8_bytes: int  # the raw code
    coded_mean: float  # zstd-coded code, per sample, over the test split
    coded_p95: float
    header_bytes: int  # the safetensors message around the code (what the runtime sends)
    encoder_ms: float | None  # the bottleneck's own layers on the host (not the stem / rest around them)
    decoder_ms: float | None  # None: not measured (older files); ``resolved`` derives them
    zstd_compress_ms: float
    zstd_decompress_ms: float
    encoder_weight_bytes: int
    decoder_weight_bytes: int
    accuracy_drop: float  # points of test top-1 lost against the original model
    agreement: float  # top-1 agreement with the original on the test split
    encoder_onnx_ms: float = 0.0  # encoder.onnx (stem + encoder) and decoder.onnx (decoder + rest)
    decoder_onnx_ms: float = 0.0
    time_source: str = "bottleneck.yaml times_ms.encoder_layers / decoder_layers"

    def bytes_with(self, lossless: str) -> tuple[float, float]:
        """(mean, p95) bytes of the code's message with ``lossless`` coding."""
        if lossless == "identity":
            size = float(self.int8_bytes + self.header_bytes)
            return size, size
        if lossless == "zstd":
            return self.coded_mean + self.header_bytes, self.coded_p95 + self.header_bytes
        raise UsageError(
            f"the bottleneck was measured raw and with zstd, not with '{lossless}'",
            "plan with --coding zstd or identity, or drop --bottleneck",
        )

    def to_dict(self, lossless: str) -> dict[str, Any]:
        mean, p95 = self.bytes_with(lossless)
        return {
            "directory": self.directory,
            "sha256": self.sha256,
            "at": self.at,
            "code": {"name": self.code_name, "shape": list(self.code_shape), "dtype": "int8"},
            "bytes": {"mean": mean, "p95": p95, "float32": self.cut_bytes, "int8": self.int8_bytes},
            "accuracy": {"drop_points": self.accuracy_drop, "agreement": self.agreement},
            "host_times_ms": {
                "encoder": self.encoder_ms,
                "decoder": self.decoder_ms,
                "zstd_compress": self.zstd_compress_ms if lossless == "zstd" else 0.0,
                "zstd_decompress": self.zstd_decompress_ms if lossless == "zstd" else 0.0,
                "source": self.time_source,
            },
        }


def cut_tensor(profile: Any, costs: BottleneckCosts) -> str:
    """The profile's tensor the bottleneck replaces: the output of the last layer of module ``at`` (its
    float32 size must be the cut's). A profile grouped so that no layer belongs to ``at`` is refused."""
    scope = [la for la in profile.layers if la.module == costs.at or la.module.startswith(costs.at + ".")]
    if not scope:
        raise UsageError(
            f"no layer of the profile belongs to module '{costs.at}', where the bottleneck in "
            f"{costs.directory} was trained",
            "profile the model with --group node (the default) or module",
        )
    fits = [t for t in scope[-1].outputs if t.bytes == costs.cut_bytes]
    if len(fits) != 1:
        raise UsageError(
            f"the last layer of module '{costs.at}' ({scope[-1].name}) makes no single tensor of the "
            f"bottleneck's cut ({costs.cut_bytes} bytes)",
            "plan with the profile of the model and input shape `dnnsplit bottleneck` used",
        )
    return fits[0].name


def resolved(costs: BottleneckCosts, profile: Any, tensor: str) -> BottleneckCosts:
    """``costs`` with the host times of the bottleneck's own layers: as measured, or (a file without them)
    encoder.onnx less the profile's stem (the layers up to ``tensor``), decoder.onnx less its rest, at
    least 0. The two were timed at other moments, so the difference is rough; the plan says which."""
    if costs.encoder_ms is not None and costs.decoder_ms is not None:
        return costs
    last = next(i for i, la in enumerate(profile.layers) if tensor in {t.name for t in la.outputs})
    stem = sum(la.latency_ms for la in profile.layers[: last + 1])
    rest = sum(la.latency_ms for la in profile.layers[last + 1 :])
    return replace(
        costs,
        encoder_ms=max(0.0, costs.encoder_onnx_ms - stem),
        decoder_ms=max(0.0, costs.decoder_onnx_ms - rest),
        time_source="bottleneck.yaml encoder.onnx / decoder.onnx less the profile's stem / rest",
    )


def check_bottleneck_model(costs: BottleneckCosts, profiled_sha256: str | None) -> None:
    if costs.model_sha256 and profiled_sha256 and costs.model_sha256 != profiled_sha256:
        raise UsageError(
            f"the bottleneck in {costs.directory} was trained on another model ({costs.model_source}) than "
            "the profile's",
            "profile the same checkpoint and input shape that `dnnsplit bottleneck` used",
        )


def with_bottleneck(
    problem: Problem, costs: BottleneckCosts, tensor: str, lossless: str, scales: tuple[float, ...]
) -> Problem:
    """``problem`` with the bottleneck inserted after ``tensor`` (see the module docstring); ``scales``:
    each tier's latency_scale, for the host times."""
    names = [x.name for x in problem.tensors]
    if tensor not in names:
        raise UsageError(f"the bottleneck's cut '{tensor}' is not a tensor of the plan", "re-profile")
    j = names.index(tensor)
    cut = problem.tensors[j]
    if cut.producer is None or j in problem.outputs:
        raise UsageError(
            f"the bottleneck's cut '{tensor}' is the model's input or output", "train it at an inner module"
        )
    p = cut.producer

    def shift(i: int) -> int:
        return i + 2 if i > p else i

    assert costs.encoder_ms is not None and costs.decoder_ms is not None, "resolve the times first"
    mean, _ = costs.bytes_with(lossless)
    coded = lossless == "zstd"
    codec_ms = tuple(
        (costs.zstd_compress_ms * scales[k] + costs.zstd_decompress_ms * scales[k + 1]) if coded else 0.0
        for k in range(len(scales) - 1)
    )
    encoder = LayerCost(
        ENCODER_LAYER, tuple(costs.encoder_ms * s for s in scales), costs.encoder_weight_bytes
    )
    decoder = LayerCost(
        DECODER_LAYER, tuple(costs.decoder_ms * s for s in scales), costs.decoder_weight_bytes
    )
    layers = (*problem.layers[: p + 1], encoder, decoder, *problem.layers[p + 1 :])
    tensors: list[Tensor] = []
    for k, x in enumerate(problem.tensors):
        moved = replace(
            x,
            producer=None if x.producer is None else shift(x.producer),
            consumers=tuple(shift(c) for c in x.consumers),
        )
        if k != j:
            tensors.append(moved)
            continue
        tensors.append(replace(moved, consumers=(p + 1,), codec_ms=()))  # T: the encoder reads it
        tensors.append(Tensor(costs.code_name, max(1, round(mean)), p + 1, (p + 2,), None, codec_ms))
        tensors.append(Tensor(tensor + DECODED_SUFFIX, cut.bytes, p + 2, moved.consumers, None, cut.codec_ms))
    outputs = tuple(o + 2 if o > j else o for o in problem.outputs)
    return replace(problem, layers=layers, tensors=tuple(tensors), outputs=outputs)


def crosses_code(problem: Problem, tiers: tuple[int, ...]) -> bool:
    """Whether an assignment (tier per layer) of a problem ``with_bottleneck`` sends the code on a link."""
    i, k = problem.index[ENCODER_LAYER], problem.index[DECODER_LAYER]
    return tiers[i] != tiers[k]
