"""``dnnsplit bench``: measured end-to-end latency of a split against the planner's prediction.

For every network and configuration (``plan``: the split as it is; ``all-local``: every segment on the
client; ``all-edge``: every segment on the edge, the raw input sent up), the bench starts the servers it
needs on loopback ports in this process, sends ``requests`` requests through an ``EmulatedLink`` and records
p50/p95 and the stages.

What the measurement is compared with, so the two describe the same thing:

* the **prediction** is the planner's cost model (``evaluate``) on the plan's own layers, with the phone's
  link replaced by the bench's network (the edge-cloud link stays the plan's, and the servers emulate it);
* compute: the plan's layer times are the host profile times the tier device's ``latency_scale``. This
  machine is the host, so a slower device (scale > 1, the phone) is emulated by stretching its segments'
  compute by that factor (``SegmentChain.slowdown``), and the prediction keeps the plan's times. A faster
  device (the edge preset's 0.4, the cloud's 0.1) cannot be emulated here: its prediction uses the host
  time (scale 1) and a note says so. ``emulate_devices=False`` runs everything at host speed and predicts
  with host times (plan times / scale);
* **calibrated**: the same link model with this run's measured compute (p50 per tier) in place of the
  profile's: what is left between it and the measurement is the runtime and the link emulation;
* **overhead**: per request, end-to-end minus measured compute minus the link model's transfer time for the
  bytes actually sent, divided by the hops: what serving adds (HTTP, safetensors, threads).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.evaluate import Prediction, evaluate
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.plan_file import PlanFile, load_plan
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.runtime import route
from dnnsplit.runtime.client import CollaborativeClient, InferResult
from dnnsplit.runtime.server import BackgroundServer, ServeSettings, TierService
from dnnsplit.runtime.wire import message_bytes
from dnnsplit.splitting.manifest import Manifest

CONFIGS = ("plan", "all-local", "all-edge")


@dataclass(frozen=True)
class BenchSettings:
    networks: tuple[LinkSpec, ...]
    requests: int = 50
    warmup: int = 3
    budget_s: float = 60.0  # per network and configuration: stop after this, once min_requests ran
    min_requests: int = 3
    configs: tuple[str, ...] = CONFIGS
    emulate_devices: bool = True
    threads: int | None = None  # onnxruntime threads per segment (default: the profile's)
    plan: str | None = None  # the plan to predict from (default: the one the manifest names)
    seed: int = 0

    def check(self) -> None:
        if not self.networks:
            raise UsageError("no network to bench", "pass --networks cat1,3g,4g,wifi")
        if self.requests < 1 or self.warmup < 0:
            raise UsageError("--requests must be >= 1 and --warmup >= 0", "pass --requests 50")
        if not self.budget_s > 0:
            raise UsageError(f"--budget-s must be > 0 (got {self.budget_s})", "pass 60, say")
        unknown = [c for c in self.configs if c not in CONFIGS]
        if unknown or not self.configs:
            raise UsageError(
                f"unknown configuration '{unknown[0] if unknown else ''}'", f"use {', '.join(CONFIGS)}"
            )


@dataclass
class BenchRow:
    network: str
    config: str
    requests: int
    p50_ms: float
    p95_ms: float
    stages_p50: dict[str, float]
    compute_p50_ms: dict[str, float]  # per tier
    overhead_per_hop_ms: float | None  # p50; None when nothing crossed a link
    hops: int
    predicted_ms: float | None = None
    predicted: dict[str, Any] | None = None  # the prediction's breakdown
    calibrated_ms: float | None = None
    fallbacks: int = 0

    @property
    def error(self) -> float | None:
        return None if self.predicted_ms is None else self.p50_ms / self.predicted_ms - 1

    @property
    def calibrated_error(self) -> float | None:
        return None if self.calibrated_ms is None else self.p50_ms / self.calibrated_ms - 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["error"] = self.error
        data["calibrated_error"] = self.calibrated_error
        return data


@dataclass
class BenchResult:
    directory: str
    model: dict[str, Any]
    plan: str | None
    tiers: tuple[str, ...]
    devices: dict[str, dict[str, Any]]  # per tier: plan scale, emulated scale, prediction basis
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "model": self.model,
            "plan": self.plan,
            "tiers": list(self.tiers),
            "devices": self.devices,
            "rows": [r.to_dict() for r in self.rows],
            "notes": self.notes,
        }


class Predictor:
    """The planner's prediction for one configuration on one network, on the compute this bench runs."""

    def __init__(self, plan: PlanFile, emulate: bool) -> None:
        self.plan = plan
        problem = plan.problem
        devices = plan.document.get("devices", {})
        self.devices: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        factors = []
        for tier in problem.tiers:
            block = devices.get(tier, {})
            scale = float(block.get("latency_scale", 1.0))
            measured = str(block.get("compute", "")).startswith("measured")
            if measured:
                run_scale, factor = 1.0, 1.0
                self.notes.append(f"{tier}: times measured on its own device, predicted as they are")
            elif emulate:
                run_scale = max(scale, 1.0)
                factor = run_scale / scale
                if scale < 1:
                    self.notes.append(
                        f"{tier}: the plan assumes {scale:g}x the host; this machine cannot run faster than "
                        "itself, so it runs and is predicted at 1x"
                    )
            else:
                run_scale, factor = 1.0, 1.0 / scale
            self.devices[tier] = {
                "device": block.get("name"),
                "plan_scale": scale,
                "run_scale": run_scale,
                "predicted_with": f"host profile x {run_scale:g}" if not measured else "its measured times",
            }
            factors.append(factor)
        self.problem = dataclasses.replace(
            problem,
            layers=tuple(
                dataclasses.replace(
                    la, compute_ms=tuple(ms * f for ms, f in zip(la.compute_ms, factors, strict=True))
                )
                for la in problem.layers
            ),
        )

    def run_scale(self, tier: str) -> float:
        return float(self.devices.get(tier, {}).get("run_scale", 1.0))

    def predict(self, config: str, network: LinkSpec) -> Prediction:
        problem = dataclasses.replace(self.problem, links=(network, *self.problem.links[1:]))
        if config == "plan":
            return evaluate(problem, self.plan.assignment)
        tier = 0 if config == "all-local" else 1
        return evaluate(problem, [tier] * problem.n)


def find_plan(manifest: Manifest, directory: Path, given: str | None) -> PlanFile | None:
    """The plan the split came from: ``given``, else the manifest's, looked up as written, then beside DIR."""
    if given is not None:
        return load_plan(given)
    written = manifest.origin.get("plan")
    if not written:
        return None
    candidates = [Path(written), directory / Path(written).name, directory.parent / Path(written).name]
    for path in candidates:
        if path.is_file():
            plan = load_plan(path)
            sha = manifest.origin.get("plan_sha256")
            from dnnsplit.models.export import file_sha256

            if sha and file_sha256(path) != sha:
                raise UsageError(
                    f"{path} changed since the split was made (sha256 differs from the manifest's)",
                    "pass the plan it was split from with --plan",
                )
            return plan
    raise UsageError(f"cannot find the plan {written} the split was made from", "pass it with --plan")


def _p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def bench(directory: str | Path, settings: BenchSettings, progress: ProgressFn | None = None) -> BenchResult:
    """Measure every configuration on every network (see the module doc)."""
    settings.check()
    progress = progress or no_progress
    directory = Path(directory)
    manifest = Manifest.load(directory)
    plan = find_plan(manifest, directory, settings.plan)
    predictor = Predictor(plan, settings.emulate_devices) if plan else None
    tiers = plan.problem.tiers if plan else tuple(dict.fromkeys(s.tier for s in manifest.segments))
    threads = settings.threads
    if threads is None and plan is not None:
        threads = (plan.document.get("profile", {}).get("device") or {}).get("threads")
    result = BenchResult(
        directory=str(directory),
        model=dict(manifest.model),
        plan=plan.path if plan else None,
        tiers=tuple(tiers),
        devices=predictor.devices if predictor else {},
        notes=list(predictor.notes)
        if predictor
        else ["no plan: measured only (split with --plan to predict)"],
    )

    def scale(tier: str) -> float:
        return predictor.run_scale(tier) if predictor else 1.0

    backhaul = plan.problem.links[1:] if plan else ()
    x = np.random.default_rng(settings.seed).standard_normal(manifest.input.shape).astype(np.float32)
    total = len(settings.networks) * len(settings.configs)
    done = 0
    for config in settings.configs:
        servers: list[BackgroundServer] = []
        try:
            edge_url = _start_servers(config, manifest, directory, threads, scale, backhaul, servers)
            for network in settings.networks:
                progress(f"{config} on {network.name}", done, total)
                client = CollaborativeClient(
                    directory,
                    edge_url,
                    link=network,
                    threads=threads,
                    slowdown=scale(tiers[0]),
                    timeout_s=max(60.0, settings.budget_s),
                    manifest=manifest,
                    split_at=0 if config == "all-edge" else None,
                )
                with client:
                    row = _measure(client, x, config, network, settings, manifest, backhaul)
                if predictor is not None:
                    _compare(row, predictor.predict(config, network), predictor.problem.tiers)
                result.rows.append(row)
                done += 1
        finally:
            for server in reversed(servers):
                server.stop()
    progress("done", total, total)
    return result


def _start_servers(
    config: str,
    manifest: Manifest,
    directory: Path,
    threads: int | None,
    scale: Callable[[str], float],
    backhaul: Sequence[LinkSpec],
    servers: list[BackgroundServer],
) -> str | None:
    """Start what ``config`` needs, last tier first (each server needs its next one's URL)."""
    if config == "all-local":
        return None
    if config == "all-edge":
        tier = _tier1(manifest)
        everything = tuple(range(len(manifest.segments)))
        settings = ServeSettings(tier=tier, segments=everything, threads=threads, slowdown=scale(tier))
        servers.append(BackgroundServer(TierService(manifest, directory, settings)).start())
        return servers[-1].url
    later = _remote_tiers(manifest, False)
    url = None
    for k in range(len(later) - 1, -1, -1):
        link = backhaul[k] if k < len(backhaul) and url is not None else None
        settings = ServeSettings(
            tier=later[k], next_url=url, threads=threads, slowdown=scale(later[k]), link=link
        )
        servers.append(BackgroundServer(TierService(manifest, directory, settings)).start())
        url = servers[-1].url
    return url


def _tier1(manifest: Manifest) -> str:
    tiers = list(dict.fromkeys(s.tier for s in manifest.segments))
    return tiers[1] if len(tiers) > 1 else "edge"


def _measure(
    client: CollaborativeClient,
    x: np.ndarray,
    config: str,
    network: LinkSpec,
    settings: BenchSettings,
    manifest: Manifest,
    backhaul: Sequence[LinkSpec],
) -> BenchRow:
    all_edge = config == "all-edge"
    if config == "all-local":  # load every session before timing anything
        for i in range(len(manifest.segments)):
            client.chain.session(i)
    for _ in range(settings.warmup):
        client.infer(x, emulate=False)
    results: list[InferResult] = []
    start = time.monotonic()
    for i in range(settings.requests):
        if i >= settings.min_requests and time.monotonic() - start > settings.budget_s:
            break
        results.append(client.infer(x))
    totals = [r.stages.total_ms for r in results]
    hops = 0 if config == "all-local" or not client.remote else len(_remote_tiers(manifest, all_edge))
    behind = _ideal_behind(manifest, _remote_tiers(manifest, all_edge), backhaul) if hops > 1 else 0.0
    overheads = []
    compute: dict[str, list[float]] = {}
    for r in results:
        s = r.stages
        local = s.mobile_ms + s.fallback_ms
        compute.setdefault(manifest.segments[0].tier, []).append(local)
        for tier, ms in s.remote_compute_ms.items():
            compute.setdefault(tier, []).append(ms)
        if hops:
            ideal = network.rtt_ms + network.up_ms(s.up_bytes) + network.down_ms(s.down_bytes) + behind
            overheads.append((s.total_ms - local - sum(s.remote_compute_ms.values()) - ideal) / hops)
    stages = {
        "mobile_ms": _p([r.stages.mobile_ms for r in results], 50),
        "upload_ms": _p([r.stages.upload_ms for r in results], 50),
        "remote_ms": _p([r.stages.remote_ms for r in results], 50),
        "return_ms": _p([r.stages.return_ms for r in results], 50),
    }
    return BenchRow(
        network=network.name,
        config=config,
        requests=len(results),
        p50_ms=_p(totals, 50),
        p95_ms=_p(totals, 95),
        stages_p50=stages,
        compute_p50_ms={tier: _p(v, 50) for tier, v in compute.items()},
        overhead_per_hop_ms=_p(overheads, 50) if overheads else None,
        hops=hops,
        fallbacks=sum(1 for r in results if r.fallback),
    )


def _ideal_behind(manifest: Manifest, remote: Sequence[str], backhaul: Sequence[LinkSpec]) -> float:
    """The link model's time on the links between servers (the emulated backhaul), for one sample."""
    total = 0.0
    for k, tier in enumerate(remote[1:]):
        if k >= len(backhaul):
            break
        first = route.tier_segments(manifest, tier)[0]
        up = message_bytes(route.crossing(manifest, first))
        down = message_bytes(route.results_from(manifest, first))
        total += backhaul[k].rtt_ms + backhaul[k].up_ms(up) + backhaul[k].down_ms(down)
    return total


def _remote_tiers(manifest: Manifest, all_edge: bool) -> list[str]:
    if all_edge:
        return [_tier1(manifest)]
    local = set(route.local_prefix(manifest))
    return list(dict.fromkeys(s.tier for s in manifest.segments if s.index not in local))


def _compare(row: BenchRow, prediction: Prediction, tiers: Sequence[str]) -> None:
    row.predicted_ms = prediction.latency_ms
    compute = dict(zip(tiers, prediction.compute_ms, strict=True))
    row.predicted = {
        "compute_ms": compute,
        "transfer_ms": prediction.transfer_ms,
        "return_ms": prediction.return_ms,
    }
    measured_compute = sum(row.compute_p50_ms.values())
    row.calibrated_ms = prediction.latency_ms - sum(compute.values()) + measured_compute


def plot_bench(result: BenchResult, path: str | Path) -> None:
    """Measured p50 (bars, p95 whiskers) against the prediction (markers), per network and configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnnsplit.fileio import atomic_path

    networks = list(dict.fromkeys(r.network for r in result.rows))
    configs = list(dict.fromkeys(r.config for r in result.rows))
    width = 0.8 / max(len(configs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 2 + 1.6 * len(networks)), 5))
    for j, config in enumerate(configs):
        rows = {r.network: r for r in result.rows if r.config == config}
        xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(networks))]
        p50 = [rows[n].p50_ms if n in rows else np.nan for n in networks]
        p95 = [rows[n].p95_ms if n in rows else np.nan for n in networks]
        errs = [max(0.0, b - a) for a, b in zip(p50, p95, strict=True)]
        bars = ax.bar(xs, p50, width, yerr=[[0] * len(errs), errs], capsize=3, label=f"{config} measured p50")
        pred = [rows[n].predicted_ms if n in rows and rows[n].predicted_ms else np.nan for n in networks]
        ax.plot(xs, pred, "k_", markersize=18, markeredgewidth=2.5)
        for bar in bars:
            bar.set_alpha(0.8)
    ax.plot([], [], "k_", markersize=12, markeredgewidth=2.5, label="planner's prediction")
    ax.set_xticks(range(len(networks)), networks)
    ax.set_yscale("log")
    ax.set_ylabel("end-to-end latency (ms, log)")
    ax.set_title(f"{result.model.get('name', '')}: measured vs predicted")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
