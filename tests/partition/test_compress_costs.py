"""A boundary codec shrinks what crosses between segments; the model outputs still return as float32."""

from __future__ import annotations

from pathlib import Path

import yaml

from dnnsplit.partition import problem_from_profile
from dnnsplit.partition.evaluate import evaluate
from dnnsplit.partition.plan_file import PlanContext, load_plan, save_plan
from dnnsplit.partition.planner import solve
from tests.fixtures.profiles import chain_profile

TINY = "tests.fixtures.tiny_models:tiny_cnn"
SHAPE = ("--input-shape", "1x3x32x32")


def test_int8_plan_charges_the_boundary_at_one_byte_and_the_logits_at_four() -> None:
    problem = problem_from_profile(chain_profile(), compress="int8")
    # conv1 on the phone, the rest on the edge: 'a' (16x56x56) goes up, the 10 logits come back.
    prediction = evaluate(problem, {"conv1": "mobile", "conv2": "edge", "pool": "edge", "fc": "edge"})
    (link,) = prediction.links
    assert [(t.name, t.bytes) for t in link.up_tensors] == [("a", 16 * 56 * 56)]
    assert [(t.name, t.bytes) for t in link.down_tensors] == [("logits", 10 * 4)]
    fp16 = evaluate(problem_from_profile(chain_profile(), compress="fp16"), [0, 1, 1, 1]).links[0]
    assert (fp16.up_bytes, fp16.down_bytes) == (16 * 56 * 56 * 2, 40)
    plain = evaluate(problem_from_profile(chain_profile()), [0, 1, 1, 1]).links[0]
    assert (plain.up_bytes, plain.down_bytes) == (16 * 56 * 56 * 4, 40)


def test_plan_file_keeps_the_returned_size(tmp_path: Path) -> None:
    problem = problem_from_profile(chain_profile(), compress="int8")
    plan = solve(problem)
    save_plan(tmp_path / "plan.yaml", plan, PlanContext(compress="int8"))
    doc = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    logits = next(t for t in doc["tensors"] if t["name"] == "logits")
    assert (logits["bytes"], logits["return_bytes"]) == (10, 40)
    again = load_plan(tmp_path / "plan.yaml")
    assert evaluate(again.problem, again.assignment).latency_ms == plan.prediction.latency_ms
    # the all-edge baseline returns the logits: 40 bytes down, whatever the codec
    edge = doc["baselines"]["all-edge"]["breakdown"]["links"][0]
    assert edge["down_tensors"] == [{"name": "logits", "bytes": 40}]


def test_plan_and_split_with_int8_agree_on_every_byte(cli, tmp_path: Path) -> None:
    phone = tmp_path / "phone.yaml"
    phone.write_text("name: slow-phone\nlatency_scale: 1000\ncompute_power_w: 3\nidle_power_w: 0.5\n")
    plan_path = tmp_path / "plan.yaml"
    # a very slow phone keeps only the stem (private input); a fast link sends the rest to the edge
    flags = "--repeat 2 --warmup 1 --threads 1 --private-input --network up=1000,down=1000,rtt=1"
    code, _, stderr = cli(
        "plan",
        TINY,
        *SHAPE,
        *flags.split(),
        "--device",
        f"mobile={phone}",
        "--compress",
        "int8",
        "-o",
        plan_path,
    )
    assert code == 0, stderr
    code, _, stderr = cli("split", TINY, *SHAPE, "--plan", plan_path, "--output", tmp_path / "seg")
    assert code == 0, stderr
    plan = yaml.safe_load(plan_path.read_text())
    manifest = yaml.safe_load((tmp_path / "seg" / "manifest.yaml").read_text())
    assert plan["compress"] == manifest["compress"] == "int8"
    first, last = manifest["segments"][0], manifest["segments"][-1]
    assert (first["tier"], last["tier"]) == ("mobile", "edge")
    sent = {t["name"].removesuffix("__int8"): t["bytes"] for t in first["outputs"]}
    returned = {t["name"]: t["bytes"] for t in last["outputs"] if t["to"] == ["result"]}
    cut = plan["cut_tensors"]["mobile-edge"]
    assert {t["name"]: t["bytes"] for t in cut["up"]} == sent
    assert {t["name"]: t["bytes"] for t in cut["down"]} == returned == {"logits": 40}
    assert all(t["dtype"] == "uint8" for t in first["outputs"])
