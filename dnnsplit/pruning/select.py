"""Online choice: the variant and partition that maximise accuracy within a latency budget, per request.

``Selector(DIR).choose(context)`` reads only what ``dnnsplit prune`` precomputed: per variant and
network preset the candidate plans as lines in the device scale (see plans.py). A choice evaluates each
line at the request's scale (two multiply-adds), keeps those within the budget, and takes the most
accurate variant, ties going to lower mobile energy. Nothing within budget: the fastest choice, flagged
best effort, and the context is recorded in ``DIR/misses.yaml`` for ``dnnsplit prune DIR --from-misses``.
A network that is not a preset (``up=..,rtt=..``) is planned on first use from the saved profiles.
"""

from __future__ import annotations

import fcntl
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document, write_document
from dnnsplit.partition.network import NETWORK_PRESETS, LinkSpec, parse_link
from dnnsplit.pruning.plans import PlanLine, plan_lines
from dnnsplit.pruning.variants import VariantsFile

MISSES = "misses.yaml"
MISSES_SCHEMA = "dnnsplit/misses@1"
SELECTABLE = ("original", "latency-aware")  # the uniform baseline is there to compare with, not to serve
_RTOL = 1e-9


@dataclass(frozen=True)
class Request:
    """One request's context: the phone's network, how slow the phone is, the latency budget."""

    network: str = "wifi"
    device_scale: float = 1.0
    budget_ms: float = 100.0

    def check(self) -> None:
        if not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise UsageError(f"--budget-ms must be a positive number (got {self.budget_ms})", "pass e.g. 40")
        if not (self.device_scale > 0 and math.isfinite(self.device_scale)):
            raise UsageError(
                f"--device-scale must be a positive number (got {self.device_scale})",
                "1 is the device pruned for, 2 one twice as slow",
            )


@dataclass(frozen=True)
class Choice:
    request: Request
    variant: str
    file: str
    accuracy: float
    latency_ms: float
    energy_mj: float
    meets_budget: bool
    plan: PlanLine

    @property
    def best_effort(self) -> bool:
        return not self.meets_budget

    @property
    def mobile_compute_ms(self) -> float:
        """The phone's compute at the request's device scale (the plan line's is at scale 1)."""
        return self.plan.mobile_ms * self.request.device_scale

    def to_dict(self) -> dict[str, Any]:
        p, s = self.plan, self.request.device_scale
        return {
            "variant": self.variant,
            "file": self.file,
            "accuracy": self.accuracy,
            "meets_budget": self.meets_budget,
            "best_effort": self.best_effort,
            "context": {
                "network": self.request.network,
                "device_scale": s,
                "budget_ms": self.request.budget_ms,
            },
            "prediction": {
                "latency_ms": self.latency_ms,
                "energy_mj": self.energy_mj,
                "breakdown": {
                    "mobile_compute_ms": self.mobile_compute_ms,
                    "edge_and_network_ms": p.rest_ms,
                    "radio_ms": p.radio_ms,
                },
            },
            "partition": {
                "mobile_layers": p.mobile_layers,
                "offloaded": bool(p.cut),
                "cut": list(p.cut),
            },
        }


class _Table:
    """Flat lists per network: one entry per (variant, plan line)."""

    def __init__(self, entries: list[tuple[int, PlanLine]], accuracy: list[float]) -> None:
        self.variant = [v for v, _ in entries]
        self.lines = [line for _, line in entries]
        self.slope = [line.mobile_ms for line in self.lines]
        self.rest = [line.rest_ms for line in self.lines]
        self.accuracy = [accuracy[v] for v in self.variant]


class Selector:
    """Load DIR once; ``choose`` per request (well under a millisecond for the preset networks)."""

    def __init__(
        self,
        directory: str | Path,
        record_misses: bool = True,
        methods: tuple[str, ...] = SELECTABLE,
        document: VariantsFile | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.file = document if document is not None else VariantsFile.load(self.directory)
        self.variants = [v for v in self.file.variants if v.method in methods]
        if not self.variants:
            raise UsageError(f"{self.directory} holds no variants to choose from", "prune again")
        self.record_misses = record_misses
        device = self.file.context.device
        self.compute_w = float(device.compute_power_w or 0.0)
        self.idle_w = float(device.idle_power_w or 0.0)
        self.accuracy = [v.accuracy for v in self.variants]
        self.tables: dict[str, _Table] = {}
        for network in NETWORK_PRESETS:
            if all(network in v.plans for v in self.variants):
                entries = [(i, line) for i, v in enumerate(self.variants) for line in v.plans[network].lines]
                self.tables[network] = _Table(entries, self.accuracy)
        self._seen_misses: set[tuple[str, float, float]] = set()
        self._pending: dict[tuple[str, float, float], dict[str, Any]] = {}

    def _table(self, network: str) -> _Table:
        table = self.tables.get(network)
        if table is not None:
            return table
        link = parse_link(network)  # unknown presets and bad syntax: UsageError
        key = _link_key(link)
        if key not in self.tables:
            from dnnsplit.profiling.profile import Profile

            entries = []
            for i, v in enumerate(self.variants):
                profile = Profile.load(self.directory / v.profile)
                entries += [(i, line) for line in plan_lines(self.file.context, profile, link)]
            self.tables[key] = _Table(entries, self.accuracy)
        return self.tables[key]

    def choose(self, request: Request) -> Choice:
        """The most accurate variant (then the lowest energy) within the budget; else the fastest, flagged."""
        table = self._table(request.network)
        s, budget = request.device_scale, request.budget_ms * (1 + _RTOL)
        best, best_acc, best_energy = -1, -1.0, math.inf
        fastest, fastest_ms = -1, math.inf
        cw, iw = self.compute_w, self.idle_w
        for k, (slope, rest, acc) in enumerate(zip(table.slope, table.rest, table.accuracy, strict=True)):
            ms = slope * s + rest
            if ms < fastest_ms or (ms == fastest_ms and acc > table.accuracy[fastest]):
                fastest, fastest_ms = k, ms
            if ms <= budget and acc >= best_acc:
                line = table.lines[k]
                energy = cw * slope * s + line.radio_mj + iw * max(rest - line.radio_ms, 0.0)
                if acc > best_acc or energy < best_energy:
                    best, best_acc, best_energy = k, acc, energy
        meets = best >= 0
        k = best if meets else fastest
        line = table.lines[k]
        variant = self.variants[table.variant[k]]
        choice = Choice(
            request=request,
            variant=variant.name,
            file=variant.file,
            accuracy=variant.accuracy,
            latency_ms=line.latency(s),
            energy_mj=line.energy(s, cw, iw),
            meets_budget=meets,
            plan=line,
        )
        if not meets and self.record_misses:
            self._record(choice)
        return choice

    def _record(self, choice: Choice) -> None:
        r = choice.request
        key = (r.network, float(r.device_scale), float(r.budget_ms))
        entry = self._pending.setdefault(
            key,
            {
                "network": r.network,
                "device_scale": float(r.device_scale),
                "budget_ms": float(r.budget_ms),
                "count": 0,
                "best_effort": {"variant": choice.variant, "latency_ms": choice.latency_ms},
            },
        )
        entry["count"] += 1
        if key not in self._seen_misses:  # a new context is written at once; repeats on flush()
            self._seen_misses.add(key)
            self.flush()

    def flush(self) -> None:
        """Merge the misses seen since the last flush into DIR/misses.yaml."""
        if not self._pending:
            return
        merge_misses(self.directory, list(self._pending.values()))
        self._pending.clear()


def _link_key(link: LinkSpec) -> str:
    return f"up={link.up_mbps:g},down={link.down_mbps:g},rtt={link.rtt_ms:g},radio={link.radio}"


def read_misses(directory: Path) -> list[dict[str, Any]]:
    path = directory / MISSES
    if not path.is_file():
        return []
    data = read_document(path, MISSES_SCHEMA)
    return [dict(m) for m in data.get("misses") or []]


def write_misses(directory: Path, misses: list[dict[str, Any]]) -> None:
    write_document(directory / MISSES, {"schema": MISSES_SCHEMA, "misses": misses})


def merge_misses(directory: Path, new: list[dict[str, Any]]) -> None:
    """Add ``new`` misses to DIR/misses.yaml (counts add up per context), under a lock."""
    with open(directory / ".misses.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        misses = read_misses(directory)
        index = {(m["network"], float(m["device_scale"]), float(m["budget_ms"])): m for m in misses}
        for m in new:
            key = (m["network"], float(m["device_scale"]), float(m["budget_ms"]))
            if key in index:
                index[key]["count"] = int(index[key].get("count", 0)) + int(m["count"])
                index[key]["best_effort"] = m["best_effort"]
            else:
                entry = dict(m)
                misses.append(entry)
                index[key] = entry
        write_misses(directory, misses)
        fcntl.flock(lock, fcntl.LOCK_UN)
