"""dnnsplit.yaml validation: every kind of error is reported with its key path, line and a hint, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnnsplit.partition.network import NETWORK_PRESETS, LinkSpec
from dnnsplit.partition.objective import Objective
from dnnsplit.pipeline.config import ConfigError, load_config

DEMO = Path(__file__).resolve().parents[2] / "dnnsplit" / "pipeline" / "demo.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dnnsplit.yaml"
    path.write_text(text)
    return path


def _demo_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEMO.read_text()
    assert old in text
    return _write(tmp_path, text.replace(old, new, 1))


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_demo_config_is_valid(tmp_path: Path) -> None:
    cfg = load_config(DEMO, tmp_path / "out")
    assert cfg.tier_names == ("mobile", "edge", "cloud")
    assert cfg.first_link == "mobile-edge" and cfg.links["mobile-edge"] == NETWORK_PRESETS["4g"]
    assert cfg.plan.networks == tuple(NETWORK_PRESETS[n] for n in ("4g", "wifi", "3g"))
    assert cfg.objective == Objective(latency=1.0, energy=0.0)
    assert cfg.model.source == "torchvision:resnet18" and not cfg.model.trained
    assert cfg.budgets.accuracy == 0.9 and cfg.output == tmp_path / "out"
    assert cfg.branch.activations == "binary"
    real = load_config(_demo_with(tmp_path, "  activations: binary ", "  activations: real "))
    assert real.branch.activations == "real"


@pytest.mark.parametrize(
    ("old", "new", "key", "needle", "hint"),
    [
        (
            "  latency_ms: 100",
            "  latncy_ms: 100",
            "budgets.latncy_ms",
            "unknown key",
            "did you mean 'latency_ms'",
        ),
        ("  epochs: 4\n  lr", "  epochs: four\n  lr", "train.epochs", "expected an integer", "write e.g."),
        ("  repeat: 20", "  repeat: 0", "profile.repeat", "out of range", "at least 1"),
        (
            "  mobile: mobile-web",
            "  mobile: mobile-wbe",
            "tiers.mobile",
            "unknown device preset",
            "mobile-web",
        ),
        (
            "  mobile-edge: 4g ",
            "  mobile-edge: 6g ",
            "links.mobile-edge",
            "unknown network preset",
            "use one of",
        ),
        ("  weights: null ", "  weights: missing.pt ", "model.weights", "file not found", "relative to"),
        (
            "  source: torchvision:resnet18",
            "  source: torchvision:resnet81",
            "model.source",
            "unknown torchvision model",
            "resnet18",
        ),
        (
            "data: digits ",
            "data: imagefolder:nowhere/ ",
            "data",
            "ImageFolder not found",
            "one folder per class",
        ),
        ("  compress: null", "  compress: fp8", "split.compress", "unknown value", "fp16, int8"),
        ("  activations: binary ", "  activations: ternary ", "branch.activations", "unknown value", "binary, real"),
        ("  levels: 2 ", "  levels: 2\n  budgets_ms: [10]\n", "prune", "either levels or budgets_ms", "e.g."),
    ],
)
def test_each_kind_of_error(tmp_path: Path, old: str, new: str, key: str, needle: str, hint: str) -> None:
    path = _demo_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issues = info.value.issues
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.path == key and needle in issue.message and hint in issue.hint, issue
    first_line = new.strip().splitlines()[0].split(":")[0] + ":"
    expected = _line_of(path, new.strip().splitlines()[0]) if key != "prune" else _line_of(path, "prune:")
    assert issue.line == expected, (issue, first_line)
    assert issue.render(str(path)).startswith(f"{path}:{expected}: {key}:")


def test_all_errors_collected_and_unknown_top_level_key(tmp_path: Path) -> None:
    text = DEMO.read_text().replace("  accuracy: 0.9", "  accuracy: 1.5").replace("objective:", "objectiv:")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    by_key = {i.path: i for i in info.value.issues}
    assert set(by_key) == {"budgets.accuracy", "objectiv"}
    assert "did you mean 'objective'" in by_key["objectiv"].hint
    assert by_key["budgets.accuracy"].line == _line_of(path, "accuracy: 1.5")


def test_missing_keys_and_schema(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "schema: dnnsplit/pipeline@9\noutput: out\ndata: digits\nmodel: {}\ntiers: {mobile: mobile-web}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = {i.path: i for i in info.value.issues}
    assert "model.source" in keys and keys["model.source"].message == "missing key"
    assert keys["model.source"].line == 4  # a missing key points at its section
    assert "unsupported schema" in keys["schema"].message and keys["schema"].line == 1
    assert "needs a tier to offload to" in keys["tiers"].message and "prune" not in keys


def test_link_numbers_and_device_file(tmp_path: Path) -> None:
    (tmp_path / "phone.yaml").write_text(yaml.safe_dump({"name": "phone", "latency_scale": 3.0}))
    text = (
        DEMO.read_text()
        .replace("  mobile: mobile-web", "  mobile: phone.yaml")
        .replace("  mobile-edge: 4g ", "  mobile-edge: {up_mbps: 8, down_mbps: 40, rtt_ms: 30} ")
        .replace("objective: latency ", "objective: {latency: 1, energy: 0.5} ")
    )
    cfg = load_config(_write(tmp_path, text))
    assert cfg.tiers["mobile"] == str(tmp_path / "phone.yaml")
    assert cfg.links["mobile-edge"] == LinkSpec(up_mbps=8.0, down_mbps=40.0, rtt_ms=30.0, radio="lte")
    assert cfg.plan.networks[0] is cfg.links["mobile-edge"]
    assert cfg.objective == Objective(latency=1.0, energy=0.5)  # typed once, here; planning parses nothing


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "schema: dnnsplit/pipeline@1\nmodel:\n  source: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues[0].line is not None and "not valid YAML" in info.value.issues[0].message


def test_cli_check_and_errors_exit_2(cli, tmp_path: Path) -> None:
    code, stdout, stderr = cli("pipeline", str(DEMO), "--check")
    assert code == 0 and "ok" in stdout, stderr
    bad = (
        DEMO.read_text()
        .replace("  latency_ms: 100", "  latncy_ms: 100")
        .replace("  epochs: 4\n  lr", "  epochs: x\n  lr")
    )
    path = _write(tmp_path, bad)
    code, stdout, stderr = cli("pipeline", str(path), "--check")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 2 and "Traceback" not in stderr, stderr
    assert all(line.startswith("error: ") for line in lines)
    assert f":{_line_of(path, 'latncy_ms')}: budgets.latncy_ms: unknown key" in stderr
    assert f":{_line_of(path, 'epochs: x')}: train.epochs:" in stderr
    code, _, stderr = cli("pipeline", str(tmp_path / "none.yaml"))
    assert code == 2 and "config not found" in stderr and "dnnsplit init" in stderr


def test_init_writes_the_demo_and_refuses_to_overwrite(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = cli("init")
    assert code == 0 and (tmp_path / "dnnsplit.yaml").read_text() == DEMO.read_text()
    assert load_config(tmp_path / "dnnsplit.yaml").output == tmp_path / "dnnsplit-out"
    code, _, stderr = cli("init")
    assert code == 2 and "exists" in stderr and "--force" in stderr
    assert cli("init", "--force")[0] == 0
