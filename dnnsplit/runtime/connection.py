"""The client's HTTP/1.1 connection to the edge: one keep-alive connection on the standard library.

Why not httpx, which the servers use to forward: per request it cost the client ~1 ms more than
``http.client`` on loopback (2.8 ms against 1.8 ms round trip minus compute, resnet18, 402 kB boundary),
half the runtime's whole overhead budget per hop. The client sends one request at a time on one
connection, so a pool, HTTP/2 or async buys it nothing.

The timeout is a deadline for the whole request (connect, send, status line, headers, body), not for each
socket operation: an edge that drip-feeds its answer a byte at a time would otherwise keep every ``recv``
within its timeout and hold the client for as long as it likes. Each ``recv`` gets only the time left.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from dnnsplit.errors import UsageError

CHUNK = 1 << 16


class EdgeTimeout(Exception):
    """The edge did not answer in full (connect, send, every read) before the request's deadline."""


class EdgeUnreachable(Exception):
    """No connection, or it broke: refused, reset, closed mid-answer."""


@dataclass
class Answer:
    """An answer's status and headers, its body still to be read (``chunks``, or ``read`` for all of it)."""

    status: int
    headers: Mapping[str, str]
    response: http.client.HTTPResponse

    @property
    def length(self) -> int:
        return int(self.headers.get("content-length", 0) or 0)

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.response.read(CHUNK):
                yield chunk
        except TimeoutError:
            raise EdgeTimeout("reading the answer") from None
        except (OSError, http.client.HTTPException) as exc:
            raise EdgeUnreachable(_reason(exc)) from None

    def read(self) -> bytes:
        return b"".join(self.chunks())


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes for ``HTTPResponse``, each ``recv`` allowed only the time left to ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.sock.settimeout(_left(self.deadline))
        return self.sock.recv_into(buffer)


class _DeadlineSocket:
    """What ``HTTPResponse`` reads through: its ``makefile`` is a buffered ``_DeadlineReader``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.deadline), CHUNK)


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float,
    ) -> None:
        super().__init__(_DeadlineSocket(sock, deadline), debuglevel, method, url)  # type: ignore[arg-type]


def _left(deadline: float) -> float:
    """Seconds to ``deadline``; ``TimeoutError`` once it has passed (a 0 timeout would mean non-blocking)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's deadline passed")
    return left


class EdgeConnection:
    """``post`` over one reused connection to ``base_url`` (http or https); reconnects when it went stale."""

    def __init__(self, base_url: str, timeout_s: float, connect_timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"'{base_url}' is not an http(s) URL", "pass http://HOST:PORT")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self, deadline: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        try:
            conn = kind(self.host, self.port, timeout=min(self.connect_timeout_s, _left(deadline)))
            conn.connect()
        except TimeoutError:
            raise EdgeTimeout("connecting") from None
        except OSError as exc:
            raise EdgeUnreachable(_reason(exc)) from None
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(
        self,
        path: str,
        body: Callable[[], Iterable[bytes]],
        headers: Mapping[str, str],
        deadline: float | None = None,
    ) -> Answer:
        """POST ``body()`` (called again for a retry) to ``path``; the answer, its body left to read.

        ``deadline`` (``time.monotonic()``; default: ``timeout_s`` from now) bounds the whole request,
        reading the answer's body included: past it, any step raises ``EdgeTimeout``.
        A kept-alive connection the server has closed fails on first use: that one case is retried once on
        a new connection. Any other failure is the caller's (no retry: the edge may be overloaded).
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        reused = self._conn is not None
        try:
            return self._post(path, body, headers, deadline)
        except EdgeUnreachable:
            self.close()
            if not reused:
                raise
            return self._post(path, body, headers, deadline)

    def _post(
        self, path: str, body: Callable[[], Iterable[bytes]], headers: Mapping[str, str], deadline: float
    ) -> Answer:
        if self._conn is None:
            self._conn = self._connect(deadline)
        conn = self._conn
        assert conn.sock is not None
        conn.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]
        try:
            conn.putrequest("POST", self.prefix + path, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            # sendall's timeout bounds the whole call (Python >= 3.5): an edge that reads slowly is bounded.
            conn.sock.settimeout(_left(deadline))
            conn.endheaders()
            for chunk in body():
                conn.sock.settimeout(_left(deadline))
                conn.send(chunk)
            response = conn.getresponse()
        except TimeoutError:
            self.close()
            raise EdgeTimeout("waiting for the answer") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise EdgeUnreachable(_reason(exc)) from None
        if response.will_close:
            self._conn = None  # read this answer, then connect anew next time
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
