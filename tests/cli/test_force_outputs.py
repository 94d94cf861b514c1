"""`--force` and `--output`: only a directory holding the same kind of dnnsplit output is ever replaced,
and nothing dnnsplit did not write is removed (issue 23.1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dnnsplit.errors import UsageError
from tests.fixtures.assertions import assert_usage_error

TINY = "tests.fixtures.tiny_models:tiny_cnn"
SPLIT_ARGS = (TINY, "--input-shape", "1x3x32x32", "--cut", "/stem/stem.2/Relu_output_0", "--validate", "1")


def _user_files(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "thesis.tex").write_text("years of work")
    (directory / "data").mkdir(exist_ok=True)
    (directory / "data" / "x.csv").write_text("1,2\n")
    return {"thesis.tex": "years of work", "data/x.csv": "1,2\n"}


def _survive(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        assert (directory / name).read_text() == text, name


@pytest.mark.parametrize("spelling", [".", "./", "sub/..", "link"])
def test_split_force_into_a_directory_of_user_files_is_refused(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    files = _user_files(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert_usage_error(cli("split", *SPLIT_ARGS, "--output", spelling, "--force"), "is not a split")
    _survive(tmp_path, files)
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


def test_split_force_replaces_a_split_but_not_the_files_put_beside_its_segments(
    cli, tmp_path: Path
) -> None:
    out = tmp_path / "segments"
    assert cli("split", *SPLIT_ARGS, "--output", out)[0] == 0
    code, _, stderr = cli("split", *SPLIT_ARGS, "--output", f"{out}/", "--force")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["01-mobile.onnx", "02-edge.onnx", "manifest.yaml"]
    (out / "notes.txt").write_text("mine")
    assert_usage_error(
        cli("split", *SPLIT_ARGS, "--output", out, "--force"), "files dnnsplit did not write", "notes.txt"
    )
    assert (out / "notes.txt").read_text() == "mine" and (out / "manifest.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segments"]  # no staging or old copy left


def test_split_force_through_a_symlink_replaces_the_split_it_points_to(cli, tmp_path: Path) -> None:
    real = tmp_path / "real"
    assert cli("split", *SPLIT_ARGS, "--output", real)[0] == 0
    (tmp_path / "link").symlink_to(real)
    code, _, stderr = cli("split", *SPLIT_ARGS, "--output", tmp_path / "link", "--force")
    assert code == 0, stderr
    assert (tmp_path / "link").is_symlink() and (real / "manifest.yaml").is_file()


def test_split_force_refuses_the_current_directory_even_when_it_is_a_split(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "segments"
    assert cli("split", *SPLIT_ARGS, "--output", out)[0] == 0
    monkeypatch.chdir(out)
    assert_usage_error(cli("split", *SPLIT_ARGS, "--output", ".", "--force"), "current directory")
    assert (out / "manifest.yaml").is_file()


def test_force_refuses_another_kind_of_dnnsplit_output(cli, tmp_path: Path) -> None:
    variants = tmp_path / "variants"
    variants.mkdir()
    (variants / "variants.yaml").write_text("schema: dnnsplit/variants@1\nvariants: []\n")
    assert_usage_error(
        cli("split", *SPLIT_ARGS, "--output", variants, "--force"), "holds a prune output", "not a split"
    )
    assert (variants / "variants.yaml").is_file()
    foreign = tmp_path / "k8s"
    foreign.mkdir()
    (foreign / "manifest.yaml").write_text("apiVersion: v1\nkind: Pod\n")  # somebody else's manifest.yaml
    assert_usage_error(cli("split", *SPLIT_ARGS, "--output", foreign, "--force"), "is not a split")
    assert (foreign / "manifest.yaml").read_text().startswith("apiVersion")


@pytest.mark.parametrize("root", ["/", os.path.expanduser("~")])
def test_claim_never_takes_the_root_or_home(root: str) -> None:
    from dnnsplit.output_dir import SPLIT, claim

    with pytest.raises(UsageError, match="is not a split"):
        claim(root, SPLIT, force=True)


def test_branch_force_on_user_files_is_refused_before_training(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = _user_files(out)
    assert_usage_error(
        cli(
            "branch",
            "tests.fixtures.tiny_models:digits_net",
            "--input-shape",
            "1x3x16x16",
            "--data",
            "digits",
            "--output",
            out,
            "--force",
        ),
        "is not a branch",
    )
    _survive(out, files)
    assert sorted(p.name for p in out.iterdir()) == ["data", "thesis.tex"]  # no .lock left either


def test_branch_force_removes_only_what_a_branch_consists_of(tmp_path: Path) -> None:
    from dnnsplit.branching.run import _check_output

    out = tmp_path / "branch"
    (out / ".train").mkdir(parents=True)
    (out / "branch.yaml").write_text("schema: dnnsplit/branch@1\n")
    for name in ("mobile.onnx", "edge.onnx", "manifest.yaml", ".train/state.pt"):
        (out / name).write_bytes(b"written by dnnsplit branch")
    (out / "exits.png").write_bytes(b"the plot the README puts here with --plot")
    assert _check_output(out, force=True, fingerprint="") is False
    assert sorted(p.name for p in out.iterdir()) == ["exits.png"]


def test_prune_force_on_user_files_is_refused_before_loading(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = _user_files(out)
    assert_usage_error(
        cli("prune", "no-such-model.pt", "--data", "digits", "--budgets", "10", "--output", out, "--force"),
        "is not a prune output",
    )
    _survive(out, files)


def test_pipeline_output_with_user_files_is_refused(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("init")[0] == 0
    busy = tmp_path / "busy"
    files = _user_files(busy)
    (busy / "report.md").write_text("my own report")
    assert_usage_error(cli("pipeline", "dnnsplit.yaml", "--output", busy), "is not a pipeline output")
    _survive(busy, {**files, "report.md": "my own report"})
    assert sorted(p.name for p in busy.iterdir()) == ["data", "report.md", "thesis.tex"]


def test_init_force_overwrites_only_a_pipeline_config(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dnnsplit.yaml").write_text("something: else\n")
    assert_usage_error(cli("init", "--force"), "not a dnnsplit pipeline config")
    assert (tmp_path / "dnnsplit.yaml").read_text() == "something: else\n"
    (tmp_path / "dnnsplit.yaml").unlink()
    (tmp_path / "dnnsplit.yaml").mkdir()
    assert_usage_error(cli("init", "--force"), "dnnsplit.yaml")
    assert (tmp_path / "dnnsplit.yaml").is_dir()
