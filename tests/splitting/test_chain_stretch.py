"""The emulated slower device: stretch() repeats the run and keeps the core busy for the fraction."""

from __future__ import annotations

import pytest

from dnnsplit.splitting import chain as local
from dnnsplit.splitting.chain import keep_busy, stretch


@pytest.mark.parametrize(("slowdown", "repeats"), [(1.0, 0), (1.5, 0), (2.0, 1), (6.4, 5)])
def test_stretch_repeats_the_run_whole_times(slowdown: float, repeats: int) -> None:
    calls: list[int] = []
    stretch(lambda: calls.append(1), elapsed_s=0.0, slowdown=slowdown)
    assert len(calls) == repeats


@pytest.mark.parametrize(("slowdown", "repeats", "busy_s"), [(1.5, 0, 0.1), (2.0, 1, 0.0), (6.4, 5, 0.08)])
def test_stretch_spends_the_fraction_busy(
    monkeypatch: pytest.MonkeyPatch, slowdown: float, repeats: int, busy_s: float
) -> None:
    # A run of 200 ms stretched: whole repeats, then the fraction left over is spent busy, never slept.
    busy: list[float] = []
    monkeypatch.setattr(local, "keep_busy", busy.append)
    calls: list[int] = []
    stretch(lambda: calls.append(1), elapsed_s=0.2, slowdown=slowdown)
    assert len(calls) == repeats and busy == [pytest.approx(busy_s)]


class ComputeClock:
    """perf_counter advances only when keep_busy computes (one hash = 1 ms): the loop must compute until
    its deadline, and a sleep (which this stand-in for the time module lacks) would raise."""

    def __init__(self) -> None:
        self.now, self.hashes = 0.0, 0

    def perf_counter(self) -> float:
        return self.now

    def sha256(self, data: bytes) -> None:
        assert len(data) >= 1 << 16  # large buffers: hashlib releases the GIL on those
        self.hashes += 1
        self.now += 0.001


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> ComputeClock:
    fake = ComputeClock()
    monkeypatch.setattr(local, "time", fake)
    monkeypatch.setattr(local, "hashlib", fake)
    return fake


def test_keep_busy_computes_until_its_deadline(clock: ComputeClock) -> None:
    keep_busy(0.05)
    assert clock.hashes == pytest.approx(50, abs=1) and clock.now >= 0.05


def test_keep_busy_returns_at_once_for_nothing(clock: ComputeClock) -> None:
    keep_busy(0.0)
    keep_busy(-1.0)
    assert clock.hashes == 0
