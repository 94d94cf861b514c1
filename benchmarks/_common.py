"""Helpers shared by the benchmark scripts: where results go, how they are written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks"


def machine() -> dict[str, Any]:
    from dnnsplit.profiling.sysinfo import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}


def run_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `dnnsplit ARGS` in a fresh process and time it end to end."""
    cmd = [sys.executable, "-m", "dnnsplit.cli.main", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


def wait_healthy(url: str, timeout_s: float = 180.0) -> None:
    """Wait until ``url/healthz`` answers 200 (a server a benchmark started); exit when it never does."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server at {url} did not start")
        time.sleep(0.2)
