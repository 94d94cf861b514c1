"""`dnnsplit plan` through the CLI: plan.yaml, formats, sweep and plot, CI gating and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.cost_model import recompute_by_hand
from tests.fixtures.profiles import chain_profile
from tests.fixtures.tiny_cli import TINY


@pytest.fixture()
def chain(tmp_path: Path) -> Path:
    path = tmp_path / "chain.json"
    chain_profile().save(path)
    return path


def test_plan_writes_a_plan_file_that_recomputes_by_hand(cli, chain: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    code, stdout, stderr = cli("plan", chain, "--network", "up=25,down=50,rtt=1,radio=wifi", "--output", out)
    assert code == 0, stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["schema"] == "dnnsplit/plan@1"
    assert doc["model"]["sha256"] == "0" * 64 and doc["profile"]["path"] == str(chain)
    assert doc["tiers"] == ["mobile", "edge"]
    # At 25 Mbit/s the cut after pool wins (32.4064 + 32.768/25 ms; see test_plan_file's sweep test).
    assert [(s["tier"], s["from"], s["to"]) for s in doc["stretches"]] == [
        ("mobile", "conv1", "pool"),
        ("edge", "fc", "fc"),
    ]
    assert doc["cut_tensors"]["mobile-edge"]["up"] == [{"name": "c", "bytes": 4096}]
    # plus 1/100 (--session-requests' default) of the phone's download of conv1..pool's 11,072 bytes of weights
    download = 4 * (448 + 2320) * 8 / 50_000
    assert doc["download"]["session_requests"] == 100
    assert doc["predicted"]["latency_ms"] == pytest.approx(32.4064 + 32.768 / 25 + download / 100)
    assert doc["predicted"]["first_request_ms"] == pytest.approx(32.4064 + 32.768 / 25 + download)
    assert (doc["predicted"]["latency_ms"], doc["predicted"]["energy_mj"]) == pytest.approx(
        recompute_by_hand(doc)
    )
    assert set(doc["baselines"]) == {"all-mobile", "all-edge", "best-single-cut"}
    assert doc["baselines"]["all-mobile"]["latency_ms"] == pytest.approx(34.2 + 4 * 13018 * 8 / 50_000 / 100)
    # On a chain Neurosurgeon's single cut is optimal too: it is the best baseline, and the speed-up is 1.
    assert doc["speedup"]["vs"] == "best-single-cut" and doc["speedup"]["latency"] == pytest.approx(1.0)
    assert doc["baselines"]["all-mobile"]["latency_ms"] / doc["predicted"]["latency_ms"] > 1.0
    assert doc["devices"]["mobile"] == {
        "name": "mobile-web",
        "latency_scale": 6.0,
        "compute": "host profile x 6",
        "compute_power_w": 2.5,
        "idle_power_w": 0.3,
    }
    # The summary names the stretches, the cut tensor and the speed-up.
    assert (
        "conv1" in stdout
        and "pool" in stdout
        and "speed-up over the best baseline (best-single-cut)" in stdout
    )
    assert f"wrote plan to {out}" in stderr


def test_plan_formats(cli, chain: Path) -> None:
    code, stdout, _ = cli("plan", chain, "--format", "json", "--tiers", "mobile,edge,cloud")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["schema"] == "dnnsplit/plan@1" and list(doc["links"]) == ["mobile-edge", "edge-cloud"]
    assert doc["links"]["edge-cloud"]["radio"] is None and doc["links"]["mobile-edge"]["name"] == "wifi"
    code, stdout, _ = cli("plan", chain, "--format", "yaml", "--tiers", "mobile,cloud", "--network", "5g")
    assert code == 0
    doc = yaml.safe_load(stdout)
    assert list(doc["links"]) == ["mobile-cloud"] and doc["links"]["mobile-cloud"]["up_mbps"] == 30.0


def test_input_bytes_changes_what_the_raw_input_costs(cli, chain: Path) -> None:
    args = ("plan", chain, "--format", "json", "--network", "up=10,down=50,rtt=1,radio=wifi")
    raw = json.loads(cli(*args)[1])
    jpeg = json.loads(cli(*args, "--input-bytes", "15000")[1])
    # 150,528 B at 10 Mbit/s is 120 ms: the phone keeps the raw frame. A 15 kB JPEG takes 12 ms: offload.
    assert raw["baselines"]["all-edge"]["latency_ms"] == pytest.approx(3.2864 + 120.4224)
    assert jpeg["baselines"]["all-edge"]["latency_ms"] == pytest.approx(3.2864 + 12.0)
    assert jpeg["predicted"]["layers"] == {"mobile": 0, "edge": 4}
    assert jpeg["profile"]["input_bytes_on_wire"] == 15000


def test_missed_budget_exits_1_and_says_where_time_goes(cli, chain: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    # the phone's download not charged (--session-requests 0): the compute alone misses the budget
    code, stdout, stderr = cli("plan", chain, "--budget-ms", "20", "--session-requests", "0", "--output", out)
    assert code == 1
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in stderr
    assert "14.200 ms over the 20 ms budget" in error[0] and "compute on mobile 34.2 ms" in error[0]
    assert "MISSES by 14.200 ms" in stdout
    doc = yaml.safe_load(out.read_text())  # the plan is still written, for the CI log
    assert doc["status"]["meets_budget"] is False and doc["status"]["over_budget_ms"] == pytest.approx(14.2)
    code, _, _ = cli("plan", chain, "--budget-ms", "40")
    assert code == 0


def test_energy_objective_and_hard_budget(cli, chain: Path) -> None:
    args = ("plan", chain, "--format", "json", "--network", "up=25,down=50,rtt=1,radio=wifi")
    frugal = json.loads(cli(*args, "--objective", "energy")[1])
    fastest = json.loads(cli(*args)[1])
    assert frugal["objective"] == "energy"
    assert frugal["predicted"]["energy_mj"] <= fastest["predicted"]["energy_mj"]
    for name, figures in frugal["baselines"].items():
        assert frugal["predicted"]["energy_mj"] <= figures["energy_mj"] * (1 + 1e-12), name


def test_sweep_table_json_and_plot(cli, chain: Path, tmp_path: Path) -> None:
    plot = tmp_path / "sweep.png"
    network = "up=1,down=50,rtt=1,radio=wifi"
    code, stdout, stderr = cli(
        "plan", chain, "--network", network, "--sweep-bandwidth", "1:1000:31", "--plot", plot
    )
    assert code == 0, stderr
    assert "Bandwidth sweep on the mobile-edge uplink" in stdout
    assert "* mobile-edge: after pool" in stdout and "* mobile-edge: raw input" in stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, stdout, _ = cli(
        "plan", chain, "--network", network, "--sweep-bandwidth", "1:1000:31", "--format", "json"
    )
    data = json.loads(stdout)
    rows = data["sweep"]
    assert len(rows) == 31 and rows[0]["up_mbps"] == pytest.approx(1.0) and rows[-1]["up_mbps"] == 1000
    assert [r["cut"] for r in rows].count("all on mobile") == sum(r["up_mbps"] < 18.27 for r in rows)
    assert data["plan"]["schema"] == "dnnsplit/plan@1"
    for r in rows:
        assert r["latency_ms"] <= min(r["baselines"].values()) * (1 + 1e-12)
    # --plot alone sweeps a default range.
    code, _, _ = cli("plan", chain, "--plot", tmp_path / "default.png", "--format", "json")
    assert code == 0 and (tmp_path / "default.png").exists()


def test_plan_profiles_a_model_first(cli, tmp_path: Path) -> None:
    saved, out = tmp_path / "profile.json", tmp_path / "plan.yaml"
    code, _, stderr = cli(
        "plan",
        TINY,
        "--input-shape",
        "1x3x32x32",
        "--repeat",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--save-profile",
        saved,
        "--output",
        out,
        "--format",
        "json",
    )
    assert code == 0, stderr
    profile = json.loads(saved.read_text())
    doc = yaml.safe_load(out.read_text())
    assert [la["name"] for la in doc["layers"]] == [la["name"] for la in profile["layers"]]
    assert doc["model"]["sha256"] == profile["model"]["sha256"] and len(doc["model"]["sha256"]) == 64
    first = doc["layers"][0]
    assert first["compute_ms"]["mobile"] == pytest.approx(6.0 * profile["layers"][0]["latency_ms"], rel=1e-5)
    assert doc["tensors"][0] == {
        "name": "input",
        "bytes": 12288,
        "producer": None,
        "consumers": [first["name"]],
    }


def test_measured_tier_profile_and_device_file(cli, chain: Path, tmp_path: Path) -> None:
    edge = tmp_path / "edge.json"
    chain_profile(scale=0.01).save(edge)
    phone = tmp_path / "phone.yaml"
    phone.write_text("name: slow-phone\nlatency_scale: 20\ncompute_power_w: 3\nidle_power_w: 0.5\n")
    code, stdout, stderr = cli(
        "plan", chain, "--profile", f"edge={edge}", "--device", f"mobile={phone}", "--format", "json"
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["layers"][0]["compute_ms"] == {"mobile": pytest.approx(40.0), "edge": pytest.approx(0.02)}
    assert doc["devices"]["edge"]["compute"] == f"measured: {edge}"
    assert doc["mobile_power"] == {"compute_w": 3.0, "idle_w": 0.5}


def test_bad_inputs(cli, chain: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    assert_usage_error(cli("plan", chain, "--network", "up=8,down=40"), "lacks rtt")
    assert_usage_error(cli("plan", chain, "--network", "6g"), "unknown network preset '6g'")
    assert_usage_error(cli("plan", chain, "--tiers", "edge,cloud"), "unsupported tiers")
    assert_usage_error(cli("plan", chain, "--objective", "speed"), "speed")
    assert_usage_error(cli("plan", chain, "--device", "cloud=edge"), "not among --tiers")
    assert_usage_error(cli("plan", chain, "--device", "mobile"), "not TIER=VALUE")
    assert_usage_error(cli("plan", chain, "--profile", f"edge={tmp_path / 'nope.json'}"), "file not found")
    assert_usage_error(cli("plan", chain, "--backhaul", "4g"), "--backhaul needs the edge and cloud tiers")
    assert_usage_error(cli("plan", chain, "--sweep-bandwidth", "100:1:5"), "bad bandwidth sweep")
    assert_usage_error(cli("plan", chain, "--plot", tmp_path / "x.jpg"), "not a .png")
    assert_usage_error(cli("plan", chain, "--output", tmp_path / "plan.txt"), "cannot tell the format")
    assert_usage_error(cli("plan", chain, "--budget-ms", "0"), "budget must be > 0")
    assert_usage_error(cli("plan", chain, "--input-bytes", "0"), "input bytes")
    assert_usage_error(cli("plan", tmp_path / "missing.json"), "file not found")
    assert_usage_error(cli("plan", chain, "--save-profile", tmp_path / "p.json"), "--save-profile")
    broken = tmp_path / "broken.yaml"
    broken.write_text("schema: [unclosed\n")
    assert_usage_error(cli("plan", broken), "not valid YAML")
    other = tmp_path / "plan-as-profile.yaml"
    other.write_text("schema: dnnsplit/plan@1\n")
    assert_usage_error(cli("plan", other), "not a dnnsplit/profile file")
    # Infeasible constraints: exit 2, naming the minimum, and no output left behind.
    assert_usage_error(
        cli("plan", chain, "--private-input", "--max-mobile-mb", "0", "--output", out),
        "no plan fits max_mobile_mb=0",
        "at least 0.001792",
    )
    assert not out.exists() and not list(tmp_path.glob(".plan.yaml.*"))
    assert_usage_error(cli("plan", "torchvision:resnet_18"), "resnet18")


def test_plan_an_onnx_file(cli, tiny_onnx: Path) -> None:
    code, stdout, stderr = cli(
        "plan",
        tiny_onnx,
        "--repeat",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--format",
        "json",
        "--tiers",
        "mobile,edge,cloud",
        "--network",
        "3g",
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["model"]["source"] == str(tiny_onnx) and len(doc["model"]["sha256"]) == 64
    assert doc["tensors"][0]["bytes"] == 3 * 32 * 32 * 4  # the ONNX file's own input shape
    assert sum(doc["predicted"]["layers"].values()) == len(doc["layers"]) > 5
    assert (doc["predicted"]["latency_ms"], doc["predicted"]["energy_mj"]) == pytest.approx(
        recompute_by_hand(doc)
    )


def test_the_codec_and_session_flags_are_checked(cli, chain: Path) -> None:
    for args, needle in (
        (["--max-accuracy-drop", "-1"], "--max-accuracy-drop must be 0 or more"),
        (["--coding", "zstd"], "--coding chooses among measured codings"),
        (["--session-requests", "-5"], "--session-requests must be 0 or more"),
        (["--boundaries", "missing.json"], "missing.json"),
    ):
        code, _, stderr = cli("plan", chain, *args)
        assert code == 2 and needle in stderr and "Traceback" not in stderr, (args, stderr)
    code, _, stderr = cli("boundaries", "torchvision:resnet18", "--data", "digits", "-o", "b.json", "--samples", "0")
    assert code == 2 and "--samples and --accuracy-samples must be at least 1" in stderr
