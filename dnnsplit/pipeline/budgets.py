"""The budgets a pipeline enforces, checked against what the stages measured and predicted.

* ``latency_ms``: end-to-end latency of the shipped plan (first link), as ``dnnsplit plan`` predicts it;
* ``mobile_energy_mj``: the phone's energy per request in that plan;
* ``mobile_download_mb``: bytes of the segments the phone downloads (the split's mobile segments);
* ``accuracy``: the model's top-1 accuracy on the test split (a floor).

The split's own validation (chained segments == whole model) is gated the same way: a failure is a miss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dnnsplit.pipeline.config import Budgets
from dnnsplit.pipeline.stages import StageOutcome


@dataclass(frozen=True)
class BudgetResult:
    name: str
    limit: float | None  # None: not enforced, shown for information
    actual: float | None
    unit: str
    kind: str  # max | min | check
    holds: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.kind == "check":
            return f"{self.name} failed"
        op = "<=" if self.kind == "max" else ">="
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name} {_fmt(self.actual)}{unit} (budget {op} {_fmt(self.limit)}{unit})"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def check_budgets(budgets: Budgets, outcomes: list[StageOutcome]) -> list[BudgetResult]:
    results = {o.name: o.result for o in outcomes}
    plan = results.get("plan") or {}
    shipped = (plan.get("networks") or {}).get(plan.get("shipped"), {})
    split = results.get("split") or {}
    train = results.get("train") or {}
    mobile_mb = split.get("mobile_bytes")
    figures = [
        ("latency_ms", budgets.latency_ms, shipped.get("latency_ms"), "ms", "max"),
        ("mobile_energy_mj", budgets.mobile_energy_mj, shipped.get("energy_mj"), "mJ", "max"),
        (
            "mobile_download_mb",
            budgets.mobile_download_mb,
            None if mobile_mb is None else mobile_mb / 1e6,
            "MB",
            "max",
        ),
        ("accuracy", budgets.accuracy, train.get("test_accuracy"), "", "min"),
    ]
    out = []
    for name, limit, actual, unit, kind in figures:
        if limit is None:
            holds = True
        elif actual is None:
            holds = False  # a budget nothing measured cannot be shown to hold
        else:
            holds = actual <= limit if kind == "max" else actual >= limit
        out.append(BudgetResult(name, limit, actual, unit, kind, holds))
    validation = split.get("validation")
    if validation is not None:
        out.append(
            BudgetResult(
                "split_validation",
                None,
                validation.get("max_rel_diff"),
                "",
                "check",
                bool(validation.get("passed")),
            )
        )
    return out


def missed(results: list[BudgetResult]) -> list[BudgetResult]:
    return [r for r in results if not r.holds]
