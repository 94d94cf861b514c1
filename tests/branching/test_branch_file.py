"""branch.yaml read back: through the one document reader, every missing or mistyped field in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnnsplit.branching.branch_file import (
    BoundaryTensor,
    BranchAccuracy,
    BranchFile,
    BranchLatency,
    BranchSizes,
    load_branch,
)
from dnnsplit.errors import UsageError

DOC = BranchFile(
    model={"source": "m.pt", "sha256": "a" * 64, "name": "m"},
    at="maxpool",
    data="digits",
    num_classes=10,
    input_shape=[1, 3, 16, 16],
    boundary=BoundaryTensor("stem_output", [1, 8, 4, 4], 512),
    output_bytes_per_sample=40,
    threshold=0.25,
    exit_rate=0.7,
    accuracy=BranchAccuracy(0.95, None, 0.94),
    sizes=BranchSizes(10, 20, 30, 4, 50),
    latency=BranchLatency(0.5, 0.25, 1.5, None, "cpu"),
    files={"mobile": "mobile.onnx"},
    calibration={},
    validation={"passed": True},
    training={},
    curve=[{"threshold": 0.25, "exit_rate": 0.7}],
)


def _write(directory: Path, data: dict) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "branch.yaml").write_text(yaml.safe_dump(data))
    return directory


def test_a_written_branch_reads_back_whole(tmp_path: Path) -> None:
    assert load_branch(_write(tmp_path / "b", DOC.to_dict())) == DOC
    costs = DOC.costs(tmp_path / "b")
    assert (costs.directory, costs.at, costs.exit_rate, costs.model_sha256) == (
        str(tmp_path / "b"),
        "maxpool",
        0.7,
        "a" * 64,
    )
    assert (costs.stem_ms, costs.branch_ms, costs.rest_ms, costs.boundary_bytes, costs.output_bytes) == (
        0.5,
        0.25,
        1.5,
        512,
        40,
    )


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["latency"].pop("stem_ms"), "missing field 'latency.stem_ms'"),
        (lambda d: d.update(exit_rate="high"), "field 'exit_rate' is not a number"),
        (lambda d: d["boundary"].update(shape="1x8"), "field 'boundary.shape' is not a list of integers"),
        (lambda d: d.update(accuracy=[0.9]), "field 'accuracy' is not a mapping"),
        (lambda d: d.pop("at"), "missing field 'at'"),
        (lambda d: d["latency"].update(threads="two"), "field 'latency.threads' is not an integer or null"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(tmp_path: Path, edit, needle: str) -> None:  # noqa: ANN001
    data = DOC.to_dict()
    edit(data)
    with pytest.raises(UsageError) as info:
        load_branch(_write(tmp_path / "b", data))
    assert needle in info.value.message and "\n" not in info.value.message
    assert "re-run dnnsplit branch" in (info.value.hint or "")


def test_not_a_branch_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_branch(tmp_path)
    with pytest.raises(UsageError, match="is not a dnnsplit/branch file"):
        load_branch(_write(tmp_path / "plan", {"schema": "dnnsplit/plan@1"}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "branch.yaml").write_text("schema: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_branch(tmp_path / "bad")
