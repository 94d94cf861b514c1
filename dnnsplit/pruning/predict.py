"""The profile a pruned model would have, predicted from a measured profile: the unpruned model's, or
(re-anchored, see ``search``) that of a less pruned model measured on the way.

Conv rows: the measured time times the latency table's ratio (pruned shape / measured shape), so what
the runtime does with odd channel counts is in the figure. Other rows (pooling, adds, activations that
onnxruntime did not fuse, the classifier) scale with the channels of the tensor they read, and every
output tensor shrinks with its channels: the bytes a plan sends between tiers shrink too.
"""

from __future__ import annotations

from dataclasses import replace

from dnnsplit.profiling.graph import TensorSpec
from dnnsplit.profiling.profile import LayerProfile, Profile
from dnnsplit.pruning.latency_table import ConvShape, LatencyTable
from dnnsplit.pruning.measure import Measured

_CONV_OPS = ("Conv", "FusedConv")


class Predictor:
    """Predicts from ``profile``, measured with the convs at ``full_shapes``; ``whole_ms``: the whole
    model's measured time the host-time prediction scales (default: the profile's own whole-model time)."""

    def __init__(
        self,
        profile: Profile,
        full_shapes: dict[str, ConvShape],
        table: LatencyTable,
        whole_ms: float | None = None,
    ) -> None:
        self.profile = profile
        self.full = full_shapes
        self.table = table
        self.whole_ms = profile.latency_ms if whole_ms is None else whole_ms
        self.base_sum = max(profile.layer_sum_ms, 1e-9)

    def rebased(self, measured: Measured, shapes: dict[str, ConvShape]) -> Predictor:
        """The same table, anchored on ``measured`` (a model with the convs at ``shapes``)."""
        return Predictor(measured.profile, shapes, self.table, measured.latency_ms)

    def host_ms(self, shapes: dict[str, ConvShape]) -> float:
        """The whole model's predicted time on the measuring host."""
        return self.predict(shapes).latency_ms

    def conv_ratio(self, name: str, shape: ConvShape) -> float:
        full = self.full[name]
        if shape == full:
            return 1.0
        full_ms = self.table.conv_ms(full)
        if full_ms <= 0:  # a conv too small to time apart from the run's overhead: assume it scales with MACs
            return (shape.in_channels * shape.out_channels / shape.groups) / (
                full.in_channels * full.out_channels / full.groups
            )
        return self.table.conv_ms(shape) / full_ms

    def predict(self, shapes: dict[str, ConvShape]) -> Profile:
        """``profile`` as it would read with the convs at ``shapes`` (module path -> shape)."""
        fraction: dict[str, float] = {self.profile.input.name: 1.0}
        rows: list[LayerProfile] = []
        for row in self.profile.layers:
            read = [fraction.get(name, 1.0) for name in row.inputs] or [1.0]
            if row.op in _CONV_OPS and row.module in shapes:
                shape, full = shapes[row.module], self.full[row.module]
                time = row.latency_ms * self.conv_ratio(row.module, shape)
                out = shape.out_channels / full.out_channels
                macs = (
                    row.macs
                    * (shape.in_channels * shape.out_channels / shape.groups)
                    / (full.in_channels * full.out_channels / full.groups)
                )
            elif row.op in ("Gemm", "MatMul"):
                # The classifier keeps its outputs; its inputs shrink with the last features.
                time, out, macs = row.latency_ms * read[0], 1.0, row.macs * read[0]
            else:
                time, out, macs = row.latency_ms * max(read), max(read), row.macs * max(read)
            outputs = [_shrunk(t, out) for t in row.outputs]
            for t in outputs:
                fraction[t.name] = out
            rows.append(
                replace(
                    row,
                    latency_ms=time,
                    latency_p90_ms=row.latency_p90_ms * (time / row.latency_ms if row.latency_ms else 1.0),
                    macs=int(round(macs)),
                    outputs=outputs,
                )
            )
        scale = sum(r.latency_ms for r in rows) / self.base_sum
        return replace(
            self.profile,
            layers=rows,
            latency_ms=self.whole_ms * scale,
            latency_p90_ms=self.profile.latency_p90_ms * scale,
        )


def _shrunk(t: TensorSpec, fraction: float) -> TensorSpec:
    if fraction == 1.0 or len(t.shape) < 2:
        return t
    shape = list(t.shape)
    shape[1] = max(1, int(round(shape[1] * fraction)))
    return TensorSpec(t.name, tuple(shape), t.dtype)
