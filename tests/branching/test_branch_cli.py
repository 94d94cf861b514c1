"""`dnnsplit branch` end to end on a small CNN trained on digits, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.trained import SHAPE, TINY


def test_branch_directory_holds_validated_small_models(tiny_branch: Path) -> None:
    doc = yaml.safe_load((tiny_branch / "branch.yaml").read_text())
    assert doc["schema"] == "dnnsplit/branch@1"
    assert sorted(p.name for p in tiny_branch.iterdir()) == [
        "branch.yaml",
        "edge.onnx",
        "manifest.yaml",
        "mobile.onnx",
    ]
    assert doc["at"] == "maxpool"
    assert doc["validation"]["passed"] and doc["validation"]["samples"] == 360
    assert doc["validation"]["exit_mismatches"] == 0
    acc = doc["accuracy"]
    assert acc["backbone"] > 0.9
    # Calibrated on val for a 2-point drop; on the held-out test split it holds within sampling error.
    assert acc["overall"] >= acc["backbone"] - 0.02 - 0.02
    assert 0.0 < doc["exit_rate"] <= 1.0
    sizes = doc["sizes"]
    assert sizes["branch_float_bytes"] >= 25 * sizes["branch_packed_bytes"] * 0.9  # scales cost a little
    assert sizes["mobile_onnx_bytes"] < sizes["full_model_bytes"]
    assert sizes["mobile_onnx_bytes"] == (tiny_branch / "mobile.onnx").stat().st_size
    mobile = onnx.load(str(tiny_branch / "mobile.onnx"))
    assert [o.name for o in mobile.graph.output] == ["stem_output", "branch_logits", "entropy", "exit"]
    assert any(i.data_type == onnx.TensorProto.UINT8 for i in mobile.graph.initializer)  # bit-packed
    assert [i.name for i in onnx.load(str(tiny_branch / "edge.onnx")).graph.input] == ["stem_output"]
    # The recorded curve is monotone: a higher threshold never exits less.
    rates = [c["exit_rate"] for c in doc["curve"]]
    assert rates == sorted(rates)


def test_mobile_and_edge_compose_to_the_backbone(tiny_branch: Path, tiny_checkpoint: Path) -> None:
    import torch

    from dnnsplit.models import ModelOptions, load_model
    from dnnsplit.onnxrt import ort_session

    model = load_model(str(tiny_checkpoint), ModelOptions(arch=TINY)).module.eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    feats, logits, entropy, exits = ort_session(tiny_branch / "mobile.onnx", 1).run(None, {"input": x})
    main = ort_session(tiny_branch / "edge.onnx", 1).run(None, {"stem_output": feats})[0]
    with torch.no_grad():
        assert np.allclose(main, model(torch.from_numpy(x)).numpy(), atol=1e-4)
    threshold = yaml.safe_load((tiny_branch / "branch.yaml").read_text())["threshold"]
    assert np.array_equal(exits, entropy < threshold)
    assert np.all((entropy >= 0) & (entropy <= 1 + 1e-6))


def test_plan_with_branch_reports_expected_figures(cli, tiny_branch: Path, tiny_checkpoint: Path) -> None:
    code, stdout, stderr = cli(
        "plan",
        tiny_checkpoint,
        "--arch",
        TINY,
        "--branch",
        tiny_branch,
        "--network",
        "3g",
        "--format",
        "json",
        "--objective",
        "latency=1,energy=0.1",
        "--threads",
        "1",
        "--repeat",
        "3",
        "--warmup",
        "1",
    )
    assert code == 0, stderr
    branch = json.loads(stdout)["branch"]
    doc = yaml.safe_load((tiny_branch / "branch.yaml").read_text())
    assert branch["exit_rate"] == doc["exit_rate"]
    seq, spec = branch["sequential"], branch["speculative"]
    assert spec["expected_latency_ms"] <= seq["expected_latency_ms"] + 1e-9
    # An exited request: the phone's stem and branch, plus its 1/100 share of downloading mobile.onnx (3g).
    share = doc["sizes"]["mobile_onnx_bytes"] * 8 / (3.0 * 1000) / 100
    assert branch["download_share_ms"] == pytest.approx(share)
    assert seq["exited"]["latency_ms"] == pytest.approx(
        branch["compute_ms"]["stem"] + branch["compute_ms"]["branch"] + share
    )
    assert branch["chosen"] in ("sequential", "speculative")


def test_list_points_marks_the_default(cli) -> None:
    code, stdout, _ = cli("branch", TINY, "--input-shape", SHAPE, "--list-points", "--format", "json")
    assert code == 0
    points = json.loads(stdout)["points"]
    assert [p["point"] for p in points if p["default"]] == ["maxpool"]


def test_bad_inputs_are_clear_errors_and_write_nothing(cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_usage_error(
        cli("branch", tiny_checkpoint, "--arch", TINY, "--data", "digits", "-o", out, "--at", "nowhere"), "not a point"
    )
    assert_usage_error(
        cli("branch", tiny_checkpoint, "--arch", TINY, "--data", "digits", "-o", out, "--max-accuracy-drop", "1.5"),
        "max-accuracy-drop",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_usage_error(
        cli("branch", tiny_checkpoint, "--arch", TINY, "--data", f"imagefolder:{empty}", "-o", out), "ImageFolder"
    )
    assert_usage_error(cli("branch", tiny_checkpoint, "--arch", TINY, "--data", "mnist", "-o", out), "unknown data source")
    assert_usage_error(
        cli("branch", tiny_checkpoint, "--arch", TINY, "--data", "digits", "-o", out, "--activations", "ternary"),
        "--activations must be one of binary, real",
    )
    assert_usage_error(
        cli(
            "branch",
            "torchvision:resnet18",
            "--num-classes",
            "5",
            "--input-shape",
            "1x3x32x32",
            "--data",
            "digits",
            "-o",
            out,
        ),
        "5 outputs but digits has 10 classes",
    )
    assert not out.exists() or not any(out.iterdir())


def test_output_in_use_is_refused(cli, tiny_checkpoint: Path, tiny_branch: Path, tmp_path: Path) -> None:
    assert_usage_error(
        cli("branch", tiny_checkpoint, "--arch", TINY, "--data", "digits", "-o", tiny_branch), "already holds a branch"
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert_usage_error(cli("branch", tiny_checkpoint, "--arch", TINY, "--data", "digits", "-o", other), "not empty")
    assert (other / "notes.txt").read_text() == "mine"


def test_interrupted_training_resumes_from_the_directory(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from dnnsplit.branching.run import BranchSettings, make_branch
    from dnnsplit.branching.train import BranchTrainSettings
    from dnnsplit.models import ModelOptions, load_model
    from dnnsplit.training.data import load_data

    loaded = load_model(str(tiny_checkpoint), ModelOptions(arch=TINY))
    data = load_data("digits", loaded.input_shape)
    settings = BranchSettings(train=BranchTrainSettings(epochs=2), threads=1, latency_repeat=2)
    out = tmp_path / "resume"

    def stop_in_second_epoch(stage: str, done: int, total: int, message: str) -> None:
        if stage.startswith("branch epoch 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_branch(loaded, data, out, settings, progress=stop_in_second_epoch)
    assert not (out / "branch.yaml").exists() and (out / ".train" / "state.pt").is_file()
    result = make_branch(loaded, data, out, settings)
    assert result.resumed_from_epoch == 1
    assert [h.epoch for h in result.history] == [1, 2]
    assert (out / "branch.yaml").is_file() and not (out / ".train").exists()


def test_run_and_infer_take_the_early_exit(cli, tiny_branch: Path, tmp_path: Path) -> None:
    """The branch directory is a split: `run` answers confident samples on the phone, others via the edge."""
    import torch

    from dnnsplit.runtime.client import CollaborativeClient
    from dnnsplit.splitting.chain import SegmentChain
    from dnnsplit.training.data import load_data

    data = load_data("digits", (1, 3, 16, 16), augment=False)
    chain = SegmentChain.load(tiny_branch, 1)
    exited = stayed = 0
    for i in range(40):
        x = data.test[i][0][None].numpy()
        results, runs = chain.run(x)
        feats, logits, _, flag = chain.session(0).run(None, {"input": x})
        if bool(flag[0]):
            exited += 1
            assert len(runs) == 1 and np.array_equal(results["logits"], logits)
        else:
            stayed += 1
            main = chain.session(1).run(None, {"stem_output": feats})[0]
            assert len(runs) == 2 and np.allclose(results["logits"], main)
    assert exited and stayed
    # The client with no edge at all runs everything here but still exits early when it can.
    with CollaborativeClient(tiny_branch, None, threads=1) as client:
        x = data.test[0][0][None].numpy()
        result = client.infer(x)
        expected, _ = chain.run(x)
        assert np.allclose(result.outputs["logits"], expected["logits"])
    np.save(tmp_path / "x.npy", torch.as_tensor(data.test[0][0]).numpy())
    code, stdout, _ = cli("run", tiny_branch, "--input", tmp_path / "x.npy", "--format", "json")
    assert code == 0
    assert json.loads(stdout)["early_exit"] == (len(chain.run(data.test[0][0][None].numpy())[1]) == 1)


def test_real_activations_branch_has_binary_weights_and_no_thresholds(cli, tiny_checkpoint: Path, tmp_path) -> None:
    out = tmp_path / "real"
    code, stdout, stderr = cli(
        "branch", tiny_checkpoint, "--arch", TINY, "--data", "digits", "--epochs", "2", "--activations", "real",
        "--max-accuracy-drop", "0.02", "--threads", "1", "-o", out, "--format", "json",
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["training"]["activations"] == "real"
    assert doc["validation"]["passed"]
    mobile = onnx.load(str(out / "mobile.onnx"))
    assert not any(n.op_type == "GreaterOrEqual" for n in mobile.graph.node)
    assert any(i.data_type == onnx.TensorProto.UINT8 for i in mobile.graph.initializer)  # weights as bits
    assert doc["sizes"]["mobile_onnx_bytes"] < doc["sizes"]["full_model_bytes"]
