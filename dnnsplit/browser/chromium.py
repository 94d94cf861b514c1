"""Headless Chromium, the system's (Debian's ``chromium``), driven with Playwright: no downloaded browser.

Used by ``profile --runtime browser`` and by the end-to-end tests. The flags keep Chromium off the network
(no background requests, updates, sync or QUIC: only the pages we open, on loopback) and the profile
directory is a fresh temporary one each time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> Path | None:
    """$DNNSPLIT_CHROMIUM, else chromium (or chromium-browser) on PATH."""
    given = os.environ.get("DNNSPLIT_CHROMIUM")
    if given:
        return Path(given) if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


_DRIVER: Any = None


def _driver() -> Any:
    """One Playwright driver per process: its sync API cannot be started twice in a thread, and a caller
    (a test holding a page open) may profile in the meantime."""
    global _DRIVER
    if _DRIVER is None:
        from playwright.sync_api import sync_playwright

        _DRIVER = sync_playwright().start()
        atexit.register(_DRIVER.stop)
    return _DRIVER


@contextmanager
def chromium_page(
    timeout_s: float = 60.0, extra_args: tuple[str, ...] = ()
) -> Iterator[tuple[Any, list[str]]]:
    """A new page in headless Chromium and the list its console messages are appended to
    (``extra_args``: more Chromium flags, e.g. a fake camera for tests)."""
    executable = find_chromium()
    if executable is None:
        raise UsageError(
            "no Chromium found (looked for $DNNSPLIT_CHROMIUM, chromium, chromium-browser)",
            "install it: apt-get install -y chromium",
        )
    try:
        from playwright.sync_api import Error as PlaywrightError
    except ImportError:
        raise UsageError(
            "the browser runtime needs the playwright package", "pip install 'dnnsplit[web]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="dnnsplit-chromium-") as profile:
        try:
            context = _driver().chromium.launch_persistent_context(
                profile, executable_path=str(executable), headless=True, args=[*FLAGS, *extra_args]
            )
        except PlaywrightError as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UsageError(f"cannot start {executable} ({first})", "check the Chromium install") from None
        try:
            context.set_default_timeout(timeout_s * 1000)
            page = context.pages[0] if context.pages else context.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            yield page, console
        finally:
            context.close()
