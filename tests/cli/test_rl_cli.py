"""`dnnsplit rl train / eval` and `plan --solver rl` through the CLI, and every bad input they reject."""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.profiles import chain_profile, residual_profile


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    root = tmp_path_factory.mktemp("rl-cli")
    chain, residual, policy = root / "chain.json", root / "residual.json", root / "policy.zip"
    chain_profile().save(chain)
    residual_profile().save(residual)
    result = CliRunner().invoke(
        app,
        [
            "rl",
            "train",
            str(chain),
            "--scenario",
            "context",
            "--timesteps",
            "2048",
            "--seed",
            "1",
            "--output",
            str(policy),
            "--format",
            "json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["scenario"] == "context" and summary["timesteps"] == 2048 and summary["candidates"] >= 2
    assert f"wrote policy to {policy}" in result.stderr
    return {"chain": chain, "residual": residual, "policy": policy, "root": root}


def test_train_writes_a_self_contained_policy(files) -> None:
    with zipfile.ZipFile(files["policy"]) as zf:
        assert set(zf.namelist()) == {"dnnsplit.json", "policy.safetensors"}  # no pickle anywhere
        meta = json.loads(zf.read("dnnsplit.json"))
    assert meta["schema"] == "dnnsplit/rl-policy@2" and meta["scenario"] == "context"
    assert meta["network"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert meta["tiers"] == ["mobile", "edge"] and meta["model"]["sha256"] == "0" * 64
    assert meta["profile"]["path"] == str(files["chain"])
    assert [la["name"] for la in meta["problem"]["layers"]] == ["conv1", "conv2", "pool", "fc"]
    assert meta["training"]["timesteps"] == 2048 and meta["training"]["seed"] == 1
    assert not list(files["root"].glob(".policy.zip.*"))  # the temporary file was renamed away


def test_eval_json_reports_the_gap(cli, files) -> None:
    code, stdout, stderr = cli("rl", "eval", files["policy"], "--contexts", "100", "--format", "json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["scenario"] == "context" and result["contexts"] == 100
    assert 0 <= result["gap"] < 0.1 and result["gap"] == result["policies"]["rl"]["gap"]
    assert set(result["policies"]) == {"rl", "nominal-exact", "all-mobile", "all-edge", "random"}
    assert result["decision_us"]["median"] < 1000


def test_eval_table(cli, files) -> None:
    code, stdout, _ = cli("rl", "eval", files["policy"], "--contexts", "50")
    assert code == 0
    assert "held-out contexts" in stdout and "exactly optimal" in stdout and "nominal-exact" in stdout


def test_plan_with_the_rl_solver_records_solver_and_gap(cli, files) -> None:
    out = files["root"] / "plan.yaml"
    code, stdout, stderr = cli(
        "plan",
        files["chain"],
        "--solver",
        "rl",
        "--policy",
        files["policy"],
        "--network",
        "4g",
        "--output",
        out,
    )
    assert code == 0, stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["solver"]["name"] == "rl" and doc["solver"]["proven_optimal"] is False
    assert doc["solver"]["policy"] == str(files["policy"])
    exact = doc["solver"]["exact_objective"]
    assert doc["solver"]["gap"] == pytest.approx(doc["predicted"]["objective"] / exact - 1)
    assert "dnnsplit (rl)" in stdout and "above the exact optimum" in stdout


def test_multiuser_trains_and_evaluates_from_the_cli(cli, files) -> None:
    policy = files["root"] / "mu.zip"
    code, _, stderr = cli(
        "rl",
        "train",
        files["chain"],
        "--scenario",
        "multiuser",
        "--users",
        "5",
        "--input-bytes",
        "3000",
        "--timesteps",
        "256",
        "--output",
        policy,
    )
    assert code == 0, stderr
    code, stdout, stderr = cli(
        "rl", "eval", policy, "--loads", "0.3,1.2", "--seeds", "1", "--requests", "200", "--format", "json"
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert (
        result["scenario"] == "multiuser"
        and result["users"] == 5
        and [r["load"] for r in result["loads"]] == [0.3, 1.2]
    )
    row = result["loads"][1]
    assert set(row["policies"]) == {"rl", "myopic-exact", "load-aware-exact", "all-local", "all-edge"}
    assert result["gap"] == pytest.approx(
        (result["loads"][0]["rl_vs_load_aware"] + row["rl_vs_load_aware"]) / 2
    )
    assert (
        row["policies"]["all-edge"]["edge_share"] == 1.0 and row["policies"]["all-local"]["edge_share"] == 0.0
    )
    # A multiuser policy decides with the queue in view: a single plan has none, so plan refuses it.
    assert_usage_error(
        cli("plan", files["chain"], "--input-bytes", "3000", "--solver", "rl", "--policy", policy),
        "multiuser scenario",
    )


def test_missing_policy_file(cli, files) -> None:
    missing = files["root"] / "nope.zip"
    assert_usage_error(cli("rl", "eval", missing), "policy file not found")
    assert_usage_error(
        cli("plan", files["chain"], "--solver", "rl", "--policy", missing), "policy file not found"
    )


def test_policy_for_another_profile(cli, files) -> None:
    assert_usage_error(
        cli("plan", files["residual"], "--solver", "rl", "--policy", files["policy"]),
        "another model or profile",
    )
    assert_usage_error(
        cli(
            "plan",
            files["chain"],
            "--solver",
            "rl",
            "--policy",
            files["policy"],
            "--tiers",
            "mobile,edge,cloud",
        ),
        "trained for tiers mobile,edge",
    )


def test_policy_for_another_model_with_the_same_layers(cli, files, tmp_path: Path) -> None:
    # Same layer names and tensor sizes, another ONNX file: only the recorded sha256 tells them apart.
    data = json.loads(files["chain"].read_text())
    data["model"]["sha256"] = "f" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    assert_usage_error(
        cli("plan", other, "--solver", "rl", "--policy", files["policy"]),
        "trained for another model or profile",
        "sha256 000000000000..., this profile's ffffffffffff...",
    )


def test_policy_records_the_provenance_a_plan_records(cli, files) -> None:
    with zipfile.ZipFile(files["policy"]) as zf:
        meta = json.loads(zf.read("dnnsplit.json"))
    code, stdout, stderr = cli("plan", files["chain"], "--format", "json")
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert meta["model"] == plan["model"]
    assert meta["profile"] == {**plan["profile"], "compress": None}


class _Touch:
    """Unpickling this creates ``path``: proof that reading a file ran code the file chose."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def _old_policy(files, path: Path, sb3_zip: bytes) -> Path:
    """The trained policy in the old layout (rl-policy@1), with ``sb3_zip`` as its stable-baselines3 model."""
    with zipfile.ZipFile(files["policy"]) as zf:
        meta = json.loads(zf.read("dnnsplit.json"))
    meta["schema"] = "dnnsplit/rl-policy@1"
    meta.pop("network")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dnnsplit.json", json.dumps(meta))
        zf.writestr("sb3.zip", sb3_zip)
    return path


def test_pickled_policy_runs_no_code(cli, files, tmp_path: Path) -> None:
    """An old policy.zip whose SB3 model unpickles a payload: refused in one line, the payload never runs."""
    marker = tmp_path / "PAYLOAD_RAN"
    serialized = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("data", json.dumps({"observation_space": {":type:": "Box", ":serialized:": serialized}}))
    policy = _old_policy(files, tmp_path / "old.zip", inner.getvalue())
    assert_usage_error(
        cli("rl", "eval", policy, "--contexts", "5"), "pickled", "train it again", "--trust-pickle"
    )
    assert_usage_error(
        cli("plan", files["chain"], "--solver", "rl", "--policy", policy, "--network", "4g"),
        "pickled",
        "--trust-pickle",
    )
    assert not marker.exists()


def test_old_policy_evaluates_with_trust_pickle(cli, files, tmp_path: Path) -> None:
    import torch
    from stable_baselines3 import PPO

    from dnnsplit.partition.rl.context_env import ContextEnv
    from dnnsplit.partition.rl.policy_file import load_policy

    new = load_policy(files["policy"])
    agent = PPO("MlpPolicy", ContextEnv(new.candidates, new.space), policy_kwargs={"net_arch": [64, 64]})
    agent.policy.load_state_dict({k: torch.from_numpy(v) for k, v in new.weights.items()})
    buffer = io.BytesIO()
    agent.save(buffer)
    old = _old_policy(files, tmp_path / "old.zip", buffer.getvalue())
    args = ("--contexts", "40", "--format", "json")
    code, stdout, stderr = cli("rl", "eval", old, "--trust-pickle", *args)
    assert code == 0, stderr
    code, again, _ = cli("rl", "eval", files["policy"], *args)
    assert code == 0
    # Same network, same held-out contexts: the same decisions (decision times aside).
    first, second = json.loads(stdout), json.loads(again)
    assert first["policies"] == second["policies"] and first["gap"] == second["gap"]


def test_not_a_policy(cli, files) -> None:
    assert_usage_error(cli("rl", "eval", files["chain"]), "not a policy zip")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "swarm"], "unknown scenario 'swarm'"),
        (["--scenario", "multiuser", "--tiers", "mobile,cloud"], "needs an edge tier"),
        (["--timesteps", "0"], "--timesteps must be at least 1"),
        (["--tiers", "edge,mobile"], "unsupported tiers"),
    ],
)
def test_train_bad_usage(cli, files, args, needle) -> None:
    out = files["root"] / "bad.zip"
    assert_usage_error(cli("rl", "train", files["chain"], "--output", out, *args), needle)
    assert not out.exists()


def test_train_output_must_be_a_zip(cli, files) -> None:
    assert_usage_error(
        cli("rl", "train", files["chain"], "--output", files["root"] / "p.json"), "must end in .zip"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--solver", "rl"], "--solver rl needs --policy"),
        (["--solver", "genetic"], "unknown --solver 'genetic'"),
        (["--policy", "x.zip"], "--policy needs --solver rl"),
    ],
)
def test_plan_solver_bad_usage(cli, files, args, needle) -> None:
    assert_usage_error(cli("plan", files["chain"], *args), needle)


def test_plan_rl_rejects_what_it_cannot_do(cli, files) -> None:
    base = ("plan", files["chain"], "--solver", "rl", "--policy", files["policy"])
    assert_usage_error(cli(*base, "--private-input"), "--private-input")
    assert_usage_error(cli(*base, "--sweep-bandwidth", "1:10:3"), "no bandwidth sweep")


def test_eval_bad_loads(cli, files) -> None:
    assert_usage_error(cli("rl", "eval", files["policy"], "--loads", "0.3,heavy"), "malformed --loads")


def test_help_has_examples(cli) -> None:
    for args in (["rl", "--help"], ["rl", "train", "--help"], ["rl", "eval", "--help"]):
        code, stdout, _ = cli(*args)
        assert code == 0 and "Examples" in stdout and "dnnsplit rl" in stdout
