"""The browser client on an elastic split, in headless Chromium: continuous mode over looped sample frames,
a cut per frame chosen as the Python decision would from the page's own estimate, live fps / bandwidth /
cut / stages, and the edge counting the cuts the page asked for."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dnnsplit.partition.elastic import Context, ElasticSpec, decide
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures.browser import needs_browser
from tests.fixtures.elastic import elastic_split

pytestmark = needs_browser()


@pytest.fixture(scope="module")
def elastic(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return elastic_split(tiny_model, tmp_path_factory.mktemp("web-elastic") / "split")


@pytest.mark.parametrize("phone_speed", [None, "0.01"])
def test_continuous_mode_re_cuts_every_frame(elastic: Path, phone_speed: str | None) -> None:
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    query = "?frames=6" + (f"&phone_speed={phone_speed}" if phone_speed else "")
    with serving(elastic, ServeSettings(tier="edge", web=True)) as edge, chromium_page() as (page, console):
        page.goto(f"{edge.url}/web/{query}")
        page.wait_for_selector("#status[data-state=ready], #status[data-state=error]")
        assert page.get_attribute("#status", "data-state") == "ready", page.inner_text("#status")
        page.click("#stream")
        page.wait_for_selector("#status[data-state=done], #status[data-state=error]", timeout=120_000)
        assert page.inner_text("#status") == "streamed 6 frames", (page.inner_text("#status"), console)
        frames = page.evaluate("window.dnnsplitStream")
        live = {k: page.inner_text(f"td[data-live='{k}']") for k in ("fps", "estimated uplink", "cut", "stages")}
        metrics = httpx.get(f"{edge.url}/metrics").text
    assert len(frames) == 6
    current = None
    for f in frames:  # the page's cut is the Python decision for the estimate it reports
        want = decide(spec, Context.from_dict(f["estimate"]), None, current, 0.1)
        assert f["cut"] == want.candidate.name and f["predicted_ms"] == pytest.approx(want.predicted_ms)
        assert len(f["logits"]) == 10 and f["stages"]["total_ms"] > 0
        current = f["boundary"]
    assert int(live["fps"]) >= 1 and "Mbit/s" in live["estimated uplink"] and frames[-1]["cut"] in live["cut"]
    assert "phone" in live["stages"] and "upload" in live["stages"]
    offloaded = [f for f in frames if f["cut"] != "all-local"]
    if phone_speed:  # a phone 100x slower than its profile sends every frame to the edge
        assert len(offloaded) == 6 and all(f["stages"]["up_bytes"] > 0 for f in offloaded)
    else:  # this machine runs the tiny model faster than its 300x-slow profile: it stays on the phone
        assert frames[-1]["cut"] == "all-local" and frames[-1]["estimate"]["phone_speed"] > 1
    for cut in {f["cut"] for f in offloaded}:
        count = sum(f["cut"] == cut for f in offloaded)
        start = spec.candidates[[c.name for c in spec.candidates].index(cut)].boundary
        assert f'dnnsplit_cut_requests_total{{cut="{cut}",start="{start}",tier="edge"}} {count}.0' in metrics
