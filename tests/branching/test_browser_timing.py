"""``profile --runtime browser --branch``: the branch timed as the browser client runs it, and the plan
that charges those times."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.browser import needs_browser
from tests.fixtures.trained import SHAPE, TINY


def test_the_branch_is_timed_in_the_browser_only(cli, tiny_branch: Path, tmp_path: Path) -> None:
    code, _, err = cli("profile", TINY, "--input-shape", SHAPE, "--branch", tiny_branch)
    assert code == 2 and "--branch times the branch in the browser only" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # Not a branch directory: refused before any measuring.
    code, _, err = cli("profile", TINY, "--input-shape", SHAPE, "--runtime", "browser", "--branch", tmp_path)
    assert code == 2 and "branch.yaml not found" in err


def test_a_branch_of_another_model_is_refused_before_timing(cli, tiny_branch: Path) -> None:
    code, _, err = cli(
        "profile", TINY, "--input-shape", "1x3x24x24", "--runtime", "browser", "--repeat", "1",
        "--warmup", "0", "--rounds", "1", "--branch", tiny_branch,
    )  # fmt: skip
    assert code == 2 and "was built for another model" in err


@needs_browser()
def test_the_browser_profile_times_the_branch_and_the_plan_charges_it(
    cli, tiny_checkpoint: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    from dnnsplit.branching.kernels import compile_branch
    from dnnsplit.models.export import file_sha256

    profile = tmp_path / "browser.json"
    code, out, err = cli(
        "profile", tiny_checkpoint, "--arch", TINY, "--input-shape", SHAPE, "--runtime", "browser",
        "--threads", "1", "--warmup", "1", "--repeat", "4", "--branch", tiny_branch, "--output", profile,
    )  # fmt: skip
    assert code == 0, err
    timing = json.loads(profile.read_text())["branch"]
    assert timing["engine"] == "kernels" and timing["reason"] == ""
    assert timing["binary_layers"] == compile_branch(tiny_branch / "mobile.onnx").binary_layers > 0
    assert timing["mobile_sha256"] == file_sha256(tiny_branch / "mobile.onnx")
    assert timing["repeat"] == 4 and timing["directory"] == str(tiny_branch)
    assert 0 < timing["stem_ms"] <= timing["stem_p90_ms"] and 0 < timing["branch_ms"] <= timing["branch_p90_ms"]
    assert timing["onnxruntime_branch_ms"] > 0
    printed = re.search(r"stem ([\d.]+) ms \+ branch ([\d.]+) ms on bit kernels", out)
    assert printed is not None, out
    assert float(printed[1]) == pytest.approx(timing["stem_ms"], abs=1e-3)
    assert float(printed[2]) == pytest.approx(timing["branch_ms"], abs=1e-3)

    # The mobile tier's own profile: its branch times as measured.
    code, out, err = cli(
        "plan", profile, "--profile", f"mobile={profile}", "--branch", tiny_branch, "--tiers", "mobile,edge",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    block = json.loads(out)["branch"]
    assert block["compute_ms"]["stem"] == pytest.approx(timing["stem_ms"], rel=1e-6)
    assert block["compute_ms"]["branch"] == pytest.approx(timing["branch_ms"], rel=1e-6)
    assert block["mobile_times"] == f"measured in {profile} (bit kernels)"
    exited = timing["stem_ms"] + timing["branch_ms"] + block["download_share_ms"]
    assert block["download_share_ms"] > 0 and block["sequential"]["exited"]["latency_ms"] == pytest.approx(exited)
