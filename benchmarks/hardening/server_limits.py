"""Issue 23, point 4 (and 5's NaN inputs, 6's serve/infer flag values): a real ``dnnsplit serve`` on
loopback against slow, greedy and sloppy clients.

Raw sockets play the clients an HTTP library would not let us be: a Content-Length the body never reaches,
headers that never end, 300 requests that never finish on a server allowed 256 open files, a body cut off
halfway. Deadlines are set to 1 s (``--header-timeout 1 --body-timeout 1``) so the cases take seconds.
"""

from __future__ import annotations

import atexit
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from benchmarks.hardening import ROOT, Case, Observed, dnnsplit, env, free_port, tiny_split

AREA = "4 server"
SKIP = "/stem/stem.2/Relu_output_0"  # the boundary tensor of tiny_split's cut
FAST = ("--header-timeout", "1", "--body-timeout", "1")
PIDS: dict[str, int] = {}  # URL -> the pid of the serve answering there


_PRISTINE: list[Path] = []


def split_in(work: Path) -> Path:
    """A copy, in ``work``, of one two-tier tiny split made once for every case."""
    if not _PRISTINE:
        root = Path(tempfile.mkdtemp(prefix="dnnsplit-probe-limits-"))
        atexit.register(shutil.rmtree, root, True)
        _PRISTINE.append(tiny_split(root / "segments"))
    directory = work / "segments"
    if not directory.exists():
        shutil.copytree(_PRISTINE[0], directory)
    return directory


def _fd_limit(n: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return apply


@contextmanager
def serve(work: Path, *flags: str, fd_limit: int | None = None) -> Iterator[str]:
    """``dnnsplit serve`` of a fresh tiny split in its own process; yields its URL."""
    directory = split_in(work)
    port = free_port()
    log = (work / "serve.log").open("w")
    cmd = [sys.executable, "-m", "dnnsplit.cli.main", "serve", str(directory), "--port", str(port), *flags]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=log, stderr=log, preexec_fn=_fd_limit(fd_limit) if fd_limit else None
    )
    url = f"http://127.0.0.1:{port}"
    PIDS[url] = proc.pid
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {(work / 'serve.log').read_text()[-300:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock: socket.socket) -> tuple[bytes, float]:
    """What the server sends until it closes, and how long that took (10 s: it never did)."""
    start, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data, time.monotonic() - start


def _status_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed without an answer"


def _body(work: Path, value: float) -> bytes:
    from dnnsplit.runtime import route
    from dnnsplit.runtime.wire import encode
    from dnnsplit.splitting.manifest import Manifest

    manifest = Manifest.load(work / "segments")
    tensor = np.full((1, 8, 32, 32), value, np.float32)
    return encode({SKIP: tensor}, {"manifest": route.digest(manifest)})


def _metric(url: str, status: str, token: str | None = None) -> float:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    prefix = f'dnnsplit_requests_total{{path="/v1/infer",status="{status}",tier="edge"}} '
    text = httpx.get(f"{url}/metrics", headers=headers).text
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def short_body(work: Path) -> Observed:
    with serve(work, *FAST) as url:
        sock = _connect(url)
        sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
        data, seconds = _answer(sock)
    line = _status_line(data)
    return Observed(line.startswith("HTTP/1.1 408") and seconds < 5, f"{line} after {seconds:.1f} s")


def slow_headers(work: Path) -> Observed:
    with serve(work, *FAST) as url:
        sock = _connect(url)
        start = time.monotonic()
        sent = 0
        try:
            for byte in b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n":
                sock.sendall(bytes([byte]))  # one byte every 0.1 s: never done within 1 s
                sent += 1
                time.sleep(0.1)
        except OSError:
            pass
        data, _ = _answer(sock)
        seconds = time.monotonic() - start
    line = _status_line(data)
    ok = line.startswith("HTTP/1.1 408") and seconds < 5
    return Observed(ok, f"{line} after {seconds:.1f} s ({sent} bytes trickled)")


def unfinished_requests(work: Path) -> Observed:
    """300 requests that never finish (half stuck in their headers, half in their body), 256 open files."""
    held: list[socket.socket] = []
    probes: list[float] = []
    failures: list[str] = []
    with serve(work, fd_limit=256) as url:
        try:
            for k in range(300):
                sock = _connect(url)
                if k % 2:
                    sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nxx")
                else:
                    sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\n")
                held.append(sock)
                if k % 30 == 29:  # /healthz all along, not only at the end
                    t0 = time.perf_counter()
                    try:
                        status = httpx.get(f"{url}/healthz", timeout=5).status_code
                        probes.append((time.perf_counter() - t0) * 1000)
                        if status != 200:
                            failures.append(str(status))
                    except httpx.HTTPError as exc:
                        failures.append(type(exc).__name__)
            answer = httpx.post(f"{url}/v1/infer", content=_body(work, 0.5), timeout=5).status_code
        finally:
            for sock in held:
                sock.close()
    ok = not failures and len(probes) == 10 and answer == 200
    worst = f"{max(probes):.0f} ms" if probes else "-"
    return Observed(
        ok,
        f"/healthz {len(probes)}/10 answered 200 (slowest {worst}), failures {failures or 'none'}; "
        f"an honest /v1/infer then: {answer}",
    )


def load_shedding(work: Path) -> Observed:
    """64 clients at once on --concurrency 1 --max-queue 0: who finds compute busy gets 503 + Retry-After."""
    results: list[tuple[int, str | None]] = []
    with serve(work, "--concurrency", "1", "--max-queue", "0") as url:
        body = _body(work, 0.5)

        def client() -> None:
            with httpx.Client(timeout=20) as http:
                for _ in range(4):
                    answer = http.post(f"{url}/v1/infer", content=body)
                    results.append((answer.status_code, answer.headers.get("retry-after")))

        threads = [threading.Thread(target=client) for _ in range(64)]
        for t in threads:
            t.start()
        health = httpx.get(f"{url}/healthz", timeout=5).status_code
        for t in threads:
            t.join(60)
    shed = [r for r in results if r[0] == 503]
    other = {s for s, _ in results} - {200, 503}
    ok = bool(shed) and all(r and int(r) >= 1 for _, r in shed) and not other and health == 200
    return Observed(
        ok,
        f"{len(results)} requests: {len(results) - len(shed)} x 200, {len(shed)} x 503 "
        f"(Retry-After {sorted({r for _, r in shed})}), other {sorted(other) or 'none'}; /healthz {health}",
    )


def _rss_mb(url: str) -> float:
    for line in Path(f"/proc/{PIDS[url]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def profiles_declared_too_large(work: Path) -> Observed:
    with serve(work, "--web", "--profiles-dir", str(work / "phones")) as url:
        sock = _connect(url)
        sock.sendall(b"POST /web/profiles HTTP/1.1\r\nhost: x\r\ncontent-length: 300000000\r\n\r\n")
        data, seconds = _answer(sock)
    line = _status_line(data)
    return Observed(
        line.startswith("HTTP/1.1 413") and seconds < 5, f"{line} after {seconds:.2f} s, no byte sent"
    )


def profiles_chunked_too_large(work: Path) -> Observed:
    """64 MB chunked (no length) at the 32 MB limit: refused there; the server's RSS must not follow."""
    with serve(work, "--web", "--profiles-dir", str(work / "phones")) as url:
        before = _rss_mb(url)
        sock = _connect(url)
        sock.sendall(b"POST /web/profiles HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            for _ in range(64):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += 1
        except OSError:
            pass  # the server answered and closed
        data, _ = _answer(sock)
        grew = _rss_mb(url) - before
    line = _status_line(data)
    ok = line.startswith("HTTP/1.1 413") and grew < 100
    return Observed(ok, f"{line} after {sent} MB sent; server RSS +{grew:.0f} MB")


def profile_model_token(work: Path) -> Observed:
    with serve(work, "--web", "--profiles-dir", str(work / "phones"), "--token", "s3cret") as url:
        bare = httpx.get(f"{url}/web/profile/model.onnx")
        good = httpx.get(f"{url}/web/profile/model.onnx", headers={"authorization": "Bearer s3cret"})
    ok = bare.status_code == 401 and good.status_code == 200
    return Observed(
        ok, f"no token: {bare.status_code} ({len(bare.content)} bytes); token: {good.status_code}"
    )


def aborted_client(work: Path) -> Observed:
    with serve(work) as url:
        sock = _connect(url)
        sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
        time.sleep(0.2)
        sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (_metric(url, "499") or _metric(url, "500")):
            time.sleep(0.05)
        aborted, errors = _metric(url, "499"), _metric(url, "500")
    return Observed(
        aborted == 1 and errors == 0, f"/metrics: status 499 x {aborted:g}, status 500 x {errors:g}"
    )


def non_finite(value: float) -> Callable[[Path], Observed]:
    def run(work: Path) -> Observed:
        with serve(work) as url:
            answer = httpx.post(f"{url}/v1/infer", content=_body(work, value))
        code = answer.json().get("code") if answer.status_code != 200 else "-"
        return Observed(answer.status_code == 422 and code == "non_finite", f"{answer.status_code} {code}")

    return run


def flag(command: str, *flags: str) -> Callable[[Path], Observed]:
    def run(work: Path) -> Observed:
        directory = split_in(work)
        with socket.socket() as taken:  # a value that got through would fail to bind, not serve forever
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            if command == "serve":
                port = [] if "--port" in flags else ["--port", str(taken.getsockname()[1])]
                result = dnnsplit("serve", directory, *port, *flags, timeout=60)
            else:
                frame = work / "x.npy"
                np.save(frame, np.zeros((3, 32, 32), np.float32))
                edge = f"http://127.0.0.1:{taken.getsockname()[1]}"
                result = dnnsplit("infer", directory, "--edge", edge, "--input", frame, *flags, timeout=60)
        return result.one_line()

    return run


ONE_LINE = "exit 2, one line naming the flag"
CASES: list[Case] = [
    Case(AREA, "POST /v1/infer: Content-Length 100000, 10 bytes sent, then silence",
         "408 within the body deadline (--body-timeout 1)", short_body),
    Case(AREA, "request headers trickled 1 byte / 0.1 s, never finished",
         "408 within the header deadline (--header-timeout 1)", slow_headers),
    Case(AREA, "300 unfinished requests (headers or body) on a server allowed 256 open files",
         "/healthz 200 throughout, then an honest request 200", unfinished_requests),
    Case(AREA, "64 clients x 4 requests at once, --concurrency 1 --max-queue 0",
         "some 503 with Retry-After, the rest 200, /healthz 200", load_shedding),
    Case(AREA, "POST /web/profiles declaring Content-Length 300 MB",
         "413 on the headers, before any byte of the body", profiles_declared_too_large),
    Case(AREA, "POST /web/profiles chunked (no length), 64 MB",
         "413 at the 32 MB limit, server RSS up < 100 MB", profiles_chunked_too_large),
    Case(AREA, "GET /web/profile/model.onnx without the server's token",
         "401 (200 with the token)", profile_model_token),
    Case(AREA, "client sends half a body, then closes the connection",
         "/metrics counts it as 499, no 500", aborted_client),
    Case(AREA, "POST /v1/infer with NaN in the boundary tensor", "422 non_finite", non_finite(float("nan"))),
    Case(AREA, "POST /v1/infer with +inf in the boundary tensor", "422 non_finite", non_finite(float("inf"))),
    Case(AREA, "serve --port 70000", ONE_LINE, flag("serve", "--port", "70000")),
    Case(AREA, "serve --max-body-mb inf", ONE_LINE, flag("serve", "--max-body-mb", "inf")),
    Case(AREA, "serve --timeout inf", ONE_LINE, flag("serve", "--timeout", "inf")),
    Case(AREA, 'serve --token ""', ONE_LINE, flag("serve", "--token", "")),
    Case(AREA, "serve --header-timeout nan", ONE_LINE, flag("serve", "--header-timeout", "nan")),
    Case(AREA, "serve --max-connections 100000000", ONE_LINE + " (and ulimit -n)",
         flag("serve", "--max-connections", "100000000")),
    Case(AREA, "infer --timeout inf", ONE_LINE, flag("infer", "--timeout", "inf")),
    Case(AREA, 'infer --token ""', ONE_LINE, flag("infer", "--token", "")),
]  # fmt: skip
