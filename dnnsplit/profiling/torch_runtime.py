"""Per-layer latency in eager PyTorch, per module call, mapped onto the ONNX layers of the same scope.

Forward hooks time every module call; a module's *exclusive* time (its own ops, without its children)
goes to the ONNX layers exported under that call's scope (``layer1.0`` gets the residual Add,
``layer1.0.relu_1`` the second call of a reused ReLU), so the per-layer sum covers functional ops too.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from dnnsplit.profiling.graph import Layer, LayerGraph
from dnnsplit.profiling.measure import Measurement, share
from dnnsplit.progress import ProgressFn, no_progress


class _CallTimer:
    """Hooks recording each module call's exclusive time under its exporter-style scope name."""

    def __init__(self, model: nn.Module, overhead_s: float = 0.0) -> None:
        self.overhead_s = overhead_s
        self.paths = {id(m): path for path, m in model.named_modules()}
        self.stack: list[list[object]] = []  # [scope, start, children_time]
        self.calls: dict[int, int] = defaultdict(int)
        self.exclusive: dict[str, float] = defaultdict(float)
        self.handles = []
        for m in model.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    def _pre(self, module: nn.Module, _args: object) -> None:
        path = self.paths.get(id(module), "")
        k = self.calls[id(module)]
        self.calls[id(module)] += 1
        scope = f"{path}_{k}" if k and path else path
        self.stack.append([scope, time.perf_counter(), 0.0])

    def _post(self, _module: nn.Module, _args: object, _out: object) -> None:
        scope, start, children = self.stack.pop()
        inclusive = time.perf_counter() - float(start)  # type: ignore[arg-type]
        self.exclusive[str(scope)] += inclusive - float(children)  # type: ignore[arg-type]
        if self.stack:
            # The parent also paid for running this call's hooks: count that as the child's, not its own.
            self.stack[-1][2] = float(self.stack[-1][2]) + inclusive + self.overhead_s  # type: ignore[arg-type]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def hook_overhead_seconds(calls: int = 2000) -> float:
    """What one hooked module call costs beyond an unhooked one (timed on a trivial module)."""
    probe = nn.Sequential(*[nn.Identity() for _ in range(20)])
    x = torch.zeros(1)

    def timed() -> float:
        best = float("inf")
        for _ in range(5):  # best of 5 rounds: the overhead is a floor, not an average of noise
            start = time.perf_counter()
            for _ in range(calls // 20):
                probe(x)
            best = min(best, time.perf_counter() - start)
        return best

    plain = timed()
    timer = _CallTimer(probe)
    try:
        hooked = timed()
    finally:
        timer.remove()
    return max(0.0, (hooked - plain) / (calls + calls // 20))


def _scope_index(graph: LayerGraph) -> dict[str, list[Layer]]:
    table: dict[str, list[Layer]] = defaultdict(list)
    for layer in graph.layers:
        table[layer.scope].append(layer)
    return table


def _distribute(
    exclusive: dict[str, float], scopes: dict[str, list[Layer]], index: dict[str, int], row: np.ndarray
):
    for scope, seconds in exclusive.items():
        target = scope
        # Scopes with no ONNX layer (Dropout, Identity, a wrapper's own glue) fall to the nearest parent.
        while target not in scopes and target:
            target = target.rpartition(".")[0]
        group = scopes.get(target)
        if not group:
            group = scopes.get("") or []
        if not group:
            continue
        for layer, part in zip(group, share(seconds * 1000.0, group), strict=True):
            row[index[layer.name]] += part


def measure_torch(
    graph: LayerGraph,
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    threads: int,
    warmup: int,
    repeat: int,
    progress: ProgressFn = no_progress,
) -> Measurement:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=generator)
    total_runs = 2 * (warmup + repeat)
    done = 0
    whole = []
    scopes = _scope_index(graph)
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    layer_ms = np.zeros((repeat, len(graph.layers)))
    overhead = hook_overhead_seconds()
    try:
        with torch.inference_mode():
            # Plain and instrumented runs alternate so that drifts in machine load hit both alike.
            for i in range(warmup + repeat):
                start = time.perf_counter()
                model(x)
                elapsed = (time.perf_counter() - start) * 1000.0
                timer = _CallTimer(model, overhead)
                try:
                    model(x)
                finally:
                    timer.remove()
                if i >= warmup:
                    whole.append(elapsed)
                    _distribute(timer.exclusive, scopes, index, layer_ms[i - warmup])
                done += 2
                progress("measuring per module", done, total_runs)
    finally:
        torch.set_num_threads(previous)
    return Measurement(layer_ms=layer_ms, whole_ms=np.array(whole), notes=[])
