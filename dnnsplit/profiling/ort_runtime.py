"""Per-layer latency in onnxruntime from its own per-node profiler.

onnxruntime optimises the graph before running it: it folds, fuses (Conv+Relu, Conv+Add+Relu, ...) and
on x86 rewrites convolutions to the NCHWc layout, renaming nodes and tensors. The profiler reports the
optimised nodes, so each one is mapped back to the original layers it covers, and its time is shared
among them (see ``measure.share``). Layers that onnxruntime removed entirely get zero time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.profiling.graph import Layer, LayerGraph
from dnnsplit.profiling.measure import Measurement, share
from dnnsplit.progress import ProgressFn, no_progress

# Optimised op types that stand for an original op type.
_FUSED_OP = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "QuickGelu": "Sigmoid"}


def _session(
    path: Path, threads: int, profile_dir: str | None, optimized_path: str | None, stop_spinning: bool = False
) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if stop_spinning:
        # Two sessions taking turns: threads still spinning after one's run would take cores from the other's
        # (dnnsplit/onnxrt.py's sessions stop spinning at the end of a run for the same reason).
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(profile_dir, "ort")
    if optimized_path is not None:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def random_feed(session: Any, input_shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = session.get_inputs()[0]
    return {first.name: rng.standard_normal(input_shape).astype(np.float32)}


def measure_onnxruntime(
    graph: LayerGraph,
    path: Path,
    input_shape: tuple[int, ...],
    *,
    threads: int,
    warmup: int,
    repeat: int,
    progress: ProgressFn = no_progress,
    interleaved: bool = False,
) -> Measurement:
    """Whole-model runs without the profiler, then as many with it; ``interleaved``: one of each in turn,
    both sessions open, so that a change in the machine's load hits the whole model and the layers alike."""
    if interleaved:
        return _measure_interleaved(graph, path, input_shape, threads, warmup, repeat, progress)
    total_runs = 2 * (warmup + repeat)
    done = 0
    # Whole-model latency, as a user's session runs it: no profiler attached.
    session = _session(path, threads, None, None)
    feed = random_feed(session, input_shape)
    whole = []
    for i in range(warmup + repeat):
        ms = _timed_run_ms(session, feed)
        if i >= warmup:
            whole.append(ms)
        done += 1
        progress("measuring the whole model", done, total_runs)
    del session
    with tempfile.TemporaryDirectory(prefix="dnnsplit-ort-") as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        session = _session(path, threads, tmp, optimized)
        for _ in range(warmup + repeat):
            session.run(None, feed)
            done += 1
            progress("measuring per layer", done, total_runs)
        return _from_profiled_session(graph, session, optimized, warmup, whole)


def _measure_interleaved(
    graph: LayerGraph,
    path: Path,
    input_shape: tuple[int, ...],
    threads: int,
    warmup: int,
    repeat: int,
    progress: ProgressFn,
) -> Measurement:
    total_runs = 2 * (warmup + repeat)
    with tempfile.TemporaryDirectory(prefix="dnnsplit-ort-") as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        plain = _session(path, threads, None, None, stop_spinning=True)
        profiled = _session(path, threads, tmp, optimized, stop_spinning=True)
        feed = random_feed(plain, input_shape)
        whole = []
        for i in range(warmup + repeat):
            ms = _timed_run_ms(plain, feed)
            if i >= warmup:
                whole.append(ms)
            profiled.run(None, feed)
            progress("measuring whole model and per layer, in turns", 2 * (i + 1), total_runs)
        del plain
        return _from_profiled_session(graph, profiled, optimized, warmup, whole)


def _timed_run_ms(session: Any, feed: dict[str, Any]) -> float:
    start = time.perf_counter()
    session.run(None, feed)
    return (time.perf_counter() - start) * 1000.0


def _from_profiled_session(
    graph: LayerGraph, session: Any, optimized: str, warmup: int, whole: list[float]
) -> Measurement:
    """End the profiled session's trace and read it against the optimised graph it ran."""
    import onnx

    trace_file = session.end_profiling()
    with open(trace_file, encoding="utf-8") as fh:
        events = json.load(fh)
    opt_nodes = _optimized_nodes(onnx.load(optimized, load_external_data=False))
    return measurement_from_trace(graph, events, opt_nodes, warmup, whole)


OptNode = tuple[str, str, list[str], list[str]]  # an optimised node: name, op type, inputs, outputs


def measurement_from_trace(
    graph: LayerGraph,
    events: list[dict[str, Any]],
    opt_nodes: list[OptNode],
    warmup: int,
    whole: list[float],
) -> Measurement:
    """Per-layer times from an onnxruntime profiler trace (native or onnxruntime-web: the same Chrome-trace
    events), the optimised nodes it names, and the unprofiled whole-model runs it is scaled to."""
    per_run, profiled_run_ms = _kernel_times_per_run(events, warmup)
    mapping, notes = map_optimized_nodes(graph, opt_nodes)
    # The profiler itself slows each run (it records every kernel); scale per-layer times back to the
    # unprofiled run so they add up to what a user's session costs.
    slowdown = float(np.median(profiled_run_ms) / np.median(whole)) if whole and profiled_run_ms else 1.0
    if abs(slowdown - 1.0) > 0.02:
        notes.append(f"onnxruntime's profiler slowed runs x{slowdown:.2f}; per-layer times are scaled back")
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    layer_ms = np.zeros((len(per_run), len(graph.layers)))
    unmapped_us = 0.0
    for r, kernels in enumerate(per_run):
        for opt_name, micros in kernels.items():
            targets = mapping.get(opt_name)
            if not targets:
                unmapped_us += micros
                continue
            for layer_name, fraction in targets:
                layer_ms[r, index[layer_name]] += micros * fraction / 1000.0 / slowdown
    if unmapped_us:
        notes.append(f"{unmapped_us / 1000.0 / max(len(per_run), 1):.3f} ms/run of kernels matched no layer")
    return Measurement(layer_ms=layer_ms, whole_ms=np.array(whole), notes=notes)


def nodes_from_trace(events: list[dict[str, Any]]) -> list[OptNode]:
    """The optimised nodes a trace names, in first-run order, when the optimised model itself is not at
    hand (onnxruntime-web keeps it inside the browser): names and op types, no tensor names, so each
    node is mapped back through its name (onnxruntime names a fused node after the node it absorbed the
    others into)."""
    seen: dict[str, str] = {}
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            seen.setdefault(name, str((e.get("args") or {}).get("op_name", "")))
    # Nodes onnxruntime-web made up (``HardSigmoid_122`` from a decomposed HardSwish) match no layer by
    # name; chained in execution order, each is charged to its nearest named neighbour, as native helper
    # kernels are through their tensors.
    names = list(seen)
    return [
        (name, seen[name], [f"trace:{names[i - 1]}"] if i else [], [f"trace:{name}"])
        for i, name in enumerate(names)
    ]


def _kernel_times_per_run(
    events: list[dict[str, Any]], warmup: int
) -> tuple[list[dict[str, float]], list[float]]:
    """Per measured run: each optimised node's timeline span in microseconds, and the run's duration.

    A node's span is its kernel time plus the executor's gap before it (input setup, allocation, and,
    on a busy machine, the time its thread waited to be scheduled): in sequential execution that gap
    is part of what running that node costs. Spans start at the run's start and the last one runs to the
    run's end, so they cover the whole run; time is lost only where a kernel maps to no layer.
    """
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    runs = runs[warmup:]
    starts = np.array([r["ts"] for r in runs])
    ends = np.array([r["ts"] + r["dur"] for r in runs])
    kernels = sorted(
        (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
        key=lambda e: e["ts"],
    )
    per_run: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    last_end = [float(s) for s in starts]
    last_node: list[str | None] = [None] * len(runs)
    for e in kernels:
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if 0 <= i < len(runs) and e["ts"] <= ends[i]:
            end = float(e["ts"] + e["dur"])
            span = end - last_end[i] if end > last_end[i] else 0.0  # an overlapped kernel adds no wall time
            if end >= last_end[i]:
                last_node[i] = e["name"][: -len("_kernel_time")]
            last_end[i] = max(last_end[i], end)
            per_run[i][e["name"][: -len("_kernel_time")]] += span
    for i, node in enumerate(last_node):
        # The run's tail (handing the outputs back) follows the last kernel: it is that kernel's cost to the
        # caller. On a sub-millisecond model it is ~10% of the run (onnxruntime-web copies the outputs out
        # of the wasm heap here), and leaving it out put the layers' sum at 0.85x the whole model.
        if node is not None and ends[i] > last_end[i]:
            per_run[i][node] += float(ends[i]) - last_end[i]
    return [dict(r) for r in per_run], [float(r["dur"]) / 1000.0 for r in runs]


def _optimized_nodes(model: Any) -> list[OptNode]:
    return [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def map_optimized_nodes(
    graph: LayerGraph, opt_nodes: list[tuple[str, str, list[str], list[str]]]
) -> tuple[dict[str, list[tuple[str, float]]], list[str]]:
    """Map each optimised node to the original layers it covers, with the share of its time each gets."""
    layers = graph.by_name
    producer = graph.producer

    def anchor_by_name(name: str) -> str | None:
        """``/relu/Relu_output_0_nchwc`` -> the layer named so, or producing the tensor named so."""
        candidate = name
        while candidate:
            if candidate in layers:
                return candidate
            if candidate in producer:
                return producer[candidate]
            head, sep, _ = candidate.rpartition("_")
            if not sep:
                break
            candidate = head
        return None

    by_name: dict[str, str] = {}
    anchors: dict[str, str] = {}
    for name, _op, _ins, outs in opt_nodes:
        found = anchor_by_name(name)
        if found is not None:
            by_name[name] = anchors[name] = found
        else:
            found = next((producer[o] for o in outs if o in producer), None)
            if found is not None:
                anchors[name] = found
    _anchor_through_neighbours(opt_nodes, anchors)

    def fusable(src: str, dst: str) -> bool:
        """``src`` feeds only ``dst``: the edge onnxruntime may fuse across."""
        return graph.successors(layers[src]) == [dst] and not any(
            t.name in {o.name for o in graph.outputs} for t in layers[src].outputs
        )

    owner: dict[str, str] = {}  # original layer -> the optimised node whose time it shares
    claimed: set[str] = set()

    def claim(rank: dict[str, str]) -> None:
        for name, op, _ins, _outs in opt_nodes:
            anchor = rank.get(name)
            if anchor is None or name in claimed or anchor in owner:
                continue
            claimed.add(name)
            for layer_name in _find_main(graph, anchor, _FUSED_OP.get(op, op), fusable):
                owner.setdefault(layer_name, name)

    # Kernels named after a layer claim it (and the layers fused with it) first.
    claim(by_name)
    # Layers with no kernel of their own were fused into a neighbour: an element-wise tail joins its
    # producer's kernel (Conv+Add+Relu), otherwise a layer joins the kernel it alone feeds (Conv->Relu).
    order = [la.name for la in graph.layers]
    for _ in range(2):
        for lname in order:
            if lname in owner:
                continue
            preds = graph.predecessors(layers[lname])
            for p in preds:
                if p in owner and fusable(p, lname):
                    owner[lname] = owner[p]
                    break
        for lname in reversed(order):
            if lname in owner:
                continue
            succs = graph.successors(layers[lname])
            if len(succs) == 1 and succs[0] in owner and fusable(lname, succs[0]):
                owner[lname] = owner[succs[0]]
    # A kernel found only through its outputs or neighbours (a layout reorder) claims a layer that no
    # named kernel covers; otherwise it is a helper charged to the group that owns its layer.
    claim(anchors)
    for lname in order:
        placed = [p for p in graph.predecessors(layers[lname]) if p in owner]
        if lname not in owner and placed:
            owner[lname] = owner[placed[0]]
    covered: dict[str, list[Layer]] = defaultdict(list)
    for lname in order:
        if lname in owner:
            covered[owner[lname]].append(layers[lname])
    mapping: dict[str, list[tuple[str, float]]] = {}
    for name, _op, _ins, _outs in opt_nodes:
        if name in covered and name in claimed:
            group = covered[name]
            mapping[name] = [(la.name, f) for la, f in zip(group, share(1.0, group), strict=True)]
        elif name in anchors:
            # A helper kernel (layout reorder, copy) of a layer that has its own kernel: add to that layer.
            anchored = anchors[name]
            host = owner.get(anchored)
            group = covered.get(host, [layers[anchored]]) if host else [layers[anchored]]
            mapping[name] = [(la.name, f) for la, f in zip(group, share(1.0, group), strict=True)]
    notes = []
    orphans = [n for n, *_ in opt_nodes if n not in mapping]
    if orphans:
        notes.append(f"{len(orphans)} optimised node(s) could not be mapped, e.g. {orphans[0]}")
    return mapping, notes


def _anchor_through_neighbours(
    opt_nodes: list[tuple[str, str, list[str], list[str]]], anchors: dict[str, str]
) -> None:
    """Nodes onnxruntime added (layout reorders) take the anchor of the nearest anchored neighbour."""
    producer = {o: n for n, _op, _ins, outs in opt_nodes for o in outs}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n, _op, ins, _outs in opt_nodes:
        for i in ins:
            consumers[i].append(n)
    by_name = {n: (ins, outs) for n, _op, ins, outs in opt_nodes}
    for name, _op, _ins, _outs in opt_nodes:
        if name in anchors:
            continue
        queue: deque[str] = deque([name])
        seen = {name}
        while queue:
            current = queue.popleft()
            if current in anchors:
                anchors[name] = anchors[current]
                break
            ins, outs = by_name[current]
            neighbours = [c for o in outs for c in consumers.get(o, [])] + [
                producer[i] for i in ins if i in producer
            ]
            for nb in neighbours:
                if nb not in seen:
                    seen.add(nb)
                    queue.append(nb)


def _find_main(graph: LayerGraph, anchor: str, op: str, fusable: Any) -> list[str]:
    """The original layers a fused kernel named after ``anchor`` covers: from a layer of type ``op``
    (searched upstream, then downstream, along fusable edges) to the anchor."""
    layers = graph.by_name
    if layers[anchor].op == op:
        return [anchor]
    path = [anchor]
    current = anchor
    for _ in range(6):
        preds = graph.predecessors(layers[current])
        step = next((p for p in preds if fusable(p, current)), None)
        if step is None:
            break
        path.append(step)
        if layers[step].op == op:
            return list(reversed(path))
        current = step
    path = [anchor]
    current = anchor
    for _ in range(6):
        succs = graph.successors(layers[current])
        if len(succs) != 1 or not fusable(current, succs[0]):
            break
        current = succs[0]
        path.append(current)
        if layers[current].op == op:
            return path
    return [anchor]
