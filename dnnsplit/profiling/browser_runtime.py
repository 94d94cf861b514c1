"""Per-layer latency inside a browser: onnxruntime-web's profiler in headless Chromium.

The page ``profile.html`` (``dnnsplit/runtime/web/static``) runs the model with onnxruntime-web, first
without the profiler (the whole-model times), then with it, and hands back the profiler's trace: the same
Chrome-trace events as native onnxruntime's. They are mapped to layers by the same code as the native
profile (``ort_runtime.measurement_from_trace``), so a browser profile and a native one are comparable
row by row. A phone posts the same result to ``serve --web`` (``/web/profiles``).
"""

from __future__ import annotations

import http.server
import platform
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.profiling.graph import LayerGraph
from dnnsplit.profiling.measure import Measurement
from dnnsplit.profiling.ort_runtime import measurement_from_trace, nodes_from_trace
from dnnsplit.progress import ProgressFn, no_progress


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """The page's static files, plus the model at /model.onnx, cross-origin isolated (wasm threads)."""

    model: bytes = b""
    files: dict[str, bytes] = {}  # more paths served from memory (the bit-kernel program, inputs)
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        body = self.model if path == "/model.onnx" else self.files.get(path)
        if body is not None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("cross-origin-opener-policy", "same-origin")
        self.send_header("cross-origin-embedder-policy", "require-corp")
        super().end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def local_page_server(model: bytes, files: dict[str, bytes] | None = None) -> Iterator[str]:
    from dnnsplit.browser import STATIC

    handler = type("Handler", (_StaticHandler,), {"model": model, "files": dict(files or {})})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(STATIC)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_in_browser(
    path: Path,
    input_shape: tuple[int, ...],
    *,
    threads: int,
    warmup: int,
    repeat: int,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Profile the model in ``path`` in headless Chromium; the page's result (trace, whole-model times,
    device) with the browser's version added."""
    from dnnsplit.browser import check_vendor
    from dnnsplit.browser.chromium import chromium_page

    check_vendor()
    progress("starting Chromium", 0, 1)
    with local_page_server(Path(path).read_bytes()) as url, chromium_page(timeout_s=600) as (page, _console):
        page.goto(f"{url}/profile.html")
        page.wait_for_load_state("load")
        progress("measuring in the browser", 0, 1)
        result = page.evaluate(
            """async (cfg) => {
                const { profileModel } = await import('./profile.js');
                const model = await (await fetch('/model.onnx')).arrayBuffer();
                return await profileModel({ ...cfg, model });
            }""",
            {"inputShape": list(input_shape), "warmup": warmup, "repeat": repeat, "threads": threads},
        )
    progress("measuring in the browser", 1, 1)
    return result


def check_result(result: Any) -> None:
    """A posted or returned result has what the mapping needs (a phone posts it: check before use)."""
    ok = (
        isinstance(result, dict)
        and isinstance(result.get("events"), list)
        and isinstance(result.get("whole_ms"), list)
        and result["whole_ms"]
        and all(isinstance(v, int | float) for v in result["whole_ms"])
        and isinstance(result.get("warmup"), int)
        and isinstance(result.get("device"), dict)
    )
    if not ok:
        raise UsageError(
            "the browser profile lacks events, whole_ms, warmup or device", "post what profile.js returns"
        )


def measurement_from_browser(graph: LayerGraph, result: dict[str, Any]) -> Measurement:
    """The per-layer measurement of a browser result (its trace mapped like a native one)."""
    check_result(result)
    events = [e for e in result["events"] if isinstance(e, dict)]
    measurement = measurement_from_trace(
        graph, events, nodes_from_trace(events), int(result["warmup"]), [float(v) for v in result["whole_ms"]]
    )
    if measurement.layer_ms.shape[0] == 0:
        raise UsageError("the browser trace holds no measured run", "profile with --repeat 1 or more")
    return measurement


def browser_name(user_agent: str) -> str:
    """``Chromium 156.0.8078.114`` from a user agent (Chrome's token; Firefox's and Safari's otherwise)."""
    for pattern, name in (
        (r"Edg/([\d.]+)", "Edge"),
        (r"Chrome/([\d.]+)", "Chromium"),
        (r"Firefox/([\d.]+)", "Firefox"),
        (r"Version/([\d.]+).*Safari", "Safari"),
    ):
        found = re.search(pattern, user_agent)
        if found:
            return f"{name} {found.group(1)}"
    return user_agent[:120] or "unknown"


def browser_device(result: dict[str, Any], cpu: str | None = None) -> dict[str, Any]:
    """The profile's device block: the browser, its backend and versions (``cpu`` when known: headless
    Chromium on this host; a phone's browser does not say)."""
    from dnnsplit import __version__

    device = result.get("device") or {}
    return {
        "name": "browser",
        "cpu": cpu or str(device.get("user_agent", "unknown browser"))[:200],
        "machine": platform.machine() if cpu else "unknown",
        "cores": int(device.get("cores") or 0),
        "threads": int(device.get("threads") or 1),
        "runtime": "browser",
        "backend": str(device.get("backend", "wasm")),
        "browser": str(device.get("browser") or browser_name(str(device.get("user_agent", ""))))[:120],
        "cross_origin_isolated": bool(device.get("cross_origin_isolated")),
        "versions": {"onnxruntime-web": str(device.get("onnxruntime_web", "")), "dnnsplit": __version__},
    }
