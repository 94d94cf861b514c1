"""The mobile side of collaborative inference: run the first tier's segments, send the boundary on, collect
the answer, and time every stage.

One request goes through these steps, in order:

1. ``mobile``: the client's own segments (the first tier's) in onnxruntime;
2. early exit: when the split comes from ``dnnsplit branch`` (its manifest has ``early_exit``) and the
   branch is confident, the request ends on the phone with the branch's answer (``EarlyExit``);
3. ``upload``: the tensors crossing the cut, as one safetensors message (paced by the emulated link);
4. ``remote``: from the last byte sent to the first byte of the answer (the edge, and the tiers behind it);
5. ``return``: the answer's body (paced by the emulated link).

When the edge cannot be reached, does not answer in full within ``timeout_s`` (a deadline for the whole
request, not per socket read), fails (5xx) or answers something that is not this split's outputs (names,
shapes, dtypes and batch checked against the manifest, size bounded by them), the client runs the
remaining segments itself and says so in ``fallback``: the request is answered either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.codecs import check_coding
from dnnsplit.errors import UsageError
from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime import route
from dnnsplit.runtime.connection import EdgeConnection, EdgeTimeout, EdgeUnreachable, UploadMeter
from dnnsplit.runtime.estimate import EDGE_HEADER, parse_edge_header
from dnnsplit.runtime.link import EmulatedLink
from dnnsplit.runtime.wire import (
    CONTENT_TYPE,
    HEADER_SLACK,
    WireError,
    check,
    coded_body,
    decode,
    encode,
    image_headers,
    message_bytes,
)
from dnnsplit.splitting.chain import SegmentChain, SegmentRun, early_exit_answer
from dnnsplit.splitting.manifest import Manifest

# Given every tensor the client holds after its own segments, a model-outputs dict to stop there, or None.
EarlyExit = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray] | None]


@dataclass
class Stages:
    """Where one request's time went (ms) and what crossed the link (bytes)."""

    mobile_ms: float = 0.0
    upload_ms: float = 0.0
    remote_ms: float = 0.0
    return_ms: float = 0.0
    fallback_ms: float = 0.0  # running the remote segments locally after a failed request
    total_ms: float = 0.0
    remote_compute_ms: dict[str, float] = field(default_factory=dict)  # per tier, from Server-Timing
    forward_ms: float | None = None  # the edge's round trip to the next tier
    up_bytes: int = 0
    down_bytes: int = 0
    wall_ms: float | None = None  # from the upload's start to the answer's last byte
    edge: dict[str, float] = field(default_factory=dict)  # the edge's x-dnnsplit-edge header (estimate.py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mobile_ms": self.mobile_ms,
            "upload_ms": self.upload_ms,
            "remote_ms": self.remote_ms,
            "return_ms": self.return_ms,
            "fallback_ms": self.fallback_ms,
            "total_ms": self.total_ms,
            "remote_compute_ms": dict(self.remote_compute_ms),
            "forward_ms": self.forward_ms,
            "up_bytes": self.up_bytes,
            "down_bytes": self.down_bytes,
            "wall_ms": self.wall_ms,
            "edge": dict(self.edge),
        }


@dataclass
class InferResult:
    outputs: dict[str, np.ndarray]
    local: list[SegmentRun]  # segments run here (the mobile's, and the others after a fallback)
    stages: Stages
    fallback: str | None = None  # why the remote segments ran here, when they did
    early_exit: bool = False
    abandoned: bool = False  # the request ran past its own deadline (``deadline_s``) and was finished here


class RemoteRefused(UsageError):
    """The edge refused the request (4xx): the client and server disagree; retrying will not help."""


class UnservedCut(RemoteRefused):
    """The edge does not start at the segment asked for (an elastic split's cut it lacks); ``starts``: where
    it does."""

    def __init__(self, problem: str, starts: list[int]) -> None:
        super().__init__(problem, "pick a cut the edge serves")
        self.starts = starts


@dataclass(frozen=True)
class _Route:
    """One cut's traffic: segments ``local`` here, ``remote`` on the edge, what crosses each way."""

    first_remote: int
    local: tuple[int, ...]
    remote: tuple[int, ...]
    boundary: list[Any]
    answers: list[Any]
    answer_bytes: int  # an answer's most bytes per sample


def parse_server_timing(header: str) -> dict[str, float]:
    """``compute-edge;dur=1.2, forward;dur=3`` -> {"compute-edge": 1.2, "forward": 3.0}."""
    found = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    found[name.strip()] = float(value)
                except ValueError:
                    pass
    return found


class CollaborativeClient:
    """Runs the split in ``directory`` with the later tiers behind ``edge_url``."""

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
        early_exit: EarlyExit | None = None,
        manifest: Manifest | None = None,
        split_at: int | None = None,
        coding: str | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise UsageError(f"--timeout must be > 0 (got {timeout_s})", "pass 10, say")
        if edge_url is not None and not edge_url.startswith(("http://", "https://")):
            raise UsageError(f"--edge '{edge_url}' is not an http(s) URL", "pass http://HOST:PORT")
        self.manifest = manifest or Manifest.load(directory)
        # the lossless coding of the upload (see runtime/wire.py): given, else the one the split's plan
        # priced its boundaries with, else none
        self.coding = check_coding(coding or str(self.manifest.origin.get("coding") or "identity"))
        self._routes: dict[int, _Route] = {}
        # split_at: the first segment sent away (default: the first past the mobile tier's; 0: all of them).
        default = self.route(len(route.local_prefix(self.manifest)) if split_at is None else split_at)
        self.first_remote, self.local, self.remote = default.first_remote, default.local, default.remote
        self.boundary, self.answers, self.answer_bytes = (
            default.boundary,
            default.answers,
            default.answer_bytes,
        )
        self.results = route.results_from(self.manifest, 0)
        self.digest = route.digest(self.manifest)
        self.chain = SegmentChain(self.manifest, directory, threads, self.local, slowdown)
        # The fallback runs the edge's segments here: a file that is not the manifest's would answer
        # something else, so it is refused now (one line, exit 2), not in the middle of a request.
        self.chain.verify(self.remote)
        self.edge_url = edge_url.rstrip("/") if edge_url else None
        self.token = token
        self.link = EmulatedLink(link) if link else None
        if early_exit is None and self.manifest.early_exit and self.local:
            manifest_ = self.manifest
            early_exit = lambda available: early_exit_answer(manifest_, available)  # noqa: E731
        self.early_exit = early_exit
        self.timeout_s = timeout_s
        self.connection = (
            EdgeConnection(self.edge_url, timeout_s, min(timeout_s, 5.0)) if self.edge_url else None
        )

    def route(self, first_remote: int) -> _Route:
        """The cut before segment ``first_remote`` (computed once per cut)."""
        if first_remote not in self._routes:
            count = len(self.manifest.segments)
            remote = tuple(range(first_remote, count))
            answers = route.results_from(self.manifest, first_remote)  # what the edge must send back
            # An answer's most bytes per sample: the outputs, plus a later boundary (an edge without --next).
            later = range(first_remote + 1, count)
            self._routes[first_remote] = _Route(
                first_remote,
                tuple(range(first_remote)),
                remote,
                route.crossing(self.manifest, first_remote) if remote else [],
                answers,
                message_bytes(answers)
                + max([0] + [message_bytes(route.crossing(self.manifest, k)) for k in later]),
            )
        return self._routes[first_remote]

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()

    def __enter__(self) -> CollaborativeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer(
        self,
        x: np.ndarray,
        emulate: bool = True,
        split_at: int | None = None,
        metadata: dict[str, str] | None = None,
        image: bytes | None = None,
        deadline_s: float | None = None,
        on_upload: Callable[[int, float], None] | None = None,
        on_abandon: Callable[[int, float], None] | None = None,
    ) -> InferResult:
        """The model outputs for ``x`` (batch first); ``emulate`` False skips the link emulation (warm-up).

        ``split_at``: this request's first remote segment (an elastic client's cut; default: the client's);
        ``metadata``: more of the request's ``__metadata__`` (an elastic client's ``start``, ``cut``,
        ``estimate``); ``image``: the frame ``x`` was made from, as a JPEG, sent instead of ``x`` when the
        request starts at the model's input (the edge makes the same tensor from it, ``images.py``);
        ``deadline_s``: this request's own deadline (shorter than ``timeout_s``), past which it is abandoned
        and finished here (``abandoned``); ``on_upload(bytes, ms)``: the link's rate while the body is in
        flight (``connection.UploadMeter``); ``on_abandon(bytes, ms)``: what the link took of an upload
        abandoned at the deadline."""
        start = time.perf_counter()
        cut = self.route(self.first_remote if split_at is None else split_at)
        stages = Stages()
        available: dict[str, np.ndarray] = {self.chain.input_name: x}
        runs = self.chain.run_segments(available, cut.local)
        stages.mobile_ms = sum(r.ms for r in runs)
        if self.early_exit is not None:
            outputs = self.early_exit(available)
            if outputs is not None:
                stages.total_ms = (time.perf_counter() - start) * 1000
                return InferResult(outputs, runs, stages, early_exit=True)
        fallback, abandoned = None, False
        if cut.remote and self.edge_url is None:  # no edge at all: every segment here, by choice
            runs += self.chain.run_segments(available, cut.remote)
            stages.mobile_ms = sum(r.ms for r in runs)
        elif cut.remote:
            try:
                link = self.link if emulate else None
                request = _Request(metadata, image, deadline_s, on_upload, on_abandon)
                answer = self._request(available, stages, link, cut, request)
                available.update(answer)
            except _Abandoned as exc:
                fallback, abandoned = f"{exc}: ran the remaining segments here", True
            except _Unavailable as exc:
                fallback = f"{exc}: ran the remaining segments here"
            if fallback is not None:
                t0 = time.perf_counter()
                runs += self.chain.run_segments(available, cut.remote)
                stages.fallback_ms = (time.perf_counter() - t0) * 1000
        outputs = {t.name: available[t.name] for t in self.results}
        stages.total_ms = (time.perf_counter() - start) * 1000
        return InferResult(outputs, runs, stages, fallback, abandoned=abandoned)

    def _request(
        self,
        available: dict[str, np.ndarray],
        stages: Stages,
        link: EmulatedLink | None,
        cut: _Route,
        request: _Request | None = None,
    ) -> dict[str, np.ndarray]:
        request = request or _Request()
        image = request.image
        own = request.deadline_s is not None and request.deadline_s < self.timeout_s
        # the whole request: upload, wait, answer
        deadline = time.monotonic() + (request.deadline_s if own else self.timeout_s)  # type: ignore[operator]
        meta = {"manifest": self.digest, **(request.metadata or {})}
        batch = int(available[self.chain.input_name].shape[0])
        if image is not None and cut.first_remote == 0 and batch == 1:
            body, kind = image, image_headers(meta)  # the frame's JPEG: a few kB, not the float32 tensor
        else:
            message = encode({t.name: available[t.name] for t in cut.boundary}, meta)
            body, coding = coded_body(message, self.coding)
            kind = {"content-type": CONTENT_TYPE, **coding}
        stages.up_bytes = len(body)
        limit = cut.answer_bytes * batch + HEADER_SLACK  # more is not this split's answer: not worth reading
        headers = {**kind, "content-length": str(len(body))}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        marks: dict[str, float] = {}

        def content() -> Iterator[bytes]:
            marks["start"] = time.perf_counter()
            if link is None:
                yield body
            else:
                yield from link.upload(body)
            marks["sent"] = time.perf_counter()

        assert self.connection is not None
        meter = UploadMeter(request.on_upload) if request.on_upload else None
        try:
            answer = self.connection.post("/v1/infer", content, headers, deadline, meter)
            marks["head"] = time.perf_counter()
            if answer.length > limit:
                raise _TooLarge(answer.length)
            chunks = _bounded(answer.chunks(), limit)
            if answer.status == 200 and link is not None:
                raw = link.download(chunks, answer.length)
            else:
                raw = b"".join(chunks)
            marks["end"] = time.perf_counter()
        except EdgeTimeout:
            taken = meter.taken(self.connection.sock) if meter is not None else None
            self.connection.close(abort=True)  # what the socket still holds would only slow the next one
            if own and taken is not None and request.on_abandon is not None:
                request.on_abandon(*taken)
            if own:
                raise _Abandoned(
                    f"abandoned after {request.deadline_s * 1000:.0f} ms, its deadline"  # type: ignore[operator]
                ) from None
            raise _Unavailable(
                f"the edge at {self.edge_url} did not answer within {self.timeout_s:g} s"
                " (--timeout, for the whole request)"
            ) from None
        except _TooLarge as exc:
            self.connection.close()
            raise _Unavailable(
                f"the edge at {self.edge_url} sent {exc.size}+ bytes, more than an answer of this split takes"
                f" ({limit})"
            ) from None
        except EdgeUnreachable as exc:
            self.connection.close()
            raise _Unavailable(f"the edge at {self.edge_url} is unreachable ({exc})") from None
        if answer.status != 200:
            self._refused(answer.status, raw)
        sent = marks.get("sent", marks["head"])
        stages.upload_ms = (sent - marks["start"]) * 1000
        stages.remote_ms = (marks["head"] - sent) * 1000
        stages.return_ms = (marks["end"] - marks["head"]) * 1000
        stages.down_bytes = len(raw)
        stages.wall_ms = (marks["end"] - marks["start"]) * 1000
        stages.edge = parse_edge_header(answer.headers.get(EDGE_HEADER, ""))
        timing = parse_server_timing(answer.headers.get("server-timing", ""))
        stages.remote_compute_ms = {
            k.removeprefix("compute-"): v for k, v in timing.items() if k.startswith("compute-")
        }
        stages.forward_ms = timing.get("forward")
        try:
            tensors, metadata = decode(raw)
        except WireError as exc:
            raise _Unavailable(
                f"the edge at {self.edge_url} sent a malformed answer ({exc.message})"
            ) from None
        if metadata.get("complete") == "false":
            raise RemoteRefused(
                f"the edge at {self.edge_url} has no next tier for the rest of the split",
                "start it with --next URL of the next tier's server",
            )
        try:
            answered = check(tensors, cut.answers)
        except WireError as exc:
            raise _Unavailable(f"the edge at {self.edge_url} sent a wrong answer ({exc.message})") from None
        if answered != batch:
            raise _Unavailable(
                f"the edge at {self.edge_url} sent a wrong answer (batch {answered} for a request of {batch})"
            )
        return tensors

    def _refused(self, status: int, raw: bytes) -> None:
        code, starts = "", []
        try:
            error = json.loads(raw)
            reason, code, starts = (
                str(error.get("error", "")),
                str(error.get("code", "")),
                error.get("starts", []),
            )
        except (ValueError, AttributeError):
            reason = raw[:200].decode(errors="replace")
        if status >= 500:
            raise _Unavailable(f"the edge at {self.edge_url} failed ({status}: {reason})")
        if status == 401:
            raise RemoteRefused(
                f"the edge at {self.edge_url} refused the request: {reason}", "pass its --token"
            )
        if status == 422 and code == "unserved_cut":
            raise UnservedCut(f"the edge at {self.edge_url} lacks this cut ({reason})", list(starts))
        if status == 409:
            raise RemoteRefused(
                f"the edge at {self.edge_url} serves another split ({reason})", "serve this DIR"
            )
        raise RemoteRefused(f"the edge at {self.edge_url} refused the request ({status}: {reason})")


class _Unavailable(Exception):
    """The edge could not give an answer: the client falls back to local execution."""


class _Abandoned(_Unavailable):
    """The request ran past its own deadline (an elastic client's: k x its predicted time)."""


@dataclass(frozen=True)
class _Request:
    """What one request carries beyond its tensors (see ``CollaborativeClient.infer``)."""

    metadata: dict[str, str] | None = None
    image: bytes | None = None
    deadline_s: float | None = None
    on_upload: Callable[[int, float], None] | None = None
    on_abandon: Callable[[int, float], None] | None = None  # what the link took of an abandoned upload


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _bounded(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """``chunks``, stopped with ``_TooLarge`` once they pass ``limit`` bytes (no Content-Length to trust)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise _TooLarge(total)
        yield chunk
