"""Run a split model's segments one after another in onnxruntime, in one process: the reference chain.

Every tensor a segment hands on is kept by name until the later segments that read it have run, so a
segment may take inputs from several earlier ones. Per segment the chain records its compute time and
the bytes it sends on (what would cross the network in a collaborative deployment).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.onnxrt import ort_session
from dnnsplit.splitting.integrity import verify_segments
from dnnsplit.splitting.manifest import Manifest, crossing, results_from


@dataclass(frozen=True)
class SegmentRun:
    index: int
    tier: str
    ms: float
    sent_bytes: int  # bytes of this segment's outputs read by later segments


class SegmentChain:
    """The segments of a split directory, loaded once and run in order.

    ``indices`` loads only some segments up front (a tier's server); the others load on first use (a
    client falling back to running the edge's segments itself). ``slowdown`` > 1 stretches every segment's
    compute by sleeping, to emulate a slower device on this machine (bench: a phone 6x slower than the host).
    No file is opened before ``splitting.integrity`` found it inside the directory with the manifest's size
    and sha256 (every manifest path is checked up front, each file's contents before its first load).
    """

    def __init__(
        self,
        manifest: Manifest,
        directory: str | Path,
        threads: int | None = None,
        indices: Iterable[int] | None = None,
        slowdown: float = 1.0,
    ) -> None:
        self.manifest = manifest
        self.directory = Path(directory)
        self.threads = threads
        self.slowdown = slowdown
        self.sessions: dict[int, Any] = {}
        self.paths: dict[int, Path] = {}  # the segments whose files were verified
        verify_segments(manifest, self.directory, indices=())
        for i in range(len(manifest.segments)) if indices is None else indices:
            self.session(i)

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> SegmentChain:
        return cls(Manifest.load(directory), directory, threads)

    @property
    def input_name(self) -> str:
        return self.manifest.input.name

    def verify(self, indices: Iterable[int]) -> None:
        """Check the files of ``indices`` against the manifest now (a client that may fall back to them)."""
        todo = [i for i in indices if i not in self.paths]
        if todo:
            paths = verify_segments(self.manifest, self.directory, todo)
            self.paths.update((i, paths[i]) for i in todo)

    def session(self, index: int) -> Any:
        """Segment ``index``'s onnxruntime session, loaded on first use (its file verified first)."""
        if index not in self.sessions:
            self.verify([index])
            path = self.paths[index]
            try:
                self.sessions[index] = ort_session(path, self.threads)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class but Exception
                if not type(exc).__module__.startswith("onnxruntime"):
                    raise
                # Size and sha256 matched the manifest, so the manifest itself describes a broken file.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UsageError(
                    f"segment file {self.directory / self.manifest.segments[index].file} does not load "
                    f"in onnxruntime ({first[:200]})",
                    "split the model again",
                ) from None
        return self.sessions[index]

    def run(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], list[SegmentRun]]:
        """The model outputs for input ``x`` (batch first), and what each segment took and sent.

        With an early-exit branch, a batch whose every sample exits stops after the first segment.
        """
        available: dict[str, np.ndarray] = {self.input_name: x}
        runs = self.run_segments(available, [0])
        exited = early_exit_answer(self.manifest, available)
        if exited is not None:
            return exited, runs
        runs += self.run_segments(available, range(1, len(self.manifest.segments)))
        results = {
            t.name: available[t.name]
            for seg in self.manifest.segments
            for t in seg.outputs
            if "result" in seg.targets[t.name]
        }
        return results, runs

    def run_cut(self, x: np.ndarray, boundary: int) -> dict[str, np.ndarray]:
        """The model outputs as a deployment cut before segment ``boundary`` computes them: the segments
        before it here, then the later ones from nothing but the tensors that cross the cut (what the wire
        carries), plus the outputs made before it. An elastic split's validation runs every candidate so."""
        here: dict[str, np.ndarray] = {self.input_name: x}
        self.run_segments(here, range(boundary))
        there = {t.name: here[t.name] for t in crossing(self.manifest, boundary)}
        self.run_segments(there, range(boundary, len(self.manifest.segments)))
        made_here = {t.name for t in results_from(self.manifest, 0)} - {
            t.name for t in results_from(self.manifest, boundary)
        }
        return {
            **{n: here[n] for n in made_here},
            **{t.name: there[t.name] for t in results_from(self.manifest, boundary)},
        }

    def run_segments(self, available: dict[str, np.ndarray], indices: Iterable[int]) -> list[SegmentRun]:
        """Run segments ``indices`` in order on the tensors in ``available``, adding their outputs to it."""
        runs = []
        for index in indices:
            seg = self.manifest.segments[index]
            session = self.session(index)
            feed = {t.name: available[t.name] for t in seg.inputs}
            names = [t.name for t in seg.outputs]
            start = time.perf_counter()
            values = session.run(names, feed)
            elapsed = time.perf_counter() - start
            if self.slowdown > 1:
                stretch(functools.partial(session.run, names, feed), elapsed, self.slowdown)
            ms = (time.perf_counter() - start) * 1000
            sent = 0
            for name, value in zip(names, values, strict=True):
                available[name] = value
                if any(t != "result" for t in seg.targets[name]):
                    sent += int(value.nbytes)
            runs.append(SegmentRun(seg.index, seg.tier, ms, sent))
        return runs


_BUSY_CHUNK = bytes(1 << 16)


def stretch(run: Callable[[], object], elapsed_s: float, slowdown: float) -> None:
    """Make one run of ``elapsed_s`` last ``slowdown`` times as long: a device that much slower.

    The run is repeated (slowdown - 1 whole times), then the fraction is spent busy. Sleeping instead let
    the core idle, and on this 2-core VM an idle core starts the next run cold: mobilenet_v3_small took
    1.3 ms back to back but 2.2-4.1 ms after 10-50 ms idle, so a phone emulated by sleeping looked twice as
    slow as the profile it is predicted from, which is measured back to back. Repeating keeps the CPU in
    the state the profiler measured: a phone computing 6x longer is busy computing.
    """
    repeats = int(slowdown) - 1
    for _ in range(repeats):
        run()
    keep_busy(elapsed_s * (slowdown - 1 - repeats))


def keep_busy(seconds: float) -> None:
    """Occupy this core for ``seconds`` without holding the GIL (sha256 releases it on large buffers)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        hashlib.sha256(_BUSY_CHUNK)


def early_exit_answer(manifest: Manifest, available: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The branch's answer when the split has an early exit and every sample in the batch takes it."""
    spec = manifest.early_exit
    if not spec or spec["flag"] not in available:
        return None
    if not bool(np.all(available[spec["flag"]])):
        return None
    return {spec["answers"]: available[spec["logits"]]}
