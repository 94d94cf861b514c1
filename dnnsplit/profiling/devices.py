"""Device specs: a YAML file per device (``dnnsplit/device@1``) and built-in presets.

``latency_scale`` is a device's latency relative to the host that ``dnnsplit profile`` measured on:
a layer's compute time on the device is the host's time times the scale (unless the device has its
own measured profile). The presets' scales and their reasoning live beside them in ``presets/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dnnsplit.errors import UsageError
from dnnsplit.fileio import parse_yaml, read_document, read_text

SCHEMA = "dnnsplit/device@1"
PRESETS = ("host", "mobile-web", "edge", "cloud")


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    runtime: str = "onnxruntime"
    threads: int = 1
    latency_scale: float = 1.0
    compute_power_w: float | None = None
    idle_power_w: float | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "description": self.description,
            "runtime": self.runtime,
            "threads": self.threads,
            "latency_scale": self.latency_scale,
        }
        if self.compute_power_w is not None:
            data["compute_power_w"] = self.compute_power_w
        if self.idle_power_w is not None:
            data["idle_power_w"] = self.idle_power_w
        return data


def _from_dict(data: dict[str, Any], where: str) -> DeviceSpec:
    known = {
        "schema",
        "name",
        "description",
        "runtime",
        "threads",
        "latency_scale",
        "compute_power_w",
        "idle_power_w",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key '{unknown[0]}'", f"use only {', '.join(sorted(known))}")
    if "name" not in data:
        raise UsageError(f"{where}: missing 'name'", "add name: my-device")
    try:
        spec = DeviceSpec(
            name=str(data["name"]),
            runtime=str(data.get("runtime", "onnxruntime")),
            threads=int(data.get("threads", 1)),
            latency_scale=float(data.get("latency_scale", 1.0)),
            compute_power_w=None if data.get("compute_power_w") is None else float(data["compute_power_w"]),
            idle_power_w=None if data.get("idle_power_w") is None else float(data["idle_power_w"]),
            description=str(data.get("description", "")),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"{where}: a value has the wrong type ({exc})", "use numbers for threads and scales"
        ) from exc
    numbers = (spec.latency_scale, spec.compute_power_w or 0.0, spec.idle_power_w or 0.0)
    if not all(math.isfinite(v) for v in numbers):  # .nan passes any comparison, .inf breaks every sum
        raise UsageError(f"{where}: latency_scale and the powers must be finite", "fix the device file")
    if spec.latency_scale <= 0 or spec.threads < 1:
        raise UsageError(f"{where}: latency_scale must be > 0 and threads >= 1", "fix the device file")
    return spec


def preset(name: str) -> DeviceSpec:
    if name not in PRESETS:
        raise UsageError(f"unknown device preset '{name}'", f"use one of {', '.join(PRESETS)} or a YAML file")
    text = (
        resources.files("dnnsplit.profiling").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    )
    return _from_dict(yaml.safe_load(text), f"preset {name}")


def load_device(ref: str) -> DeviceSpec:
    """A preset name or a path to a device YAML file."""
    if ref in PRESETS:
        return preset(ref)
    if not Path(ref).exists():
        raise UsageError(
            f"'{ref}' is neither a device preset nor a file",
            f"use one of {', '.join(PRESETS)} or a YAML file",
        )
    return _from_dict(read_document(ref, SCHEMA if _has_schema(ref) else None), ref)


def _has_schema(path: str) -> bool:
    try:
        data = parse_yaml(read_text(path))
    except yaml.YAMLError:
        return False  # read_document says what is wrong with it
    return isinstance(data, dict) and "schema" in data


def all_presets() -> list[DeviceSpec]:
    return [preset(name) for name in PRESETS]
