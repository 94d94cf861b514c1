"""Exit codes CI can trust (issue 23.6): user text prints literally, and hostile inputs (huge shapes, bad
bytes, alias bombs, unwritable outputs, absurd counts) are one line and exit 2, never 1 or 3 or a hang."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dnnsplit.limits import max_threads
from tests.fixtures.assertions import assert_usage_error

TINY = "tests.fixtures.tiny_models:tiny_cnn"
SHAPE = ("--input-shape", "1x3x32x32")
FAST = ("--repeat", "1", "--warmup", "0", "--threads", "1")
DEMO = Path(__file__).resolve().parents[2] / "dnnsplit" / "pipeline" / "demo.yaml"

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize("name", ["x[/]y.onnx", "x[bold]y[/bold].onnx", "x:smile:.onnx"])
def test_user_text_in_an_error_prints_literally(cli, tmp_path: Path, name: str) -> None:
    assert_usage_error(cli("profile", tmp_path / name), f"{tmp_path / name}")


def test_pipeline_config_errors_print_literally(cli, tmp_path: Path) -> None:
    config = tmp_path / "dnnsplit.yaml"
    config.write_text(DEMO.read_text().replace("  lr: 0.05", "  '[/]lr': 0.05\n  lr: '[bold]x'", 1))
    code, _, stderr = cli("pipeline", config, "--check")
    assert code == 2 and "Traceback" not in stderr
    assert "[/]lr" in stderr and "[bold]x" in stderr


def test_huge_input_shapes_are_refused(cli, tmp_path: Path) -> None:
    assert_usage_error(cli("profile", TINY, "--input-shape", "100000x3x10000x10000"), "120 TB as float32")
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "huge",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100000, 100000])],
        )
    )
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    assert_usage_error(cli("profile", path, *FAST), "huge.onnx's input 1x3x100000x100000")


def test_non_utf8_files_are_usage_errors(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"schema: dnnsplit/pipeline@1\nname: \xff\xfe\n")
    assert_usage_error(cli("pipeline", bad, "--check"), "not UTF-8", "0xff")
    assert_usage_error(cli("plan", bad), "not UTF-8")
    assert_usage_error(cli("plan", TINY, *SHAPE, *FAST, "--device", f"mobile={bad}"), "not UTF-8")


def test_alias_bombs_are_refused_quickly(cli, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(DEMO.read_text() + BOMB)
    start = time.perf_counter()
    assert_usage_error(cli("pipeline", bomb, "--check"), "alias")
    profile = tmp_path / "profile.yaml"
    profile.write_text("schema: dnnsplit/profile@1\n" + BOMB)
    assert_usage_error(cli("plan", profile), "alias")
    loop = tmp_path / "loop.yaml"
    loop.write_text("schema: dnnsplit/profile@1\nlayers: &l [*l]\n")
    assert_usage_error(cli("plan", loop), "an alias refers to a node that holds it")
    assert time.perf_counter() - start < 30  # not a timing bound: the bomb expands to 4.8e8 nodes


def test_unwritable_outputs_are_usage_errors_before_any_work(cli, tmp_path: Path) -> None:
    assert_usage_error(cli("profile", TINY, *SHAPE, *FAST, "--output", "/proc/x.json"), "cannot write")
    (tmp_path / "p.json").mkdir()
    assert_usage_error(cli("profile", TINY, *SHAPE, *FAST, "--output", tmp_path / "p.json"), "is a directory")
    (tmp_path / "file").write_text("")
    assert_usage_error(
        cli("plan", TINY, *SHAPE, *FAST, "--output", tmp_path / "file" / "plan.yaml"), "does not exist"
    )
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--cut", "/stem/stem.2/Relu_output_0", "--output", "/proc/segments"),
        "cannot write",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "p.json"]


def test_thread_counts_are_bounded(cli, tmp_path: Path) -> None:
    too_many = str(max_threads() + 1)
    needle = f"--threads {too_many} is more than {max_threads()}"
    assert_usage_error(cli("profile", TINY, *SHAPE, "--threads", "100000"), "--threads 100000 is more than")
    assert_usage_error(cli("plan", TINY, *SHAPE, "--threads", too_many), needle)
    assert_usage_error(cli("run", tmp_path, "--input", "x.npy", "--threads", too_many), needle)
    assert_usage_error(cli("serve", tmp_path, "--tier", "edge", "--threads", too_many), needle)
    assert_usage_error(
        cli("infer", tmp_path, "--edge", "http://127.0.0.1:9", "--input", "x.npy", "--threads", too_many),
        needle,
    )
    assert_usage_error(cli("bench", tmp_path, "--threads", too_many), needle)
    out = tmp_path / "o"
    assert_usage_error(cli("branch", TINY, "--data", "digits", "-o", out, "--threads", too_many), needle)
    assert_usage_error(
        cli("prune", TINY, "--data", "digits", "--budgets", "10", "-o", out, "--threads", too_many), needle
    )


def test_negative_top_is_refused(cli, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 32, 32), np.float32))
    assert_usage_error(cli("profile", TINY, *SHAPE, *FAST, "--top", "-1"), "--top must be at least 1")
    assert_usage_error(cli("run", tmp_path, "--input", x, "--top", "-1"), "--top must be at least 1")
    assert_usage_error(
        cli("infer", tmp_path, "--edge", "http://127.0.0.1:9", "--input", x, "--top", "-1"),
        "--top must be at least 1",
    )


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("  lr: 0.05", "  lr: .nan", "train.lr"),
        ("  latency_ms: 100 ", "  latency_ms: .inf ", "budgets.latency_ms"),
        ("  latency_ms: 100 ", "  latency_ms: .nan ", "budgets.latency_ms"),
        ("  levels: 2 ", "  budgets_ms: [10, .inf] ", "prune.budgets_ms"),
        ("  threads: 2 ", "  threads: 100000 ", "profile.threads"),
    ],
)
def test_pipeline_check_reports_non_finite_and_absurd_numbers(
    cli, tmp_path: Path, old: str, new: str, key: str
) -> None:
    text = DEMO.read_text()
    assert old in text
    config = tmp_path / "dnnsplit.yaml"
    config.write_text(text.replace(old, new, 1))
    code, _, stderr = cli("pipeline", config, "--check")
    assert code == 2 and "Traceback" not in stderr, stderr
    assert f"{key}:" in stderr, stderr
