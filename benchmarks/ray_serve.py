"""Ray Serve against the single-process server (issue 21): resnet18's edge and cloud segments on loopback.

Closed-loop clients (8 / 32 / 64) post the edge's boundary to ``/v1/infer`` and wait for the logits:
throughput, p50/p99 and errors for
* ``single``: the single-process servers (`dnnsplit serve --tier cloud`, `--tier edge --next`), 2 threads each;
* ``ray-1``, ``ray-2``: `--engine ray` with 1 or 2 replicas per tier (each tier's replicas hold 2 CPUs
  together, as the single-process servers' 2 threads do), ``ray-1-batch``, ``ray-2-batch`` with
  ``@serve.batch`` (``--batch-wait-ms``);
run in turns (every configuration is up at once; Ray's side by side under route prefixes of one proxy),
PSS per replica, cold start (`dnnsplit serve` to the first 200 of /healthz) and the fault test: one edge
replica's worker process is killed (SIGKILL) in the middle of a run; clients retry a failed request, then
answer it locally (the remaining segments in the client, as `dnnsplit infer` does): failed, retried,
answered locally, lost (must be 0).

Floor: with batching Ray serves >= 1.5x the single-process throughput at 32 clients, p99 <= 2x its p99,
zero errors over 60 s, zero lost in the fault test. Writes docs/benchmarks/ray.{md,json}.

    python benchmarks/ray_serve.py [--floor-seconds 60] [--seconds 20] [--rounds 2] [--clients 8,32,64]
    python benchmarks/ray_serve.py --wait-probe 5,50 --seconds 30   # how full batches get, into ray.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, run_cli, write_results

from dnnsplit.runtime import route
from dnnsplit.splitting.manifest import Manifest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_bench import start_server  # noqa: E402
from split_chain import two_cuts  # noqa: E402

WORK = ROOT / "out" / "ray-bench"
PROXY_PORT, CLOUD_PORT, EDGE_PORT, COLD_PORT = 18300, 18301, 18302, 18303
CPUS_PER_TIER = 2  # what the single-process servers get: --threads 2 each
BATCH_WAIT_MS = 5.0
MAX_BATCH = 8
RAY_CONFIGS = {
    "ray-1": (1, 0.0),
    "ray-2": (2, 0.0),
    "ray-1-batch": (1, BATCH_WAIT_MS),
    "ray-2-batch": (2, BATCH_WAIT_MS),
}
FLOOR_CLIENTS = 32


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def make_split() -> Path:
    """resnet18 cut at 1/3 and 2/3 of its layers by `dnnsplit split`: mobile, edge, cloud."""
    from dnnsplit.profiling import prepare_model

    out = WORK / "resnet18"
    if (out / "manifest.yaml").is_file():  # an earlier run's split (the same cuts of the same model)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cuts = two_cuts(prepare_model("torchvision:resnet18").graph)
    args = ["split", "torchvision:resnet18", "--output", str(out), "--force", "--validate", "1"]
    for cut in cuts:
        args += ["--cut", ",".join(cut)]
    run_cli(args)
    return out


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_healthy(url: str, deadline_s: float = 300) -> float:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def cold_starts(directory: Path) -> dict[str, float]:
    """Seconds from starting `dnnsplit serve` to the first 200 of /healthz, for each engine (Ray: a fresh
    local instance, both tiers deployed). Run before the benchmark's own Ray instance exists."""
    result = {}
    for engine in ("uvicorn", "ray"):
        cmd = [sys.executable, "-m", "dnnsplit.cli.main", "serve", str(directory), "--tier", "edge"]
        cmd += ["--port", str(COLD_PORT), "--engine", engine]
        if engine == "ray":
            cmd += ["--ray-cpus", "2", "--replica-cpus", "1"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        try:
            wait_healthy(f"http://127.0.0.1:{COLD_PORT}")
            result[engine] = time.monotonic() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        if engine == "ray":
            ready = [line for line in err.splitlines() if "Ray Serve" in line]
            print(f"  cold start {engine}: {result[engine]:.1f} s ({ready[-1] if ready else err[-300:]})")
        else:
            print(f"  cold start {engine}: {result[engine]:.1f} s")
    return result


def batched_limit(directory: Path, seconds: float = 10.0) -> dict[str, float]:
    """The edge + cloud segments in onnxruntime without HTTP, 2 threads: samples/s at batch 1 and 8."""
    from dnnsplit.splitting.chain import SegmentChain

    manifest = Manifest.load(directory)
    indices = tuple(range(len(route.local_prefix(manifest)), len(manifest.segments)))
    chain = SegmentChain(manifest, directory, CPUS_PER_TIER, indices)
    boundary = route.crossing(manifest, indices[0])
    rng = np.random.default_rng(0)
    out = {}
    for batch in (1, MAX_BATCH):
        tensors = {t.name: rng.standard_normal((batch, *t.shape[1:])).astype(t.dtype) for t in boundary}
        chain.run_segments(dict(tensors), indices)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            chain.run_segments(dict(tensors), indices)
            done += batch
        out[f"batch_{batch}_samples_per_s"] = done / (time.perf_counter() - start)
    return out


class Ray:
    """The benchmark's Ray instance: every Ray configuration deployed side by side under /NAME."""

    def __init__(self, directory: Path) -> None:
        from dnnsplit.runtime.ray_app import start_ray
        from dnnsplit.runtime.ray_config import RaySettings

        self.directory = directory
        cpus = sum(CPUS_PER_TIER * 2 for _ in RAY_CONFIGS)  # logical: what the replicas ask for
        start_ray(["edge", "cloud"], RaySettings(local_cpus=cpus), object_store_memory=400 * 1024 * 1024)
        self.deploy_s: dict[str, float] = {}

    def deploy_all(self) -> dict[str, str]:
        from dnnsplit.runtime.ray_app import deploy, serve_url
        from dnnsplit.runtime.ray_config import RaySettings
        from dnnsplit.runtime.server import ServeSettings

        urls = {}
        for name, (replicas, wait) in RAY_CONFIGS.items():
            settings = ServeSettings(tier="edge", port=PROXY_PORT, max_batch=MAX_BATCH)
            ray_settings = RaySettings(
                replicas=replicas, batch_wait_ms=wait, replica_cpus=CPUS_PER_TIER / replicas
            )
            self.deploy_s[name] = deploy(self.directory, settings, ray_settings, name, f"/{name}")
            urls[name] = f"{serve_url()}/{name}"
            print(f"  deployed {name} in {self.deploy_s[name]:.1f} s", flush=True)
        return urls

    @staticmethod
    def replicas(app: str) -> dict[str, list[int]]:
        """Live replica worker PIDs of ``app`` by tier, from their process titles (``ray::ServeReplica:APP:TIER``;
        Ray's state API needs the dashboard, which this instance goes without)."""
        found: dict[str, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            match = re.search(r"ServeReplica:([^:\s]+):(\w+)", title)
            if match and match.group(1) == app:
                found.setdefault(match.group(2), []).append(int(proc.name))
        return found

    def shutdown(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def boundary_body(directory: Path) -> bytes:
    from dnnsplit.runtime.wire import encode

    manifest = Manifest.load(directory)
    rng = np.random.default_rng(0)
    first = len(route.local_prefix(manifest))
    return encode(
        {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in route.crossing(manifest, first)},
        {"manifest": route.digest(manifest)},
    )


async def closed_loop(
    url: str, body: bytes, clients: int, seconds: float, retries: int = 0, local: Any = None,
    during: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """``clients`` loops posting ``body`` for ``seconds``. A failed attempt is retried up to ``retries``
    times, then answered by ``local()`` when given; a request neither answered nor answered locally is
    lost."""
    import aiohttp

    from dnnsplit.runtime.wire import CONTENT_TYPE

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"failed_attempts": 0, "retried": 0, "answered_locally": 0, "lost": 0}
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one_client() -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                answered = False
                for attempt in range(retries + 1):
                    if attempt:
                        counts["retried"] += 1
                        await asyncio.sleep(0.05 * attempt)
                    try:
                        async with http.post(
                            f"{url}/v1/infer", data=body, headers={"content-type": CONTENT_TYPE}
                        ) as answer:
                            await answer.read()
                            status = answer.status
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        status = type(exc).__name__
                    if status == 200:
                        answered = True
                        break
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    counts["failed_attempts"] += 1
                if not answered and local is not None:
                    await asyncio.to_thread(local)
                    counts["answered_locally"] += 1
                    answered = True
                if answered:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    counts["lost"] += 1

        tasks = [one_client() for _ in range(clients)]
        if during is not None:
            tasks.append(during())
        start = time.monotonic()
        await asyncio.gather(*tasks)
        wall = time.monotonic() - start
    return {
        "clients": clients,
        "seconds": wall,
        "answered": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
        **counts,
    }


def run_one(name: str, url: str, body: bytes, clients: int, seconds: float, round_: int) -> dict[str, Any]:
    before = load_average()
    row = asyncio.run(closed_loop(url, body, clients, seconds))
    row.update({"config": name, "round": round_, "load_before": before, "load_after": load_average()})
    print(
        f"  [{round_}] {name:12s} {clients:3d} clients {seconds:.0f} s: {row['throughput_rps']:6.1f} req/s "
        f"p50 {row['p50_ms'] or 0:6.0f} p99 {row['p99_ms'] or 0:6.0f} ms errors {row['errors']} "
        f"load {row['load_after']}",
        flush=True,
    )
    return row


def fault_test(ray: Ray, url: str, directory: Path, body: bytes, seconds: float) -> dict[str, Any]:
    """Kill one edge replica's worker (SIGKILL) a third into a run; clients retry, then answer locally."""
    from dnnsplit.runtime.wire import decode
    from dnnsplit.splitting.chain import SegmentChain

    manifest = Manifest.load(directory)
    remote = tuple(range(len(route.local_prefix(manifest)), len(manifest.segments)))
    chain = SegmentChain(manifest, directory, 1, remote)
    tensors, _ = decode(body)

    def local() -> None:
        chain.run_segments(dict(tensors), remote)

    app = url.rsplit("/", 1)[1]
    before = ray.replicas(app)
    victim = before["edge"][0]
    event: dict[str, Any] = {"killed_pid": victim, "edge_replicas_before": len(before["edge"])}

    async def kill_then_watch() -> None:
        await asyncio.sleep(seconds / 3)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        event["killed_at_s"] = round(seconds / 3, 1)
        while time.monotonic() - killed < seconds:
            edges = await asyncio.to_thread(lambda: ray.replicas(app).get("edge", []))
            if len(edges) == len(before["edge"]) and victim not in edges:
                event["replaced_after_s"] = time.monotonic() - killed
                return
            await asyncio.sleep(0.5)

    row = asyncio.run(closed_loop(url, body, FLOOR_CLIENTS, seconds, retries=2, local=local, during=kill_then_watch))
    row.update(event)
    row.update({"config": app, "load_after": load_average()})
    print(
        f"  fault ({app}, killed {victim}): answered {row['answered']}, failed attempts {row['failed_attempts']}, "
        f"retried {row['retried']}, answered locally {row['answered_locally']}, lost {row['lost']}, "
        f"replaced after {row.get('replaced_after_s', float('nan')):.1f} s",
        flush=True,
    )
    return row


def batch_stats(url: str) -> dict[str, int] | None:
    import httpx

    return httpx.get(f"{url}/v1/manifest", timeout=30).json()["served"].get("batching")


def wait_probe(directory: Path, body: bytes, waits: list[float], seconds: float) -> list[dict[str, Any]]:
    """One replica per tier, --batch-wait-ms 0 and each of ``waits``, 32 clients in turns: throughput and
    how many requests a batch of the edge held on average."""
    from dnnsplit.runtime.ray_app import deploy, serve_url
    from dnnsplit.runtime.ray_config import RaySettings
    from dnnsplit.runtime.server import ServeSettings

    ray = Ray(directory)
    try:
        urls = {}
        for wait in [0.0, *waits]:
            name = f"probe-{wait:g}"
            ray_settings = RaySettings(replicas=1, batch_wait_ms=wait, replica_cpus=CPUS_PER_TIER)
            settings = ServeSettings(tier="edge", port=PROXY_PORT, max_batch=MAX_BATCH)
            deploy(directory, settings, ray_settings, name, f"/{name}")
            urls[wait] = f"{serve_url()}/{name}"
        for url in urls.values():
            asyncio.run(closed_loop(url, body, 4, 3.0))
        rows = []
        for wait, url in urls.items():
            before = batch_stats(url)
            row = run_one(f"ray-1 wait {wait:g}", url, body, FLOOR_CLIENTS, seconds, 1)
            after = batch_stats(url)
            row["batch_wait_ms"] = wait
            if before and after and after["batches"] > before["batches"]:
                row["mean_batch_requests"] = (after["requests"] - before["requests"]) / (
                    after["batches"] - before["batches"]
                )
            rows.append(row)
        return rows
    finally:
        ray.shutdown()


def single_pss(procs: dict[str, subprocess.Popen[str]]) -> dict[str, float]:
    return {tier: pss_mb(p.pid) for tier, p in procs.items()}


def ray_pss(ray: Ray) -> dict[str, dict[str, list[float]]]:
    return {
        app: {tier: [pss_mb(pid) for pid in pids] for tier, pids in ray.replicas(app).items()}
        for app in RAY_CONFIGS
    }


def schedule(args: argparse.Namespace) -> list[tuple[int, int, float]]:
    """(round, clients, seconds): the floor's 32 clients in every round at --floor-seconds, the others once."""
    plan = []
    for r in range(1, args.rounds + 1):
        for clients in args.clients:
            if clients == FLOOR_CLIENTS:
                plan.append((r, clients, args.floor_seconds))
            elif r == 1:
                plan.append((r, clients, args.seconds))
    return plan


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    floor = [r for r in rows if r["clients"] == FLOOR_CLIENTS]
    by = {}
    for name in ["single", *RAY_CONFIGS]:
        mine = [r for r in floor if r["config"] == name]
        if mine:
            by[name] = {
                "throughput_rps": [r["throughput_rps"] for r in mine],
                "p99_ms": [r["p99_ms"] for r in mine],
                "errors": sum(sum(r["errors"].values()) for r in mine),
                "seconds": [r["seconds"] for r in mine],
            }
    out: dict[str, Any] = {"at_32_clients": by, "checks": {}}
    single = by.get("single")
    for name in ("ray-1-batch", "ray-2-batch"):
        ray = by.get(name)
        if not single or not ray:
            continue
        ratios = [a / b for a, b in zip(ray["throughput_rps"], single["throughput_rps"], strict=False)]
        p99 = [a / b for a, b in zip(ray["p99_ms"], single["p99_ms"], strict=False)]
        out["checks"][name] = {
            "throughput_ratio_per_round": ratios,
            "throughput_ratio_median": statistics.median(ratios),
            "p99_ratio_per_round": p99,
            "p99_ratio_median": statistics.median(p99),
            "throughput_floor_1_5x": statistics.median(ratios) >= 1.5,
            "p99_floor_2x": statistics.median(p99) <= 2.0,
            "zero_errors": ray["errors"] == 0,
            "runs_of_60_s": all(s >= 59 for s in ray["seconds"]),
        }
    return out


def markdown(data: dict[str, Any]) -> str:
    def f(x: Any, spec: str = ".1f") -> str:
        return "-" if x is None else format(x, spec)

    lines = [
        "# Ray Serve against the single-process server (issue 21)",
        "",
        f"`python benchmarks/ray_serve.py {data['argv']}` on {data['machine']['cpu']} "
        f"({data['machine']['cores']} cores), {data['started']} UTC. resnet18 (224x224, random weights) split by "
        "`dnnsplit split torchvision:resnet18 --cut A --cut B` at 1/3 and 2/3 of its layers; loopback "
        "closed-loop clients post the edge's boundary "
        f"({data['body_bytes'] / 1e3:.0f} kB) and get the logits (edge -> cloud -> back).",
        "",
        "The machine is shared with other agents' jobs: `uptime` before: "
        f"`{data['uptime_before']}`, after: `{data['uptime_after']}`; each row has the 1/5/15-minute load "
        "after its run. Every configuration is up during every run (Ray's apps side by side under route "
        "prefixes of one proxy), and the runs take turns.",
        "",
        "Configurations: `single` = `dnnsplit serve --tier cloud` + `--tier edge --next` (uvicorn, "
        f"`--threads {CPUS_PER_TIER}` each); `ray-N` = `--engine ray --replicas N --replica-cpus {CPUS_PER_TIER}/N` "
        f"(each tier's replicas hold {CPUS_PER_TIER} CPUs together, onnxruntime threads = num_cpus); `-batch`: "
        f"`--batch-wait-ms {BATCH_WAIT_MS:g} --max-batch {MAX_BATCH}`.",
        "",
        f"Durations: the floor rows (32 clients) run {data['floor_seconds']:g} s in each of {data['rounds']} "
        f"round(s); 8 and 64 clients run {data['seconds']:g} s once"
        + (" (shorter than the issue's 60 s, to fit the session)." if data["seconds"] < 60 else "."),
        "",
        "| round | config | clients | s | req/s | p50 ms | p99 ms | errors | load after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        lines.append(
            f"| {r['round']} | {r['config']} | {r['clients']} | {r['seconds']:.0f} | {f(r['throughput_rps'])} | "
            f"{f(r['p50_ms'], '.0f')} | {f(r['p99_ms'], '.0f')} | {sum(r['errors'].values()) or 0} "
            f"{r['errors'] or ''} | {r['load_after']} |"
        )
    s = data["summary"]
    lines += ["", "## Floor (32 clients, batching)", ""]
    lines += ["| config | req/s ratio to single (per round) | p99 ratio (per round) | errors | 1.5x | p99 <= 2x | 60 s runs |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in s["checks"].items():
        lines.append(
            f"| {name} | {c['throughput_ratio_median']:.2f} ({', '.join(f'{x:.2f}' for x in c['throughput_ratio_per_round'])}) "
            f"| {c['p99_ratio_median']:.2f} ({', '.join(f'{x:.2f}' for x in c['p99_ratio_per_round'])}) | "
            f"{'0' if c['zero_errors'] else 'some'} | {'met' if c['throughput_floor_1_5x'] else 'NOT met'} | "
            f"{'met' if c['p99_floor_2x'] else 'NOT met'} | {'yes' if c['runs_of_60_s'] else 'no'} |"
        )
    lim = data["limit"]
    batched = lim[f"batch_{MAX_BATCH}_samples_per_s"]
    best = max((r["throughput_rps"] for r in data["runs"] if r["config"] != "single"), default=0)
    lines += [
        "",
        "## The machine's limit",
        "",
        f"The edge + cloud segments in onnxruntime without HTTP, one process, {CPUS_PER_TIER} threads, "
        f"measured once before the runs: {lim['batch_1_samples_per_s']:.1f} samples/s at batch 1, "
        f"{batched:.1f} at batch {MAX_BATCH}: batching itself gains "
        f"{batched / lim['batch_1_samples_per_s']:.2f}x in compute on this machine. The best Ray row above "
        f"serves {best:.1f} req/s = {best / batched * 100:.0f}% of that batched figure (goal: 80%)."
        + (
            " Above 100% is the contention, not a faster engine: the servers run the two tiers in parallel "
            f"processes ({2 * CPUS_PER_TIER} threads in all) and, on cores other jobs keep busy, more runnable "
            "threads get a larger share of them than the one 2-thread process the limit was measured in."
            if best > batched
            else ""
        ),
    ]
    if "wait_probe" in data:
        lines += [
            "",
            "## How full the batches get (`--wait-probe`)",
            "",
            "One replica per tier, 32 clients, in turns; a batch's size is read from the edge replica's "
            "/v1/manifest (`batching.requests / batching.batches`).",
            "",
            "| --batch-wait-ms | s | req/s | p99 ms | requests per batch | load after |",
            "|---|---|---|---|---|---|",
        ]
        for r in data["wait_probe"]:
            size = r.get("mean_batch_requests")
            lines.append(
                f"| {r['batch_wait_ms']:g} | {r['seconds']:.0f} | {r['throughput_rps']:.1f} | {r['p99_ms']:.0f} | "
                f"{'-' if size is None else f'{size:.2f}'} | {r['load_after']} |"
            )
    if "reading" in data:
        lines += ["", "## Reading", "", data["reading"]]
    budget = 200.0
    fits = [r for r in data["runs"] if r["config"] != "single" and r["p99_ms"] and r["p99_ms"] <= budget]
    if not fits:
        lines += [
            "",
            f"Phones per edge node: no row kept its p99 within {budget:.0f} ms on these shared cores, so no "
            "estimate is given from this run (at 8 clients the best p99 is "
            f"{min(r['p99_ms'] for r in data['runs'] if r['clients'] == min(x['clients'] for x in data['runs'])):.0f} ms).",
        ]
    else:
        top = max(fits, key=lambda r: r["throughput_rps"])
        lines += [
            "",
            f"Phones per edge node, estimated: at a p99 budget of {budget:.0f} ms for the remote part, the best "
            f"row within it ({top['config']}, {top['clients']} clients) serves {top['throughput_rps']:.1f} req/s: "
            f"~{int(top['throughput_rps'])} phones sending one frame per second each, on these 2 shared cores.",
        ]
    fault = data["fault"]
    lines += [
        "",
        "## Fault test",
        "",
        f"{fault['config']}, {fault['clients']} clients for {fault['seconds']:.0f} s; at {fault['killed_at_s']} s "
        f"one edge replica's worker (pid {fault['killed_pid']}) gets SIGKILL. Serve replaced it after "
        f"{f(fault.get('replaced_after_s'))} s. Clients retry a failed request twice, then run the remaining "
        "segments themselves.",
        "",
        "| answered | failed attempts | retried | answered locally | lost | errors by kind |",
        "|---|---|---|---|---|---|",
        f"| {fault['answered']} | {fault['failed_attempts']} | {fault['retried']} | {fault['answered_locally']} | "
        f"**{fault['lost']}** | {fault['errors']} |",
        "",
        "## Memory and cold start",
        "",
        "PSS (MB) per process after the runs: single-process "
        + ", ".join(f"{t} {v:.0f}" for t, v in data["pss_mb"]["single"].items())
        + "; Ray replicas: "
        + "; ".join(
            f"{app}: " + ", ".join(f"{t} " + "/".join(f"{v:.0f}" for v in vs) for t, vs in tiers.items())
            for app, tiers in data["pss_mb"]["ray"].items()
        )
        + " (Ray's controller, proxy, raylet and GCS come on top).",
        "",
        "Cold start, `dnnsplit serve` to the first 200 of /healthz: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in data["cold_start_s"].items())
        + " (Ray: a fresh local instance and both tiers' replicas). Deploying each configuration on the "
        "running instance: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in data["deploy_s"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--floor-seconds", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="runs other than the floor's")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--fault-seconds", type=float, default=45.0)
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument(
        "--wait-probe",
        default="",
        help="only probe batch filling at these --batch-wait-ms (e.g. 5,50), into the existing ray.json",
    )
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite ray.md from ray.json (after editing 'reading')"
    )
    args = parser.parse_args()
    if args.markdown_only or args.wait_probe:
        import json

        from _common import RESULTS

        data = json.loads((RESULTS / "ray.json").read_text())
        if args.wait_probe:
            directory = make_split()
            waits = [float(w) for w in args.wait_probe.split(",")]
            data["wait_probe"] = wait_probe(directory, boundary_body(directory), waits, args.seconds)
            data["wait_probe_argv"] = " ".join(sys.argv[1:])
        write_results("ray", data, markdown(data))
        return
    args.clients = [int(c) for c in args.clients.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    uptime_before = uptime()
    directory = make_split()
    body = boundary_body(directory)
    print(f"split in {directory}; boundary {len(body)} bytes; {uptime_before}", flush=True)
    cold = {} if args.skip_cold_start else cold_starts(directory)
    limit = batched_limit(directory)
    print(f"  limit: {limit}", flush=True)
    procs = {"cloud": start_server(directory, "cloud", CLOUD_PORT)}
    procs["edge"] = start_server(directory, "edge", EDGE_PORT, f"http://127.0.0.1:{CLOUD_PORT}")
    ray = Ray(directory)
    try:
        urls = {"single": f"http://127.0.0.1:{EDGE_PORT}", **ray.deploy_all()}
        for url in urls.values():  # warm every path before timing
            asyncio.run(closed_loop(url, body, 4, 3.0))
        rows = []
        for round_, clients, seconds in schedule(args):
            for name, url in urls.items():
                if clients == FLOOR_CLIENTS and round_ > 1 and name in ("ray-1", "ray-2"):
                    continue  # the floor compares the batched configurations; unbatched once is enough
                rows.append(run_one(name, url, body, clients, seconds, round_))
        pss = {"single": single_pss(procs), "ray": ray_pss(ray)}
        fault = fault_test(ray, urls["ray-2-batch"], directory, body, args.fault_seconds)
    finally:
        ray.shutdown()
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)
    data = {
        "argv": " ".join(sys.argv[1:]),
        "started": started,
        "machine": machine(),
        "uptime_before": uptime_before,
        "uptime_after": uptime(),
        "floor_seconds": args.floor_seconds,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "body_bytes": len(body),
        "runs": rows,
        "summary": summarize(rows),
        "limit": limit,
        "fault": fault,
        "pss_mb": pss,
        "cold_start_s": cold,
        "deploy_s": ray.deploy_s,
    }
    write_results("ray", data, markdown(data))


if __name__ == "__main__":
    main()
