"""Link emulation: pacing arithmetic, and real paced transfers taking bytes * 8 / bandwidth (+ RTT)."""

from __future__ import annotations

import pytest

from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime import link as link_module
from dnnsplit.runtime.link import EmulatedLink, TokenBucket


def test_bucket_schedule_is_exact_and_transfers_queue() -> None:
    bucket = TokenBucket(1000.0)  # 1000 bytes/s
    start = bucket.book(500, now=10.0)
    assert start == 10.0 and bucket.due(start, 500) == pytest.approx(10.5)
    # A second transfer booked meanwhile starts when the first is through: they share the link.
    assert bucket.book(100, now=10.1) == pytest.approx(10.5)
    assert bucket.book(100, now=20.0) == 20.0  # an idle link starts at once
    burst = TokenBucket(1000.0, burst_bytes=200)
    assert burst.due(0.0, 200) == 0.0 and burst.due(0.0, 700) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TokenBucket(0)


class VirtualClock:
    """The link's clock and sleep, virtual: a transfer's duration is exactly what the pacing asked for,
    whatever else the machine is doing (wall-clock windows belong in benchmarks/runtime_bench.py)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    fake = VirtualClock()
    monkeypatch.setattr(link_module, "time", fake)
    return fake


def test_paced_upload_takes_bytes_over_bandwidth_plus_half_rtt(clock: VirtualClock) -> None:
    link = EmulatedLink(LinkSpec(up_mbps=8.0, down_mbps=4.0, rtt_ms=40.0))
    data = bytes(100_000)  # 100 kB at 8 Mbit/s = 100 ms, + 20 ms (rtt/2)
    start = clock.now
    chunks = list(link.upload(data))
    assert b"".join(chunks) == data
    assert link.ideal_up_ms(len(data)) == pytest.approx(120.0)
    assert (clock.now - start) * 1000 == pytest.approx(120.0)
    assert len(chunks) > 10 and clock.sleeps[0] == pytest.approx(0.02)  # paced in chunks after rtt/2
    start = clock.now
    got = link.download(iter([data[:30_000], data[30_000:50_000]]), 50_000)  # 50 kB at 4 Mbit/s = 100 ms
    assert got == data[:50_000]
    assert (clock.now - start) * 1000 == pytest.approx(120.0)
