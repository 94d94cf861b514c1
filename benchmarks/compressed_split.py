"""Compressed boundaries (issue 20): does a cut pay once what crosses it is measured, coded and chosen?

Per model (trained on the digits upscaled to SIZE x SIZE with `dnnsplit train`) this
1. profiles it on this machine (2 threads; the phone is mobile-web, 6x the host; the edge is this host),
2. measures every candidate boundary with `dnnsplit boundaries` (bytes mean/p95 per codec none/fp16/int8 x
   identity/zstd/deflate, host encode/decode times, accuracy with the codec at every boundary, the JPEG of
   the frames),
3. per network (cat1, 3g, 4g, 5g, wifi) plans with `--boundaries` (the codec chosen with the cut; the best plan
   per codec is in the plan's `boundary_codec.options`; steady state: `--session-requests 0`, as measured),
4. measures through `serve` / the collaborative client on a tbf-shaped link between two network namespaces
   (RTT added by the client, as benchmarks/runtime_bench.py does): the chosen plan (split following the
   plan's codec, the upload coded as the plan says), all-local (the phone's 6x compute), and all-edge with
   the JPEG frame as input (the JPEG's POST over the shaped link, measured, plus the edge's compute for the
   whole model, measured from Server-Timing: the runtime itself sends tensors, not JPEGs).

Floor: on >= 3 model x network rows a split measured >= 1.5x faster than the best single tier at <= 1 point
accuracy drop. Writes docs/benchmarks/compressed-split.{md,json}. A trained bottleneck (`dnnsplit
bottleneck`) is one more codec the plan weighs (`plan --bottleneck`): `--bottleneck MODEL=LAYER:CHANNELS[:STRIDE]`
trains one (`--bottleneck-epochs`, kept under out/compressed-split/MODEL/ with `--reuse`), `--bottleneck
MODEL=DIR` takes a built one. When the plan chooses it, the split is its model.onnx cut at the int8 code and
the measured row runs that split; all-local and all-edge always run the original model (a plan without it).

    python benchmarks/compressed_split.py [--models resnet18,mobilenet_v3_small,mobilenet_v2] [--size 224]
        [--epochs 1] [--checkpoints DIR] [--requests 5] [--networks cat1,3g,4g,5g,wifi]
        [--bottleneck resnet18=layer1:8 --bottleneck-epochs 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, run_cli, wait_healthy, write_results

from dnnsplit.partition.network import NETWORK_PRESETS, LinkSpec

WORK = ROOT / "out" / "compressed-split"
NS_MOB, NS_EDGE, DEV_MOB, DEV_EDGE = "dncs-mob", "dncs-edge", "dncs-m", "dncs-e"
MOB_IP, EDGE_IP, PORT = "10.78.0.2", "10.78.0.1", 18090
MOBILE_SCALE = 6.0  # mobile-web: the phone runs its segments 6x slower than this host
FLOOR, MAX_DROP = 1.5, 1.0


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


# -- the shaped link: two namespaces of our own, a veth pair, tbf each way -----------------------------------
def netns_up() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs root with ip and tc"
    netns_down()
    try:
        sh("ip", "netns", "add", NS_MOB)
        sh("ip", "netns", "add", NS_EDGE)
        sh("ip", "link", "add", DEV_MOB, "type", "veth", "peer", "name", DEV_EDGE)
        for ns, dev, ip in ((NS_MOB, DEV_MOB, MOB_IP), (NS_EDGE, DEV_EDGE, EDGE_IP)):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if shutil.which("ethtool"):  # one packet per MTU: tbf then shapes what TCP really sends
                sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                   check=False)
    except subprocess.CalledProcessError as exc:
        netns_down()
        return f"cannot create network namespaces ({(exc.stderr or '').strip() or exc})"
    return None


def netns_down() -> None:
    for ns in (NS_MOB, NS_EDGE):
        sh("ip", "netns", "del", ns, check=False)


def shape(link: LinkSpec) -> None:
    for ns, dev, mbps in ((NS_MOB, DEV_MOB, link.up_mbps), (NS_EDGE, DEV_EDGE, link.down_mbps)):
        burst = max(3000, int(mbps * 1e6 / 8 * 0.002))
        sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbps}mbit", "burst",
           str(burst), "limit", str(4 * 1024 * 1024))


# -- preparing a model ---------------------------------------------------------------------------------------
def checkpoint(model: str, size: int, epochs: int, given: Path | None) -> Path:
    work = WORK / model
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{model}.pt"
    source = given / f"{model}.pt" if given else None
    fresh = path.is_file() and source is not None and source.is_file()
    fresh = fresh and path.stat().st_mtime >= source.stat().st_mtime  # type: ignore[union-attr]
    if source is not None and source.is_file() and not fresh:
        shutil.copyfile(source, path)  # a copy: a training still running may rewrite its file
    elif not path.is_file():
        run_cli(["train", f"torchvision:{model}", "--num-classes", "10", "--input-shape", f"1x3x{size}x{size}",
                 "--data", "digits", "--epochs", str(epochs), "--batch-size", "32", "--output", str(path)])
    return path


def measure_model(ckpt: Path, samples: int, accuracy_samples: int, reuse: bool) -> tuple[Path, Path]:
    """profile.json and boundaries.json of ``ckpt`` (``reuse``: kept when newer than the checkpoint)."""
    work = ckpt.parent
    profile, boundaries = work / "profile.json", work / "boundaries.json"

    def fresh(path: Path) -> bool:
        return reuse and path.is_file() and path.stat().st_mtime > ckpt.stat().st_mtime

    if not fresh(profile):
        run_cli(["profile", str(ckpt), "--threads", "2", "--output", str(profile)])
    if not fresh(boundaries):
        run_cli(["boundaries", str(ckpt), "--data", "digits", "--samples", str(samples), "--accuracy-samples",
                 str(accuracy_samples), "--threads", "2", "--output", str(boundaries)])
    return profile, boundaries


def bottleneck_for(model: str, ckpt: Path, args: argparse.Namespace) -> Path | None:
    """The bottleneck directory ``--bottleneck MODEL=...`` names for ``model``: built, or trained here."""
    spec = dict(item.split("=", 1) for item in args.bottleneck).get(model)
    if spec is None:
        return None
    if Path(spec).is_dir():
        return Path(spec)
    at, channels, *stride = spec.split(":")
    out = ckpt.parent / (f"bottleneck-{at}-{channels}" + (f"-s{stride[0]}" if stride else ""))
    fresh = args.reuse and (out / "bottleneck.yaml").is_file()
    fresh = fresh and (out / "bottleneck.yaml").stat().st_mtime > ckpt.stat().st_mtime
    if not fresh:
        run_cli(["bottleneck", str(ckpt), "--at", at, "--channels", channels, "--stride", stride[0] if stride
                 else "1", "--epochs", str(args.bottleneck_epochs), "--threads", "1", "--data", "digits",
                 "--force", "--output", str(out)])
    return out


def plan_for(profile: Path, boundaries: Path, network: str, bottleneck: Path | None = None
             ) -> tuple[Path, dict[str, Any]]:
    path = profile.parent / f"plan-{network}{'' if bottleneck is None else '-bottleneck'}.yaml"
    run_cli(["plan", str(profile), "--boundaries", str(boundaries), "--network", network, "--device",
             "edge=host", "--session-requests", "0", "--max-accuracy-drop", str(MAX_DROP), "--output",
             str(path), "--format", "json", *(["--bottleneck", str(bottleneck)] if bottleneck else [])])
    import yaml

    return path, yaml.safe_load(path.read_text())


def split_for(ckpt: Path, plan: Path, size: int) -> Path:
    """The plan's split; int8 codes calibrated (and the chain validated) on 16 test images of the digits."""
    from dnnsplit.boundaries.measure import split_images

    out = plan.with_suffix("").with_name(plan.stem.replace("plan", "split"))
    inputs = ckpt.parent / "inputs.npy"
    if not inputs.is_file():
        np.save(inputs, split_images("digits", (1, 3, size, size), 16)[0])
    run_cli(["split", str(ckpt), "--plan", str(plan), "--output", str(out), "--inputs", str(inputs),
             "--validate", "16", "--min-agreement", "0.9", "--force"])
    return out


# -- measuring on the shaped link ----------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def measured(directory: Path, config: str, link: LinkSpec, coding: str, requests: int,
             jpeg: bytes | None = None) -> dict[str, Any]:
    token = secrets.token_hex(8)
    me = str(Path(__file__).resolve())
    server = None
    if config != "all-local":
        server = subprocess.Popen(
            ["ip", "netns", "exec", NS_EDGE, sys.executable, me, "--serve", str(directory), "--segments",
             "all" if config == "all-edge" else "edge", "--token", token],
            env=_env(), stderr=subprocess.DEVNULL,
        )
    jpeg_file = None
    if jpeg is not None:
        jpeg_file = directory / "frame.jpg"
        jpeg_file.write_bytes(jpeg)
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", NS_MOB, sys.executable, me, "--client", str(directory), "--config", config,
             "--rtt", str(link.rtt_ms), "--token", token, "--requests", str(requests), "--coding", coding,
             *(["--jpeg", str(jpeg_file)] if jpeg_file else [])],
            env=_env(), capture_output=True, text=True, check=True, timeout=900,
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def client(args: argparse.Namespace) -> None:
    """Inside the phone's namespace: requests over the shaped link (the RTT added here, as no netem)."""
    import httpx

    from dnnsplit.runtime.client import CollaborativeClient
    from dnnsplit.splitting.manifest import Manifest

    directory = Path(args.client)
    url = f"http://{EDGE_IP}:{PORT}"
    manifest = Manifest.load(directory)
    if args.config != "all-local":
        wait_healthy(url)
    rtt_only = LinkSpec(up_mbps=1e5, down_mbps=1e5, rtt_ms=args.rtt, radio=None, name="rtt")
    runner = CollaborativeClient(
        directory,
        None if args.config == "all-local" else url,
        token=args.token,
        link=rtt_only,
        timeout_s=600,
        slowdown=MOBILE_SCALE,
        threads=2,
        split_at=0 if args.config == "all-edge" else (len(manifest.segments) if args.config == "all-local" else None),
        coding=args.coding,
    )
    x = np.random.default_rng(0).standard_normal(manifest.input.shape).astype(np.float32)
    runner.infer(x, emulate=False)
    totals, up, edge = [], [], []
    for _ in range(args.requests):
        r = runner.infer(x)
        if r.fallback:
            raise SystemExit(f"fell back: {r.fallback}")
        totals.append(r.stages.total_ms)
        up.append(r.stages.up_bytes)
        edge.append(sum(r.stages.remote_compute_ms.values()))
    result: dict[str, Any] = {"totals": totals, "up_bytes": statistics.median(up) if up else 0}
    if args.jpeg:  # all-edge with the JPEG frame: its POST over the shaped link + the edge's compute
        body = Path(args.jpeg).read_bytes()
        posts = []
        with httpx.Client(timeout=600) as http:
            for _ in range(args.requests):
                t0 = time.perf_counter()
                time.sleep(args.rtt / 2000)  # the link's rtt/2 up (the client adds it, as CollaborativeClient)
                http.post(f"{url}/v1/infer", content=body, headers={"authorization": f"Bearer {args.token}"})
                time.sleep(args.rtt / 2000)
                posts.append((time.perf_counter() - t0) * 1000)
        compute = statistics.median(edge)
        result = {"totals": [p + compute for p in posts], "up_bytes": len(body), "jpeg_post_ms": posts,
                  "edge_compute_ms": compute}
    print(json.dumps(result))


def serve_helper(args: argparse.Namespace) -> None:
    from dnnsplit.runtime.server import ServeSettings, TierService, run_server
    from dnnsplit.splitting.manifest import Manifest

    directory = Path(args.serve)
    manifest = Manifest.load(directory)
    everything = tuple(range(len(manifest.segments))) if args.segments == "all" else None
    settings = ServeSettings(tier="edge", segments=everything, host=EDGE_IP, port=PORT, token=args.token,
                             threads=2)
    run_server(TierService(manifest, directory, settings))


def jpeg_frame(size: int) -> bytes:
    """A test frame as the phone sends it: a digit upscaled to SIZE x SIZE, JPEG q90 (as `boundaries` does)."""
    from PIL import Image

    from dnnsplit.boundaries.measure import split_images

    images, _ = split_images("digits", (1, 3, size, size), 1)
    from dnnsplit.images import IMAGENET_MEAN, IMAGENET_STD

    x = images[0] * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
    buffer = io.BytesIO()
    Image.fromarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(
        buffer, format="JPEG", quality=90
    )
    return buffer.getvalue()


# -- one model over every network ----------------------------------------------------------------------------
def run_model(model: str, args: argparse.Namespace, tbf: bool, data: dict[str, Any]) -> list[dict[str, Any]]:
    ckpt = checkpoint(model, args.size, args.epochs, Path(args.checkpoints) if args.checkpoints else None)
    profile, boundaries = measure_model(ckpt, args.samples, args.accuracy_samples, args.reuse)
    costs = json.loads(boundaries.read_text())
    frame = jpeg_frame(args.size)
    bottleneck = bottleneck_for(model, ckpt, args)
    coded = None
    if bottleneck is not None:
        import yaml

        coded = yaml.safe_load((bottleneck / "bottleneck.yaml").read_text())
    rows = []
    local, whole = None, None
    for network in args.networks.split(","):
        link = NETWORK_PRESETS[network]
        plain_path, _ = plan_for(profile, boundaries, network)
        path, doc = plan_for(profile, boundaries, network, bottleneck) if bottleneck else (plain_path, _)
        block = doc["boundary_codec"]
        predicted = doc["predicted"]["latency_ms"]
        base = doc["baselines"]
        per_codec: dict[str, dict[str, Any]] = {}
        for o in block["options"]:
            best = per_codec.get(o["codec"])
            if best is None or o["latency_ms"] < best["latency_ms"]:
                per_codec[o["codec"]] = o
        accuracy = next(
            (o["accuracy"] for t in costs["tensors"] for o in t["options"] if o["codec"] == block["codec"]),
            {"drop_points": 0.0, "agreement": 1.0},
        )
        if block["codec"] == "bottleneck" and coded is not None:
            accuracy = coded["accuracy"]
        row: dict[str, Any] = {
            "model": model,
            "network": network,
            "codec": block["codec"],
            "lossless": block["lossless"],
            "layers": doc["predicted"]["layers"],
            "predicted_ms": predicted,
            "predicted_all_local_ms": base["all-mobile"]["latency_ms"],
            "predicted_all_edge_ms": base["all-edge"]["latency_ms"],
            "per_codec": {c: {"lossless": o["lossless"], "latency_ms": o["latency_ms"], "layers": o["layers"]}
                          for c, o in per_codec.items()},
            "accuracy_drop": accuracy["drop_points"],
            "agreement": accuracy["agreement"],
            "predicted_up_bytes": sum(b["bytes"] for b in block["boundaries"]),
            "jpeg_bytes": len(frame),
        }
        if coded is not None:
            weighed = block.get("bottleneck") or {}
            row["bottleneck"] = {
                "directory": str(bottleneck.relative_to(ROOT) if bottleneck.is_relative_to(ROOT) else bottleneck),
                "at": coded["at"],
                "channels": coded["channels"],
                "code_bytes_mean": coded["bytes"]["mean"],
                "code_bytes_p95": coded["bytes"]["p95"],
                "code_under_jpeg": coded["bytes"]["p95"] <= len(frame),
                "drop_points": coded["accuracy"]["drop_points"],
                "agreement": coded["accuracy"]["agreement"],
                "refused": weighed.get("refused"),
                "chosen": bool(weighed.get("chosen")),
            }
        if tbf:
            shape(link)
            split = doc["predicted"]["layers"]
            is_split = split.get("mobile", 0) > 0 and split.get("edge", 0) > 0
            if is_split:
                directory = split_for(ckpt, path, args.size)
                if block["codec"] != "bottleneck":
                    whole = whole or directory
                got = measured(directory, "plan", link, block["lossless"], args.requests)
                row["measured_plan_ms"] = statistics.median(got["totals"])
                row["measured_up_bytes"] = got["up_bytes"]
            # all-local and all-edge run every segment of any split of the original model (a plan without
            # the bottleneck): one split serves every network
            whole = whole or split_for(ckpt, plain_path, args.size)
            if local is None:
                local = measured(whole, "all-local", link, "identity", args.requests)
            row["measured_all_local_ms"] = statistics.median(local["totals"])
            edge = measured(whole, "all-edge", link, "identity", args.requests, jpeg=frame)
            row["measured_all_edge_jpeg_ms"] = statistics.median(edge["totals"])
            row["measured_edge_compute_ms"] = edge["edge_compute_ms"]
            single = min(row["measured_all_local_ms"], row["measured_all_edge_jpeg_ms"])
            if not is_split:
                row["measured_plan_ms"] = single
            row["measured_speedup"] = single / row["measured_plan_ms"]
        rows.append(row)
        data["rows"].append(row)
        data["load_end"] = os.getloadavg()[0]
        write_results(data["results"], data, markdown(data))  # after every row: a cut-short run says so
        print(f"  {model} {network}: {block['codec']}+{block['lossless']} {doc['predicted']['layers']} "
              f"predicted {predicted:.0f} ms; measured {row.get('measured_plan_ms', float('nan')):.0f} ms, "
              f"speed-up {row.get('measured_speedup', float('nan')):.2f}x", flush=True)
    return rows


def markdown(data: dict[str, Any]) -> str:
    rows = data["rows"]
    passing = [r for r in rows if r.get("measured_speedup", 0) >= FLOOR and r["accuracy_drop"] <= MAX_DROP
               and r["layers"].get("mobile", 0) > 0 and r["layers"].get("edge", 0) > 0
               and (r["codec"] != "bottleneck" or r["bottleneck"]["code_under_jpeg"])]
    lines = [
        "# Compressed split (issue 20)",
        "",
        "`python benchmarks/compressed_split.py " + data["args"] + "`",
        "",
        f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores, load average at the start "
        f"{data['load_start']:.1f}, at the end {data['load_end']:.1f} (shared with other tenants: timings drift; "
        "the profile behind the predictions was taken at another moment than the measurement).",
        "",
        "Models trained on the digits upscaled to "
        f"{data['size']}x{data['size']} (`dnnsplit train`, {data['epochs_note']}); phone = mobile-web "
        f"({MOBILE_SCALE:g}x this host, emulated by stretching its compute), edge = this host. Input on the "
        "wire for all-edge: the JPEG q90 of the frame. Plans: `plan --boundaries` (codec chosen with the cut, "
        f"at most {MAX_DROP:g} point accuracy drop, steady state: `--session-requests 0`). Measured: median of "
        f"{data['requests']} requests through `serve` + the collaborative client on a tbf-shaped link "
        "(network namespaces; RTT added by the client). all-edge (JPEG) = the JPEG's POST over the shaped "
        "link, measured, + the edge's measured compute of the whole model.",
        "",
        f"**Floor (>= {FLOOR}x measured over the best single tier, <= {MAX_DROP:g} point drop, on >= 3 rows): "
        f"{'MET' if len(passing) >= 3 else 'NOT MET'}** ({len(passing)} rows).",
        "",
        "| model | network | chosen | layers m/e | predicted ms | best none / fp16 / int8 / bottleneck (predicted) | "
        "measured split ms | all-local ms | all-edge JPEG ms | speed-up | acc. drop | up bytes (JPEG) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pc = r["per_codec"]
        codecs = " / ".join(
            f"{pc[c]['latency_ms']:.0f}" if c in pc else "-" for c in ("none", "fp16", "int8", "bottleneck")
        )
        lm = f"{r['layers'].get('mobile', 0)}/{r['layers'].get('edge', 0)}"
        m = r.get("measured_plan_ms")
        lines.append(
            f"| {r['model']} | {r['network']} | {r['codec']}+{r['lossless']} | {lm} | {r['predicted_ms']:.0f} | "
            f"{codecs} | {'-' if m is None else f'{m:.0f}'} | {r.get('measured_all_local_ms', float('nan')):.0f} | "
            f"{r.get('measured_all_edge_jpeg_ms', float('nan')):.0f} | {r.get('measured_speedup', float('nan')):.2f}x | "
            f"{r['accuracy_drop']:+.1f} | {r.get('measured_up_bytes', r['predicted_up_bytes']):,} ({r['jpeg_bytes']:,}) |"
        )
    lines += ["", *data.get("notes", []), ""]
    seen: set[str] = set()
    for r in rows:  # the bottleneck each model's plans weighed
        b = r.get("bottleneck")
        if b is None or r["model"] in seen:
            continue
        seen.add(r["model"])
        lines.append(
            f"- {r['model']} bottleneck after {b['at']} ({b['channels']} channels, {b['directory']}): code "
            f"{b['code_bytes_mean']:,.0f} B mean, {b['code_bytes_p95']:,.0f} B p95 (int8 + zstd) against the "
            f"frame's JPEG {r['jpeg_bytes']:,} B ({'under' if b['code_under_jpeg'] else 'OVER'} it); test "
            f"drop {b['drop_points']:+.2f} points, agreement {b['agreement'] * 100:.1f}%"
            + (f"; refused: {b['refused']}" if b["refused"] else "")
            + "; chosen on "
            + (", ".join(x["network"] for x in rows if x["model"] == r["model"] and x["codec"] == "bottleneck")
               or "no network")
            + "."
        )
    for model in dict.fromkeys(r["model"] for r in rows):
        path = WORK / model / "boundaries.json"
        if not path.is_file():
            continue
        costs = json.loads(path.read_text())
        drops = {o["codec"]: o["accuracy"] for t in costs["tensors"][:1] for o in t["options"]
                 if o["lossless"] == "identity"}
        jpeg = costs["input"]["jpeg"]
        lines.append(
            f"- {model}: test top-1 {costs['base_top1']:.1f}% on {costs['samples']['accuracy']} test images; "
            "with the codec at every boundary (`accuracy_scope: all-boundaries`): "
            + ", ".join(f"{c} {a['drop_points']:+.1f} points ({a['agreement'] * 100:.0f}% agreement)"
                        for c, a in drops.items())
            + f"; the frame's JPEG q{jpeg['quality']}: {jpeg['mean']:,.0f} B mean, {jpeg['p95']:,.0f} B p95 "
            f"(the input tensor: {costs['input']['raw_bytes']:,} B)."
        )
        # where a cut could pay: the boundaries that get under the JPEG, and how deep in the model they are
        names = [t["name"] for t in costs["tensors"]]
        for label in ("int8+zstd", "fp16+zstd", "none+zstd"):
            codec, lossless = label.split("+")
            sizes = [(next(o["bytes"]["mean"] for o in t["options"] if (o["codec"], o["lossless"]) == (codec, lossless)),
                      t["name"]) for t in costs["tensors"]]
            under = [name for size, name in sizes if size <= jpeg["mean"]]
            first = min(under, key=names.index) if under else None
            small, where = min(sizes)
            lines.append(
                f"  - {label}: smallest boundary {small:,.0f} B ({where}, tensor {names.index(where) + 1} of "
                f"{len(names)}); "
                + (f"the first under the JPEG is tensor {names.index(first) + 1} ({first})" if first
                   else "none is under the JPEG")
                + "."
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small,mobilenet_v2")
    parser.add_argument("--networks", default="cat1,3g,4g,5g,wifi")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--checkpoints", help="a directory with MODEL.pt checkpoints to use instead of training")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--accuracy-samples", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--skip-tbf", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep a profile/boundaries newer than the model")
    parser.add_argument("--bottleneck", action="append", default=[],
                        help="MODEL=LAYER:CHANNELS[:STRIDE] (trained here) or MODEL=DIR (built); repeatable")
    parser.add_argument("--bottleneck-epochs", type=int, default=5)
    parser.add_argument("--results", default="compressed-split",
                        help="docs/benchmarks/NAME.{md,json} (a small-size run beside the full one)")
    parser.add_argument("--client")
    parser.add_argument("--serve")
    parser.add_argument("--segments", default="edge")
    parser.add_argument("--config", default="plan")
    parser.add_argument("--rtt", type=float, default=0.0)
    parser.add_argument("--token")
    parser.add_argument("--coding", default="identity")
    parser.add_argument("--jpeg")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.markdown_only:
        from _common import RESULTS

        data = json.loads((RESULTS / f"{args.results}.json").read_text())
        data.setdefault("results", args.results)
        write_results(data["results"], data, markdown(data))
        return
    if args.client:
        client(args)
        return
    if args.serve:
        serve_helper(args)
        return
    shown = " ".join(a for a in sys.argv[1:])
    data: dict[str, Any] = {"machine": machine(), "args": shown, "results": args.results, "size": args.size, "requests": args.requests,
                            "load_start": os.getloadavg()[0], "rows": [], "notes": [],
                            "epochs_note": f"checkpoints from {args.checkpoints}" if args.checkpoints
                            else f"{args.epochs} epoch(s)"}
    why = None if args.skip_tbf else netns_up()
    if why or args.skip_tbf:
        data["notes"].append(f"tbf link skipped: {why or '--skip-tbf'}; only predictions.")
    try:
        for model in [m for m in args.models.split(",") if m]:
            run_model(model, args, not (why or args.skip_tbf), data)
    finally:
        if not (why or args.skip_tbf):
            netns_down()
    data["load_end"] = os.getloadavg()[0]
    write_results(data["results"], data, markdown(data))


if __name__ == "__main__":
    main()
