"""Issue 23.7: figures known to be wrong must not pass silently.

A loaded machine is played by a runtime whose per-layer times add up to half the measured whole model (as
they did under load: 0.49-0.71x), injected into a fresh ``dnnsplit`` process (``_loaded``), so the cases do
not depend on this machine's load. The planner is also fed a profile file whose layers are off, as files
written before calibration existed are, and a split with ``--compress int8`` is checked byte for byte
against the plan that priced it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.hardening import TINY, Case, CliResult, Observed, dnnsplit, env

SHAPE = ("--input-shape", "1x3x32x32")
FAST = (*SHAPE, "--repeat", "3", "--warmup", "1", "--threads", "1")
WHOLE_MS = 10.0
MOBILE_SCALE = 6.0  # the mobile-web preset's latency_scale

# Runs the CLI with ``run.measure_once`` replaced: every round's layers add up to 0.5x the whole model.
_LOADED = f"""
import sys
import numpy as np
from dnnsplit.profiling import run
from dnnsplit.profiling.measure import Measurement

def measure_once(prepared, settings, progress, interleaved=False):
    n = len(prepared.graph.layers)
    layers = np.full((settings.repeat, n), {WHOLE_MS} * 0.5 / n)
    device = {{"name": "host", "runtime": "onnxruntime", "cpu": "probe: a loaded machine", "threads": 1}}
    return Measurement(layers, np.full(settings.repeat, {WHOLE_MS}), []), device

run.measure_once = measure_once
from dnnsplit.cli.main import app
sys.argv = ["dnnsplit", *sys.argv[1:]]
app()
"""


def _loaded(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """``dnnsplit ARGS`` in a fresh process on the (simulated) loaded machine."""
    cmd = [sys.executable, "-c", _LOADED, *map(str, args)]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return CliResult(124, "", f"timed out after {timeout:g} s")
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _profile_scaled(work: Path) -> Observed:
    out = work / "profile.json"
    result = _loaded("profile", TINY, *FAST, "--output", out)
    if result.code != 0 or not out.is_file():
        return Observed(False, f"exit {result.code}: {result.stderr.strip()[-160:]}")
    doc = json.loads(out.read_text())
    cal = doc.get("calibration") or {}
    total = doc["total"]
    said = "(OUTSIDE ±15%); layer times scaled x2.00" in result.stdout
    ok = cal.get("scale") == 2.0 and abs(total["layer_sum_ms"] - total["latency_ms"]) < 1e-5 and said
    return Observed(
        ok,
        f"exit 0; calibration scale {cal.get('scale')}, measured ratio {cal.get('measured_ratio')}, "
        f"rounds {cal.get('rounds')}; layer sum {total['layer_sum_ms']:.3f} ms = whole "
        f"{total['latency_ms']:.3f} ms; table {'says so' if said else 'SILENT'}",
    )


def _profile_strict(work: Path) -> Observed:
    out = work / "profile.json"
    seen = _loaded("profile", TINY, *FAST, "--strict", "--output", out).one_line(code=1)
    return Observed(
        seen.ok and not out.exists(), f"{seen.text}; profile {'WRITTEN' if out.exists() else 'not written'}"
    )


def _plan_from_profile(work: Path) -> tuple[CliResult, dict]:
    """The planner's figures for a profile like ``_profile_scaled``'s, and the plan command's result."""
    out = work / "profile.json"
    made = _loaded("profile", TINY, *FAST, "--output", out)
    if made.code != 0:
        raise RuntimeError(f"could not profile: {made.stderr.strip()}")
    result = dnnsplit("plan", out, "--format", "json")
    return result, json.loads(result.stdout) if result.code == 0 else {}


def _plan_prices_the_whole(work: Path) -> Observed:
    result, doc = _plan_from_profile(work)
    if not doc:
        return Observed(False, f"exit {result.code}: {result.stderr.strip()[-160:]}")
    compute = doc["baselines"]["all-mobile"]["breakdown"]["compute_ms"]["mobile"]
    shown = (doc["profile"].get("calibration") or {}).get("scale")
    ok = abs(compute - WHOLE_MS * MOBILE_SCALE) < 1e-3 and shown == 2.0 and "scaled x2.00" in result.stderr
    return Observed(
        ok,
        f"all-mobile compute {compute:.3f} ms = whole {WHOLE_MS:g} ms x {MOBILE_SCALE:g} (the low sum gives "
        f"{WHOLE_MS * 0.5 * MOBILE_SCALE:g}); plan.profile.calibration.scale {shown}; note "
        f"{'printed' if 'scaled x2.00' in result.stderr else 'MISSING'}",
    )


def _plan_old_file(work: Path) -> Observed:
    """A real profile, edited to what an old file measured on a loaded machine says: whole 2x the layers."""
    out = work / "profile.json"
    made = dnnsplit("profile", TINY, *FAST, "--output", out)
    if made.code != 0:
        return Observed(False, f"profile exit {made.code}: {made.stderr.strip()[-160:]}")
    doc = json.loads(out.read_text())
    doc.pop("calibration", None)
    layer_sum = sum(la["latency_ms"] for la in doc["layers"])
    doc["total"]["latency_ms"] = 2 * layer_sum
    out.write_text(json.dumps(doc))
    result = dnnsplit("plan", out, "--format", "json")
    if result.code != 0:
        return Observed(False, f"plan exit {result.code}: {result.stderr.strip()[-160:]}")
    plan = json.loads(result.stdout)
    compute = plan["baselines"]["all-mobile"]["breakdown"]["compute_ms"]["mobile"]
    want = 2 * layer_sum * MOBILE_SCALE
    noted = "scaled x2.00" in result.stderr
    ok = abs(compute - want) <= 1e-6 * want + 1e-6 and noted
    return Observed(
        ok,
        f"all-mobile compute {compute:.4f} ms (whole x6 = {want:.4f}, layer sum x6 = {want / 2:.4f}); note "
        f"{'printed' if noted else 'MISSING'}",
    )


def _pipeline_strict(work: Path) -> Observed:
    import torch

    from tests.fixtures.tiny_models import digits_net

    torch.save(digits_net().state_dict(), work / "w.pt")
    config = work / "dnnsplit.yaml"
    config.write_text(
        yaml.safe_dump(
            {
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
            }
        )
    )
    seen = _loaded("pipeline", config, "--format", "json").one_line(code=1)
    planned = (work / "out" / "plan.yaml").exists() or (work / "out" / "profile.json").exists()
    return Observed(
        seen.ok and not planned, f"{seen.text}; profile/plan {'WRITTEN' if planned else 'not written'}"
    )


def _compressed_logits(work: Path) -> Observed:
    phone = work / "phone.yaml"
    phone.write_text("name: slow-phone\nlatency_scale: 1000\ncompute_power_w: 3\nidle_power_w: 0.5\n")
    plan_path = work / "plan.yaml"
    planned = dnnsplit(
        "plan",
        TINY,
        *FAST,
        "--private-input",
        "--device",
        f"mobile={phone}",
        "--network",
        "up=1000,down=1000,rtt=1",
        "--compress",
        "int8",
        "--output",
        plan_path,
    )
    if planned.code != 0:
        return Observed(False, f"plan exit {planned.code}: {planned.stderr.strip()[-160:]}")
    split = dnnsplit("split", TINY, *SHAPE, "--plan", plan_path, "--validate", "1", "--output", work / "seg")
    if split.code != 0:
        return Observed(False, f"split exit {split.code}: {split.stderr.strip()[-160:]}")
    plan = yaml.safe_load(plan_path.read_text())
    manifest = yaml.safe_load((work / "seg" / "manifest.yaml").read_text())
    cut = plan["cut_tensors"]["mobile-edge"]
    plan_up = sum(t["bytes"] for t in cut["up"])
    plan_down = {t["name"]: t["bytes"] for t in cut["down"]}
    sent = sum(t["bytes"] for t in manifest["segments"][0]["outputs"])
    returned = {t["name"]: t["bytes"] for t in manifest["segments"][-1]["outputs"] if t["to"] == ["result"]}
    ok = plan_up == sent and plan_down == returned == {"logits": 40}
    return Observed(
        ok,
        f"boundary: plan {plan_up} B, split {sent} B (uint8); logits back: plan {plan_down}, split {returned}",
    )


def _rounds_zero(work: Path) -> Observed:
    return dnnsplit("profile", TINY, *FAST, "--rounds", "0").one_line()


AREA = "7 figures"
CASES: list[Case] = [
    Case(
        AREA,
        "profile: layers add up to 0.5x the whole model every round",
        "exit 0; calibration {scale: 2.0} recorded, layers scaled to the whole, the table says so",
        _profile_scaled,
    ),
    Case(
        AREA,
        "profile --strict: layers add up to 0.5x the whole model",
        "exit 1, one line, no profile written",
        _profile_strict,
    ),
    Case(
        AREA,
        "plan from that calibrated profile",
        "compute priced from the whole model (x2 the low sum); plan.profile.calibration shown; a note",
        _plan_prices_the_whole,
    ),
    Case(
        AREA,
        "plan from an old profile file: whole 2x its layers, no calibration field",
        "the planner scales the layers to the whole before pricing, and notes it",
        _plan_old_file,
    ),
    Case(
        AREA,
        "pipeline: layers add up to 0.5x the whole (profile.strict defaults to true)",
        "exit 1, one line, no profile.json or plan.yaml",
        _pipeline_strict,
    ),
    Case(
        AREA,
        "plan --compress int8, then split with it",
        "boundary charged 1 B/element, returned logits 4 B/element (float32), as the manifest says",
        _compressed_logits,
    ),
    Case(AREA, "profile --rounds 0", "exit 2, one line", _rounds_zero),
]
