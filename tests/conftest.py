"""Shared fixtures: an ONNX export cache for the whole run, a CLI runner, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Exports are cached by content hash; share one cache across the run (CI points it inside the clone).
os.environ.setdefault("DNNSPLIT_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "dnnsplit"))


def cli_invoker():
    """A function that invokes the dnnsplit CLI in-process and returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture()
def cli():
    """Invoke the dnnsplit CLI in-process; returns (exit_code, stdout, stderr)."""
    return cli_invoker()


@pytest.fixture(scope="session")
def cli_session():
    """``cli`` for session- and module-scoped fixtures."""
    return cli_invoker()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN exported to ONNX (with dnnsplit's exporter)."""
    from dnnsplit.models import ModelOptions, export_model, load_model

    loaded = load_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 32, 32)))
    exported = export_model(loaded)
    target = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    target.write_bytes(exported.path.read_bytes())
    return target


from tests.fixtures.trained import tiny_branch, tiny_checkpoint  # noqa: E402,F401 - shared session fixtures
