"""The tiny CNN's bottleneck, trained once for the bottleneck tests (about 10 s): tests read it, never change it
(a test that damages one works on a copy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.trained import TINY

BOTTLENECK_FLAGS = ("--at", "block1", "--channels", "4", "--epochs", "1", "--threads", "1")


@pytest.fixture(scope="session")
def tiny_bottleneck(cli_session, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bottleneck") / "out"
    code, _, stderr = cli_session(
        "bottleneck", tiny_checkpoint, "--arch", TINY, *BOTTLENECK_FLAGS, "--output", directory
    )
    assert code == 0, stderr
    return directory
