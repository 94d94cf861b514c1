"""`dnnsplit pipeline` end to end on a tiny model: report with real figures, stage skipping and --force,
a missed budget exiting 1 by name. One first run is shared; each test that runs the pipeline again works on a
copy of it, so the tests pass in any order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.trained import TINY

CONFIG = """\
schema: dnnsplit/pipeline@1
output: out
model:
  source: tests.fixtures.tiny_models:digits_net
  input_shape: 1x3x16x16
data: digits
train: {epochs: 3, lr: 0.1, batch_size: 64}
tiers: {mobile: mobile-web, edge: edge}
links:
  mobile-edge: cat1
objective: latency
profile: {threads: 1, warmup: 2, repeat: 5, strict: false}  # a busy machine scales, not fails, the profile
branch: {enabled: true, epochs: 2, max_accuracy_drop: 0.05}
prune: {enabled: true, levels: 1, epochs: 0, threads: 1, repeat: 3}
plan: {networks: [cat1, wifi]}
split: {validate: 2}
budgets:
  latency_ms: {latency}
  mobile_energy_mj: null
  mobile_download_mb: 5
  accuracy: {accuracy}
"""
PNG = b"\x89PNG\r\n\x1a\n"


def _config(directory: Path, latency: str = "10000", accuracy: str = "0.5") -> Path:
    path = directory / "dnnsplit.yaml"
    path.write_text(CONFIG.replace("{latency}", latency).replace("{accuracy}", accuracy))
    return path


def _run(cli, config: Path, *extra: str) -> tuple[int, dict, str]:
    code, stdout, stderr = cli("pipeline", str(config), "--format", "json", *extra)
    return code, (json.loads(stdout) if stdout.strip() else {}), stderr


def _status(summary: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in summary["stages"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    directory = tmp_path_factory.mktemp("pipeline")
    config = _config(directory)
    result = CliRunner().invoke(app, ["pipeline", str(config), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return config, json.loads(result.stdout)


@pytest.fixture()
def rerun(first_run: tuple[Path, dict], tmp_path: Path) -> tuple[Path, dict]:
    """A private copy of the first run's directory: what one test reruns or edits, no other test sees."""
    config, summary = first_run
    copy = shutil.copytree(config.parent, tmp_path / "pipeline")
    return copy / config.name, summary


def test_first_run_runs_every_stage_and_holds_the_budgets(first_run: tuple[Path, dict]) -> None:
    config, summary = first_run
    ran = {s: "ran" for s in ("train", "profile", "branch", "prune", "plan", "split")}
    assert _status(summary) == {**ran, "bottleneck": "off"}  # no bottleneck section
    assert summary["passed"] is True
    out = config.parent / "out"
    budgets = {b["name"]: b for b in summary["budgets"]}
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    assert budgets["latency_ms"]["actual"] == pytest.approx(plan["predicted"]["latency_ms"])
    manifest = yaml.safe_load((out / "segments" / "manifest.yaml").read_text())
    mobile = sum(s["bytes"] for s in manifest["segments"] if s["tier"] == "mobile")
    assert budgets["mobile_download_mb"]["actual"] == pytest.approx(mobile / 1e6)
    assert 0.5 < budgets["accuracy"]["actual"] <= 1.0
    assert budgets["mobile_energy_mj"]["limit"] is None and budgets["mobile_energy_mj"]["holds"]
    assert budgets["split_validation"]["holds"] and manifest["validation"]["passed"]
    state = yaml.safe_load((out / ".stages.yaml").read_text())
    assert state["schema"] == "dnnsplit/stages@1" and len(state["stages"]["train"]["input_sha256"]) == 64


def test_report_has_the_figures_and_plots(first_run: tuple[Path, dict]) -> None:
    config, summary = first_run
    out = config.parent / "out"
    report = (out / "report.md").read_text()
    assert "first request ms | steady state ms | phone download MB" in report
    for heading in (
        "## Budgets",
        "## Model",
        "## Per-layer profile",
        "## Chosen plan per network",
        "## Early-exit branch",
        "## Pruning",
        "## Shipped segments",
    ):
        assert heading in report, heading
    for png in ("profile.png", "plans.png", "exits.png", "pareto.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, png
        assert f"]({png})" in report
    for net in ("cat1", "wifi"):
        doc = yaml.safe_load((out / "plans" / f"{net}.yaml").read_text())
        assert f"| {net} | {doc['predicted']['latency_ms']:.2f} |" in report
        # the phone's download: per request (1/100 of it), the first request's and the steady state's
        first, steady = doc["predicted"]["first_request_ms"], doc["predicted"]["steady_latency_ms"]
        assert f"| {first:.2f} | {steady:.2f} |" in report and doc["download"]["session_requests"] == 100
        assert f"{doc['baselines']['all-mobile']['latency_ms']:.2f}" in report
    branch = yaml.safe_load((out / "branch" / "branch.yaml").read_text())
    assert f"exit rate {branch['exit_rate']:.1%}" in report
    variants = yaml.safe_load((out / "variants" / "variants.yaml").read_text())["variants"]
    for v in variants:
        assert f"| {v['name']} | {v['method']} |" in report and f"{v['accuracy']:.4f}" in report
    accuracy = next(b["actual"] for b in summary["budgets"] if b["name"] == "accuracy")
    assert f"| test accuracy | {accuracy:.4f} |" in report and "| accuracy | >= 0.5 |" in report


def test_second_run_skips_every_stage(cli, rerun: tuple[Path, dict]) -> None:
    config, first = rerun
    code, summary, stderr = _run(cli, config)
    assert code == 0, stderr
    assert _status(summary) == {**dict.fromkeys(_status(first), "skipped"), "bottleneck": "off"}  # no section
    assert summary["budgets"] == first["budgets"]  # figures come from the record and the artifacts


def test_a_changed_section_reruns_what_it_feeds(cli, rerun: tuple[Path, dict]) -> None:
    config, _ = rerun
    config.write_text(config.read_text().replace("networks: [cat1, wifi]", "networks: [cat1, wifi, 3g]"))
    code, summary, stderr = _run(cli, config)
    assert code == 0, stderr
    status = _status(summary)
    assert status["plan"] == "ran" and all(
        status[s] == "skipped" for s in ("train", "profile", "branch", "prune")
    )
    assert (config.parent / "out" / "plans" / "3g.yaml").is_file()
    assert "| 3g |" in (config.parent / "out" / "report.md").read_text()


def test_force_reruns_one_stage(cli, rerun: tuple[Path, dict]) -> None:
    config, _ = rerun
    code, summary, stderr = _run(cli, config, "--force", "profile")
    assert code == 0, stderr
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["profile"]["status"] == "ran" and stages["profile"]["why"] == "forced"
    assert all(stages[s]["status"] == "skipped" for s in ("train", "branch", "prune"))
    code, _, stderr = cli("pipeline", str(config), "--force", "tran")
    assert code == 2 and "unknown stage 'tran'" in stderr


def test_a_branch_of_another_model_stops_the_plan_stage(cli, rerun: tuple[Path, dict]) -> None:
    config, _ = rerun
    branch_yaml = config.parent / "out" / "branch" / "branch.yaml"
    doc = yaml.safe_load(branch_yaml.read_text())
    doc["model"]["sha256"] = "f" * 64  # as if the branch stage had run on another checkpoint
    branch_yaml.write_text(yaml.safe_dump(doc))
    assert_usage_error(cli("pipeline", str(config)), "was built for another model")


def test_missed_budgets_exit_1_naming_each(cli, rerun: tuple[Path, dict]) -> None:
    config, _ = rerun
    (config.parent / "tight").mkdir()
    tight = config.parent / "tight" / "dnnsplit.yaml"  # the same stages, tighter budgets
    text = config.read_text().replace("latency_ms: 10000", "latency_ms: 0.001")
    tight.write_text(text.replace("accuracy: 0.5", "accuracy: 0.9999"))
    code, summary, stderr = _run(cli, tight, "--output", str(config.parent / "out"))
    assert code == 1, stderr
    # budgets are no stage input: nothing reruns (the bottleneck has no section: off)
    assert set(_status(summary).values()) == {"skipped", "off"} and _status(summary)["bottleneck"] == "off"
    missed = {b["name"] for b in summary["budgets"] if not b["holds"]}
    assert missed == {"latency_ms", "accuracy"}
    line = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "2 budget(s) missed" in line[0]
    assert "latency_ms" in line[0] and "(budget <= 0.001 ms)" in line[0] and "accuracy" in line[0]
    assert "**MISSED**" in (config.parent / "out" / "report.md").read_text()


def test_given_weights_skip_training_and_stages_can_be_off(
    cli, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    config = tmp_path / "dnnsplit.yaml"
    config.write_text(
        f"schema: dnnsplit/pipeline@1\noutput: out\nmodel: {{source: {tiny_checkpoint}, arch: {TINY}}}\n"
        "data: digits\n"
        "tiers: {mobile: mobile-web, cloud: cloud}\nlinks: {mobile-cloud: wifi}\n"
        "profile: {threads: 1, warmup: 1, repeat: 3, strict: false}\nbudgets: {accuracy: 0.5}\n"
    )
    code, summary, stderr = _run(cli, config)
    assert code == 0, stderr
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["branch"]["status"] == stages["prune"]["status"] == "off"
    assert stages["train"]["status"] == "ran" and not (tmp_path / "out" / "model.pt").exists()
    accuracy = next(b for b in summary["budgets"] if b["name"] == "accuracy")
    assert accuracy["holds"] and accuracy["actual"] > 0.5  # the given checkpoint, measured on the test split
    report = (tmp_path / "out" / "report.md").read_text()
    assert "weights given in the config" in report and "## Pruning" not in report
    assert "mobile (mobile-web) -> cloud (cloud)" in report


def test_a_bottleneck_section_trains_one_and_the_plan_weighs_it(
    cli, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    config = tmp_path / "dnnsplit.yaml"
    config.write_text(
        f"schema: dnnsplit/pipeline@1\noutput: out\nmodel: {{source: {tiny_checkpoint}, arch: {TINY}}}\n"
        "data: digits\ntiers: {mobile: mobile-web, edge: edge}\nlinks: {mobile-edge: 3g}\n"
        "profile: {threads: 1, warmup: 1, repeat: 3, strict: false}\n"
        "bottleneck: {at: block1, channels: 4, epochs: 1, lambda: 0}\n"
        "plan: {max_accuracy_drop: 100, session_requests: 0}\n"
    )
    code, summary, stderr = _run(cli, config)
    assert code == 0, stderr
    stages = {s["name"]: s for s in summary["stages"]}
    out = tmp_path / "out"
    state = yaml.safe_load((out / ".stages.yaml").read_text())
    assert stages["bottleneck"]["status"] == "ran" and state["stages"]["bottleneck"]["result"]["trained"]
    doc = yaml.safe_load((out / "bottleneck" / "bottleneck.yaml").read_text())
    assert doc["at"] == "block1" and doc["code"]["shape"] == [1, 4, 8, 8]
    block = yaml.safe_load((out / "plan.yaml").read_text())["boundary_codec"]
    assert (
        block["bottleneck"]["directory"] == str(out / "bottleneck") and block["bottleneck"]["refused"] is None
    )
    assert {o["codec"] for o in block["options"]} == {"none", "bottleneck"}
    manifest = yaml.safe_load((out / "segments" / "manifest.yaml").read_text())
    assert (manifest.get("codec") == "bottleneck") == (block["codec"] == "bottleneck")
    # a second run skips it; the plan stage's inputs include bottleneck.yaml
    code, summary, stderr = _run(cli, config)
    assert code == 0, stderr
    assert _status(summary)["bottleneck"] == "skipped"


def test_a_bottleneck_section_without_its_cut_is_a_config_error(cli, tmp_path: Path) -> None:
    config = tmp_path / "dnnsplit.yaml"
    config.write_text(
        "schema: dnnsplit/pipeline@1\noutput: out\nmodel: {source: torchvision:resnet18}\ndata: digits\n"
        "tiers: {mobile: mobile-web, edge: edge}\nlinks: {mobile-edge: 3g}\nbottleneck: {channels: 8}\n"
    )
    code, _, stderr = _run(cli, config)
    assert code == 2 and "bottleneck.at" in stderr and "missing key" in stderr
