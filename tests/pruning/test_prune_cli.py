"""`dnnsplit prune` and `dnnsplit select` end to end on the small digits CNN, the miss loop, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dnnsplit.pruning.select import read_misses
from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.trained import TINY

# TINY is what tiny_checkpoint records as its arch: an import path, built from a file only when named (--arch)

SHAPE = "1x3x48x48"


def _prune(cli, checkpoint: Path, output: Path, *extra: str):  # noqa: ANN001, ANN202
    return cli(
        "prune",
        checkpoint,
        "--arch",
        TINY,
        "--input-shape",
        SHAPE,
        "--data",
        "digits",
        "--network",
        "cat1",
        "--edge",
        "none",
        "--output",
        output,
        "--format",
        "json",
        *extra,
    )


@pytest.fixture(scope="module")
def variants_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    directory = tmp_path_factory.mktemp("prune") / "variants"
    args = [
        "prune",
        str(tiny_checkpoint),
        "--arch",
        TINY,
        "--input-shape",
        SHAPE,
        "--data",
        "digits",
        "--network",
        "cat1",
        "--edge",
        "none",
        "--levels",
        "2",
        "--baseline",
        "uniform",
        "--epochs",
        "1",
        "--output",
        str(directory),
        "--format",
        "json",
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return directory


def test_variants_file(variants_dir: Path) -> None:
    doc = yaml.safe_load((variants_dir / "variants.yaml").read_text())
    assert doc["schema"] == "dnnsplit/variants@1"
    methods = [v["method"] for v in doc["variants"]]
    # Two levels asked; the tightest may be dropped when the measurement misses it (recorded as such).
    aware = methods.count("latency-aware")
    assert methods.count("original") == 1 and aware + len(doc["settings"]["missed_budgets_ms"]) == 2
    assert aware >= 1 and "uniform" in methods
    original = doc["variants"][0]
    for v in doc["variants"]:
        for key in (
            "file",
            "checkpoint",
            "ratios",
            "macs",
            "params",
            "size_bytes",
            "accuracy",
            "latency",
            "plans",
        ):
            assert key in v
        assert (variants_dir / v["file"]).is_file() and (variants_dir / v["checkpoint"]).is_file()
        assert set(v["plans"]) == {"cat1", "3g", "4g", "5g", "wifi"}
        if v["method"] != "original":
            # Met its target as measured, and really cheaper than the unpruned model.
            assert v["latency"]["end_to_end_ms"] <= v["target"]["budget_ms"]
            assert v["macs"] < original["macs"] and v["ratios"]
    assert not [p.name for p in variants_dir.iterdir() if p.name.startswith(".")]


def test_pruned_checkpoint_is_a_model(cli, variants_dir: Path) -> None:
    """A variant's checkpoint loads as a MODEL anywhere (eval here), with its pruned channels."""
    doc = yaml.safe_load((variants_dir / "variants.yaml").read_text())
    pruned = next(v for v in doc["variants"] if v["method"] == "latency-aware")
    code, stdout, stderr = cli(
        "eval", variants_dir / pruned["checkpoint"], "--arch", TINY, "--data", "digits", "--format", "json"
    )
    assert code == 0, stderr
    assert abs(json.loads(stdout)["accuracy"] - pruned["accuracy"]) < 1e-9


def test_select_round_trip(cli, variants_dir: Path) -> None:
    doc = yaml.safe_load((variants_dir / "variants.yaml").read_text())
    by_name = {v["name"]: v for v in doc["variants"]}
    original = by_name["original"]
    loose = original["plans"]["cat1"]["latency_ms"] * 1.01
    code, stdout, _ = cli(
        "select", variants_dir, "--network", "cat1", "--budget-ms", loose, "--format", "json"
    )
    assert code == 0
    choice = json.loads(stdout)
    best = max(v["accuracy"] for v in doc["variants"] if v["method"] != "uniform")
    assert choice["accuracy"] == best and choice["meets_budget"] and not choice["best_effort"]
    assert choice["prediction"]["latency_ms"] <= loose
    code, stdout, _ = cli("select", variants_dir, "--network", "cat1", "--budget-ms", loose)
    assert code == 0 and "accuracy" in stdout and "everything on the phone" in stdout


def test_miss_loop(cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A budget only the unpruned model is pruned for: select misses, --from-misses adds a variant that meets it."""
    directory = tmp_path / "v"
    code, _, stderr = _prune(cli, tiny_checkpoint, directory, "--budgets", "100000", "--epochs", "0")
    assert code == 0, stderr
    doc = yaml.safe_load((directory / "variants.yaml").read_text())
    assert [v["name"] for v in doc["variants"]] == ["original"]
    budget = round(doc["variants"][0]["plans"]["cat1"]["latency_ms"] * 0.6, 4)
    code, stdout, stderr = cli(
        "select", directory, "--network", "cat1", "--budget-ms", budget, "--format", "json"
    )
    assert code == 1 and json.loads(stdout)["best_effort"] and "misses.yaml" in stderr
    assert [(m["network"], m["budget_ms"]) for m in read_misses(directory)] == [("cat1", budget)]

    # variants.yaml names the model by import path: built again only when the user names it too
    assert_usage_error(
        cli("prune", directory, "--from-misses", "--epochs", "1"), "not torchvision:NAME", "--arch"
    )
    code, stdout, stderr = cli(
        "prune", directory, "--from-misses", "--arch", TINY, "--epochs", "1", "--format", "json"
    )
    assert code == 0, stderr
    added = json.loads(stdout)["added"]
    assert len(added) == 1 and read_misses(directory) == []
    code, stdout, _ = cli("select", directory, "--network", "cat1", "--budget-ms", budget, "--format", "json")
    assert code == 0
    choice = json.loads(stdout)
    assert choice["variant"] == added[0] and choice["prediction"]["latency_ms"] <= budget


@pytest.mark.parametrize(
    ("budgets", "needle"),
    [("0", "positive"), ("-5", "positive"), ("abc", "not a number"), ("0.0001", "out of reach")],
)
def test_bad_budgets(cli, tiny_checkpoint: Path, tmp_path: Path, budgets: str, needle: str) -> None:
    out = tmp_path / "v"
    assert_usage_error(_prune(cli, tiny_checkpoint, out, "--budgets", budgets, "--epochs", "0"), needle)
    assert not out.exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]  # nothing half-written


def test_bad_prune_input(cli, tiny_checkpoint: Path, tmp_path: Path, variants_dir: Path) -> None:
    out = tmp_path / "v"
    assert_usage_error(_prune(cli, tiny_checkpoint, out, "--budgets", "5", "--levels", "2"), "either")
    assert_usage_error(
        cli("prune", tiny_checkpoint, "--data", "digits", "--budgets", "5", "--network", "6g", "-o", out),
        "6g",
    )
    assert_usage_error(
        cli("prune", tiny_checkpoint, "--data", "digits", "--budgets", "5", "--device", "phone9", "-o", out),
        "phone9",
    )
    # A DIR holding variants of another model (another input size is another model): refused, left as it was.
    before = (variants_dir / "variants.yaml").read_text()
    result = cli(
        "prune",
        tiny_checkpoint,
        "--arch",
        TINY,
        "--data",
        "digits",
        "--network",
        "cat1",
        "--edge",
        "none",
        "--levels",
        "2",
        "--output",
        variants_dir,
    )
    assert_usage_error(result, "another model")
    assert (variants_dir / "variants.yaml").read_text() == before


def test_from_misses_does_not_build_an_import_path_from_variants_yaml(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """variants.yaml is data: a model source of tempfile:mkdtemp is refused before it runs (no folder made)."""
    import tempfile

    from dnnsplit.pruning.context import Context
    from dnnsplit.pruning.select import write_misses
    from dnnsplit.pruning.variants import FILE, VariantsFile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    directory = tmp_path / "v"
    directory.mkdir()
    for source, arch in (("tempfile:mkdtemp", None), ("torchvision:resnet18", "tempfile:mkdtemp")):
        model = {"source": source, "input_shape": [1, 3, 16, 16], "num_classes": 10, "arch": arch}
        document = VariantsFile(model, "digits", Context.parse("mobile-web", "wifi", "none"), {}, [])
        (directory / FILE).write_text(document.dump())
        write_misses(directory, [{"network": "wifi", "device_scale": 1.0, "budget_ms": 1.0, "count": 1}])
        assert_usage_error(
            cli("prune", directory, "--from-misses", "--epochs", "0"), "'tempfile:mkdtemp'", "--trust-pickle"
        )
    assert list(scratch.iterdir()) == []


def test_bad_select_input(cli, variants_dir: Path, tmp_path: Path) -> None:
    assert_usage_error(cli("select", variants_dir, "--network", "6g", "--budget-ms", "10"), "6g")
    assert_usage_error(cli("select", variants_dir, "--budget-ms", "0"), "positive")
    assert_usage_error(cli("select", variants_dir, "--budget-ms", "10", "--device-scale", "-1"), "positive")
    assert_usage_error(cli("select", tmp_path, "--budget-ms", "10"), "variants.yaml")
