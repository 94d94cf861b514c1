"""Checks of the runtime flags' values that ``serve`` and ``infer`` share: a user error, never a crash.

``--port 70000`` reached bind() (OverflowError, exit 3), ``--max-body-mb inf`` int() and ``--timeout inf``
a timer; an empty ``--token`` (or ``DNNSPLIT_TOKEN=``) counted as set, so a server bound beyond loopback
passed the "needs a token" check with one no client could send.
"""

from __future__ import annotations

import math

from dnnsplit.errors import UsageError


def check_positive(value: float, flag: str, hint: str) -> None:
    """A finite amount > 0: seconds, megabytes (NaN passes every comparison, inf breaks timers and int())."""
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{flag} must be a finite number > 0 (got {value})", hint)


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port (0-65535)", "pass 8080, say")


def check_token(token: str | None, flag: str = "--token") -> None:
    """None (no token) or one that can travel in an ``Authorization: Bearer`` header."""
    if token is None:
        return
    if not token.strip():
        raise UsageError(
            f"{flag} is empty (or DNNSPLIT_TOKEN is set to nothing)",
            "pass a secret, e.g. $(openssl rand -hex 16), or leave the token out",
        )
    if token != token.strip() or not token.isascii() or not token.isprintable():
        raise UsageError(
            f"{flag} starts or ends with spaces, or holds characters an HTTP header cannot carry",
            "use letters, digits and punctuation only, e.g. $(openssl rand -hex 16)",
        )
