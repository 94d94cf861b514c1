"""Layers that do not add up to the measured whole model: measured again, then scaled to it (or, strict, exit 1).

The measurement is injected (``run.measure_once``): a runtime whose per-layer times add up to half the
whole model, as they did on a loaded machine, so nothing here depends on this machine's timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dnnsplit.errors import BudgetError
from dnnsplit.models import ModelOptions
from dnnsplit.partition import problem_from_profile
from dnnsplit.partition.evaluate import evaluate
from dnnsplit.profiling import Profile, ProfileSettings, prepare_model, profile_prepared
from dnnsplit.profiling import run as profiling_run
from dnnsplit.profiling.measure import Measurement
from tests.fixtures.profiles import chain_profile

TINY = "tests.fixtures.tiny_models:tiny_cnn"
WHOLE_MS = 10.0


@pytest.fixture(scope="module")
def tiny():
    return prepare_model(TINY, ModelOptions(input_shape=(1, 3, 32, 32)))


def _runtime(monkeypatch: pytest.MonkeyPatch, sums: list[float]) -> list[bool]:
    """Round k's layers add up to ``sums[k]`` x the whole model (the last ratio repeats); returns the
    ``interleaved`` flag of every round asked for."""
    asked: list[bool] = []

    def measure_once(prepared, settings, progress, interleaved=False):
        ratio = sums[min(len(asked), len(sums) - 1)]
        asked.append(interleaved)
        n = len(prepared.graph.layers)
        layer_ms = np.full((settings.repeat, n), WHOLE_MS * ratio / n)
        device = {"name": "host", "runtime": "onnxruntime", "cpu": "test", "threads": 1}
        return Measurement(layer_ms, np.full(settings.repeat, WHOLE_MS), []), device

    monkeypatch.setattr(profiling_run, "measure_once", measure_once)
    return asked


def test_a_sum_that_stays_low_is_scaled_to_the_whole(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _runtime(monkeypatch, [0.5])
    profile = profile_prepared(tiny, ProfileSettings(repeat=3))
    assert asked == [False, True, True]  # three rounds, the later two interleaved
    cal = profile.calibration
    assert cal is not None and cal["scale"] == pytest.approx(2.0) and cal["rounds"] == 3
    assert cal["measured_ratio"] == pytest.approx(0.5) and profile.measured_sum_ratio == pytest.approx(0.5)
    assert profile.layer_sum_ms == pytest.approx(profile.latency_ms) == WHOLE_MS
    assert any("scaled x2.00" in note for note in profile.notes)
    # the planner prices the whole model's time, not the low sum
    problem = problem_from_profile(profile)
    all_mobile = evaluate(problem, [0] * problem.n)
    assert all_mobile.compute_ms[0] == pytest.approx(WHOLE_MS * 6.0)  # mobile-web preset: x6


def test_a_round_that_agrees_ends_the_measuring(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _runtime(monkeypatch, [0.5, 0.97])
    profile = profile_prepared(tiny, ProfileSettings(repeat=3))
    assert asked == [False, True]
    assert profile.calibration is None and profile.layer_sum_ratio == pytest.approx(0.97)
    assert "round 1: the per-layer sum was 0.50x" in profile.notes[0]


def test_the_closest_round_is_the_one_scaled(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    _runtime(monkeypatch, [0.5, 0.7, 0.6])
    profile = profile_prepared(tiny, ProfileSettings(repeat=3))
    assert profile.calibration is not None and profile.calibration["measured_ratio"] == pytest.approx(0.7)


def test_strict_is_a_budget_error(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    _runtime(monkeypatch, [0.5])
    with pytest.raises(BudgetError, match=r"per-layer sum is 0\.50x the measured whole model after 2 round"):
        profile_prepared(tiny, ProfileSettings(repeat=3, rounds=2, strict=True))


def test_calibration_survives_the_file_and_old_files_still_read(
    tiny, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _runtime(monkeypatch, [0.5])
    profile = profile_prepared(tiny, ProfileSettings(repeat=3, rounds=1))
    profile.save(tmp_path / "p.json")
    again = Profile.load(tmp_path / "p.json")
    assert again.calibration == json.loads((tmp_path / "p.json").read_text())["calibration"]
    assert again.calibration["scale"] == pytest.approx(2.0) and again.calibrated() is again
    old = profile.to_dict()
    del old["calibration"]  # as written before calibration existed
    assert Profile.from_dict(old).calibration is None


def test_the_planner_scales_a_profile_written_before_calibration() -> None:
    # chain_profile's layers add up to 5.7 ms; say its whole model measured 11.4 ms: a sum at 0.5x.
    low = Profile.from_dict({**chain_profile().to_dict(), "total": {"latency_ms": 11.4}})
    assert low.calibration is None
    problem = problem_from_profile(low)
    assert evaluate(problem, [0] * problem.n).compute_ms[0] == pytest.approx(11.4 * 6.0)
    # within ±15% the layers are priced as measured
    near = Profile.from_dict({**chain_profile().to_dict(), "total": {"latency_ms": 6.5}})
    problem = problem_from_profile(near)
    assert evaluate(problem, [0] * problem.n).compute_ms[0] == pytest.approx(5.7 * 6.0)


def test_cli_scales_and_says_so_or_exits_1_when_strict(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _runtime(monkeypatch, [0.5])
    shape = ("--input-shape", "1x3x32x32", "--repeat", "3")
    code, stdout, stderr = cli("profile", TINY, *shape, "--output", tmp_path / "p.json")
    assert code == 0, stderr
    assert "per-layer sum / whole model = 0.500 (OUTSIDE ±15%); layer times scaled x2.00" in stdout
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["calibration"]["scale"] == 2.0 and saved["total"]["layer_sum_ratio"] == pytest.approx(1.0)
    code, stdout, stderr = cli("profile", TINY, *shape, "--strict", "--output", tmp_path / "strict.json")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "0.50x the measured whole model after 3 round(s)" in lines[0]
    assert not (tmp_path / "strict.json").exists()
    code, _, stderr = cli("profile", TINY, *shape, "--rounds", "0")
    assert code == 2 and "--rounds must be at least 1" in stderr
    # plan, from the calibrated file: its profile block carries the calibration
    code, stdout, stderr = cli("plan", tmp_path / "p.json", "--format", "json")
    assert code == 0, stderr
    assert json.loads(stdout)["profile"]["calibration"]["scale"] == 2.0


def test_pipeline_profile_stage_is_strict_by_default(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    from tests.fixtures.tiny_models import digits_net

    torch.save(digits_net().state_dict(), tmp_path / "w.pt")
    config = tmp_path / "dnnsplit.yaml"
    base = {
        "schema": "dnnsplit/pipeline@1",
        "output": "out",
        "model": {
            "source": "tests.fixtures.tiny_models:digits_net",
            "input_shape": "1x3x16x16",
            "weights": "w.pt",
        },
        "data": "digits",
        "tiers": {"mobile": "mobile-web", "edge": "edge"},
        "links": {"mobile-edge": "wifi"},
        "profile": {"threads": 1, "warmup": 1, "repeat": 3},
        "branch": {"enabled": False},
        "prune": {"enabled": False},
        "split": {"validate": 1},
    }
    config.write_text(yaml.safe_dump(base))
    _runtime(monkeypatch, [0.5])
    code, _, stderr = cli("pipeline", config, "--format", "json")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "strict profiling is on" in lines[0], stderr
    assert not (tmp_path / "out" / "profile.json").exists() and not (tmp_path / "out" / "plan.yaml").exists()
    # profile.strict: false ships a plan priced from the scaled layers
    config.write_text(yaml.safe_dump({**base, "profile": {**base["profile"], "strict": False}}))
    code, _, stderr = cli("pipeline", config, "--format", "json")
    assert code == 0, stderr
    plan = yaml.safe_load((tmp_path / "out" / "plan.yaml").read_text())
    assert plan["profile"]["calibration"]["scale"] == pytest.approx(2.0)
    assert "scaled x2.00 to it (calibration)" in (tmp_path / "out" / "report.md").read_text()


def test_pipeline_config_keys(tmp_path: Path) -> None:
    from dnnsplit.errors import UsageError
    from dnnsplit.pipeline.config import load_config

    demo = Path(__file__).resolve().parents[2] / "dnnsplit" / "pipeline" / "demo.yaml"
    config = load_config(demo, tmp_path / "out")
    assert config.profile.strict is True and config.profile.rounds == 3
    text = demo.read_text()
    (tmp_path / "off.yaml").write_text(text.replace("  strict: true ", "  strict: false "))
    assert load_config(tmp_path / "off.yaml").profile.strict is False
    (tmp_path / "bad.yaml").write_text(text.replace("  rounds: 3 ", "  rounds: 0 "))
    with pytest.raises(UsageError, match="profile.rounds"):
        load_config(tmp_path / "bad.yaml")
