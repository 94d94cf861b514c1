"""``make_plan``: a typed request in, the complete plan document out, with its checks and its summary."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition.early_exit import BranchCosts
from dnnsplit.partition.network import NETWORK_PRESETS, parse_link
from dnnsplit.partition.objective import Constraints, Objective
from dnnsplit.partition.plan_file import load_plan, plan_document, save_plan, stretches
from dnnsplit.partition.request import (
    PlanRequest,
    TierProfile,
    check_policy_options,
    make_plan,
    profile_context,
)
from dnnsplit.partition.summary import plan_summary
from dnnsplit.profiling.profile import BranchTiming
from dnnsplit.text import TextTable
from tests.fixtures.profiles import chain_profile

BRANCH = BranchCosts(
    directory="branch-dir",
    at="conv1",
    exit_rate=0.6,
    stem_ms=0.5,
    branch_ms=0.2,
    rest_ms=1.0,
    boundary_bytes=4096,
    output_bytes=40,
    model_sha256="0" * 64,  # the chain profile's
    model_source="hand-made",
)


def _request(**changes: object) -> PlanRequest:
    base = PlanRequest(chain_profile(), "chain.json", links={"mobile-edge": NETWORK_PRESETS["4g"]})
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_document_is_the_plan_file_plus_the_branch_block() -> None:
    planned = make_plan(_request(branch=BRANCH))
    doc = planned.to_dict()
    assert {k: v for k, v in doc.items() if k != "branch"} == plan_document(planned.plan, planned.context)
    block = doc["branch"]
    assert block["directory"] == "branch-dir" and block["at"] == "conv1" and block["exit_rate"] == 0.6
    best = planned.branch.estimate.best  # type: ignore[union-attr]
    assert block["latency_ms"] == best.latency_ms
    assert block["saves_latency_ms"] == pytest.approx(doc["predicted"]["latency_ms"] - best.latency_ms)
    assert block["chosen"] in ("sequential", "speculative")
    assert doc["profile"]["path"] == "chain.json" and doc["model"]["sha256"] == "0" * 64
    assert set(doc["devices"]) == {"mobile", "edge"} and "branch" not in make_plan(_request()).to_dict()


def test_a_branch_of_another_model_is_refused() -> None:
    with pytest.raises(
        UsageError, match=r"the branch in branch-dir was built for another model \(elsewhere\)"
    ):
        make_plan(_request(branch=replace(BRANCH, model_sha256="f" * 64, model_source="elsewhere")))
    with pytest.raises(UsageError, match="built for another model"):  # a branch that records no model
        make_plan(_request(branch=replace(BRANCH, model_sha256=None)))
    profile = chain_profile()
    anonymous = replace(profile, model={**profile.model, "sha256": None})
    assert make_plan(_request(profile=anonymous, branch=replace(BRANCH, model_sha256="f" * 64))).branch


def test_a_policy_plans_one_context_without_hard_constraints() -> None:
    check_policy_options(None, Constraints(budget_ms=5.0))  # a budget is only reported
    with pytest.raises(UsageError, match="no bandwidth sweep"):
        check_policy_options((1.0, 2.0), Constraints())
    with pytest.raises(UsageError, match="--private-input or --max-mobile-mb"):
        check_policy_options(None, Constraints(max_mobile_mb=1.0))


def test_the_sweep_reports_progress_and_each_point() -> None:
    calls: list[tuple[str, int, int]] = []
    planned = make_plan(
        _request(bandwidths=(1.0, 10.0, 100.0)),
        lambda stage, done, total, detail="": calls.append((stage, done, total)),
    )
    assert planned.sweep is not None and [p.up_mbps for p in planned.sweep] == [1.0, 10.0, 100.0]
    assert calls == [("solving", 0, 1), *[("sweeping bandwidth", i, 3) for i in range(3)]]
    row = planned.sweep[0].to_dict()
    assert row["up_mbps"] == 1.0 and row["latency_ms"] == planned.sweep[0].plan.prediction.latency_ms
    assert set(row["baselines"]) == set(planned.plan.baselines)


def test_the_context_records_where_the_profile_came_from() -> None:
    profile = chain_profile()
    context = profile_context(profile, None, input_bytes=15_000, compress="fp16")
    assert context.model == {"source": "hand-made", "name": "chain", "onnx": None, "sha256": "0" * 64}
    assert context.profile["path"] is None and context.profile["input_bytes_on_wire"] == 15_000
    assert context.compress == "fp16" and context.devices == {}
    assert profile_context(profile, "p.json").profile["input_bytes_on_wire"] == profile.input.bytes


def test_the_summary_shows_the_typed_plan() -> None:
    request = _request(
        links={"mobile-edge": parse_link("up=25,down=50,rtt=1,radio=wifi")},
        objective=Objective(1.0, 0.5),
        constraints=Constraints(budget_ms=1.0),
        branch=BRANCH,
    )
    planned = make_plan(request)
    summary = plan_summary(planned, "chain")
    assert summary.name == "chain"
    assert "mobile-edge 25/50 Mbit/s rtt 1 ms; objective latency=1,energy=0.5; constraints: budget 1 ms" in (
        summary.headline
    )
    tables = [b for b in summary.blocks if isinstance(b, TextTable)]
    lines = [b for b in summary.blocks if isinstance(b, str)]
    runs, cuts, figures, branch = tables
    assert [r[0] for r in runs.rows] == [
        s.tier for s in stretches(planned.plan.problem, planned.plan.prediction.assignment)
    ]
    assert [r[0] for r in figures.rows] == ["dnnsplit (optimal)", *planned.plan.baselines]
    assert figures.rows[0][1] == f"{planned.plan.prediction.latency_ms:.2f}"
    assert all(r[-1] == "budget_ms" for r in figures.rows)  # nothing meets a 1 ms budget
    assert any(line.startswith("budget 1 ms: MISSES by") for line in lines)
    assert branch.title.startswith("Early exit (exit rate 60.0%") and len(branch.rows) == 3
    assert cuts.rows and all(r[0] == "mobile-edge" for r in cuts.rows)


def test_a_plan_file_read_back_gives_the_same_figures(tmp_path: Path) -> None:
    planned = make_plan(_request(objective=Objective(1.0, 0.5)))
    save_plan(tmp_path / "plan.yaml", planned.plan, planned.context)
    again = load_plan(tmp_path / "plan.yaml").plan
    assert again.prediction.latency_ms == planned.plan.prediction.latency_ms
    assert again.prediction.energy_mj == planned.plan.prediction.energy_mj
    assert {k: b.latency_ms for k, b in again.baselines.items()} == {
        k: b.latency_ms for k, b in planned.plan.baselines.items()
    }
    assert again.solver == planned.plan.solver and again.proven_optimal == planned.plan.proven_optimal


def _timing(**changes: object) -> BranchTiming:
    base = BranchTiming(
        directory="branch-dir",
        at="conv1",
        mobile_sha256="m" * 64,
        engine="kernels",
        stem_ms=0.7,
        stem_p90_ms=0.8,
        branch_ms=0.3,
        branch_p90_ms=0.4,
        onnxruntime_branch_ms=3.0,
        binary_layers=4,
        repeat=20,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_branch_timed_on_the_mobile_tier_replaces_the_scaled_host_times() -> None:
    branch = replace(BRANCH, mobile_sha256="m" * 64)
    scale = make_plan(_request(branch=branch)).context.devices["mobile"]["latency_scale"]
    host = make_plan(_request(branch=branch)).branch
    assert host is not None and host.estimate.compute_ms["branch"] == pytest.approx(0.2 * scale)
    assert host.to_dict()["mobile_times"].startswith("branch.yaml host times")
    # The mobile tier's own profile carries the timing: its times as measured, unscaled.
    mobile = TierProfile(replace(chain_profile(), branch=_timing()), "browser.json")
    own = make_plan(_request(branch=branch, tier_profiles={"mobile": mobile})).branch
    assert own is not None
    assert own.estimate.compute_ms["stem"] == 0.7 and own.estimate.compute_ms["branch"] == 0.3
    assert own.to_dict()["mobile_times"] == "measured in browser.json (bit kernels)"
    # The profile every tier scales carries it: scaled like that profile's layers.
    shared = make_plan(_request(profile=replace(chain_profile(), branch=_timing()), branch=branch)).branch
    assert shared is not None and shared.estimate.compute_ms["branch"] == pytest.approx(0.3 * scale)
    assert shared.estimate.best.exited.latency_ms == pytest.approx((0.7 + 0.3) * scale)


def test_a_timing_of_another_branch_is_refused() -> None:
    mobile = TierProfile(replace(chain_profile(), branch=_timing(mobile_sha256="o" * 64)), "browser.json")
    with pytest.raises(UsageError, match=r"browser.json timed another branch \(branch-dir\) than branch-dir"):
        make_plan(_request(branch=replace(BRANCH, mobile_sha256="m" * 64), tier_profiles={"mobile": mobile}))


def test_a_profile_keeps_its_branch_timing_through_its_file(tmp_path: Path) -> None:
    from dnnsplit.profiling.profile import Profile

    plain = chain_profile()
    assert "branch" not in plain.to_dict()  # a profile without one is what it was before the block
    timed = replace(plain, branch=_timing(engine="onnxruntime-web", reason="no bit kernels here"))
    timed.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json").branch == timed.branch
    data = timed.to_dict()
    del data["branch"]["stem_ms"]
    with pytest.raises(KeyError):
        Profile.from_dict(data)
