"""The client's estimate of its context: uplink, round trip, its own speed and the edge's load.

Every quantity is tracked by a ``Tracker``: an exponentially weighted moving average in log space (rates
and times vary by factors, and noise on them is multiplicative), with change detection. A sample more than
``change_ratio`` times off the estimate is held back rather than averaged in; ``change_count`` such samples
in a row on the same side are a step (a link that fell from Wi-Fi to 3G), and the estimate jumps to them at
once. So a step is followed within ``change_count`` requests, one outlier moves nothing, and ordinary noise
only wobbles the average, which the decision's hysteresis (``partition.elastic.decide``) absorbs.

What one request tells (``Observation``), from the client's own clock and the headers the edge adds:

* uplink: the bytes the edge read after the first chunk over the time it took to read them
  (``x-dnnsplit-edge: read-bytes, read-ms``): the link's rate whatever the client's socket buffers do;
  transfers shorter than ``min_transfer_ms`` say nothing and are skipped. Where the edge also says how
  the body's second half came in (``tail-bytes, tail-ms``) and that took ``min_transfer_ms``, the rate is
  taken from it instead: a shaper's token bucket (tbf's burst, a radio's buffered grant) lets the first
  kilobytes after an idle spell through at line rate, which made a 4 kB probe read a 0.2 Mbit/s link as
  0.4 Mbit/s; by the second half of a body twice the burst that credit is spent. While a long upload is in
  flight, the client also times the bytes the link takes every 0.25 s (``observe_upload``), so a link
  that drops mid-upload is seen within two windows, not when the request ends;
* round trip: the request's whole time on the client (upload start to the answer's last byte) minus the
  edge's own time (``total-ms``: first body byte to answer) minus the transfers it does not cover at the
  estimated rates (the body's first chunk, the answer);
* phone speed: the profile's time for the pieces the phone ran over the time they took;
* edge load: the edge's compute over the profile's for its pieces, times 1 + the requests queued behind
  its ``concurrency`` (``queued``, ``computing``, ``concurrency`` in the same header).

The downlink is not observed apart (answers are a few kB of logits): it follows the uplink in the plan's
own ratio. When no request has measured the link for ``probe_idle_s`` (the cut keeps everything on the
phone), ``needs_probe`` says so and the client sends a probe (``POST /v1/probe``, ``probe_bytes``; beside
a frame kept on the phone, see ``elastic.py``), so that the link is known while nothing is offloaded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import Context

EDGE_HEADER = "x-dnnsplit-edge"


@dataclass(frozen=True)
class EstimatorSettings:
    alpha: float = 0.3  # weight of a new in-band sample
    change_ratio: float = 1.6  # a sample this many times above or below the estimate is out of band
    change_count: int = 2  # out-of-band samples in a row on one side that make a step
    min_transfer_ms: float = 2.0  # uploads read faster than this say nothing about the rate
    probe_idle_s: float = 1.0  # no uplink sample for this long: probe (beside the next local frame)
    probe_ms: float = 100.0  # a probe's size: this long at the estimated uplink ...
    # ... within these bounds: at least 16 kB, so that its second half is past a shaper's burst (above)
    probe_bytes: tuple[int, int] = (16_384, 262_144)

    def check(self) -> None:
        if not 0 < self.alpha <= 1:
            raise UsageError(f"estimator alpha must be in (0, 1] (got {self.alpha})", "pass 0.3, say")
        if not self.change_ratio > 1:
            raise UsageError(f"change ratio must be > 1 (got {self.change_ratio})", "pass 1.6, say")
        if self.change_count < 1:
            raise UsageError(f"change count must be >= 1 (got {self.change_count})", "pass 2, say")


class Tracker:
    """One positive quantity, averaged in log space with change detection (see the module doc).

    ``floor`` is added before taking logs, so that a quantity near zero (a 2 ms round trip) is not seen to
    change by a factor when it moves by a millisecond of jitter.
    """

    def __init__(self, value: float, settings: EstimatorSettings, floor: float = 0.0) -> None:
        self.value = float(value)
        self.settings = settings
        self.floor = floor
        self.samples = 0
        self.steps = 0
        self._held: list[float] = []

    def _log(self, x: float) -> float:
        return math.log(x + self.floor)

    def held_above(self) -> bool:
        """Whether a sample above the estimate is held back, waiting for a second one to make a step."""
        return bool(self._held) and self._held[-1] > self.value

    def force(self, value: float) -> None:
        """Jump to ``value`` (a step known for sure, not one to confirm)."""
        self.samples += 1
        self.steps += 1
        self.value = float(value)
        self._held = []

    def update(self, sample: float) -> bool:
        """Take one sample; True when it completed a step (the estimate jumped)."""
        if not (math.isfinite(sample) and sample + self.floor > 0 and sample >= 0):
            return False
        self.samples += 1
        if self.samples == 1:  # the first measurement beats the prior
            self.value = sample
            return False
        off = self._log(sample) - self._log(self.value)
        band = math.log(self.settings.change_ratio)
        if abs(off) > band:
            if self._held and (self._held[-1] > self.value) != (off > 0):
                self._held = []
            self._held.append(sample)
            if len(self._held) < self.settings.change_count:
                return False
            mean = sum(self._log(x) for x in self._held) / len(self._held)
            self.value = max(math.exp(mean) - self.floor, 0.0)
            self._held = []
            self.steps += 1
            return True
        self._held = []
        a = self.settings.alpha
        self.value = max(math.exp((1 - a) * self._log(self.value) + a * self._log(sample)) - self.floor, 0.0)
        return False


@dataclass(frozen=True)
class Observation:
    """What one request (or probe) measured; None where it did not measure that."""

    up_bytes: int | None = None  # the whole body sent
    read_bytes: int | None = None  # bytes the edge read after the first chunk of the body
    read_ms: float | None = None  # ... and how long that took
    tail_bytes: int | None = None  # bytes the edge read after the body's midpoint ...
    tail_ms: float | None = None  # ... and how long they took (a shaper's burst spent by then)
    wall_ms: float | None = None  # the client's time from the upload's start to the answer's last byte
    edge_total_ms: float | None = None  # the edge's time from the body's first byte to the answer
    down_bytes: int = 0
    phone_profiled_ms: float | None = None  # the profile's time for the pieces run here
    phone_ms: float | None = None  # ... and what they took
    edge_profiled_ms: float | None = None  # the profile's time for the edge's pieces
    edge_compute_ms: float | None = None  # ... and what the edge says they took
    edge_queued: int = 0  # requests waiting at the edge when it answered
    edge_concurrency: int = 1


def parse_edge_header(value: str) -> dict[str, float]:
    """``queued=0, computing=1, concurrency=1, read-ms=3.2, read-bytes=4096, total-ms=5.1`` -> a dict."""
    found = {}
    for item in value.split(","):
        key, _, raw = item.strip().partition("=")
        try:
            found[key.strip()] = float(raw)
        except ValueError:
            continue
    return found


def edge_header(
    queued: int,
    computing: int,
    concurrency: int,
    read_bytes: int,
    read_ms: float,
    total_ms: float,
    tail_bytes: int = 0,
    tail_ms: float = 0.0,
) -> str:
    """The header's value; ``tail-bytes, tail-ms`` only for a body whose second half was read apart."""
    tail = f", tail-bytes={tail_bytes}, tail-ms={tail_ms:.3f}" if tail_bytes > 0 else ""
    return (
        f"queued={queued}, computing={computing}, concurrency={concurrency}, "
        f"read-bytes={read_bytes}, read-ms={read_ms:.3f}, total-ms={total_ms:.3f}{tail}"
    )


def uplink_sample(
    read_bytes: int | None,
    read_ms: float | None,
    tail_bytes: int | None,
    tail_ms: float | None,
    min_ms: float,
) -> tuple[int, float] | None:
    """The (bytes, ms) that measure the uplink: the body's second half where it took ``min_ms``, else the
    body after its first chunk, else None (read too fast to time)."""
    if tail_bytes and tail_ms is not None and tail_ms >= min_ms:
        return tail_bytes, tail_ms
    if read_bytes is not None and read_ms is not None and read_ms >= min_ms:
        return read_bytes, read_ms
    return None


@dataclass
class ContextEstimator:
    """The current estimate of the context, from a prior (the plan's context) and what requests measure."""

    prior: Context
    settings: EstimatorSettings = field(default_factory=EstimatorSettings)

    def __post_init__(self) -> None:
        self.settings.check()
        s = self.settings
        self.up = Tracker(self.prior.up_mbps, s)
        self.rtt = Tracker(self.prior.rtt_ms, s, floor=5.0)
        self.phone = Tracker(self.prior.phone_speed, s)
        self.edge = Tracker(self.prior.edge_load, s)
        self.down_per_up = self.prior.down_mbps / self.prior.up_mbps
        self.last_uplink_sample = time.monotonic()
        self.changes: list[str] = []  # what the last observation detected as a step
        self.in_flight_changes: list[str] = []  # ... and the in-flight samples since (observe_upload)
        self.probe_boost = 1.0  # x4 after each probe read too fast to time (the link got much better)

    def context(self) -> Context:
        up = max(self.up.value, 1e-3)
        return Context(
            up_mbps=up,
            down_mbps=up * self.down_per_up,
            rtt_ms=max(self.rtt.value, 0.0),
            phone_speed=max(self.phone.value, 1e-3),
            edge_load=max(self.edge.value, 1e-3),
        )

    def observe(self, obs: Observation, now: float | None = None) -> list[str]:
        """Fold one request's measurements in; the names of the quantities that stepped."""
        changed = []
        sample = uplink_sample(
            obs.read_bytes, obs.read_ms, obs.tail_bytes, obs.tail_ms, self.settings.min_transfer_ms
        )
        if sample is not None:
            if self.up.update(sample[0] * 8 / (sample[1] * 1000)):
                changed.append("uplink")
            self.last_uplink_sample = time.monotonic() if now is None else now
        if obs.wall_ms is not None and obs.edge_total_ms is not None:
            context = self.context()
            on_the_wire = obs.down_bytes * 8 / (context.down_mbps * 1000)
            if obs.up_bytes is not None and obs.read_bytes is not None:  # the first chunk's transfer
                on_the_wire += max(obs.up_bytes - obs.read_bytes, 0) * 8 / (context.up_mbps * 1000)
            if self.rtt.update(max(obs.wall_ms - obs.edge_total_ms - on_the_wire, 0.0)):
                changed.append("rtt")
        if obs.phone_profiled_ms and obs.phone_ms and obs.phone_ms > 0.05:
            if self.phone.update(obs.phone_profiled_ms / obs.phone_ms):
                changed.append("phone_speed")
        if obs.edge_profiled_ms and obs.edge_compute_ms and obs.edge_compute_ms > 0.05:
            queue = 1 + obs.edge_queued / max(obs.edge_concurrency, 1)
            if self.edge.update(obs.edge_compute_ms / obs.edge_profiled_ms * queue):
                changed.append("edge_load")
        changed = list(dict.fromkeys(self.in_flight_changes + changed))
        self.in_flight_changes = []
        self.changes = changed
        return changed

    def observe_upload(self, nbytes: int, ms: float, now: float | None = None) -> bool:
        """A sample of the uplink taken while an upload is in flight (``connection.UploadMeter``): the
        bytes the link took over ``ms``. True when it completed a step."""
        if ms < self.settings.min_transfer_ms or nbytes <= 0:
            return False
        self.last_uplink_sample = time.monotonic() if now is None else now
        stepped = self.up.update(nbytes * 8 / (ms * 1000))
        if stepped:
            self.in_flight_changes.append("uplink")
        return stepped

    def observe_abandoned(self, nbytes: int, ms: float, now: float | None = None) -> bool:
        """An upload abandoned at its deadline took only ``nbytes`` in ``ms``: the link is at most that
        fast, and the estimate drops to it at once (a step; waiting for a second sample would cost a
        second abandoned request). True when it dropped."""
        if ms < self.settings.min_transfer_ms:
            return False
        rate = max(nbytes, 1) * 8 / (ms * 1000)
        self.last_uplink_sample = time.monotonic() if now is None else now
        if rate >= self.up.value:
            return False
        self.up.force(rate)
        self.in_flight_changes.append("uplink")
        return True

    def needs_probe(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last_uplink_sample >= self.settings.probe_idle_s

    def probe_bytes(self) -> int:
        low, high = self.settings.probe_bytes
        size = self.context().up_mbps * 1000 / 8 * self.settings.probe_ms * self.probe_boost
        return int(min(max(size, low), high))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.context().to_dict(),
            "samples": {
                "uplink": self.up.samples,
                "rtt": self.rtt.samples,
                "phone": self.phone.samples,
                "edge": self.edge.samples,
            },
            "changes": list(self.changes),
        }
