"""One plan, three paths: `dnnsplit plan`, the pipeline's plan stage and ``make_plan`` write the same document
(the same keys at every depth, the same figures), and each refuses a branch built for another model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dnnsplit.branching.branch_file import load_branch
from dnnsplit.errors import UsageError
from dnnsplit.partition.request import PlanRequest, make_plan
from dnnsplit.pipeline.config import load_config
from dnnsplit.pipeline.layout import Layout
from dnnsplit.pipeline.planning import plan_networks
from dnnsplit.profiling.profile import Profile
from dnnsplit.progress import no_progress
from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.trained import TINY

CONFIG = f"""\
schema: dnnsplit/pipeline@1
output: out
model: {{source: {TINY}, input_shape: 1x3x16x16}}
data: digits
tiers: {{mobile: mobile-web, edge: edge}}
links: {{mobile-edge: 3g}}
branch: {{enabled: true}}
plan: {{networks: [3g, wifi]}}
"""


def _shape(value: Any) -> Any:
    """The keys of a document at every depth (lists element by element), without the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return None


def _without_paths(doc: dict[str, Any]) -> dict[str, Any]:
    """The document less the two fields that name where its inputs lie (they differ by path, by design)."""
    return {
        **doc,
        "profile": {**doc["profile"], "path": None},
        "branch": {**doc["branch"], "directory": None},
    }


@pytest.fixture(scope="module")
def cli_plan(tiny_checkpoint: Path, tiny_branch: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dnnsplit plan` of the tiny checkpoint with its branch; its profile saved beside the plan."""
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    root = tmp_path_factory.mktemp("plan-paths")
    args = [
        "plan", str(tiny_checkpoint), "--arch", TINY, "--branch", str(tiny_branch), "--network", "3g",
        "--output", str(root / "plan.yaml"), "--save-profile", str(root / "profile.json"),
        "--threads", "1", "--repeat", "3", "--warmup", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return root


def _pipeline_plan(root: Path, profile: Path, branch: Path) -> dict[str, Any]:
    """The pipeline's plan stage on the given profile and branch, as its shipped OUT/plan.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "dnnsplit.yaml"
    config_path.write_text(CONFIG)
    config = load_config(config_path)
    layout = Layout(config.output)
    layout.root.mkdir()
    shutil.copy(profile, layout.profile)
    shutil.copytree(branch, layout.branch)
    summary = plan_networks(config, layout, no_progress)
    assert set(summary["networks"]) == {"3g", "wifi"} and summary["shipped"] == "3g"
    return yaml.safe_load(layout.plan.read_text())


def test_every_path_writes_the_same_plan(cli_plan: Path, tiny_branch: Path, tmp_path: Path) -> None:
    from_cli = yaml.safe_load((cli_plan / "plan.yaml").read_text())
    from_pipeline = _pipeline_plan(tmp_path, cli_plan / "profile.json", tiny_branch)
    from dnnsplit.partition.network import NETWORK_PRESETS

    profile = Profile.load(cli_plan / "profile.json")
    request = PlanRequest(
        profile,
        str(cli_plan / "profile.json"),
        links={"mobile-edge": NETWORK_PRESETS["3g"]},
        branch=load_branch(tiny_branch).costs(tiny_branch),
    )
    from_library = yaml.safe_load(yaml.safe_dump(make_plan(request).to_dict()))

    assert _shape(from_cli) == _shape(from_pipeline) == _shape(from_library)
    # The branch block has one shape: the expected latency with the branch, and what it saves.
    for doc in (from_cli, from_pipeline, from_library):
        block = doc["branch"]
        assert block["latency_ms"] == pytest.approx(doc["predicted"]["latency_ms"] - block["saves_latency_ms"])
        assert block["at"] == load_branch(tiny_branch).at
    # Same inputs, same figures: only where the inputs lie differs.
    assert _without_paths(from_cli) == _without_paths(from_pipeline) == _without_paths(from_library)


def _foreign(branch: Path, tmp_path: Path) -> Path:
    """A copy of ``branch`` whose branch.yaml says it was built from another model."""
    copy = shutil.copytree(branch, tmp_path / "foreign-branch")
    doc = yaml.safe_load((copy / "branch.yaml").read_text())
    doc["model"]["sha256"] = "f" * 64
    (copy / "branch.yaml").write_text(yaml.safe_dump(doc))
    return copy


def test_a_branch_of_another_model_is_refused_on_every_path(
    cli, cli_plan: Path, tiny_checkpoint: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    foreign = _foreign(tiny_branch, tmp_path)
    profile = cli_plan / "profile.json"
    assert_usage_error(cli("plan", profile, "--branch", foreign), "was built for another model")
    with pytest.raises(UsageError, match="was built for another model"):
        _pipeline_plan(tmp_path / "pipeline", profile, foreign)
    request = PlanRequest(Profile.load(profile), branch=load_branch(foreign).costs(foreign))
    with pytest.raises(UsageError, match="was built for another model"):
        make_plan(request)
