"""The browser page checks each downloaded segment against the manifest's size and sha256 before
onnxruntime-web gets it (issue 23, point 3), in the system's headless Chromium on loopback.

Skipped where Chromium, Playwright or the vendored onnxruntime-web is missing, except in CI.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.browser import needs_browser

pytestmark = needs_browser()


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[Any, list[str]]]:
    from dnnsplit.browser.chromium import chromium_page

    with chromium_page() as (page, console):
        yield page, console


def _status(page: Any, url: str) -> tuple[str | None, str]:
    page.goto(f"{url}/web/")
    page.wait_for_selector("#status[data-state=ready], #status[data-state=error]")
    return page.get_attribute("#status", "data-state"), page.inner_text("#status")


def test_a_segment_changed_after_the_server_started_is_refused_by_the_page(
    two_tier: Path, tmp_path: Path, browser
) -> None:
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    directory = tmp_path / "segments"
    shutil.copytree(two_tier, directory)
    with serving(directory, ServeSettings(tier="edge", web=True)) as server:
        assert _status(page, server.url)[0] == "ready"
        # The server checked the file when it started; someone changes it afterwards (same size).
        mobile = directory / "01-mobile.onnx"
        data = bytearray(mobile.read_bytes())
        data[len(data) // 2] ^= 0xFF
        mobile.write_bytes(bytes(data))
        state, text = _status(page, server.url)
        assert state == "error", text
        assert "segment 01-mobile.onnx does not match the split's sha256" in text
        mobile.write_bytes(mobile.read_bytes()[:100])
        state, text = _status(page, server.url)
        assert state == "error" and "is 100 bytes, the split's manifest says" in text, text


def test_the_pages_sha256_without_webcrypto_is_hashlibs(two_tier: Path, browser) -> None:
    """A phone on plain http://LAN-ADDRESS has no crypto.subtle: the page's own SHA-256 is used there."""
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    rng = np.random.default_rng(0)
    samples = [b"", b"abc", bytes(55), bytes(56), bytes(64), rng.bytes(1000), rng.bytes(300_001)]
    with serving(two_tier, ServeSettings(tier="edge", web=True)) as server:
        page.goto(f"{server.url}/web/")
        got = page.evaluate(
            """async (samples) => {
                const { sha256Fallback } = await import('./integrity.js');
                const hex = (d) => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
                return samples.map((s) => hex(sha256Fallback(new Uint8Array(s).buffer)));
            }""",
            [list(s) for s in samples],
        )
    assert got == [hashlib.sha256(s).hexdigest() for s in samples]
