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


def _start_streaming(page, url: str) -> None:
    """Open the page at ``url``, wait until the split is loaded, and start continuous mode."""
    page.goto(url)
    page.wait_for_selector("#status[data-state=ready], #status[data-state=error]")
    assert page.get_attribute("#status", "data-state") == "ready", page.inner_text("#status")
    page.click("#stream")


@pytest.mark.parametrize("phone_speed", [None, "0.01"])
def test_continuous_mode_re_cuts_every_frame(elastic: Path, phone_speed: str | None) -> None:
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    query = "?frames=6" + (f"&phone_speed={phone_speed}" if phone_speed else "")
    with serving(elastic, ServeSettings(tier="edge", web=True)) as edge, chromium_page() as (page, console):
        _start_streaming(page, f"{edge.url}/web/{query}")
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


def test_the_page_re_cuts_when_its_link_slows_mid_stream(elastic: Path) -> None:
    """Continuous mode with the phone pinned at 0.3x its profile: over loopback every frame goes to the edge;
    then Chromium's own network emulation (DevTools) slows the page's uploads to 0.1 Mbit/s, the page's
    estimate follows its slow uploads (a step: two of them) and it keeps the input on the phone (cut-1, 32
    bytes up, or all-local), as the Python decision would for the estimate it reports."""
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    with serving(elastic, ServeSettings(tier="edge", web=True)) as edge, chromium_page() as (page, console):
        _start_streaming(page, f"{edge.url}/web/?frames=12&phone_speed=0.3")
        page.wait_for_function("(window.dnnsplitStream || []).length >= 4", timeout=60_000)
        devtools = page.context.new_cdp_session(page)
        devtools.send("Network.enable")
        devtools.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 0.1e6 / 8},
        )
        slowed_at = page.evaluate("window.dnnsplitStream.length")
        page.wait_for_selector("#status[data-state=done], #status[data-state=error]", timeout=120_000)
        assert page.inner_text("#status") == "streamed 12 frames", (page.inner_text("#status"), console)
        frames = page.evaluate("window.dnnsplitStream")
    cuts = [f["cut"] for f in frames]
    seen = [(f["cut"], round(f["stages"]["total_ms"]), round(f["estimate"]["up_mbps"], 3)) for f in frames]
    current = None
    for f in frames:  # every cut is the Python decision for the estimate the page reports
        want = decide(spec, Context.from_dict(f["estimate"]), None, current, 0.1)
        assert f["cut"] == want.candidate.name, seen
        current = f["boundary"]
    assert set(cuts[1:slowed_at]) == {"all-edge"}, seen  # (the first may be decided on the plan's 4g prior)
    # The frame in flight when the link slowed, then two slow uploads make the step (one more: slack).
    switched = next((i for i in range(slowed_at, len(cuts)) if cuts[i] != "all-edge"), None)
    assert switched is not None and switched <= slowed_at + 4, seen
    # (cut-1 and all-local are within 10% of each other here: either, as the page's rtt estimate has it)
    assert set(cuts[switched:]) <= {"cut-1", "all-local"}, seen
    # Chromium's throttle holds a request for its time at the throttled rate, then lets the body go at once:
    # the edge reads it in under 2 ms (no uplink sample), and the page sees the delay as round trip (its
    # deflated 4-5 kB inputs took 0.37-0.47 s). Either way all-edge is now priced at the time it takes.
    last = frames[-1]
    all_edge = decide(spec, Context.from_dict(last["estimate"]), [0], None, 0.0).predicted_ms
    assert all_edge > 200, (seen, last["estimate"])
    assert all(f["stages"]["up_bytes"] < 1000 for f in frames[switched:]), seen


def test_the_page_probes_its_idle_link_and_learns_it_is_fast(elastic: Path) -> None:
    """The phone pinned at its profile: on the plan's 4g prior (60 ms round trip) the page keeps every frame
    here and would never learn otherwise; a probe beside a local frame reads the loopback's round trip and
    the next frames go to the edge."""
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    with serving(elastic, ServeSettings(tier="edge", web=True)) as edge, chromium_page() as (page, console):
        _start_streaming(page, f"{edge.url}/web/?frames=40&phone_speed=1&probe_idle_ms=0")
        page.wait_for_selector("#status[data-state=done], #status[data-state=error]", timeout=120_000)
        assert page.inner_text("#status") == "streamed 40 frames", (page.inner_text("#status"), console)
        frames = page.evaluate("window.dnnsplitStream")
    cuts = [f["cut"] for f in frames]
    seen = [(f["cut"], round(f["estimate"]["rtt_ms"], 1), f["probes"]) for f in frames]
    current = None
    for f in frames:
        assert f["cut"] == decide(spec, Context.from_dict(f["estimate"]), None, current, 0.1).candidate.name, seen
        current = f["boundary"]
    assert cuts[0] == "all-local" and frames[0]["estimate"]["rtt_ms"] == spec.reference.rtt_ms, seen
    assert frames[-1]["probes"] >= 1 and "all-edge" in cuts, (seen, console)
    first = cuts.index("all-edge")
    assert frames[first]["estimate"]["rtt_ms"] < 20 and set(cuts[first:]) == {"all-edge"}, seen
