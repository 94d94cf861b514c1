"""What a plan minimises (latency, energy or a weighted sum) and the constraints it must meet."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dnnsplit.errors import UsageError

_OBJECTIVE_SYNTAX = "use latency, energy, or weights like latency=1,energy=0.5 (per ms and per mJ)"


@dataclass(frozen=True)
class Objective:
    """Minimise ``latency * latency_ms + energy * energy_mj``; weights are per ms and per mJ."""

    latency: float = 1.0
    energy: float = 0.0

    def __post_init__(self) -> None:
        for key in ("latency", "energy"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                raise UsageError(
                    f"objective weight '{key}' must be a finite number >= 0 (got {value})", _OBJECTIVE_SYNTAX
                )
        if self.latency == 0 and self.energy == 0:
            raise UsageError("objective weights are all zero", _OBJECTIVE_SYNTAX)

    @property
    def is_latency(self) -> bool:
        """Pure latency: a latency budget is then a report, not a constraint (the optimum is the fastest)."""
        return self.energy == 0

    def value(self, latency_ms: float, energy_mj: float | None) -> float:
        if self.energy == 0:
            return self.latency * latency_ms
        if energy_mj is None:
            raise UsageError(
                "the energy objective needs the mobile device's power",
                "give compute_power_w and idle_power_w",
            )
        return self.latency * latency_ms + self.energy * energy_mj

    def describe(self) -> str:
        if self.energy == 0:
            return "latency" if self.latency == 1 else f"latency={self.latency:g}"
        if self.latency == 0:
            return "energy" if self.energy == 1 else f"energy={self.energy:g}"
        return f"latency={self.latency:g},energy={self.energy:g}"


def parse_objective(text: str) -> Objective:
    """``latency`` | ``energy`` | ``latency=1,energy=0.5``; a key left out of the weighted form weighs 0."""
    cleaned = text.strip().lower()
    if cleaned == "latency":
        return Objective(1.0, 0.0)
    if cleaned == "energy":
        return Objective(0.0, 1.0)
    weights: dict[str, float] = {}
    for item in (part.strip() for part in cleaned.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            what = f"'{key}' needs a weight" if key in ("latency", "energy") else f"unknown objective '{key}'"
            raise UsageError(f"{what} in '{text}'", _OBJECTIVE_SYNTAX)
        if key not in ("latency", "energy"):
            raise UsageError(f"unknown objective key '{key}' in '{text}'", _OBJECTIVE_SYNTAX)
        if key in weights:
            raise UsageError(f"objective key '{key}' given twice in '{text}'", _OBJECTIVE_SYNTAX)
        try:
            weights[key] = float(raw)
        except ValueError:
            raise UsageError(
                f"objective weight '{raw.strip()}' for '{key}' is not a number", _OBJECTIVE_SYNTAX
            ) from None
    if not weights:
        raise UsageError(f"empty objective '{text}'", _OBJECTIVE_SYNTAX)
    return Objective(weights.get("latency", 0.0), weights.get("energy", 0.0))


@dataclass(frozen=True)
class Constraints:
    """``budget_ms``: latency <= budget. ``private_input``: every layer reading the raw input runs on mobile.
    ``max_mobile_mb``: weights of the layers on mobile take at most this many MB (1 MB = 1e6 bytes).
    """

    budget_ms: float | None = None
    private_input: bool = False
    max_mobile_mb: float | None = None

    def __post_init__(self) -> None:
        if self.budget_ms is not None and not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise UsageError(
                f"latency budget must be > 0 ms (got {self.budget_ms})", "pass a budget like 50 (ms)"
            )
        if self.max_mobile_mb is not None and not (
            self.max_mobile_mb >= 0 and math.isfinite(self.max_mobile_mb)
        ):
            raise UsageError(
                f"max mobile memory must be >= 0 MB (got {self.max_mobile_mb})", "pass a size like 10 (MB)"
            )

    @property
    def max_mobile_bytes(self) -> int | None:
        # Weights are whole bytes, so "<= X MB" is "<= floor(X * 1e6) bytes".
        return None if self.max_mobile_mb is None else math.floor(self.max_mobile_mb * 1e6 + 1e-6)


# Relative slack when checking a latency budget: solvers and sums in another order differ in the last bits.
BUDGET_RTOL = 1e-9


def within_budget(latency_ms: float, budget_ms: float | None) -> bool:
    return budget_ms is None or latency_ms <= budget_ms * (1 + BUDGET_RTOL)
