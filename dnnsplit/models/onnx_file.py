"""Checks on user-supplied ONNX files."""

from __future__ import annotations

from pathlib import Path

from dnnsplit.errors import UsageError


def check_onnx_file(path: Path) -> None:
    """Parse ``path`` and run ``onnx.checker``; raise a UsageError naming the problem otherwise."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise UsageError(
            f"{path} is not an ONNX model ({type(exc).__name__})", "pass a valid .onnx file"
        ) from exc
    try:
        # The path form also works for models with external data (> 2 GB).
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise UsageError(
            f"{path} fails onnx.checker: {first}", "re-export the model or fix the graph"
        ) from exc
    if not model.graph.node:
        raise UsageError(f"{path} has an empty graph", "pass a model with at least one node")
