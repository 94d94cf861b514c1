"""The collaborative runtime: measured p50 against the planner's prediction, runtime overhead per hop, load.

Targets (issue 8):
* measured p50 within 15% of the planner's prediction for resnet18 and mobilenet_v3_small at every network
  preset, with the in-process link emulation and with a real tbf-shaped link (two network namespaces);
* runtime overhead beyond compute + transfer under 2 ms per hop at p50;
* 32 concurrent clients for 60 s against one edge server on loopback: zero errors, throughput, p99, flat RSS;
* the same clients with 300 slow ones alongside (issue 23: headers or body trickled, silent connections):
  zero errors, /healthz answered throughout (``--attack`` runs only this, into the existing results).

For each model and sweep: profile on this machine (2 threads) right before it, then for each preset plan
with --network PRESET and the edge device set to this machine (`--device edge=host`: an edge faster than
this machine cannot be emulated here), split, and bench (plan, all-local, all-edge). The phone (mobile-web, 6x the host) is emulated by
stretching its segments' compute 6x. Writes docs/benchmarks/runtime.{md,json}.

    python benchmarks/runtime_bench.py [--models resnet18,mobilenet_v3_small] [--requests 10] [--skip-tbf]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, run_cli, wait_healthy, write_results

from dnnsplit.partition.network import NETWORK_PRESETS, LinkSpec
from dnnsplit.partition.plan_file import load_plan
from dnnsplit.runtime import route
from dnnsplit.runtime.bench import BenchSettings, Predictor, bench
from dnnsplit.runtime.client import CollaborativeClient
from dnnsplit.splitting.manifest import Manifest

MODELS = ["resnet18", "mobilenet_v3_small"]
PRESETS = list(NETWORK_PRESETS)
WORK = ROOT / "out" / "runtime-bench"
NS_MOB, NS_EDGE, EDGE_IP, PORT = "dnsb-mob", "dnsb-edge", "10.77.0.1", 18080
TARGET = 0.15


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


# -- preparing: profile, plan per preset, split ------------------------------------------------------------
def prepare(model: str) -> dict[str, Path]:
    """Profile, plan and split ``model`` now. Called right before each of its sweeps: on this shared VM a
    model's speed moves with other tenants' memory traffic (mobilenet_v3_small 1.1 ms one minute, 1.9 ms
    another), so a profile from an earlier run or half an hour before predicts another machine."""
    work = WORK / model
    work.mkdir(parents=True, exist_ok=True)
    profile = work / "profile.json"
    run_cli(["profile", f"torchvision:{model}", "--threads", "2", "--output", str(profile)])
    dirs = {}
    for preset in PRESETS:
        plan, out = work / f"plan-{preset}.yaml", work / f"split-{preset}"
        run_cli(["plan", str(profile), "--network", preset, "--device", "edge=host", "--output", str(plan)])
        run_cli(
            [
                "split",
                f"torchvision:{model}",
                "--plan",
                str(plan),
                "--output",
                str(out),
                "--validate",
                "1",
                "--force",
            ]
        )
        dirs[preset] = out
    return dirs


def emulated_sweep(model: str, dirs: dict[str, Path], requests: int, budget_s: float) -> list[dict[str, Any]]:
    rows = []
    for preset, directory in dirs.items():
        settings = BenchSettings(
            networks=(NETWORK_PRESETS[preset],), requests=requests, warmup=2, budget_s=budget_s
        )
        result = bench(directory, settings)
        plan = load_plan(result.plan)
        for row in result.rows:
            data = row.to_dict()
            data.update(model=model, preset=preset, link="emulated", plan_tiers=_plan_shape(plan))
            rows.append(data)
            print(
                f"  {model} {preset} {row.config}: p50 {row.p50_ms:.1f} ms, predicted {row.predicted_ms:.1f} "
                f"({pct(row.error)}), calibrated {pct(row.calibrated_error)}, n={row.requests}",
                flush=True,
            )
    return rows


def _plan_shape(plan: Any) -> str:
    counts = {}
    for tier in plan.assignment.values():
        counts[tier] = counts.get(tier, 0) + 1
    return ", ".join(f"{t}: {n} layers" for t, n in counts.items())


# -- the real shaped link: two namespaces, a veth pair, tbf each way ----------------------------------------
def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def netns_up() -> str | None:
    """Create the namespaces and the veth pair; None when it works, else why not."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs root with ip and tc"
    netns_down()
    try:
        sh("ip", "netns", "add", NS_MOB)
        sh("ip", "netns", "add", NS_EDGE)
        sh("ip", "link", "add", "dnsb-m", "type", "veth", "peer", "name", "dnsb-e")
        sh("ip", "link", "set", "dnsb-m", "netns", NS_MOB)
        sh("ip", "link", "set", "dnsb-e", "netns", NS_EDGE)
        sh("ip", "-n", NS_MOB, "addr", "add", "10.77.0.2/24", "dev", "dnsb-m")
        sh("ip", "-n", NS_EDGE, "addr", "add", f"{EDGE_IP}/24", "dev", "dnsb-e")
        for ns, dev in ((NS_MOB, "dnsb-m"), (NS_EDGE, "dnsb-e")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if shutil.which("ethtool"):  # one packet per MTU: tbf then shapes what TCP really sends
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "ethtool",
                    "-K",
                    dev,
                    "tso",
                    "off",
                    "gso",
                    "off",
                    "gro",
                    "off",
                    check=False,
                )
    except subprocess.CalledProcessError as exc:
        netns_down()
        return f"cannot create network namespaces ({(exc.stderr or '').strip() or exc})"
    return None


def netns_down() -> None:
    for ns in (NS_MOB, NS_EDGE):
        sh("ip", "netns", "del", ns, check=False)


def shape(link: LinkSpec) -> None:
    """tbf on each side's egress: the phone's uplink and the edge's downlink."""
    for ns, dev, mbps in ((NS_MOB, "dnsb-m", link.up_mbps), (NS_EDGE, "dnsb-e", link.down_mbps)):
        burst = max(3000, int(mbps * 1e6 / 8 * 0.002))  # 2 ms of traffic, at least two packets
        sh(
            "tc",
            "-n",
            ns,
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            f"{mbps}mbit",
            "burst",
            str(burst),
            "limit",
            str(4 * 1024 * 1024),
        )


def tbf_sweep(model: str, dirs: dict[str, Path], requests: int, budget_s: float) -> list[dict[str, Any]]:
    token = secrets.token_hex(8)
    rows = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    me = str(Path(__file__).resolve())
    for preset, directory in dirs.items():
        link = NETWORK_PRESETS[preset]
        shape(link)
        plan = load_plan(Manifest.load(directory).origin["plan"])
        predictor = Predictor(plan, emulate=True)
        for config in ("plan", "all-edge"):
            manifest = Manifest.load(directory)
            remote = config == "all-edge" or len(route.local_prefix(manifest)) < len(manifest.segments)
            server = None
            if remote:
                server = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        NS_EDGE,
                        sys.executable,
                        me,
                        "--serve",
                        str(directory),
                        "--segments",
                        "all" if config == "all-edge" else "edge",
                        "--token",
                        token,
                    ],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            try:
                proc = subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        NS_MOB,
                        sys.executable,
                        me,
                        "--tbf-client",
                        str(directory),
                        "--config",
                        config,
                        "--rtt",
                        str(link.rtt_ms),
                        "--token",
                        token,
                        "--requests",
                        str(requests),
                        "--budget",
                        str(budget_s),
                        "--slowdown",
                        str(predictor.run_scale(plan.problem.tiers[0])),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            finally:
                if server is not None:
                    server.terminate()
                    server.wait(timeout=30)
            measured = json.loads(proc.stdout.strip().splitlines()[-1])
            predicted = predictor.predict(config, link)
            p50 = statistics.median(measured["totals"])
            compute = measured["compute_p50"]
            calibrated = predicted.latency_ms - sum(predicted.compute_ms) + compute
            rows.append(
                {
                    "model": model,
                    "preset": preset,
                    "link": "tbf",
                    "config": config,
                    "requests": len(measured["totals"]),
                    "p50_ms": p50,
                    "p95_ms": float(np.percentile(measured["totals"], 95)),
                    "predicted_ms": predicted.latency_ms,
                    "error": p50 / predicted.latency_ms - 1,
                    "calibrated_ms": calibrated,
                    "calibrated_error": p50 / calibrated - 1,
                    "stages_p50": measured["stages_p50"],
                    "fallbacks": measured["fallbacks"],
                }
            )
            print(
                f"  tbf {model} {preset} {config}: p50 {p50:.1f} ms, predicted {predicted.latency_ms:.1f} "
                f"({pct(rows[-1]['error'])}), calibrated {pct(rows[-1]['calibrated_error'])}",
                flush=True,
            )
    return rows


def tbf_client(args: argparse.Namespace) -> None:
    """Inside the phone's namespace: requests over the shaped link, the RTT added here (no netem)."""

    directory = Path(args.tbf_client)
    url = f"http://{EDGE_IP}:{PORT}"
    manifest = Manifest.load(directory)
    remote = args.config == "all-edge" or len(route.local_prefix(manifest)) < len(manifest.segments)
    if remote:
        wait_healthy(url, 120)
    rtt_only = LinkSpec(up_mbps=1e5, down_mbps=1e5, rtt_ms=args.rtt, radio=None, name="rtt")
    client = CollaborativeClient(
        directory,
        url if remote else None,
        token=args.token,
        link=rtt_only,
        timeout_s=600,
        slowdown=args.slowdown,
        threads=2,
        split_at=0 if args.config == "all-edge" else None,
    )
    x = np.random.default_rng(0).standard_normal(manifest.input.shape).astype(np.float32)
    client.infer(x, emulate=False)
    results, start = [], time.monotonic()
    for i in range(args.requests):
        if i >= 3 and time.monotonic() - start > args.budget:
            break
        results.append(client.infer(x))
    stages = {
        k: statistics.median(getattr(r.stages, k) for r in results)
        for k in ("mobile_ms", "upload_ms", "remote_ms", "return_ms")
    }
    compute = statistics.median(
        r.stages.mobile_ms + sum(r.stages.remote_compute_ms.values()) for r in results
    )
    print(
        json.dumps(
            {
                "totals": [r.stages.total_ms for r in results],
                "stages_p50": stages,
                "compute_p50": compute,
                "fallbacks": sum(1 for r in results if r.fallback),
            }
        )
    )


def serve_helper(args: argparse.Namespace) -> None:
    """Inside the edge's namespace: the tier's segments (or all of them, for all-edge) on EDGE_IP."""
    from dnnsplit.runtime.server import ServeSettings, TierService, run_server

    directory = Path(args.serve)
    manifest = Manifest.load(directory)
    everything = tuple(range(len(manifest.segments))) if args.segments == "all" else None
    settings = ServeSettings(
        tier="edge", segments=everything, host=EDGE_IP, port=PORT, token=args.token, threads=2
    )
    run_server(TierService(manifest, directory, settings))


# -- overhead per hop and load: separate server processes on loopback ---------------------------------------
def cut_splits(model: str) -> dict[int, Path]:
    """resnet18 split by hand: 1 cut (mobile, edge) and 2 cuts (mobile, edge, cloud), no plan."""
    sys.path.insert(0, str(Path(__file__).parent))
    from split_chain import two_cuts

    from dnnsplit.profiling import prepare_model
    from dnnsplit.splitting.split import SplitSettings, segments_from_cut_lists, split_model

    prepared = prepare_model(f"torchvision:{model}")
    cuts = two_cuts(prepared.graph)
    dirs = {}
    for hops, chosen in ((1, cuts[:1]), (2, cuts)):
        out = WORK / model / f"cuts-{hops}"
        out.parent.mkdir(parents=True, exist_ok=True)  # split refuses a missing parent
        segment_of, tiers = segments_from_cut_lists(prepared.graph, chosen)
        split_model(
            prepared.exported.path,
            prepared.graph,
            segment_of,
            tiers,
            prepared.model_block(),
            {"cuts": chosen},
            out,
            SplitSettings(validate=1, force=True),
        )
        dirs[hops] = out
    return dirs


def start_server(
    directory: Path, tier: str, port: int, next_url: str | None = None, extra: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    import httpx

    cmd = [
        sys.executable,
        "-m",
        "dnnsplit.cli.main",
        "serve",
        str(directory),
        "--tier",
        tier,
        "--port",
        str(port),
        "--threads",
        "2",
    ]
    if next_url:
        cmd += ["--next", next_url]
    cmd += extra
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"server for {tier} did not start")
        time.sleep(0.2)


def overhead(dirs: dict[int, Path], requests: int) -> list[dict[str, Any]]:
    rows = []
    for hops, directory in dirs.items():
        tiers = list(dict.fromkeys(s.tier for s in Manifest.load(directory).segments))[1:]
        procs, url = [], None
        try:
            for k in range(len(tiers) - 1, -1, -1):
                port = 18180 + k
                procs.append(start_server(directory, tiers[k], port, url))
                url = f"http://127.0.0.1:{port}"
            client = CollaborativeClient(directory, url, threads=2)
            x = np.random.default_rng(0).standard_normal(client.manifest.input.shape).astype(np.float32)
            for _ in range(10):
                client.infer(x)
            per_hop, totals, compute = [], [], []
            for _ in range(requests):
                s = client.infer(x).stages
                used = s.mobile_ms + sum(s.remote_compute_ms.values())
                per_hop.append((s.total_ms - used) / hops)
                totals.append(s.total_ms)
                compute.append(used)
            rows.append(
                {
                    "hops": hops,
                    "requests": requests,
                    "overhead_per_hop_p50_ms": statistics.median(per_hop),
                    "overhead_per_hop_p95_ms": float(np.percentile(per_hop, 95)),
                    "total_p50_ms": statistics.median(totals),
                    "compute_p50_ms": statistics.median(compute),
                    "boundary_bytes": s.up_bytes,
                }
            )
            print(
                f"  overhead {hops} hop(s): {rows[-1]['overhead_per_hop_p50_ms']:.2f} ms/hop p50", flush=True
            )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    return rows


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(directory: Path, clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    from dnnsplit.runtime.wire import CONTENT_TYPE, encode

    manifest = Manifest.load(directory)
    proc = start_server(directory, "edge", 18190)
    url = "http://127.0.0.1:18190/v1/infer"
    rng = np.random.default_rng(0)
    boundary = route.crossing(manifest, 1)
    body = encode(
        {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in boundary},
        {"manifest": route.digest(manifest)},
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_rss() -> None:
        start = time.monotonic()
        while not stop.wait(1.0):
            samples.append((time.monotonic() - start, rss_mb(proc.pid)))

    async def run() -> tuple[list[float], dict[str, int]]:
        latencies: list[float] = []
        errors: dict[str, int] = {}
        end = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:

            async def one_client() -> None:
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    try:
                        answer = await http.post(url, content=body, headers={"content-type": CONTENT_TYPE})
                        if answer.status_code == 200:
                            latencies.append((time.perf_counter() - t0) * 1000)
                        else:
                            errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1
                    except httpx.HTTPError as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

            await asyncio.gather(*(one_client() for _ in range(clients)))
        return latencies, errors

    sampler = threading.Thread(target=sample_rss, daemon=True)
    rss_start = rss_mb(proc.pid)
    sampler.start()
    try:
        t0 = time.monotonic()
        latencies, errors = asyncio.run(run())
        wall = time.monotonic() - t0
    finally:
        stop.set()
        sampler.join()
        metrics = httpx.get("http://127.0.0.1:18190/metrics").text
        proc.terminate()
        proc.wait(timeout=60)
    first = [m for t, m in samples if t <= 10]
    last = [m for t, m in samples if t >= seconds - 10]
    result = {
        "clients": clients,
        "seconds": wall,
        "requests_ok": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": statistics.median(latencies),
        "p99_ms": float(np.percentile(latencies, 99)),
        "body_bytes": len(body),
        "rss_mb_before": rss_start,
        "rss_mb_first_10s": statistics.median(first) if first else None,
        "rss_mb_last_10s": statistics.median(last) if last else None,
        "rss_mb_max": max(m for _, m in samples),
        "server_counted_200": sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("dnnsplit_requests_total") and 'status="200"' in line
        ),
    }
    print(
        f"  load: {result['throughput_rps']:.1f} req/s, p99 {result['p99_ms']:.0f} ms, errors {errors}, "
        f"RSS {result['rss_mb_first_10s']:.0f} -> {result['rss_mb_last_10s']:.0f} MB",
        flush=True,
    )
    return result


# -- load under a slow-client attack (issue 23) ----------------------------------------------------------------
ATTACKS = ("headers", "body", "idle")


async def _attacker(port: int, kind: str, body_bytes: int, end: float, held: list[float]) -> None:
    """One slow client, again and again: it trickles its headers (a header line a second), or its body (a
    byte a second after honest headers), or connects and says nothing; when the server drops it, it comes
    back 0.1 s later. ``held``: how long each connection lasted."""
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            if kind == "body":
                writer.write(
                    b"POST /v1/infer HTTP/1.1\r\nhost: edge\r\ncontent-type: application/vnd.safetensors\r\n"
                    b"content-length: %d\r\n\r\n" % body_bytes
                )
            elif kind == "headers":
                writer.write(b"POST /v1/infer HTTP/1.1\r\nhost: edge\r\n")
            while time.monotonic() < end:
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(4096), 1.0)
                    break  # answered (408) or closed: dropped
                except TimeoutError:
                    pass
                if kind == "body":
                    writer.write(b"x")
                elif kind == "headers":
                    writer.write(b"x-slow: 1\r\n")
            else:
                continue  # still held when the attack ended: not a drop
            held.append(time.monotonic() - start)
        except OSError:
            held.append(time.monotonic() - start)
        finally:
            writer.close()
        await asyncio.sleep(0.1)


def _attack_process(port: int, attackers: int, body_bytes: int, seconds: float, results: Any) -> None:
    """The slow clients in a process of their own: their event loop does not slow the honest clients'."""

    async def run() -> dict[str, list[float]]:
        end = time.monotonic() + seconds
        held: dict[str, list[float]] = {kind: [] for kind in ATTACKS}
        kinds = [ATTACKS[k % len(ATTACKS)] for k in range(attackers)]
        await asyncio.gather(*(_attacker(port, kind, body_bytes, end, held[kind]) for kind in kinds))
        return held

    results.put(asyncio.run(run()))


def attack(
    directory: Path, clients: int, attackers: int, seconds: float, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The load test's honest clients, with ``attackers`` slow clients and a /healthz probe (a new
    connection every 0.1 s, as a health checker makes) alongside, against one `serve` with default limits
    (plus ``extra`` flags)."""
    import httpx

    from dnnsplit.runtime.wire import CONTENT_TYPE, encode

    manifest = Manifest.load(directory)
    port = 18191
    proc = start_server(directory, "edge", port, extra=extra)
    url = f"http://127.0.0.1:{port}"
    boundary = route.crossing(manifest, 1)
    rng = np.random.default_rng(0)
    body = encode(
        {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in boundary},
        {"manifest": route.digest(manifest)},
    )
    fds: list[int] = []

    async def run() -> dict[str, Any]:
        end = time.monotonic() + seconds
        latencies: list[float] = []
        errors: dict[str, int] = {}
        health: list[float] = []
        health_failures: dict[str, int] = {}

        async def honest(http: httpx.AsyncClient) -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    answer = await http.post(
                        f"{url}/v1/infer", content=body, headers={"content-type": CONTENT_TYPE}
                    )
                    if answer.status_code == 200:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        async def probe() -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    async with httpx.AsyncClient(timeout=5) as fresh:  # a new connection each time
                        status = (await fresh.get(f"{url}/healthz")).status_code
                    if status == 200:
                        health.append((time.perf_counter() - t0) * 1000)
                    else:
                        health_failures[str(status)] = health_failures.get(str(status), 0) + 1
                except httpx.HTTPError as exc:
                    health_failures[type(exc).__name__] = health_failures.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.1)

        async def count_fds() -> None:
            while time.monotonic() < end:
                fds.append(len(os.listdir(f"/proc/{proc.pid}/fd")))
                await asyncio.sleep(1.0)

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            await asyncio.gather(probe(), count_fds(), *(honest(http) for _ in range(clients)))
        return {
            "latencies": latencies,
            "errors": errors,
            "health": health,
            "health_failures": health_failures,
        }

    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    settle = min(5.0, seconds / 4) if attackers else 0.0  # the slow clients get in first
    slow = context.Process(target=_attack_process, args=(port, attackers, len(body), seconds + settle, queue))
    try:
        slow.start()
        time.sleep(settle)
        t0 = time.monotonic()
        got = asyncio.run(run())
        wall = time.monotonic() - t0
        got["held"] = queue.get(timeout=120)
        slow.join(timeout=30)
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        if slow.is_alive():
            slow.terminate()
        proc.terminate()
        proc.wait(timeout=60)
    dropped = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("dnnsplit_dropped_connections_total")
    }
    latencies, health = got["latencies"], got["health"]
    result = {
        "clients": clients,
        "attackers": attackers,
        "attack_kinds": list(ATTACKS),
        "flags": list(extra),
        "seconds": wall,
        "body_bytes": len(body),
        "requests_ok": len(latencies),
        "errors": got["errors"],
        "throughput_rps": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
        "healthz_probes": len(health) + sum(got["health_failures"].values()),
        "healthz_ok": len(health),
        "healthz_failures": got["health_failures"],
        "healthz_p50_ms": statistics.median(health) if health else None,
        "healthz_p99_ms": float(np.percentile(health, 99)) if health else None,
        "healthz_max_ms": max(health) if health else None,
        "attacker_connections_dropped": {k: len(v) for k, v in got["held"].items()},
        "attacker_hold_median_s": {k: statistics.median(v) if v else None for k, v in got["held"].items()},
        "server_dropped": dropped,
        "server_fds_max": max(fds) if fds else None,
        "load_average": list(os.getloadavg()),
    }
    print(
        f"  attack ({attackers} slow clients{', ' + ' '.join(extra) if extra else ''}): "
        f"{result['throughput_rps']:.1f} req/s, errors {result['errors'] or 'none'}, healthz "
        f"{result['healthz_ok']}/{result['healthz_probes']} p99 {result['healthz_p99_ms']} ms, "
        f"dropped {dropped}",
        flush=True,
    )
    return result


# -- the report -----------------------------------------------------------------------------------------------
def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Collaborative runtime: measured vs predicted, overhead, load",
        "",
        f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; other work may have shared the "
        "CPU (timed sections ran under a lock the other benchmarks take, not every process does).",
        "",
        "Plans: `dnnsplit plan profile.json --network PRESET --device edge=host` on a profile taken right "
        "before each model's sweep (phone = mobile-web, 6x the "
        "host, emulated by stretching its compute 6x; the edge = this machine). Prediction = the planner's "
        "cost model for the same link; *calibrated* = the same link model with the run's measured compute. "
        f"Target: |error| <= {TARGET:.0%}.",
        "",
        "## Measured p50 vs prediction",
        "",
        "| model | preset | link | config | plan | n | p50 ms | p95 ms | predicted ms | error | calibrated error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["sweep"]:
        ok = "" if r["error"] is None or abs(r["error"]) <= TARGET else " **miss**"
        lines.append(
            f"| {r['model']} | {r['preset']} | {r['link']} | {r['config']} | {r.get('plan_tiers', '')} | "
            f"{r['requests']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['predicted_ms']:.1f} | "
            f"{pct(r['error'])}{ok} | {pct(r['calibrated_error'])} |"
        )
    held = [r for r in data["sweep"] if r["error"] is not None and abs(r["error"]) <= TARGET]
    lines += [
        "",
        f"Within {TARGET:.0%}: {len(held)} of {len(data['sweep'])} rows.",
        "",
        "A row whose *calibrated* error is small but whose error is large missed because this machine ran "
        "the model at another speed than when it was profiled, not because of the runtime or the link "
        "model: this shared VM's speed moves with other tenants' memory traffic from one minute to the "
        "next (mobilenet_v3_small between ~1.05 and ~1.9 ms on the host, stretched 6x for the phone), "
        "even with the profile taken right before the model's sweep.",
        "",
    ]
    if data.get("tbf_skipped"):
        lines += [f"tbf link: skipped ({data['tbf_skipped']}).", ""]
    lines += [
        "## Runtime overhead per hop (no link emulation, servers in their own processes)",
        "",
        "| hops | requests | boundary | end-to-end p50 ms | compute p50 ms | overhead/hop p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["overhead"]:
        lines.append(
            f"| {r['hops']} | {r['requests']} | {r['boundary_bytes'] / 1e3:.0f} kB | {r['total_p50_ms']:.2f} | "
            f"{r['compute_p50_ms']:.2f} | {r['overhead_per_hop_p50_ms']:.2f} | "
            f"{r['overhead_per_hop_p95_ms']:.2f} |"
        )
    if data.get("load"):
        ld = data["load"]
        lines += [
            "",
            f"## Load: {ld['clients']} concurrent clients for {ld['seconds']:.0f} s, one edge server",
            "",
            f"- requests answered: {ld['requests_ok']} ({ld['throughput_rps']:.1f} req/s), errors: "
            f"{ld['errors'] or 'none'}; the server counted {ld['server_counted_200']:.0f} answers 200",
            f"- latency p50 {ld['p50_ms']:.0f} ms, p99 {ld['p99_ms']:.0f} ms (32 requests queue for 2 cores)",
            f"- server RSS: {ld['rss_mb_before']:.0f} MB before, {ld['rss_mb_first_10s']:.0f} MB (median, first "
            f"10 s), {ld['rss_mb_last_10s']:.0f} MB (median, last 10 s), max {ld['rss_mb_max']:.0f} MB",
        ]
    for at in data.get("attack") or []:
        lines += attack_markdown(at)
    lines += ["", "Reproduce: `flock /tmp/dnnsplit-timing.lock python benchmarks/runtime_bench.py`", ""]
    if data.get("attack"):
        lines += ["The slow-client attack alone: `python benchmarks/runtime_bench.py --attack`.", ""]
    return "\n".join(lines)


def attack_markdown(at: dict[str, Any]) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    flags = f" with `{' '.join(at['flags'])}`" if at["flags"] else ", default limits"
    load = ", ".join(f"{x:.2f}" for x in at["load_average"])
    if not at["attackers"]:
        return [
            "",
            f"## Control: {at['clients']} honest clients, no slow ones, for {at['seconds']:.0f} s, right "
            "before the attack runs below",
            "",
            f"- honest requests answered: {at['requests_ok']} ({at['throughput_rps']:.1f} req/s), errors: "
            f"{at['errors'] or 'none'}; latency p50 {ms(at['p50_ms'])} ms, p99 {ms(at['p99_ms'])} ms",
            f"- /healthz: {at['healthz_ok']} of {at['healthz_probes']} probes answered 200, p50 "
            f"{ms(at['healthz_p50_ms'])} ms, p99 {ms(at['healthz_p99_ms'])} ms, max {ms(at['healthz_max_ms'])} ms",
            f"- load average at the end: {load} (2 cores, shared): compare the runs under attack with this "
            "control, taken minutes before them, rather than with the load section above, which ran on a "
            "quieter machine",
        ]
    held = ", ".join(f"{k} {v:.1f} s" for k, v in at["attacker_hold_median_s"].items() if v is not None)
    dropped = ", ".join(f"{k} {v:.0f}" for k, v in sorted(at["server_dropped"].items())) or "none"
    return [
        "",
        f"## Load under a slow-client attack: {at['clients']} honest clients and {at['attackers']} slow ones "
        f"for {at['seconds']:.0f} s{flags}",
        "",
        f"Slow clients, a third each: headers trickled (a header line a second, never the blank line), a body "
        f"trickled a byte a second after honest headers (Content-Length {at['body_bytes']}), or "
        "a connection that says nothing; each comes back 0.1 s after the server drops it. A health checker "
        "probes /healthz on a new connection every 0.1 s. The slow clients run in a process of their own, "
        "started 5 s before the honest ones.",
        "",
        f"- honest requests answered: {at['requests_ok']} ({at['throughput_rps']:.1f} req/s), errors: "
        f"{at['errors'] or 'none'}; latency p50 {ms(at['p50_ms'])} ms, p99 {ms(at['p99_ms'])} ms",
        f"- /healthz: {at['healthz_ok']} of {at['healthz_probes']} probes answered 200 (failures: "
        f"{at['healthz_failures'] or 'none'}), p50 {ms(at['healthz_p50_ms'])} ms, p99 "
        f"{ms(at['healthz_p99_ms'])} ms, max {ms(at['healthz_max_ms'])} ms",
        f"- slow connections dropped by the server: {dropped}; a slow connection lasted (median) {held}",
        f"- server file descriptors: at most {at['server_fds_max']}; load average at the end: {load} "
        "(2 cores, shared)",
    ]


def attacks(directory: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        attack(directory, 32, 0, args.attack_seconds),  # the control: the same minutes, no slow clients
        attack(directory, 32, args.attackers, args.attack_seconds),
        # A cap well under the attackers: each newcomer evicts the connection waiting longest on its client.
        attack(directory, 32, args.attackers, args.attack_seconds, ("--max-connections", "128")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--skip-tbf", action="store_true")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--tbf-client")
    parser.add_argument("--serve")
    parser.add_argument("--segments", default="edge")
    parser.add_argument("--config", default="plan")
    parser.add_argument("--rtt", type=float, default=0.0)
    parser.add_argument("--token")
    parser.add_argument("--slowdown", type=float, default=1.0)
    parser.add_argument(
        "--attack",
        action="store_true",
        help="only the load test under a slow-client attack; added to the existing results",
    )
    parser.add_argument("--attackers", type=int, default=300)
    parser.add_argument("--attack-seconds", type=float, default=40.0)
    args = parser.parse_args()
    if args.attack:
        from _common import RESULTS

        data = json.loads((RESULTS / "runtime.json").read_text())
        directory = WORK / "resnet18" / "cuts-1"
        if not (directory / "manifest.yaml").is_file():
            directory = cut_splits("resnet18")[1]
        data["attack"] = attacks(directory, args)
        write_results("runtime", data, markdown(data))
        return
    if args.tbf_client:
        args.requests = args.requests
        tbf_client(args)
        return
    if args.serve:
        serve_helper(args)
        return
    data: dict[str, Any] = {"machine": machine(), "sweep": [], "overhead": [], "load": None}
    models = [m for m in args.models.split(",") if m]
    for model in models:
        data["sweep"] += emulated_sweep(model, prepare(model), args.requests, args.budget)
    if not args.skip_tbf:
        why = netns_up()
        if why:
            print(f"tbf link skipped: {why}")
            data["tbf_skipped"] = why
        else:
            try:
                for model in models:
                    data["sweep"] += tbf_sweep(model, prepare(model), args.requests, args.budget)
            finally:
                netns_down()
    else:
        data["tbf_skipped"] = "--skip-tbf"
    dirs = cut_splits("resnet18")
    data["overhead"] = overhead(dirs, 200)
    if args.load_seconds > 0:
        data["load"] = load(dirs[1], 32, args.load_seconds)
    if args.attackers > 0 and args.attack_seconds > 0:
        data["attack"] = attacks(dirs[1], args)
    write_results("runtime", data, markdown(data))


if __name__ == "__main__":
    main()
