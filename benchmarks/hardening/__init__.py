"""Issue 23's hostile cases, one module per area; ``benchmarks/hardening_probe.py`` replays them all.

Each area module (``benchmarks/hardening/<area>.py``) defines ``CASES: list[Case]``. A case gets a fresh
working directory and returns what it observed; it passes when ``ok`` is true. Cases run the real
command line in a fresh process (``dnnsplit(...)``), or a real server on loopback, as an attacker would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TINY = "tests.fixtures.tiny_models:tiny_cnn"  # importable with ROOT on sys.path / PYTHONPATH


@dataclass(frozen=True)
class Observed:
    ok: bool
    text: str  # what happened, in a few words: "exit 2, one line: ...", "healthz 200 throughout"


@dataclass(frozen=True)
class Case:
    area: str  # the point: "1 force", "2 pickle", ...
    name: str  # what is tried
    expected: str  # what must happen
    run: Callable[[Path], Observed]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def one_line(self, code: int = 2) -> Observed:
        """The usual expectation for a user error: exit ``code``, exactly one stderr line, no traceback."""
        lines = self.error_lines()
        ok = self.code == code and len(lines) == 1 and "Traceback" not in self.stderr
        shown = lines[-1] if lines else "(no stderr)"
        return Observed(ok, f"exit {self.code}, {len(lines)} line(s): {shown[:160]}")


def env() -> dict[str, str]:
    """The environment for a child dnnsplit: the repo importable (tests.fixtures models), no colours."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}


def dnnsplit(*args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """Run ``dnnsplit ARGS`` in a fresh process; a hang past ``timeout`` counts as exit 124."""
    cmd = [sys.executable, "-m", "dnnsplit.cli.main", *map(str, args)]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return CliResult(124, out, f"timed out after {timeout:g} s")
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_split(directory: Path, *extra: str) -> Path:
    """A two-tier split of the tiny test CNN (mobile -> edge) in ``directory``; returns it."""
    result = dnnsplit(
        "split", TINY, "--input-shape", "1x3x32x32", "--cut", "/stem/stem.2/Relu_output_0",
        "--output", directory, *extra,
    )
    if result.code != 0:
        raise RuntimeError(f"could not build the probe's split: {result.stderr.strip()}")
    return directory
