"""What runs dnnsplit's pages in a browser: the page files and the vendored onnxruntime-web they load, and
(``chromium``) headless Chromium to open them.

Below profiling and runtime alike: ``profile --runtime browser`` opens the profile page here, ``serve --web``
serves the same files to phones. The files themselves live with the browser client in
``dnnsplit/runtime/web/static/`` (package data); only their place is named here.

onnxruntime-web comes from the npm registry (``web/package-lock.json``) and is copied into ``static/vendor/``
by ``make web``; the pages load it from there, never from a CDN.
"""

from __future__ import annotations

import json
from pathlib import Path

from dnnsplit.errors import UsageError

STATIC = Path(__file__).resolve().parent.parent / "runtime" / "web" / "static"
VENDOR = STATIC / "vendor"
REQUIRED = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def check_vendor() -> None:
    """Refuse clearly when the onnxruntime-web runtime was not copied into the package."""
    missing = [name for name in REQUIRED if not (VENDOR / name).is_file()]
    if missing:
        raise UsageError(
            f"the browser runtime (onnxruntime-web) is missing from {VENDOR} ({', '.join(missing)})",
            "run `make web` in a checkout (npm ci + copy), then try again",
        )


def ort_web_version() -> str:
    """The vendored onnxruntime-web version (from its package.json), or '' when unknown."""
    try:
        return str(json.loads((VENDOR / "onnxruntime-web.package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return ""
