"""Assertions every CLI test shares."""

from __future__ import annotations


def assert_usage_error(result: tuple[int, str, str], *needles: str) -> None:
    """Exit 2 with exactly one line on stderr, starting 'error:', holding every needle; no traceback."""
    code, stdout, stderr = result
    assert code == 2, (code, stdout, stderr)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # one clear line, no traceback
    assert lines[0].startswith("error:") and "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
