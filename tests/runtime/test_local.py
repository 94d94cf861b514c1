"""The emulated slower device: stretch() repeats the run and keeps the core busy for the fraction."""

from __future__ import annotations

import time

import pytest

from dnnsplit.runtime.local import keep_busy, stretch


@pytest.mark.parametrize(("slowdown", "repeats"), [(1.0, 0), (1.5, 0), (2.0, 1), (6.4, 5)])
def test_stretch_repeats_the_run_whole_times(slowdown: float, repeats: int) -> None:
    calls: list[int] = []
    stretch(lambda: calls.append(1), elapsed_s=0.0, slowdown=slowdown)
    assert len(calls) == repeats


def test_stretch_spends_the_fraction_busy_on_this_thread() -> None:
    # A run of 200 ms stretched 1.5x: no repeat, then 100 ms busy. CPU time proves it was not a sleep (a
    # sleep costs ~0); the bound leaves room for sharing the core with other processes.
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stretch(lambda: None, elapsed_s=0.2, slowdown=1.5)
    assert time.perf_counter() - wall0 >= 0.1
    assert time.process_time() - cpu0 >= 0.02


def test_keep_busy_returns_at_once_for_nothing() -> None:
    start = time.perf_counter()
    keep_busy(0.0)
    keep_busy(-1.0)
    assert time.perf_counter() - start < 1.0
