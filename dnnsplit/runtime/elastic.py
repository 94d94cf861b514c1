"""The elastic client: every request cut where it is cheapest now, from the client's estimate of its context.

Per request: the context is estimated, the exact optimum over the split's candidate cuts is taken for it
(``partition.elastic.decide``, with hysteresis), the request runs at that cut through
``CollaborativeClient`` (which carries the cut's ``start`` to the edge, and falls back to running the
rest here when the edge fails), and what it measured is folded into the estimate. Each ``FrameResult``
says which cut ran and the estimate that chose it.

A link that no request has measured for a while (the frames stay on the phone) is probed (``estimate.py``):
beside a frame that runs here, in a thread, so the probe costs the frame nothing (the radio is idle while
the phone computes) and a slow link is re-measured all the time rather than once per idle spell; before a
frame that offloads, at once (as its own upload may be too short to time). A frame that would offload
while a probe is still in flight waits for it (the link is the probe's) and is decided again on what the
probe measured.

An edge that does not serve a candidate (an older edge, or one started on fewer pieces) is asked once,
at start, where it can start (``GET /v1/manifest``: ``served.starts``); a candidate it lacks is never
chosen, and should it refuse one anyway (422 ``unserved_cut``), the same frame is run again at the best cut
it has, or all on the phone, and the result says so. No frame is dropped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import Context, Decision, ElasticSpec, decide
from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime.client import CollaborativeClient, InferResult, UnservedCut
from dnnsplit.runtime.connection import EdgeTimeout, EdgeUnreachable, UploadMeter
from dnnsplit.runtime.estimate import (
    EDGE_HEADER,
    ContextEstimator,
    EstimatorSettings,
    Observation,
    parse_edge_header,
)
from dnnsplit.splitting.manifest import Manifest

INPUT_CODINGS = ("jpeg", "tensor")
SENT_WINDOW = 16  # a cut's upload is priced at the mean of its last this many bodies
RTT_PROBE_BYTES = 1024  # a probe when only the round trip can change the choice (``_uplink_matters``)
PROBE_S = 5.0  # a probe unanswered this long is given up (the link took less than its body in that time)


@dataclass(frozen=True)
class ElasticSettings:
    hysteresis: float = 0.1  # keep the current cut unless another is predicted this much faster
    probe: bool = True  # probe an idle link (see estimate.py)
    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    # An offloaded request is abandoned (and finished here) past deadline_factor x its predicted time beyond
    # the phone (upload, edge, answer) plus deadline_slack_ms; 0 turns that off (only --timeout holds).
    deadline_factor: float = 3.0
    deadline_slack_ms: float = 100.0
    # A context policy from `dnnsplit rl train` (its .zip) that chooses the cut instead of the exact optimum
    # over the candidates (partition/rl/elastic_policy.py); None: the exact optimum.
    policy: str | None = None

    def check(self) -> None:
        if not 0 <= self.hysteresis < 1:
            raise UsageError(f"--hysteresis must be in [0, 1) (got {self.hysteresis})", "pass 0.1, say")
        if self.deadline_factor != 0 and self.deadline_factor < 1:
            raise UsageError(
                f"the deadline factor must be 0 (off) or at least 1 (got {self.deadline_factor})", "pass 3"
            )
        self.estimator.check()

    def deadline_s(self, remote_ms: float) -> float | None:
        """The deadline of a request predicted to take ``remote_ms`` past the phone's segments."""
        if self.deadline_factor == 0:
            return None
        return (self.deadline_factor * remote_ms + self.deadline_slack_ms) / 1000


def check_input_coding(coding: str) -> str:
    if coding not in INPUT_CODINGS:
        raise UsageError(f"--input-coding must be jpeg or tensor (got '{coding}')", "pass jpeg or tensor")
    return coding


@dataclass
class FrameResult:
    """One frame: its answer, the cut that ran and the decision (with the estimate) that chose it."""

    index: int
    result: InferResult
    decision: Decision
    note: str | None = None  # the edge lacked the chosen cut, or failed (the fallback), and what ran instead
    probe_ms: float | None = None  # a probe of the idle link before this frame
    changes: tuple[str, ...] = ()  # the quantities whose step this frame's measurements completed
    decision_ms: float | None = None  # what pricing the candidates and choosing took
    waited_ms: float = 0.0  # what the frame waited for a probe before it could offload (in its latency)

    @property
    def cut(self) -> str:
        return self.decision.candidate.name

    @property
    def latency_ms(self) -> float:
        """The frame's time: its stages, and any probe it waited for."""
        return self.result.stages.total_ms + self.waited_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.index,
            **self.decision.to_dict(),
            "latency_ms": self.latency_ms,
            "stages": self.result.stages.to_dict(),
            "waited_for_probe_ms": self.waited_ms,
            "fallback": self.result.fallback,
            "abandoned": self.result.abandoned,
            "note": self.note,
            "probe_ms": self.probe_ms,
            "changes": list(self.changes),
            "decision_ms": self.decision_ms,
        }


class ElasticClient:
    """Runs an elastic split (``split --elastic``) with its edge at ``edge_url``, re-cut every request."""

    def __init__(
        self,
        directory: str | Path,
        edge_url: str | None,
        *,
        token: str | None = None,
        link: LinkSpec | None = None,
        timeout_s: float = 10.0,
        threads: int | None = None,
        slowdown: float = 1.0,
        settings: ElasticSettings | None = None,
        coding: str | None = None,
    ) -> None:
        self.settings = settings or ElasticSettings()
        self.settings.check()
        manifest = Manifest.load(directory)
        if not manifest.elastic:
            raise UsageError(
                f"{directory} is a split with one cut, not an elastic one",
                "split it with `dnnsplit split MODEL --plan plan.yaml --elastic`",
            )
        self.spec = ElasticSpec.from_dict(manifest.elastic)
        if len(self.spec.pieces) != len(manifest.segments):
            raise UsageError(
                f"{directory}/manifest.yaml lists {len(manifest.segments)} segments for "
                f"{len(self.spec.pieces)} elastic pieces",
                "split the model again with --elastic",
            )
        self.client = CollaborativeClient(
            directory,
            edge_url,
            token=token,
            link=link,
            timeout_s=timeout_s,
            threads=threads,
            slowdown=slowdown,
            manifest=manifest,
            coding=coding,
        )
        # What each cut really sends (a frame's JPEG, a coded boundary), by boundary: the decision charges
        # the mean of the last few instead of the plan's float32 bytes (``priced``).
        self.sent: dict[int, deque[int]] = {}
        # Any candidate may run any piece here: every file is checked now (missing or changed: one line,
        # exit 2) and loaded, so a change of cut does not pay a session's load mid-stream.
        pieces = range(len(manifest.segments))
        chain = self.client.chain
        chain.verify(pieces)
        # One run of every piece before any is timed: a cold session's first run (several times the next
        # one's) would tell the estimator the phone is slower than it is, and while every request then goes
        # to the edge nothing runs here to correct it.
        slowdown, chain.slowdown = chain.slowdown, 1.0
        zeros = np.zeros((1, *manifest.input.shape[1:]), dtype=manifest.input.dtype)
        chain.run_segments({chain.input_name: zeros}, pieces)
        chain.slowdown = slowdown
        self.chooser = None
        if self.settings.policy:
            from dnnsplit.partition.rl.elastic_policy import ElasticPolicy
            from dnnsplit.partition.rl.policy_file import load_policy

            self.chooser = ElasticPolicy.fit(load_policy(self.settings.policy), self.spec)
        self.estimator = ContextEstimator(self.spec.reference, self.settings.estimator)
        # Then one timed run: the phone's speed is known before the first decision (a fast link keeps every
        # request on the edge, and nothing run here would ever tell how fast the phone is).
        if self.spec.phone_ms(len(self.spec.pieces)) > 0:
            runs = chain.run_segments({chain.input_name: zeros}, pieces)
            self.estimator.observe(
                Observation(
                    phone_profiled_ms=self.spec.phone_ms(len(self.spec.pieces)),
                    phone_ms=sum(r.ms for r in runs),
                )
            )
        self.current: int | None = None
        self.frames = 0
        # The estimator is shared with the background probe (``_start_probe``); the connection too, but a
        # request never runs while a probe is in flight (``infer`` waits for it first).
        self._lock = threading.Lock()
        self._probe_thread: threading.Thread | None = None
        self._probe_ms: float | None = None  # what the last background probe took, until a frame reports it
        self.everything = len(self.spec.pieces)
        self.edge_max_body = 65_536  # what a probe may send at most (the edge's --max-body-mb says more)
        self.starts: tuple[int, ...] | None = self._edge_starts() if edge_url else ()
        self.notes: list[str] = []
        missing = [c.name for c in self.spec.candidates if not self._allowed(c.boundary)]
        if missing and edge_url:
            where = "unreachable" if self.starts is None else f"starts at segments {list(self.starts)}"
            self.notes.append(f"the edge {where}: cut(s) {', '.join(missing)} not available")

    @property
    def manifest(self) -> Manifest:
        return self.client.manifest

    def close(self) -> None:
        self._wait_for_probe()
        self.client.close()

    def __enter__(self) -> ElasticClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _edge_starts(self) -> tuple[int, ...] | None:
        """Where the edge can start, from its ``/v1/manifest``; None when it cannot say (then any cut is
        tried, and a refusal is handled per request)."""
        import httpx

        headers = {"authorization": f"Bearer {self.client.token}"} if self.client.token else {}
        try:
            answer = httpx.get(f"{self.client.edge_url}/v1/manifest", headers=headers, timeout=5.0)
            served = answer.json()["served"]
            self.edge_max_body = int(served.get("max_body_bytes", self.edge_max_body))
            if served.get("split") != self.client.digest:
                return ()
            if "starts" in served:
                return tuple(int(s) for s in served["starts"])
            # An edge from before elastic splits starts at its first segment only.
            files = [seg.file for seg in self.manifest.segments]
            return (files.index(served["segments"][0]),)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def _allowed(self, boundary: int) -> bool:
        if boundary == self.everything:
            return True
        if not self.client.edge_url:
            return False
        return self.starts is None or boundary in self.starts

    def allowed(self) -> list[int]:
        """The boundaries a request may use now (all-local always; with no edge, only it)."""
        found = [c.boundary for c in self.spec.candidates if self._allowed(c.boundary)]
        # A split whose all-local is not a candidate (--max-mobile-mb) and no edge: its cuts run here.
        return found or list(self.spec.boundaries)

    def priced(self) -> ElasticSpec:
        """The spec with each cut's upload at the mean of what it sent lately (the plan's bytes till then)."""
        if not self.sent:
            return self.spec
        candidates = tuple(
            replace(c, up_bytes=round(sum(self.sent[c.boundary]) / len(self.sent[c.boundary])))
            if self.sent.get(c.boundary)
            else c
            for c in self.spec.candidates
        )
        return replace(self.spec, candidates=candidates)

    def _record_sent(self, boundary: int, nbytes: int) -> None:
        self.sent.setdefault(boundary, deque(maxlen=SENT_WINDOW)).append(nbytes)

    def infer(self, x: np.ndarray, image: bytes | None = None) -> FrameResult:
        """One frame ``x``; ``image``: its JPEG, sent instead of ``x`` by a cut that starts at the input (and
        what such a cut is charged: the mean of the JPEGs seen lately, this one's included)."""
        probe_ms = self._finished_probe()
        if image is not None:
            self._record_sent(0, len(image))
        spec = self.priced()
        context, decision, decision_ms = self._decide(spec)
        waited_ms = 0.0
        if decision.candidate.boundary < self.everything:
            # An offloading frame: the link must be free, and is measured first when it is due.
            t0 = time.perf_counter()
            probed = self._probe_thread is not None
            waited = self._wait_for_probe()
            if not probed and self._probe_due() and not self._times_the_link(decision):
                probed, waited = True, self.probe()
            if probed:
                waited_ms = (time.perf_counter() - t0) * 1000
                probe_ms = waited if waited is not None else probe_ms
                context, decision, again_ms = self._decide(spec)
                decision_ms += again_ms
        elif self._probe_due() and self._probe_thread is None:
            self._start_probe()
        note = None
        try:
            result = self._run(x, decision, image)
        except UnservedCut as exc:
            self.starts = tuple(exc.starts)
            again = self._choose(spec, context)
            note = (
                f"the edge lacks cut {decision.candidate.name} (it starts at segments {list(exc.starts)}): "
                f"ran {again.candidate.name}"
            )
            decision = again
            result = self._run(x, decision, image)
        boundary = decision.candidate.boundary
        if result.stages.up_bytes and not (boundary == 0 and image is not None):
            self._record_sent(boundary, result.stages.up_bytes)
        if result.fallback:
            note = f"{note}; {result.fallback}" if note else result.fallback
        with self._lock:
            changes = tuple(self.estimator.observe(self._observation(result, decision.candidate.boundary)))
        self.current = decision.candidate.boundary
        frame = FrameResult(self.frames, result, decision, note, probe_ms, changes, decision_ms, waited_ms)
        self.frames += 1
        return frame

    def _decide(self, spec: ElasticSpec) -> tuple[Context, Decision, float]:
        t0 = time.perf_counter()
        with self._lock:
            context = self.estimator.context()
        decision = self._choose(spec, context, self.current)
        return context, decision, (time.perf_counter() - t0) * 1000

    def _choose(self, spec: ElasticSpec, context: Context, current: int | None = None) -> Decision:
        """The policy's cut when one is given, else the exact optimum (hysteresis against ``current``)."""
        if self.chooser is not None:
            return self.chooser.decide(context, self.allowed(), spec)
        return decide(spec, context, self.allowed(), current, self.settings.hysteresis)

    def _uplink_matters(self, context: Context) -> bool:
        """Whether some offloading cut would win on a faster link than ``context``'s: if even an unbounded
        uplink and downlink leave every one slower than the phone alone (a model the phone runs in a few ms,
        a far edge), a probe need only follow the round trip and the edge's load: 1 kB, not a rate probe
        of up to 256 kB whose sending and reading take CPU from the frames beside it."""
        unbounded = replace(context, up_mbps=1e9, down_mbps=1e9)
        best = decide(self.priced(), unbounded, self.allowed(), None, 0.0)
        return best.candidate.boundary < self.everything

    def _times_the_link(self, decision: Decision) -> bool:
        """Whether the request's own body is long enough on the link to measure it (its second half over
        ``min_transfer_ms`` at the estimated rate): then no probe is needed before it."""
        ms = decision.candidate.up_bytes * 8 / (decision.context.up_mbps * 1000)
        return ms >= 2 * self.estimator.settings.min_transfer_ms

    def _probe_due(self) -> bool:
        if not (self.settings.probe and self.client.edge_url and self.client.connection is not None):
            return False
        with self._lock:
            return self.estimator.needs_probe()

    def _start_probe(self) -> None:
        """Probe the link in a thread while this frame runs on the phone."""

        def run() -> None:
            try:
                self._probe_ms = self.probe()
            except Exception as exc:  # a probe must never take the stream down: noted, and retried later
                self.notes.append(f"a background probe failed: {exc}")
                with self._lock:
                    self.estimator.last_uplink_sample = time.monotonic()

        self._probe_thread = threading.Thread(target=run, name="dnnsplit-probe", daemon=True)
        self._probe_thread.start()

    def _wait_for_probe(self) -> float | None:
        """Wait for a background probe in flight; what it took (ms), None when none ran or it said nothing."""
        thread, self._probe_thread = self._probe_thread, None
        if thread is None:
            return None
        thread.join()
        return self._finished_probe()

    def _finished_probe(self) -> float | None:
        """What a background probe that has finished took (ms), once; None when none has finished."""
        thread = self._probe_thread
        if thread is not None:
            if thread.is_alive():
                return None  # (its result is appended when it ends: read then, not half-way)
            thread.join()
            self._probe_thread = None
        ms, self._probe_ms = self._probe_ms, None
        return ms

    def stream(self, frames: Iterator[np.ndarray]) -> Iterator[FrameResult]:
        for x in frames:
            yield self.infer(x)

    def _run(self, x: np.ndarray, decision: Decision, image: bytes | None = None) -> InferResult:
        boundary = decision.candidate.boundary
        metadata = {
            "start": str(boundary),
            "cut": decision.candidate.name,
            "estimate": json.dumps({k: round(v, 4) for k, v in decision.context.to_dict().items()}),
        }
        phone_ms = self.spec.phone_ms(boundary) / decision.context.phone_speed
        return self.client.infer(
            x,
            split_at=boundary,
            metadata=metadata,
            image=image,
            deadline_s=self.settings.deadline_s(max(decision.predicted_ms - phone_ms, 0.0)),
            on_upload=self._observe_upload,
            on_abandon=self._observe_abandoned,
        )

    def _observe_upload(self, nbytes: int, ms: float) -> None:
        with self._lock:
            self.estimator.observe_upload(nbytes, ms)

    def _observe_abandoned(self, nbytes: int, ms: float) -> None:
        with self._lock:
            self.estimator.observe_abandoned(nbytes, ms)

    def _observation(self, result: InferResult, boundary: int) -> Observation:
        s = result.stages
        edge = s.edge
        remote = boundary < self.everything and not result.fallback and not result.early_exit
        tier = self.spec.tiers[1]
        return Observation(
            up_bytes=s.up_bytes if remote else None,
            read_bytes=int(edge["read-bytes"]) if remote and "read-bytes" in edge else None,
            read_ms=edge.get("read-ms") if remote else None,
            tail_bytes=int(edge["tail-bytes"]) if remote and "tail-bytes" in edge else None,
            tail_ms=edge.get("tail-ms") if remote else None,
            wall_ms=s.wall_ms if remote else None,
            edge_total_ms=edge.get("total-ms") if remote else None,
            down_bytes=s.down_bytes,
            phone_profiled_ms=self.spec.phone_ms(boundary) if not result.early_exit else None,
            phone_ms=s.mobile_ms,
            edge_profiled_ms=self.spec.edge_ms(boundary) if remote else None,
            edge_compute_ms=s.remote_compute_ms.get(tier) if remote else None,
            edge_queued=int(edge.get("queued", 0)),
            edge_concurrency=int(edge.get("concurrency", 1)),
        )

    def probe(self) -> float | None:
        """Send a probe body to ``/v1/probe`` through the (emulated) link and fold what it measured in; what
        it took (ms), None when it got no answer."""
        connection = self.client.connection
        if connection is None:
            return None
        with self._lock:
            context = self.estimator.context()
            rate_probe = self._uplink_matters(context)
            size = self.estimator.probe_bytes() if rate_probe else RTT_PROBE_BYTES
            size = min(size, self.edge_max_body)
            min_ms = self.estimator.settings.min_transfer_ms
        # A probe has a deadline as a request has (3x its predicted time + 100 ms): one sized for a fast link
        # that has dropped since is given up, and what the link took of it drops the estimate at once.
        predicted_ms = context.rtt_ms + size * 8 / (context.up_mbps * 1000)
        deadline_s = min(self.settings.deadline_s(predicted_ms) or PROBE_S, PROBE_S)
        meter = UploadMeter(self._observe_upload)
        data = os.urandom(size)
        link = self.client.link
        headers = {"content-type": "application/octet-stream", "content-length": str(len(data))}
        if self.client.token:
            headers["authorization"] = f"Bearer {self.client.token}"
        start = time.perf_counter()
        try:
            body = (lambda: link.upload(data)) if link else (lambda: [data])
            answer = connection.post("/v1/probe", body, headers, time.monotonic() + deadline_s, meter)
            # The answer comes back over the link too, or the round trip would show only half of it.
            link.download(answer.chunks(), answer.length) if link else answer.read()
        except EdgeTimeout:
            taken = meter.taken(connection.sock)
            connection.close(abort=True)  # what the socket still holds would only slow the next request
            if taken is not None:
                self._observe_abandoned(*taken)
            with self._lock:
                self.estimator.last_uplink_sample = time.monotonic()
            return None
        except EdgeUnreachable:
            connection.close()
            with self._lock:
                self.estimator.last_uplink_sample = time.monotonic()  # not again before the next idle period
            return None
        wall_ms = (time.perf_counter() - start) * 1000
        edge = parse_edge_header(answer.headers.get(EDGE_HEADER, ""))
        if answer.status != 200 or "read-ms" not in edge:
            with self._lock:
                self.estimator.last_uplink_sample = time.monotonic()
            return wall_ms
        observation = Observation(
            up_bytes=len(data),
            read_bytes=int(edge["read-bytes"]),
            read_ms=edge["read-ms"],
            tail_bytes=int(edge["tail-bytes"]) if "tail-bytes" in edge else None,
            tail_ms=edge.get("tail-ms"),
            wall_ms=wall_ms,
            edge_total_ms=edge.get("total-ms"),
            edge_queued=int(edge.get("queued", 0)),
            edge_concurrency=int(edge.get("concurrency", 1)),
        )
        # A probe read too fast to time says the link is much faster than the estimate it was sized for:
        # the next one, before the next frame, is 4x bigger (back to 1x once one measures). (A round-trip
        # probe is not meant to time the link.)
        too_short = rate_probe and edge["read-ms"] < min_ms
        with self._lock:
            self.estimator.probe_boost = min(self.estimator.probe_boost * 4, 64) if too_short else 1
            self.estimator.observe(observation)
            # Probe again before the next frame when this one said nothing, or saw a faster link that a
            # second sample must confirm (requests on a fast link are mostly too short to time): else after
            # idling.
            again = too_short or self.estimator.up.held_above()
            self.estimator.last_uplink_sample = 0.0 if again else time.monotonic()
        return wall_ms


@dataclass(frozen=True)
class StreamSummary:
    """A stream of frames in a few figures: latency percentiles, and per cut how often it ran."""

    frames: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    cuts: dict[str, int]
    switches: int  # frames whose cut differs from the previous frame's
    fallbacks: int
    notes: int
    abandoned: int = 0  # fallbacks of requests that ran past their own deadline
    decision_ms_p99: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(
    cuts: list[str],
    results: list[InferResult],
    notes: list[str | None],
    latencies: list[float] | None = None,
) -> StreamSummary:
    """``latencies``: each frame's time where it is more than its stages' (``FrameResult.latency_ms``)."""
    totals = np.array(latencies or [r.stages.total_ms for r in results], dtype=np.float64)
    counts: dict[str, int] = {}
    for c in cuts:
        counts[c] = counts.get(c, 0) + 1
    return StreamSummary(
        frames=len(results),
        p50_ms=float(np.percentile(totals, 50)) if len(totals) else float("nan"),
        p95_ms=float(np.percentile(totals, 95)) if len(totals) else float("nan"),
        mean_ms=float(totals.mean()) if len(totals) else float("nan"),
        cuts=counts,
        switches=sum(1 for a, b in zip(cuts, cuts[1:], strict=False) if a != b),
        fallbacks=sum(1 for r in results if r.fallback),
        abandoned=sum(1 for r in results if r.abandoned),
        notes=sum(1 for n in notes if n),
    )


@dataclass(frozen=True)
class StreamRequest:
    """``dnnsplit infer --stream/--frames``: the split, its edge, the frames and how many to run."""

    directory: Path
    edge_url: str | None
    source: Path  # an image, a .npy batch or a folder of images: the frames, looped
    count: int | None = None  # default: each frame once
    token: str | None = None
    link: LinkSpec | None = None
    timeout_s: float = 10.0
    threads: int | None = None
    top: int = 1  # classes per frame in its row
    settings: ElasticSettings = field(default_factory=ElasticSettings)
    input_coding: str = "jpeg"  # image frames go up as their JPEG (jpeg) or as the float32 tensor
    coding: str | None = None  # the upload's lossless coding (default: the split's plan's)


def run_stream(
    request: StreamRequest, progress: Any = None
) -> tuple[list[dict[str, Any]], StreamSummary, list[str]]:
    """Run the frames one after another: an elastic split re-cut per frame, a plain one at its cut.
    Per frame a row (``FrameResult.to_dict`` and its top classes), the summary, and the client's notes."""
    from dnnsplit.images import load_frames
    from dnnsplit.runtime.labels import top_classes

    check_input_coding(request.input_coding)
    manifest = Manifest.load(request.directory)
    frames = load_frames(request.source, manifest.input.shape)
    batch = frames.tensors
    jpegs = frames.jpegs if request.input_coding == "jpeg" else None
    total = request.count or len(batch)
    options: dict[str, Any] = {
        "token": request.token,
        "link": request.link,
        "timeout_s": request.timeout_s,
        "threads": request.threads,
        "coding": request.coding,
    }
    client: Any = (
        ElasticClient(request.directory, request.edge_url, settings=request.settings, **options)
        if manifest.elastic
        else CollaborativeClient(request.directory, request.edge_url, **options)
    )
    rows: list[dict[str, Any]] = []
    cuts: list[str] = []
    results: list[InferResult] = []
    notes: list[str | None] = []
    latencies: list[float] = []
    with client:
        for i in range(total):
            if progress is not None:
                progress("frames", i, total)
            x = batch[i % len(batch) : i % len(batch) + 1]
            image = jpegs[i % len(batch)] if jpegs else None
            if manifest.elastic:
                frame = client.infer(x, image)
                result, cut, row, note = frame.result, frame.cut, frame.to_dict(), frame.note
            else:
                result = client.infer(x, image=image)
                cut, note = f"fixed (from segment {client.first_remote + 1})", result.fallback
                row = {
                    "frame": i,
                    "cut": cut,
                    "latency_ms": result.stages.total_ms,
                    "stages": result.stages.to_dict(),
                    "fallback": result.fallback,
                }
            row["top"] = top_classes(manifest, result.outputs, request.top)
            rows.append(row)
            cuts.append(cut)
            results.append(result)
            notes.append(note)
            latencies.append(row["latency_ms"])
        if progress is not None:
            progress("frames", total, total)
    return rows, summarize(cuts, results, notes, latencies), list(getattr(client, "notes", []))
