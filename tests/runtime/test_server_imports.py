"""The servers run ONNX segments only: importing them must not pull torch (2 s and 100+ MB per process,
in every uvicorn server and every Ray replica)."""

from __future__ import annotations

import subprocess
import sys


def test_serving_modules_do_not_import_torch() -> None:
    code = (
        "import sys, dnnsplit.runtime.server, dnnsplit.runtime.client, dnnsplit.runtime.ray_config; "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_models_package_still_exports_its_names() -> None:
    import dnnsplit.models as models
    from dnnsplit.models.loading import load_model

    assert models.load_model is load_model
    try:
        models.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
