"""Slow and greedy clients: deadlines for a request's headers and body, a cap on open connections.

uvicorn has no deadline for receiving a request: its keep-alive timer runs only between requests and every
byte resets it, and ASGI code starts only once the headers are in. A client trickling its headers, or
declaring a Content-Length it never sends, held its connection (and a file descriptor) forever, and a few
hundred of them made the process run out of descriptors: /healthz stopped answering. Here

* the HTTP protocol (uvicorn's httptools one, subclassed) closes a connection whose request headers are
  not in within ``header_timeout_s`` (408 once the client has sent a byte of them), and keeps the open
  connections under ``max_connections``: a new one past the cap evicts the connection that has waited on
  its client longest (slow headers, a slow body, an idle keep-alive), one that never finished a request
  first, so a probe of /healthz gets in while slow clients hold every slot;
* an ASGI middleware gives the body ``body_timeout_s`` plus a second per ``MIN_BODY_RATE`` bytes received
  (a phone on a slow uplink is not cut, a body trickled byte by byte is: 408), answers 503 + Retry-After to
  everything but /healthz while connections stay over the cap with nobody to evict, and closes a connection
  whose request body was not read (so a body nobody reads cannot hold the connection either).
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnnsplit.errors import UsageError

HEALTH_PATH = "/healthz"
# Descriptors the server needs besides its clients' connections: stdio, the listening socket, the event
# loop, segment files while they load, the pool of connections to the next tier (aiohttp: 100 at most).
FD_RESERVE = 128
# Past the cap with nobody to evict (every connection busy being served), this many more are let in to be
# answered (503, /healthz 200) before new ones are closed on arrival: the descriptors never run out.
HEALTH_ROOM = 32
DEFAULT_MAX_CONNECTIONS = 1024
# 8 kB/s (64 kbit/s) is half the slowest uplink preset (cat1, 0.13 Mbit/s): its uploads always keep ahead.
MIN_BODY_RATE = 8_000
RETRY_AFTER_S = 1


def fd_limit() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def default_max_connections() -> int:
    """As many as the descriptor limit leaves room for (``ulimit -n`` minus a reserve), at most 1024."""
    limit = fd_limit()
    if limit is None:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, limit - FD_RESERVE - HEALTH_ROOM))


def check_max_connections(value: int) -> None:
    if value < 1:
        raise UsageError(f"--max-connections must be at least 1 (got {value})", "pass 1024, say")
    limit = fd_limit()
    spare = FD_RESERVE + HEALTH_ROOM
    if limit is not None and value + spare > limit:
        raise UsageError(
            f"--max-connections {value} does not fit this process's limit of {limit} open files "
            f"({spare} are kept for the server itself)",
            f"pass at most {max(1, limit - spare)}, or raise `ulimit -n`",
        )


@dataclass
class Gate:
    """One server's limits and what its protocol instances share (the set is uvicorn's own)."""

    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    connections: set[Any] = field(default_factory=set)
    on_drop: Callable[[str], None] = lambda reason: None  # a connection closed by us: why

    def over_capacity(self) -> bool:
        return len(self.connections) > self.max_connections


def _error_bytes(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": message, "code": code}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def protocol_class(gate: Gate) -> type:
    """uvicorn's httptools protocol with the header deadline and the connection cap of ``gate``."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            gate.connections = self.connections
            self.waiting_since: float | None = time.monotonic()  # waiting on the client since
            self.began = False  # a byte of the current request's headers arrived
            self.answered = 0  # requests answered on this connection
            self.header_timer: asyncio.TimerHandle | None = None
            self._arm_header_timer()
            if gate.over_capacity():
                self._evict_for_newcomer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.began = True
            if self.waiting_since is None:
                self.waiting_since = time.monotonic()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.waiting_since = None  # the request is in: from here on the server is the one working
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self.answered += 1
            self.began = False
            self.waiting_since = time.monotonic()  # idle keep-alive: waiting on the client again
            super().on_response_complete()

        def _arm_header_timer(self) -> None:
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(gate.header_timeout_s, self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_too_slow(self) -> None:
            self.header_timer = None
            if self.transport.is_closing():
                return
            if self.began:  # a request started: say why it ends; a silent idle connection just closes
                self.transport.write(
                    _error_bytes(
                        408,
                        "Request Timeout",
                        f"the request headers took over {gate.header_timeout_s:g} s (--header-timeout)",
                        "header_timeout",
                    )
                )
            gate.on_drop("header_timeout")
            self.transport.close()

        def _evict_for_newcomer(self) -> None:
            waiting = [
                c for c in self.connections if c is not self and getattr(c, "waiting_since", None) is not None
            ]
            if not waiting:
                # Every other connection is being served: this one's requests are shed (503) by the
                # middleware, up to HEALTH_ROOM of them; past that it is closed unanswered.
                if len(self.connections) > gate.max_connections + HEALTH_ROOM:
                    gate.on_drop("over_capacity")
                    self.transport.close()
                return
            # A connection that never finished a request goes first (a slow client coming back as fast as it
            # is dropped is always that), then the longest wait: an honest keep-alive client, idle between
            # two requests for as long as its own loop takes, is not evicted for the attackers' newcomers.
            stalest = min(waiting, key=lambda c: (getattr(c, "answered", 0) > 0, c.waiting_since))
            gate.on_drop("evicted")
            stalest.transport.close()
            # uvicorn drops it from the set when the loop reports the loss; the cap counts it gone now
            self.connections.discard(stalest)

    return GuardedProtocol


class BodyDeadline:
    """ASGI middleware: the body deadline, 503 past the connection cap, no unread body left behind."""

    def __init__(self, app: Any, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") != HEALTH_PATH and self.gate.over_capacity():
            await _refuse(send, 503, "overloaded", "too many open connections; retry later")
            return
        from starlette.exceptions import HTTPException

        loop = asyncio.get_running_loop()
        start, limit = loop.time(), self.gate.body_timeout_s
        state = {"received": 0, "complete": not _has_body(scope["headers"])}

        async def receive_in_time() -> Any:
            if state["complete"]:
                return await receive()
            left = start + limit + state["received"] / MIN_BODY_RATE - loop.time()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    message = await receive()
            except TimeoutError:
                self.gate.on_drop("body_timeout")
                raise HTTPException(
                    408,
                    f"the request body took over {limit:g} s plus 1 s per {MIN_BODY_RATE // 1000} kB "
                    "(--body-timeout)",
                    headers={"connection": "close"},
                ) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
            else:
                state["complete"] = True
            return message

        async def send_closing_if_unread(message: Any) -> None:
            if message["type"] == "http.response.start" and not state["complete"]:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_in_time, send_closing_if_unread)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _refuse(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": message, "code": code}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def retry_after_s(waiting: int, compute_ms: float, concurrency: int) -> int:
    """Seconds until the requests ahead are likely done: what a shed request's Retry-After says."""
    if not math.isfinite(compute_ms):
        return RETRY_AFTER_S
    return max(RETRY_AFTER_S, math.ceil((waiting + 1) * compute_ms / 1000 / max(concurrency, 1)))
