"""Issue 23, points 3 and 5 (and 6's truncated segments): segment files are checked before they load, and
the client does not trust the edge.

"3 segments": a split directory made hostile one way each (a path out of it, absolute, a symlink out, a
segment changed in place, truncated, missing) goes through the real ``run``, ``serve`` and ``infer``; the
browser page gets a mobile segment changed after the server started. "5 client": ``infer --timeout 1``
against a fake edge on loopback (a raw socket) that drip-feeds its answer, or answers the wrong tensors.
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from benchmarks.hardening import Case, CliResult, Observed, dnnsplit, free_port, tiny_split
from tests.fixtures.fake_edge import dripping, edge_answer, fake_edge, http_head

_PRISTINE: list[Path] = []


def pristine() -> Path:
    """One two-tier split of the tiny CNN for every case (each case works on its own copy)."""
    if not _PRISTINE:
        root = Path(tempfile.mkdtemp(prefix="dnnsplit-probe-split-"))
        atexit.register(shutil.rmtree, root, True)
        _PRISTINE.append(tiny_split(root / "segments"))
    return _PRISTINE[0]


def copy_split(work: Path) -> Path:
    directory = work / "split" / "segments"
    shutil.copytree(pristine(), directory)
    return directory


def frame(work: Path) -> Path:
    path = work / "x.npy"
    np.save(path, np.random.default_rng(3).standard_normal((3, 32, 32)).astype(np.float32))
    return path


def set_file(directory: Path, index: int, name: str) -> None:
    path = directory / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    data["segments"][index]["file"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def negate_weights(path: Path) -> None:
    """Flip the sign of the largest weight tensor: still a valid model, of the same size, answering otherwise."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(path))


def rehash(directory: Path, index: int) -> None:
    """What an attacker who edits the manifest too would do: its sha256 and bytes match the file again."""
    import hashlib

    path = directory / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    seg = data["segments"][index]
    seg["sha256"] = hashlib.sha256((directory / seg["file"]).read_bytes()).hexdigest()
    seg["bytes"] = (directory / seg["file"]).stat().st_size
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# -- 3 segments: the hostile directories -------------------------------------------------------------------
def _dotdot(d: Path) -> None:
    shutil.copy(d / "02-edge.onnx", d.parent / "elsewhere.onnx")
    set_file(d, 1, "../elsewhere.onnx")


def _absolute(d: Path) -> None:
    set_file(d, 1, "/etc/passwd")


def _symlink(d: Path) -> None:
    (d / "02-edge.onnx").rename(d.parent / "outside.onnx")
    (d / "02-edge.onnx").symlink_to(d.parent / "outside.onnx")


def _tampered(d: Path) -> None:
    negate_weights(d / "02-edge.onnx")


def _truncated(d: Path) -> None:
    path = d / "02-edge.onnx"
    path.write_bytes(path.read_bytes()[:500])


def _truncated_rehashed(d: Path) -> None:
    _truncated(d)
    rehash(d, 1)


def _missing(d: Path) -> None:
    (d / "02-edge.onnx").unlink()


def three_commands(make_hostile: Callable[[Path], None], needle: str) -> Callable[[Path], Observed]:
    """``run``, ``serve`` and ``infer`` on the hostile directory: each must be one line, exit 2, naming it."""

    def run(work: Path) -> Observed:
        directory = copy_split(work)
        make_hostile(directory)
        x = frame(work)
        port = free_port()
        results = {
            "run": dnnsplit("run", directory, "--input", x, timeout=60),
            # A serve that gets past its segments listens until killed: the probe's timeout says so (124).
            "serve": dnnsplit("serve", directory, "--tier", "edge", "--port", str(port), timeout=20),
            "infer": dnnsplit("infer", directory, "--edge", f"http://127.0.0.1:{free_port()}", "--input", x,
                              timeout=60),
        }  # fmt: skip
        seen = {name: r.one_line() for name, r in results.items()}
        ok = all(o.ok and needle in r.stderr for o, r in zip(seen.values(), results.values(), strict=True))
        codes = ", ".join(f"{name} exit {r.code}" for name, r in results.items())
        last = next((r.error_lines()[-1] for r in results.values() if r.error_lines()), "(no stderr)")
        return Observed(ok, f"{codes}; {last.replace(str(work), 'WORK')[:170]}")

    return run


SEGMENT_CASES = [
    ("a segment path '../elsewhere.onnx' (a working model out of the directory)", _dotdot,
     "leads out of the split directory (via '..'"),
    ("a segment path '/etc/passwd'", _absolute, "is an absolute path"),
    ("02-edge.onnx a symlink to a model outside the directory", _symlink, "(a symlink to"),
    ("02-edge.onnx's weights negated in place (valid model, same size, manifest unchanged)", _tampered,
     "does not match its sha256"),
    ("02-edge.onnx truncated to 500 bytes", _truncated, "has 500 bytes, the manifest says"),
    ("02-edge.onnx truncated and the manifest re-hashed to it", _truncated_rehashed,
     "does not load in onnxruntime"),
    ("02-edge.onnx missing", _missing, "02-edge.onnx is missing"),
]  # fmt: skip


def digest_case(work: Path) -> Observed:
    """The issue's attack: an edge serving negated weights under a manifest re-hashed to them. The edge
    starts (its files match its manifest), but its digest covers the files' hashes: the intact client's
    request is refused (409), no manipulated answer is used."""
    client_dir = copy_split(work)
    edge_dir = work / "edge-copy"
    shutil.copytree(client_dir, edge_dir)
    negate_weights(edge_dir / "02-edge.onnx")
    rehash(edge_dir, 1)
    with cli_server(edge_dir) as url:
        result = dnnsplit("infer", client_dir, "--edge", url, "--input", frame(work), timeout=60)
    seen = result.one_line()
    ok = seen.ok and "serves another split" in result.stderr
    return Observed(ok, seen.text)


@contextmanager
def cli_server(directory: Path, *extra: str) -> Iterator[str]:
    """``dnnsplit serve`` in a fresh process on a free loopback port, until the block ends."""
    import subprocess
    import sys

    import httpx

    from benchmarks.hardening import env

    port = free_port()
    cmd = [sys.executable, "-m", "dnnsplit.cli.main", "serve", str(directory), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: {proc.stderr.read().strip()[:200]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def web_serve_case(work: Path) -> Observed:
    """``serve --web`` hands the phone's segment to browsers: a changed one is refused at start."""
    directory = copy_split(work)
    negate_weights(directory / "01-mobile.onnx")
    result = dnnsplit("serve", directory, "--web", "--port", str(free_port()), timeout=20)
    seen = result.one_line()
    ok = seen.ok and "01-mobile.onnx does not match its sha256" in result.stderr
    return Observed(ok, seen.text.replace(str(work), "WORK"))


def web_page_case(work: Path) -> Observed:
    """The page, in headless Chromium: a mobile segment changed on disk after the server started."""
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    directory = copy_split(work)
    with serving(directory, ServeSettings(tier="edge", web=True)) as server, chromium_page() as (page, _):
        negate_weights(directory / "01-mobile.onnx")
        page.goto(f"{server.url}/web/")
        page.wait_for_selector("#status[data-state=ready], #status[data-state=error]")
        state, text = page.get_attribute("#status", "data-state"), page.inner_text("#status")
    ok = state == "error" and "does not match the split's sha256" in text
    return Observed(ok, f"page {state}: {text[:170]}")


# -- 5 client: fake edges ----------------------------------------------------------------------------------
DRIP_S = 0.2
DRIP_FOR_S = 10.0  # then the fake edge hangs up (bounded; the old client waited all of it)


def infer_against(respond_for: Callable[[Path], Callable[[socket.socket], None]], needle: str,
                  timeout: str = "1") -> Callable[[Path], Observed]:  # fmt: skip
    """``infer --timeout 1`` against a fake edge: exit 0, a ``fallback:`` line naming why, `run`'s top-5."""

    def run(work: Path) -> Observed:
        directory = copy_split(work)
        x = frame(work)
        reference = dnnsplit("run", directory, "--input", x, "--format", "json", timeout=60)
        expected = [c["class"] for c in json.loads(reference.stdout)["top"]] if reference.code == 0 else None
        with fake_edge(respond_for(directory), connections=4) as (url, _ends):
            start = time.perf_counter()
            result = dnnsplit("infer", directory, "--edge", url, "--input", x, "--timeout", timeout,
                              "--format", "json", timeout=60)  # fmt: skip
            seconds = time.perf_counter() - start
        return judge(result, seconds, expected, needle)

    return run


def judge(result: CliResult, seconds: float, expected: list[int] | None, needle: str) -> Observed:
    fallback = next((line for line in result.error_lines() if line.startswith("fallback:")), "")
    try:
        top = [c["class"] for c in json.loads(result.stdout)["top"]]
    except (ValueError, KeyError, TypeError):
        top = None
    ok = result.code == 0 and needle in fallback and top == expected and expected is not None
    shown = fallback or (result.error_lines() or ["no fallback"])[-1]
    same = "top-5 = run's" if top == expected else f"top-5 {top} != run's {expected}"
    return Observed(ok, f"exit {result.code} after {seconds:.1f} s, {same}; {shown[:150]}")


def _drip_all(directory: Path) -> Callable[[socket.socket], None]:
    body = edge_answer(directory, {"logits": np.zeros((1, 10), np.float32)})
    return dripping(http_head(len(body)) + body, 0, DRIP_S, DRIP_FOR_S)


def _drip_body(directory: Path) -> Callable[[socket.socket], None]:
    body = edge_answer(directory, {"logits": np.zeros((1, 10), np.float32)})
    head = http_head(len(body))
    return dripping(head + body, len(head), DRIP_S, DRIP_FOR_S)


def _answers(tensors: dict[str, np.ndarray], length: int | None = None) -> Callable[[Path], Callable]:
    def respond_for(directory: Path) -> Callable[[socket.socket], None]:
        body = edge_answer(directory, tensors)
        return lambda conn: conn.sendall(http_head(len(body) if length is None else length) + body)

    return respond_for


DEADLINE = "did not answer within 1 s"
WRONG = "sent a wrong answer"
LOGITS = {"logits": np.zeros((1, 10), np.float32)}

CASES: list[Case] = [
    *(
        Case("3 segments", name, "run, serve and infer: exit 2, one line naming the file", three_commands(f, n))
        for name, f, n in SEGMENT_CASES
    ),
    Case("3 segments", "edge serves negated weights under a manifest re-hashed to them",
         "infer: exit 2, one line: the edge serves another split (409)", digest_case),
    Case("3 segments", "serve --web with the mobile segment changed", "exit 2, one line naming the file",
         web_serve_case),
    Case("3 segments", "browser page: the mobile segment changed after serve --web started",
         "the page's status is an error naming the sha256 mismatch; no session created", web_page_case),
    Case("5 client", "edge drip-feeds status line, headers and body (1 byte / 0.2 s)",
         "infer --timeout 1: exit 0 within seconds, fallback: did not answer within 1 s",
         infer_against(_drip_all, DEADLINE)),
    Case("5 client", "edge sends its headers, then drip-feeds the body (1 byte / 0.2 s)",
         "infer --timeout 1: exit 0 within seconds, fallback: did not answer within 1 s",
         infer_against(_drip_body, DEADLINE)),
    Case("5 client", "edge answers logits of shape 1x5", "exit 0, fallback: wrong answer (shape), run's top-5",
         infer_against(_answers({"logits": np.zeros((1, 5), np.float32)}), WRONG + " (tensor 'logits' has shape")),
    Case("5 client", "edge answers float64 logits", "exit 0, fallback: wrong answer (dtype), run's top-5",
         infer_against(_answers({"logits": np.zeros((1, 10), np.float64)}), WRONG + " (tensor 'logits' is float64")),
    Case("5 client", "edge answers a batch of 2 for a request of 1",
         "exit 0, fallback: wrong answer (batch), run's top-5",
         infer_against(_answers({"logits": np.zeros((2, 10), np.float32)}), WRONG + " (batch 2")),
    Case("5 client", "edge answers an extra tensor beside the logits",
         "exit 0, fallback: wrong answer (unknown tensor), run's top-5",
         infer_against(_answers({**LOGITS, "input": np.zeros((1, 3, 32, 32), np.float32)}), "unknown tensor")),
    Case("5 client", "edge declares a 1 GB answer", "exit 0, fallback without reading it, run's top-5",
         infer_against(_answers(LOGITS, length=10**9), "more than an answer of this split takes")),
]  # fmt: skip
