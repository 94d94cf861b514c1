"""What the host is: CPU model, cores, library versions (recorded in every profile)."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(runtime: str, threads: int) -> dict[str, Any]:
    import numpy
    import onnx

    info: dict[str, Any] = {
        "name": "host",
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "cores": os.cpu_count() or 1,
        "threads": threads,
        "runtime": runtime,
        "versions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "onnx": onnx.__version__,
        },
    }
    if runtime == "onnxruntime":
        import onnxruntime

        info["versions"]["onnxruntime"] = onnxruntime.__version__
        info["provider"] = "CPUExecutionProvider"
    else:
        import torch

        info["versions"]["torch"] = torch.__version__
    from dnnsplit import __version__

    info["versions"]["dnnsplit"] = __version__
    return info
