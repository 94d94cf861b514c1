"""The client's keep-alive connection: stale connections are retried once, timeouts and refusals are typed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dnnsplit.runtime.connection import EdgeConnection, EdgeTimeout, EdgeUnreachable


@contextmanager
def one_shot_server(answer: bool = True) -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads one request per connection, answers it as keep-alive, then closes the socket."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    requests: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        v
                        for k, v in (h.split(b": ") for h in head.split(b"\r\n")[1:])
                        if k.lower() == b"content-length"
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                requests.append(body)
                if not answer:
                    stop.wait(2)
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Seen: %d\r\n\r\nok" % len(requests))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    with one_shot_server() as (url, requests):
        edge = EdgeConnection(url, timeout_s=2, connect_timeout_s=2)
        first = edge.post("/v1/infer", lambda: [b"abc"], {"content-length": "3"})
        assert (first.status, first.read(), first.headers["x-seen"]) == (200, b"ok", "1")
        # The server closed that socket without saying so: the next post fails on it, then succeeds anew.
        second = edge.post("/v1/infer", lambda: [b"de", b"f"], {"content-length": "3"})
        assert (second.status, second.read(), second.headers["x-seen"]) == (200, b"ok", "2")
        assert requests == [b"abc", b"def"]
        edge.close()


def test_refused_and_silent_servers_raise_typed_errors() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(EdgeUnreachable, match="ConnectionRefusedError"):
        EdgeConnection(f"http://127.0.0.1:{port}", 1, 1).post(
            "/v1/infer", lambda: [b"x"], {"content-length": "1"}
        )
    with one_shot_server(answer=False) as (url, requests):
        with pytest.raises(EdgeTimeout):
            EdgeConnection(url, 0.3, 1).post("/v1/infer", lambda: [b"x"], {"content-length": "1"})
        assert requests == [b"x"]
