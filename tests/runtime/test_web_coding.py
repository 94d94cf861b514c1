"""The browser's side of the lossless coding (issue 20): the page's CompressionStream deflate agrees with
Python's on the shared vector file, and a coded upload from the page gets the same answer as `dnnsplit run`.

Skipped where Chromium, Playwright or the vendored onnxruntime-web is missing, except in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dnnsplit.codecs import unpack
from tests.fixtures import coding_vectors
from tests.fixtures.browser import needs_browser

pytestmark = needs_browser()


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[Any, list[str]]]:
    from dnnsplit.browser.chromium import chromium_page

    with chromium_page() as (page, console):
        yield page, console


def test_the_browsers_deflate_agrees_with_pythons_on_the_vector_file(two_tier: Path, browser) -> None:
    from dnnsplit.runtime.server import ServeSettings, serving

    page, _console = browser
    vectors = [v for v in coding_vectors.load() if v["coding"] == "deflate"]
    with serving(two_tier, ServeSettings(tier="edge", web=True)) as server:
        page.goto(f"{server.url}/web/")
        got = page.evaluate(
            """async (vectors) => {
                const { pack, unpack } = await import('./wire.js');
                const out = [];
                for (const v of vectors) {
                    const decoded = await unpack(new Uint8Array(v.coded), 'deflate');
                    const packed = await pack(new Uint8Array(v.raw), 'deflate');
                    out.push({ decoded: Array.from(decoded), packed: Array.from(packed.body),
                               headers: packed.headers });
                }
                return out;
            }""",
            [{"raw": list(v["raw"]), "coded": list(v["coded"])} for v in vectors],
        )
        assert len(got) == len(vectors) == 4
        for v, g in zip(vectors, got, strict=True):
            assert bytes(g["decoded"]) == v["raw"], v["name"]  # the browser reads Python's bytes exactly
            packed = bytes(g["packed"])
            assert unpack(packed, "deflate", len(v["raw"])) == v["raw"], v["name"]  # and Python the browser's
            # byte for byte: Chromium's CompressionStream('deflate') is zlib at its default level, as pack's
            assert packed == v["coded"], v["name"]
            assert g["headers"] == {"content-encoding": "deflate", "x-decoded-length": str(len(v["raw"]))}
            # and the server takes the browser's coded body as it takes Python's: both decode to the vector
            answer = httpx.post(
                f"{server.url}/v1/infer", content=packed, headers={**g["headers"], "content-type": "x"}
            )
            assert answer.status_code in (409, 422), answer.text  # decoded fine; not this split's tensors
