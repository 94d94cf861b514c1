"""The client's HTTP/1.1 connection to the edge: one keep-alive connection on the standard library.

Why not httpx, which the servers use to forward: per request it cost the client ~1 ms more than
``http.client`` on loopback (2.8 ms against 1.8 ms round trip minus compute, resnet18, 402 kB boundary),
half the runtime's whole overhead budget per hop. The client sends one request at a time on one
connection, so a pool, HTTP/2 or async buys it nothing.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from dnnsplit.errors import UsageError

CHUNK = 1 << 16


class EdgeTimeout(Exception):
    """The edge did not answer (connect, send or a read) within the timeout."""


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

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = kind(self.host, self.port, timeout=self.connect_timeout_s)
        try:
            conn.connect()
        except TimeoutError:
            raise EdgeTimeout("connecting") from None
        except OSError as exc:
            raise EdgeUnreachable(_reason(exc)) from None
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout_s)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, path: str, body: Callable[[], Iterable[bytes]], headers: Mapping[str, str]) -> Answer:
        """POST ``body()`` (called again for a retry) to ``path``; the answer, its body left to read.

        A kept-alive connection the server has closed fails on first use: that one case is retried once on
        a new connection. Any other failure is the caller's (no retry: the edge may be overloaded).
        """
        reused = self._conn is not None
        try:
            return self._post(path, body, headers)
        except EdgeUnreachable:
            self.close()
            if not reused:
                raise
            return self._post(path, body, headers)

    def _post(self, path: str, body: Callable[[], Iterable[bytes]], headers: Mapping[str, str]) -> Answer:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            conn.putrequest("POST", self.prefix + path, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            for chunk in body():
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
