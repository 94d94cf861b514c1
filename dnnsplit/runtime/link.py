"""In-process link emulation: token-bucket pacing of uploads and downloads, plus the round-trip time.

An ``EmulatedLink`` applies the planner's link model to real bytes on a real (loopback) socket, so
experiments are reproducible without privileges: sending ``n`` bytes up costs rtt/2 once and then
``n * 8 / up_mbps`` microseconds of pacing; the answer costs rtt/2 and ``n * 8 / down_mbps``. The buckets
belong to the link, so concurrent requests on one link share its bandwidth as they would on a radio.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator

from dnnsplit.partition.network import LinkSpec

CHUNK_MS = 2.0  # pacing granularity: a chunk is at most this long on the wire
MIN_CHUNK = 1024
MAX_CHUNK = 64 * 1024


class TokenBucket:
    """Bytes admitted at ``rate`` bytes/s, with ``burst`` bytes allowed ahead of the rate.

    A transfer books its bytes as a whole (``book``): it starts when the bytes booked before it are through
    (concurrent transfers on one link queue, as in a FIFO qdisc) and its k-th byte is due at
    start + (k - burst) / rate. Chunks are sent at their deadlines (``pace``), so a sleep that overshoots
    is caught up by the next chunk instead of piling up: n bytes take n / rate as the planner assumes
    (``burst`` 0, the default), plus one sleep's overshoot.
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float = 0.0) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate_bytes_per_s)
        self.burst = float(burst_bytes)
        self._tat = 0.0  # when every byte booked so far is through, at the rate
        self._lock = threading.Lock()

    def book(self, n: int, now: float | None = None) -> float:
        """Book a transfer of ``n`` bytes; returns when it starts (monotonic seconds)."""
        with self._lock:
            now = time.monotonic() if now is None else now
            start = max(self._tat, now)
            self._tat = start + n / self.rate
            return start

    def release(self, n: int) -> None:
        """Give back ``n`` booked bytes that will not be sent (an upload abandoned mid-way)."""
        with self._lock:
            self._tat = max(self._tat - n / self.rate, time.monotonic())

    def due(self, start: float, sent: int) -> float:
        """When the first ``sent`` bytes of a transfer that started at ``start`` are through."""
        return start + max(0.0, sent - self.burst) / self.rate

    def pace(self, start: float, sent: int) -> None:
        wait = self.due(start, sent) - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    async def pace_async(self, start: float, sent: int) -> None:
        wait = self.due(start, sent) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


def _chunk_size(rate_bytes_per_s: float) -> int:
    return int(min(MAX_CHUNK, max(MIN_CHUNK, rate_bytes_per_s * CHUNK_MS / 1000)))


def _chunks(data: bytes, size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


class EmulatedLink:
    """One link's two directions and its RTT, applied in-process to the bytes of each request."""

    def __init__(self, spec: LinkSpec) -> None:
        self.retune(spec)

    def retune(self, spec: LinkSpec) -> None:
        """Change the link's rates and RTT from the next transfer on (a phone moving from Wi-Fi to 3G)."""
        self.spec = spec
        self.up = TokenBucket(spec.up_mbps * 1e6 / 8)
        self.down = TokenBucket(spec.down_mbps * 1e6 / 8)
        self.half_rtt_s = spec.rtt_ms / 2000

    def ideal_up_ms(self, nbytes: int) -> float:
        """What the planner charges for sending ``nbytes`` up: rtt/2 and bytes over the bandwidth."""
        return self.spec.rtt_ms / 2 + self.spec.up_ms(nbytes)

    def ideal_down_ms(self, nbytes: int) -> float:
        return self.spec.rtt_ms / 2 + self.spec.down_ms(nbytes)

    def upload(self, data: bytes) -> Iterator[bytes]:
        """``data`` as paced chunks for a streaming request body, after half the round trip."""
        time.sleep(self.half_rtt_s)
        bucket = self.up
        start, sent = bucket.book(len(data)), 0
        try:
            for chunk in _chunks(data, _chunk_size(bucket.rate)):
                sent += len(chunk)
                bucket.pace(start, sent)
                yield bytes(chunk)
        finally:  # an upload given up: the link is free for what comes next
            if sent < len(data):
                bucket.release(len(data) - sent)

    async def upload_async(self, data: bytes) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.half_rtt_s)
        start, sent = self.up.book(len(data)), 0
        for chunk in _chunks(data, _chunk_size(self.up.rate)):
            sent += len(chunk)
            await self.up.pace_async(start, sent)
            yield bytes(chunk)

    def download(self, chunks: Iterable[bytes], size: int) -> bytes:
        """Read a response body of ``size`` bytes at the downlink's pace, after half the round trip."""
        time.sleep(self.half_rtt_s)
        start, got, parts = self.down.book(size), 0, []
        step = _chunk_size(self.down.rate)
        for chunk in chunks:
            for piece in _chunks(chunk, step):
                got += len(piece)
                self.down.pace(start, got)
            parts.append(chunk)
        return b"".join(parts)

    async def download_async(self, chunks: AsyncIterator[bytes], size: int) -> bytes:
        await asyncio.sleep(self.half_rtt_s)
        start, got, parts = self.down.book(size), 0, []
        step = _chunk_size(self.down.rate)
        async for chunk in chunks:
            for piece in _chunks(chunk, step):
                got += len(piece)
                await self.down.pace_async(start, got)
            parts.append(chunk)
        return b"".join(parts)
