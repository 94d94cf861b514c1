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

import fcntl
import functools
import http.client
import io
import select
import socket
import struct
import termios
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from dnnsplit.errors import UsageError

CHUNK = 1 << 16
PIECE = 16 * 1024  # a metered upload is written in pieces this big, so that it can be timed while it goes
METER_WINDOW_S = 0.25  # a metered upload reports the link's rate over windows this long


def queued_bytes(sock: socket.socket) -> int:
    """Bytes written to ``sock`` that the peer has not acknowledged yet (Linux ``SIOCOUTQ``; 0 elsewhere):
    what the client's socket buffer and the link's queue still hold."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])
    except (OSError, ValueError):
        return 0


class UploadMeter:
    """The uplink's rate while a body is in flight: the bytes the link has taken (written minus those still
    queued in the socket) over windows of ``window_s``, reported to ``on_sample(bytes, ms)``.

    Only windows in which the link was the bottleneck count (more to write, or bytes still queued): the
    tail of an upload that the link took at once says nothing about its rate.
    """

    def __init__(self, on_sample: Callable[[int, float], None], window_s: float = METER_WINDOW_S) -> None:
        self.on_sample = on_sample
        self.window_s = window_s
        self.written = 0
        self.samples = 0
        self._mark: tuple[float, int] | None = None
        self._first: tuple[float, int] | None = None

    def tick(self, sock: socket.socket, more: bool) -> None:
        now = time.monotonic()
        queued = queued_bytes(sock)
        delivered = self.written - queued
        if self._mark is None:
            self._mark = self._first = (now, delivered)
            return
        t0, d0 = self._mark
        if now - t0 >= self.window_s and (more or queued > 0) and delivered > d0:
            self.on_sample(delivered - d0, (now - t0) * 1000)
            self.samples += 1
            self._mark = (now, delivered)

    def taken(self, sock: socket.socket | None) -> tuple[int, float] | None:
        """The bytes the link took since the first piece, and over how many ms (an abandoned upload: at
        most this rate); None before the first piece."""
        if self._first is None:
            return None
        t0, d0 = self._first
        queued = queued_bytes(sock) if sock is not None else 0
        return self.written - queued - d0, (time.monotonic() - t0) * 1000


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
        meter: UploadMeter | None = None,
    ) -> Answer:
        """POST ``body()`` (called again for a retry) to ``path``; the answer, its body left to read.

        ``deadline`` (``time.monotonic()``; default: ``timeout_s`` from now) bounds the whole request,
        reading the answer's body included: past it, any step raises ``EdgeTimeout``. ``meter``: the body
        is written in pieces and timed as the link takes it, until its last byte is acknowledged.
        A kept-alive connection the server has closed fails on first use: that one case is retried once on
        a new connection. Any other failure is the caller's (no retry: the edge may be overloaded).
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        reused = self._conn is not None
        try:
            return self._post(path, body, headers, deadline, meter)
        except EdgeUnreachable:
            self.close()
            if not reused:
                raise
            return self._post(path, body, headers, deadline, meter)

    def _post(
        self,
        path: str,
        body: Callable[[], Iterable[bytes]],
        headers: Mapping[str, str],
        deadline: float,
        meter: UploadMeter | None = None,
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
                if meter is None:
                    conn.sock.settimeout(_left(deadline))
                    conn.send(chunk)
                    continue
                view = memoryview(chunk)
                for start in range(0, len(view), PIECE):
                    conn.sock.settimeout(_left(deadline))
                    conn.send(view[start : start + PIECE])
                    meter.written += len(view[start : start + PIECE])
                    meter.tick(conn.sock, more=True)
            if meter is not None:
                _drain(conn.sock, meter, deadline)
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

    @property
    def sock(self) -> socket.socket | None:
        return self._conn.sock if self._conn is not None else None

    def close(self, abort: bool = False) -> None:
        """Close the connection; ``abort``: drop what the socket still has to send (an abandoned upload
        must not hold the link for the next request), with a reset instead of a FIN."""
        if self._conn is not None:
            if abort and self._conn.sock is not None:
                try:
                    self._conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            self._conn.close()
            self._conn = None


def _drain(sock: socket.socket, meter: UploadMeter, deadline: float) -> None:
    """Wait, timing the link, until the body's last byte is acknowledged or the answer starts."""
    while queued_bytes(sock) > 0:
        readable, _, _ = select.select([sock], [], [], min(meter.window_s / 2, _left(deadline)))
        if readable:
            return
        meter.tick(sock, more=False)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
