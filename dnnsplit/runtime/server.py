"""A tier's server: its segments in onnxruntime behind Starlette + uvicorn.

Endpoints: ``POST /v1/infer`` (the tensors crossing into this tier, as safetensors; back come the model
outputs, from this tier or relayed from ``next``), ``GET /healthz``, ``GET /v1/manifest`` and ``GET /metrics``
(Prometheus text). Every request is checked before any compute: bearer token, body size, payload, the split's
digest, tensor names, shapes and dtypes; a failure is a 4xx JSON ``{"error", "code", ...}`` naming the
problem, and the server goes on. ``Server-Timing`` on each answer says where the time went
(``compute-<tier>`` per tier, ``forward``: the round trip to the next tier as seen from here).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import signal
import socket
import threading
import time
from collections.abc import Container, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.codecs import check_coding
from dnnsplit.errors import UsageError
from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime import route
from dnnsplit.runtime.estimate import EDGE_HEADER, edge_header
from dnnsplit.runtime.guard import (
    BodyDeadline,
    Gate,
    check_max_connections,
    default_max_connections,
    protocol_class,
    retry_after_s,
)
from dnnsplit.runtime.link import EmulatedLink
from dnnsplit.runtime.options import check_port, check_positive, check_token
from dnnsplit.runtime.wire import (
    CONTENT_TYPE,
    HEADER_SLACK,
    WireError,
    check,
    check_finite,
    coded_body,
    decode,
    decoded_body,
    encode,
    image_metadata,
    is_image_body,
    message_bytes,
)
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.manifest import Manifest

DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_QUEUE = 64  # twice the 32 clients of the runtime benchmark's load test, which must see no 503
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROUTES = ("/v1/infer", "/v1/probe", "/v1/manifest", "/healthz", "/metrics")
CLIENT_CLOSED = 499  # the status /metrics counts a request under when its client left before the answer


# Segments whose last compute took less than this run on the event loop itself (see TierService.infer).
INLINE_COMPUTE_MS = 25.0


@dataclass(frozen=True)
class ServeSettings:
    tier: str | None = "edge"  # whose segments to serve; None: the segments listed in ``segments``
    segments: tuple[int, ...] | None = None  # explicit segment indices (bench's all-edge server: all of them)
    next_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    next_token: str | None = None  # bearer token for the next tier (default: ``token``)
    max_body_mb: float | None = None  # default: the largest boundary x max_batch
    max_batch: int = DEFAULT_MAX_BATCH
    threads: int | None = None  # onnxruntime intra-op threads per segment
    concurrency: int = 1  # requests computing at once (more only helps with cores to spare)
    timeout_s: float = 30.0  # waiting for the next tier
    link: LinkSpec | None = None  # emulate the link to the next tier
    slowdown: float = 1.0  # stretch compute to emulate a slower device
    graceful_s: int = 30  # SIGTERM: how long in-flight requests may take to finish
    access_log: bool = False
    web: bool = False  # also serve the browser client under /web (dnnsplit/runtime/web)
    profiles_dir: str | None = None  # where /web/profile.html's posted profiles are saved
    profile_model: str | None = None  # the MODEL that page profiles (default: the split's source)
    header_timeout_s: float = 10.0  # a request's headers must be in within this (see runtime/guard.py)
    body_timeout_s: float = 10.0  # ... and its body within this plus 1 s per 8 kB
    max_connections: int | None = None  # default: what `ulimit -n` leaves room for, at most 1024
    max_queue: int = DEFAULT_MAX_QUEUE  # requests waiting for compute past --concurrency; more get 503
    allow_non_finite: bool = False  # NaN/inf in a request's tensors: 422 unless allowed
    coding: str = "identity"  # lossless coding of what is forwarded to the next tier (zstd, deflate)

    def check(self) -> None:
        check_coding(self.coding)
        if self.max_batch < 1:
            raise UsageError(f"--max-batch must be at least 1 (got {self.max_batch})", "pass 8, say")
        if self.max_body_mb is not None:
            check_positive(self.max_body_mb, "--max-body-mb", "pass 16, say")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1 (got {self.concurrency})", "pass 1")
        check_positive(self.timeout_s, "--timeout", "pass 30, say")
        check_positive(self.header_timeout_s, "--header-timeout", "pass 10, say")
        check_positive(self.body_timeout_s, "--body-timeout", "pass 10, say")
        check_port(self.port)
        check_token(self.token)
        check_token(self.next_token, "--next-token")
        if self.max_connections is not None:
            check_max_connections(self.max_connections)
        if self.max_queue < 0:
            raise UsageError(f"--max-queue must be 0 or more (got {self.max_queue})", "pass 64, say")
        if self.token is None and not is_loopback(self.host):
            raise UsageError(
                f"binding {self.host} exposes the server beyond this machine without authentication",
                "pass --token SECRET (or set DNNSPLIT_TOKEN), or bind 127.0.0.1",
            )
        if self.profiles_dir is not None and not self.web:
            raise UsageError("--profiles-dir is for the browser client's profiling page", "add --web")
        if self.profile_model is not None and self.profiles_dir is None:
            raise UsageError(
                "--profile-model names what /web/profile.html profiles", "add --profiles-dir DIR"
            )
        if self.next_url is not None and not self.next_url.startswith(("http://", "https://")):
            raise UsageError(f"--next '{self.next_url}' is not an http(s) URL", "pass http://HOST:PORT")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    """Prometheus metrics in a registry of their own (several servers may live in one process)."""

    def __init__(self, tier: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = {"tier": tier}
        self.requests = Counter(
            "dnnsplit_requests",
            "HTTP requests by path and status",
            ["tier", "path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dnnsplit_request_duration_seconds",
            "POST /v1/infer latency (accepted requests, all tiers beyond)",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self.compute = Histogram(
            "dnnsplit_compute_duration_seconds",
            "This tier's segment compute per request",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self.received = Counter(
            "dnnsplit_received_bytes",
            "Request body bytes received on /v1/infer",
            ["tier"],
            registry=self.registry,
        ).labels(**labels)
        self.sent = Counter(
            "dnnsplit_sent_bytes", "Response body bytes sent on /v1/infer", ["tier"], registry=self.registry
        ).labels(**labels)
        self.forwarded = Counter(
            "dnnsplit_forwarded_bytes", "Bytes sent to the next tier", ["tier"], registry=self.registry
        ).labels(**labels)
        self.in_flight = Gauge(
            "dnnsplit_in_flight_requests",
            "POST /v1/infer requests in progress",
            ["tier"],
            registry=self.registry,
        ).labels(**labels)
        self.dropped = Counter(
            "dnnsplit_dropped_connections",
            "Connections the server closed: header_timeout, body_timeout, evicted (for a newcomer past "
            "--max-connections: the one waiting longest on its client), over_capacity",
            ["tier", "reason"],
            registry=self.registry,
        )
        # Elastic splits: which cut each request came for, and the context estimate its client sent.
        self.cuts = Counter(
            "dnnsplit_cut_requests",
            "POST /v1/infer requests by the cut the client chose and the segment they start at",
            ["tier", "cut", "start"],
            registry=self.registry,
        )
        self.estimate = Gauge(
            "dnnsplit_client_estimate",
            "The context estimate the last elastic client sent (up_mbps, rtt_ms, phone_speed, edge_load)",
            ["tier", "quantity"],
            registry=self.registry,
        )
        self.tier = tier

    def record_cut(self, metadata: Mapping[str, str], start: int, known: Container[str]) -> None:
        # A label per name a client sends would let any client grow the registry: unknown names are "other".
        cut = metadata.get("cut", "-")
        self.cuts.labels(tier=self.tier, cut=cut if cut in known else "other", start=str(start)).inc()
        try:
            estimate = json.loads(metadata.get("estimate", "{}"))
        except ValueError:
            return
        for key in ("up_mbps", "rtt_ms", "phone_speed", "edge_load"):
            value = estimate.get(key) if isinstance(estimate, dict) else None
            if isinstance(value, int | float) and np.isfinite(value):
                self.estimate.labels(tier=self.tier, quantity=key).set(float(value))

    def drop(self, reason: str) -> None:
        self.dropped.labels(tier=self.tier, reason=reason).inc()

    def count(self, path: str, status: int) -> None:
        self.requests.labels(
            tier=self.tier, path=path if path in ROUTES else "other", status=str(status)
        ).inc()

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass
class TierAnswer:
    """What a tier's segments (and the tiers after it) made of one request: the answer's tensors, the
    ``Server-Timing`` entries and whether the answer is complete (else it carries the next boundary)."""

    tensors: dict[str, np.ndarray]
    timing: list[str]
    complete: str = "true"


class TierService:
    """What one server does for a request: check it, run its segments, forward the rest, answer."""

    def __init__(self, manifest: Manifest, directory: str | Path, settings: ServeSettings) -> None:
        settings.check()
        self.directory = Path(directory)
        self.manifest = manifest
        self.settings = settings
        elastic = route.elastic_edge_segments(manifest)
        if settings.segments is not None:
            self.indices = tuple(settings.segments)
        elif elastic is not None and (settings.tier or "edge") != route.CLIENT_TIER:
            self.indices = elastic  # every piece a candidate may offload
        else:
            self.indices = route.tier_segments(manifest, settings.tier or "edge")
        if elastic is None and settings.segments is None and self.indices == route.local_prefix(manifest):
            raise UsageError(
                f"'{settings.tier}' runs the first segment: that is the client's (dnnsplit infer)",
                "serve a later tier (edge, cloud)",
            )
        self.tier = settings.tier or manifest.segments[self.indices[-1]].tier
        self.first, self.last = self.indices[0], self.indices[-1]
        self.starts = route.served_starts(manifest, self.indices)  # where a request may start
        self.cut_names = {str(c["name"]) for c in (manifest.elastic or {}).get("candidates", [])}
        self.accepts = route.crossing(manifest, self.first)
        self.later = self.last + 1 < len(manifest.segments)
        self.pending = route.crossing(manifest, self.last + 1) if self.later else []
        self.returns = route.results_from(manifest, self.first)
        self.digest = route.digest(manifest)
        self.chain = SegmentChain(manifest, directory, settings.threads, self.indices, settings.slowdown)
        if settings.web:  # it hands the phone's segments to browsers: refused now, before binding the port
            self.chain.verify(route.phone_segments(manifest))
        self.metrics = Metrics(self.tier)
        self.link = EmulatedLink(settings.link) if settings.link else None
        self.forwards = settings.next_url is not None  # later tiers reached from here (else: handed back)
        self.http: Any = None  # aiohttp.ClientSession for the next tier, opened with the app
        largest = max(
            [message_bytes(self.accepts)]
            + [message_bytes(route.crossing(manifest, k)) for k in range(1, len(manifest.segments))]
        )
        self.max_body = (
            int(settings.max_body_mb * 1e6)
            if settings.max_body_mb is not None
            else largest * settings.max_batch + HEADER_SLACK
        )
        self.served = 0
        self.last_compute_ms = float("inf")  # the first request computes in a worker thread
        self.active = 0  # requests between arrival and answer
        self.queued = 0  # checked requests computing or waiting to (at most concurrency + max_queue)
        self.gate = Gate(
            settings.max_connections or default_max_connections(),
            settings.header_timeout_s,
            settings.body_timeout_s,
            on_drop=self.metrics.drop,
        )

    # -- the checks --------------------------------------------------------------------------------------
    def authorize(self, headers: Mapping[str, str]) -> None:
        token = self.settings.token
        if token is None:
            return
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise WireError(401, "unauthorized", "missing bearer token (Authorization: Bearer TOKEN)")
        if not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise WireError(401, "unauthorized", "wrong bearer token")

    async def read_body(self, request: Any) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise WireError(400, "bad_length", f"Content-Length '{length}' is not a number") from None
            if declared > self.max_body:
                raise self._too_large(declared)
        parts, total = [], 0
        first = mid = None
        half = int(length) // 2 if length is not None else None
        async for chunk in request.stream():
            if chunk and first is None:
                first = (time.perf_counter(), len(chunk))  # the link's rate shows in the rest (estimate.py)
            total += len(chunk)
            if mid is None and half and total >= half:
                mid = (time.perf_counter(), total)  # ... and past a shaper's burst in the second half
            if total > self.max_body:
                raise self._too_large(total)
            parts.append(chunk)
        self.metrics.received.inc(total)
        end = time.perf_counter()
        request.state.read = (first[0], total - first[1], (end - first[0]) * 1000) if first else (end, 0, 0.0)
        request.state.tail = (total - mid[1], (end - mid[0]) * 1000) if mid else (0, 0.0)
        return b"".join(parts)

    def admit(self) -> None:
        """Load shedding: past --concurrency computing and --max-queue waiting, 503 and when to retry."""
        capacity = self.settings.concurrency + self.settings.max_queue
        if self.queued >= capacity:
            waiting = self.queued - self.settings.concurrency
            raise WireError(
                503,
                "overloaded",
                f"{waiting} request(s) already wait for compute (--max-queue {self.settings.max_queue}); "
                "retry later",
                {"retry_after_s": retry_after_s(waiting, self.last_compute_ms, self.settings.concurrency)},
            )

    def _too_large(self, size: int) -> WireError:
        return WireError(
            413,
            "body_too_large",
            f"body of {size} bytes is over this server's limit of {self.max_body} bytes (--max-body-mb)",
        )

    # -- the work ----------------------------------------------------------------------------------------
    def compute(self, tensors: dict[str, np.ndarray], start_at: int | None = None) -> float:
        start = time.perf_counter()
        first = self.first if start_at is None else start_at
        self.chain.run_segments(tensors, range(first, self.last + 1))
        return (time.perf_counter() - start) * 1000

    async def forward(
        self, pending: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
        """Send ``pending`` to the next tier; its tensors, metadata and Server-Timing header."""
        import aiohttp

        url = f"{self.settings.next_url.rstrip('/')}/v1/infer"  # type: ignore[union-attr]
        body, coding = coded_body(encode(pending, {"manifest": self.digest}), self.settings.coding)
        self.metrics.forwarded.inc(len(body))
        headers = {"content-type": CONTENT_TYPE, "content-length": str(len(body)), **coding}
        token = self.settings.next_token or self.settings.token
        if token:
            headers["authorization"] = f"Bearer {token}"
        content: Any = self.link.upload_async(body) if self.link else body
        try:
            async with self.http.post(url, data=content, headers=headers) as answer:
                size = int(answer.headers.get("content-length", 0))
                raw = await (
                    self.link.download_async(answer.content.iter_any(), size)
                    if self.link
                    else answer.read()
                )
                status, timing_header = answer.status, answer.headers.get("server-timing", "")
        except TimeoutError:
            raise WireError(504, "next_timeout", f"the next tier at {url} did not answer in time") from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise WireError(
                502, "next_unreachable", f"the next tier at {url} is unreachable ({reason})"
            ) from None
        if status != 200:
            try:
                reason = json.loads(raw).get("error", "")
            except (ValueError, AttributeError):
                reason = raw[:200].decode(errors="replace")
            raise WireError(
                502, "next_failed", f"the next tier at {url} answered {status}: {reason}"
            )
        tensors, metadata = decode(raw)
        return tensors, metadata, timing_header

    async def infer(self, request: Any) -> Any:
        self.active += 1
        try:
            return await self._infer(request)
        finally:
            self.active -= 1

    async def _infer(self, request: Any) -> Any:
        from starlette.responses import Response

        self.authorize(request.headers)
        self.admit()  # a full queue refuses before reading the body, not after
        body = await self.read_body(request)
        start = time.perf_counter()
        raw = decoded_body(body, request.headers, self.max_body)
        if is_image_body(request.headers):
            import anyio

            tensors, metadata, first = await anyio.to_thread.run_sync(
                self.accept_image, raw, image_metadata(request.headers)
            )
        else:
            tensors, metadata, first = self.accept(raw)
        self.admit()
        self.metrics.in_flight.inc()
        try:
            answer = await self.process(tensors, first)
            out = encode(
                answer.tensors, {"manifest": self.digest, "complete": answer.complete, "tier": self.tier}
            )
        finally:
            self.metrics.in_flight.dec()
        self.metrics.sent.inc(len(out))
        self.metrics.latency.observe(time.perf_counter() - start)
        self.served += 1
        if self.manifest.elastic:
            self.metrics.record_cut(metadata, first, self.cut_names)
        headers = {"server-timing": ", ".join(answer.timing), EDGE_HEADER: self.load_header(request)}
        return Response(out, media_type=CONTENT_TYPE, headers=headers)

    def accept(self, body: bytes) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
        """The tensors of a request body checked against what this tier takes (else ``WireError``), its
        metadata, and the segment it starts at."""
        tensors, metadata = decode(body)
        first = self.start_of(self.check_split(metadata))
        accepts = self.accepts if first == self.first else route.crossing(self.manifest, first)
        check(tensors, accepts, self.settings.max_batch)
        if not self.settings.allow_non_finite:
            check_finite(tensors)
        return tensors, metadata, first

    async def compute_async(self, tensors: dict[str, np.ndarray], first: int | None = None) -> float:
        """This tier's compute for one checked request from segment ``first`` (None: this tier's first), in
        ms (the Ray engine batches requests here)."""
        import anyio

        if self.active == 1 and self.last_compute_ms < INLINE_COMPUTE_MS:
            # Alone, the loop would only wait for the worker thread, and the two thread hops cost ~0.25 ms
            # each on a 2-core VM. Long computes stay on a thread so /healthz answers, and so do requests
            # that queue: the limiter serves them in order (inline, p99 of 32 clients was 4x).
            return self.compute(tensors, first)
        return await anyio.to_thread.run_sync(self.compute, tensors, first, limiter=self.limiter)

    async def process(self, tensors: dict[str, np.ndarray], first: int | None = None) -> TierAnswer:
        """Run this tier's segments on checked tensors from segment ``first`` (an elastic client's start;
        None: this tier's first), forward what later tiers need, gather the answer."""
        first = self.first if first is None else first
        self.queued += 1
        try:
            compute_ms = await self.compute_async(tensors, first)
        finally:
            self.queued -= 1
        self.last_compute_ms = compute_ms
        self.metrics.compute.observe(compute_ms / 1000)
        returns = self.returns if first == self.first else route.results_from(self.manifest, first)
        answer = {t.name: tensors[t.name] for t in returns if t.name in tensors}
        timing = [f"compute-{self.tier};dur={compute_ms:.3f}"]
        complete = "true"
        if self.later:
            pending = {t.name: tensors[t.name] for t in self.pending}
            if self.forwards:
                t0 = time.perf_counter()
                relayed, meta, next_timing = await self.forward(pending)
                timing.append(f"forward;dur={(time.perf_counter() - t0) * 1000:.3f}")
                timing.extend(e.strip() for e in next_timing.split(",") if e.strip().startswith("compute-"))
                answer.update(relayed)
                complete = meta.get("complete", "true")
            else:  # no next tier: hand the next boundary back to the caller
                answer.update(pending)
                complete = "false"
        return TierAnswer(answer, timing, complete)

    def check_split(self, metadata: Mapping[str, str]) -> Mapping[str, str]:
        claimed = metadata.get("manifest")
        if claimed is not None and claimed != self.digest:
            raise WireError(
                409,
                "other_split",
                f"the request is for split {claimed}, this server serves split {self.digest}",
            )
        return metadata

    def accept_image(
        self, body: bytes, metadata: dict[str, str]
    ) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
        """An image body (a camera frame's JPEG) made into the model input as ``images.load_image`` does;
        415 unless the request starts at the model's input and that input is an image's (Nx3xHxW float)."""
        from dnnsplit.images import is_image_input, load_image

        first = self.start_of(self.check_split(metadata))
        spec = self.manifest.input
        if first != 0 or not is_image_input(tuple(spec.shape), spec.dtype):
            raise WireError(
                415,
                "not_image_input",
                f"an image body is the model's input, but this request starts at segment {first}, which "
                f"takes {', '.join(t.name for t in route.crossing(self.manifest, first))}"
                if first != 0
                else f"the model's input '{spec.name}' ({spec.dtype}, {spec.shape}) is not an image's",
                {"accept": CONTENT_TYPE},
            )
        try:
            x = load_image(body, tuple(spec.shape))
        except UsageError as exc:
            raise WireError(400, "bad_image", exc.message) from None
        return {spec.name: x}, metadata, first

    def start_of(self, metadata: Mapping[str, str]) -> int:
        """The segment a request starts at: its ``start`` (elastic clients say), else this server's first."""
        raw = metadata.get("start")
        if raw is None:
            return self.first
        try:
            start = int(raw)
        except ValueError:
            raise WireError(400, "bad_start", f"start '{raw[:20]}' is not a segment index") from None
        if start not in self.starts:
            raise WireError(
                422,
                "unserved_cut",
                f"this server does not start at segment {start}; it starts at {list(self.starts)}",
                {"starts": list(self.starts)},
            )
        return start

    def load_header(self, request: Any) -> str:
        """``x-dnnsplit-edge``: the queue and how this request's body was read (estimate.py reads it)."""
        first_byte, read_bytes, read_ms = getattr(request.state, "read", (time.perf_counter(), 0, 0.0))
        tail_bytes, tail_ms = getattr(request.state, "tail", (0, 0.0))
        computing = min(self.queued, self.settings.concurrency)
        return edge_header(
            max(self.queued - computing, 0),
            computing,
            self.settings.concurrency,
            read_bytes,
            read_ms,
            (time.perf_counter() - first_byte) * 1000,
            tail_bytes,
            tail_ms,
        )

    async def probe(self, request: Any) -> Any:
        """``POST /v1/probe``: read and drop a body, say how it came in (an idle client measures its link)."""
        from starlette.responses import JSONResponse

        self.authorize(request.headers)
        body = await self.read_body(request)
        return JSONResponse({"bytes": len(body)}, headers={EDGE_HEADER: self.load_header(request)})

    def describe(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "segments": [self.manifest.segments[i].file for i in self.indices],
            "split": self.digest,
            "accepts": [t.to_dict() for t in self.accepts],
            "returns": [t.to_dict() for t in self.returns],
            "next": self.settings.next_url,
            "next_boundary": [t.to_dict() for t in self.pending],
            "max_body_bytes": self.max_body,
            "max_batch": self.settings.max_batch,
            "starts": list(self.starts),
        }

    @property
    def limiter(self) -> Any:
        return self._limiter

    async def open(self) -> None:
        import aiohttp
        import anyio

        self._limiter = anyio.CapacityLimiter(self.settings.concurrency)
        if self.settings.next_url:
            # aiohttp, not httpx: ~1 ms less per forwarded request (2.55 -> 1.57 ms round trip minus compute,
            # resnet18's 402 kB boundary on loopback), which is half the overhead budget of a hop.
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=min(self.settings.timeout_s, 5.0),
                sock_read=self.settings.timeout_s,
            )
            self.http = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


class _CountStatuses:
    """ASGI middleware: every answer counted by path and status, whatever produced it."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import ClientDisconnect

        status = {"code": 500}

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        except ClientDisconnect:
            # The client went away mid-request (or was evicted): not a server error, and nobody is left to
            # answer. 499 is nginx's "client closed request".
            status["code"] = CLIENT_CLOSED
        finally:
            self.metrics.count(scope.get("path", ""), status["code"])


def create_app(service: TierService) -> Any:
    """The Starlette app of one tier's service."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(exc: WireError) -> JSONResponse:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        if "retry_after_s" in exc.extra:
            headers = {"retry-after": str(exc.extra["retry_after_s"])}
        if "accept_encoding" in exc.extra:  # 415: the codings this server decodes (RFC 7694)
            headers = {"accept-encoding": exc.extra["accept_encoding"]}
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    async def infer(request: Request) -> Response:
        try:
            return await service.infer(request)
        except WireError as exc:
            return error(exc)

    async def probe(request: Request) -> Response:
        try:
            return await service.probe(request)
        except WireError as exc:
            return error(exc)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "tier": service.tier, "served": service.served})

    async def manifest(request: Request) -> Response:
        try:
            service.authorize(request.headers)
        except WireError as exc:
            return error(exc)
        return JSONResponse({"manifest": service.manifest.to_dict(), "served": service.describe()})

    async def metrics(request: Request) -> Response:
        try:
            service.authorize(request.headers)
        except WireError as exc:
            return error(exc)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": exc.detail, "code": "http"}, status_code=exc.status_code, headers=exc.headers
        )

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await service.open()
        yield
        await service.close()

    routes: list[Any] = [
        Route("/v1/infer", infer, methods=["POST"]),
        Route("/v1/probe", probe, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/manifest", manifest, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if service.settings.web:
        from starlette.responses import RedirectResponse
        from starlette.routing import Mount

        from dnnsplit.runtime.web.routes import web_app

        async def home(request: Request) -> Response:
            return RedirectResponse("/web/")

        routes += [Route("/", home, methods=["GET"]), Mount("/web", app=web_app(service, service.directory))]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(_CountStatuses, metrics=service.metrics),
            Middleware(BodyDeadline, gate=service.gate),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: a free one); a clear error when the address is taken or not ours."""
    try:
        family, kind, proto = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][:3]
        # proto must say TCP: asyncio only sets TCP_NODELAY on connections of sockets that do, and without
        # it every keep-alive answer waits ~40 ms for the client's delayed ACK (Nagle).
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc})", "pick another --port"
        ) from None
    return sock


def _config(service: TierService) -> Any:
    import uvicorn

    settings = service.settings
    return uvicorn.Config(
        create_app(service),
        # uvicorn's protocol has no deadline for a request's headers, nor a cap that /healthz gets past
        # (limit_concurrency counts slow clients too and refuses the probe with them): see runtime/guard.py.
        http=protocol_class(service.gate),
        log_level="warning",
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=settings.graceful_s,
        timeout_keep_alive=30,
    )


def run_server(service: TierService, on_ready: Any = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT; in-flight requests finish first."""
    import uvicorn

    settings = service.settings
    sock = listen(settings.host, settings.port)
    server = uvicorn.Server(_config(service))
    # uvicorn stops on SIGTERM/SIGINT, lets in-flight requests finish, then re-raises the signal with the
    # handlers that were in place before it: no-op ones make that a normal return (exit 0, no traceback).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready is not None:
            threading.Thread(target=_notify_when_started, args=(server, on_ready), daemon=True).start()
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def _notify_when_started(server: Any, callback: Any) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.01)
    if server.started:
        callback()


@dataclass
class BackgroundServer:
    """A tier server on a free loopback port in a thread of this process (tests, bench)."""

    service: TierService
    url: str = ""
    _server: Any = None
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = field(default=None, repr=False)

    def start(self) -> BackgroundServer:
        import uvicorn

        settings = self.service.settings
        self._sock = listen(settings.host, 0)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(_config(self.service))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serving(
    directory: str | Path, settings: ServeSettings, manifest: Manifest | None = None
) -> Iterator[BackgroundServer]:
    """Start a tier's server on a free loopback port for the duration of the block."""
    service = TierService(manifest or Manifest.load(directory), directory, settings)
    with BackgroundServer(service) as server:
        yield server
