"""`dnnsplit serve`: one tier's segments over HTTP (Starlette + uvicorn), forwarding to the next tier; or,
with --engine ray, the tiers as Ray Serve deployments behind the same HTTP routes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dnnsplit.cli.common import err, guarded

if TYPE_CHECKING:
    from dnnsplit.runtime.ray_config import RaySettings
    from dnnsplit.runtime.server import ServeSettings
    from dnnsplit.splitting.manifest import Manifest

EXAMPLES = """
Examples:

  dnnsplit serve segments/ --tier edge --port 8080

  dnnsplit serve segments/ --tier cloud --port 8081
  dnnsplit serve segments/ --tier edge --port 8080 --next http://127.0.0.1:8081

  DNNSPLIT_TOKEN=s3cret dnnsplit serve segments/ --tier edge --host 0.0.0.0

  curl -s localhost:8080/healthz; curl -s localhost:8080/metrics

  # the browser client: open http://HOST:8080/web/ on the phone (mobile segment in onnxruntime-web)
  dnnsplit serve segments/ --tier edge --web
  dnnsplit serve branch/ --tier edge --web                       # early exit on the phone when confident

  # a phone profiles itself at /web/profile.html; the profiles land in phone-profiles/
  dnnsplit serve segments/ --tier edge --web --profiles-dir phone-profiles/
  dnnsplit plan profile.json --profile mobile=phone-profiles/PROFILE.json

  # Ray Serve: edge and cloud as deployments chained by handles, 2 replicas each, batching
  dnnsplit serve segments/ --engine ray --replicas 2 --batch-wait-ms 5 --port 8080
  dnnsplit serve segments/ --engine ray --replicas auto --max-replicas 8 --target-ongoing-requests 2
  # a config file for `serve deploy` on an existing cluster (see docs/ray.md)
  dnnsplit serve segments/ --engine ray --host 0.0.0.0 --replicas 2 --output serve-config.yaml

Endpoints: POST /v1/infer (safetensors in and out), GET /healthz, GET /v1/manifest, GET /metrics;
with --web also /web/ (the page, its config and the mobile segments) and POST /web/profiles.
SIGTERM or Ctrl-C stops accepting requests and lets the ones in flight finish.
"""


@guarded
def serve(
    directory: Annotated[
        Path, typer.Argument(help="A directory written by `dnnsplit split`.", show_default=False)
    ],
    tier: Annotated[str, typer.Option(help="Whose segments to serve: edge or cloud.")] = "edge",
    next_url: Annotated[
        str | None,
        typer.Option("--next", help="URL of the next tier's server, when the split has a later tier."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="DNNSPLIT_TOKEN", help="Require 'Authorization: Bearer TOKEN' (and send it to --next)."
        ),
    ] = None,
    max_body_mb: Annotated[
        float | None,
        typer.Option(help="Largest request body (default: the split's largest boundary x --max-batch)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Largest batch a request may carry.")] = 8,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads per segment.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests computing at once.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the next tier.")] = 30.0,
    link: Annotated[
        str | None,
        typer.Option(help="Emulate the link to --next: a preset or up=MBPS,down=MBPS,rtt=MS."),
    ] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Also serve the browser client at /web/: the mobile segment runs in the phone's browser "
            "(onnxruntime-web) and offloads here.",
        ),
    ] = False,
    profiles_dir: Annotated[
        Path | None,
        typer.Option(
            help="With --web: /web/profile.html profiles the whole model in the visitor's browser and the "
            "profile is saved here (for `plan --profile mobile=FILE`).",
        ),
    ] = None,
    profile_model: Annotated[
        str | None,
        typer.Option(
            help="With --profiles-dir: the MODEL the phone profiles (default: the split's source model).",
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a request's headers may take to arrive; then 408 and closed.")
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request's body may take, plus 1 s per 8 kB received (slow uplinks are not cut); "
            "then 408.",
        ),
    ] = 10.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="Open connections at most; past it a newcomer evicts the one waiting longest on its client "
            "(default: what `ulimit -n` leaves room for, at most 1024).",
        ),
    ] = None,
    max_queue: Annotated[
        int,
        typer.Option(help="Requests waiting for compute past --concurrency; more get 503 with Retry-After."),
    ] = 64,
    allow_non_finite: Annotated[
        bool,
        typer.Option("--allow-non-finite", help="Take NaN and inf in request tensors (default: 422)."),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="uvicorn: this process serves --tier. ray: Ray Serve deployments of --tier and (without "
            "--next) every later tier, chained by handles, behind the same routes (pip install "
            "'dnnsplit\\[ray]').",
        ),
    ] = "uvicorn",
    replicas: Annotated[
        str, typer.Option(help="--engine ray: replicas per tier, or auto (autoscaling).")
    ] = "1",
    min_replicas: Annotated[int, typer.Option(help="--replicas auto: fewest replicas per tier.")] = 1,
    max_replicas: Annotated[int, typer.Option(help="--replicas auto: most replicas per tier.")] = 4,
    target_ongoing_requests: Annotated[
        float, typer.Option(help="--replicas auto: requests in progress per replica the autoscaler aims at.")
    ] = 2.0,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            help="--engine ray: dynamic batching (@serve.batch): wait this long for up to --max-batch "
            "requests to run together; 0: no batching.",
        ),
    ] = 0.0,
    replica_cpus: Annotated[
        float,
        typer.Option(help="--engine ray: CPUs per replica (num_cpus); its onnxruntime threads follow."),
    ] = 1.0,
    ray_address: Annotated[
        str | None,
        typer.Option(help="--engine ray: join this cluster (auto, ray://HOST:10001) instead of a local one."),
    ] = None,
    ray_cpus: Annotated[
        int | None, typer.Option(help="--engine ray: CPUs of the local Ray instance (default: all).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="--engine ray: write a Ray Serve config file for `serve deploy` here instead of serving.",
        ),
    ] = None,
    coding: Annotated[
        str,
        typer.Option(
            help="Lossless coding of what goes to --next: identity, zstd or deflate (requests coming in are "
            "decoded whatever their Content-Encoding says, if it is one of these).",
        ),
    ] = "identity",
) -> None:
    """Serve the segments of one TIER of DIRECTORY over HTTP until SIGTERM."""
    from dnnsplit.limits import check_threads

    check_threads(threads)
    from dnnsplit.partition.network import parse_link
    from dnnsplit.runtime import route
    from dnnsplit.runtime.server import ServeSettings, TierService, run_server
    from dnnsplit.splitting.manifest import Manifest

    settings = ServeSettings(
        tier=tier,
        next_url=next_url,
        host=host,
        port=port,
        token=token,
        max_body_mb=max_body_mb,
        max_batch=max_batch,
        threads=threads,
        concurrency=concurrency,
        timeout_s=timeout,
        link=parse_link(link) if link else None,
        access_log=access_log,
        web=web,
        profiles_dir=str(profiles_dir) if profiles_dir else None,
        profile_model=profile_model,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_connections=max_connections,
        max_queue=max_queue,
        allow_non_finite=allow_non_finite,
        coding=coding,
    )
    settings.check()
    if engine == "ray" and threads is not None:
        from dnnsplit.errors import UsageError

        raise UsageError(
            "--threads is the uvicorn engine's; a Ray replica's onnxruntime threads follow its CPUs",
            "pass --replica-cpus N instead",
        )
    ray_settings = _ray_settings(
        engine, replicas, min_replicas, max_replicas, target_ongoing_requests, batch_wait_ms,
        replica_cpus, ray_address, ray_cpus, output,
    )
    if ray_settings is not None and output is not None:
        _write_config(directory, settings, ray_settings, output)
        return
    if web:
        from dnnsplit.browser import check_vendor

        check_vendor()  # before binding the port: a missing `make web` is one clear line
    manifest = Manifest.load(directory)
    if ray_settings is not None:
        _serve_on_ray(directory, manifest, settings, ray_settings)
        return
    service = TierService(manifest, directory, settings)
    where = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    after = ""
    if service.later:
        later = manifest.segments[service.last + 1].tier
        after = f"; {later} at {next_url}" if next_url else f"; no --next: answers carry the {later} boundary"
    auth = ", bearer token required" if token else ""
    if manifest.elastic:
        auth += f"; elastic: requests may start at segments {', '.join(str(k + 1) for k in service.starts)}"
    page = f"; browser client at {where}/web/" if web else ""
    if profiles_dir:
        page += f" (phone profiles from /web/profile.html saved in {profiles_dir})"

    def ready() -> None:
        err.print(
            f"serving {service.tier} ({route.describe(manifest, service.indices)}) on {where}{after}{auth}; "
            f"max body {service.max_body / 1e6:.1f} MB{page}",
            highlight=False,
        )

    run_server(service, on_ready=ready)
    err.print(f"stopped after {service.served} request(s)", highlight=False)


def _ray_settings(
    engine: str,
    replicas: str,
    min_replicas: int,
    max_replicas: int,
    target_ongoing_requests: float,
    batch_wait_ms: float,
    replica_cpus: float,
    ray_address: str | None,
    ray_cpus: int | None,
    output: Path | None,
) -> RaySettings | None:
    """The Ray settings for --engine ray (Ray Serve must be installed); None for uvicorn."""
    from dnnsplit.errors import UsageError
    from dnnsplit.runtime.ray_config import RaySettings, parse_replicas, require_ray

    if engine not in ("uvicorn", "ray"):
        raise UsageError(f"--engine '{engine}' is not an engine", "pass uvicorn (default) or ray")
    ray_settings = RaySettings(
        replicas=parse_replicas(replicas),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing_requests,
        batch_wait_ms=batch_wait_ms,
        replica_cpus=replica_cpus,
        address=ray_address,
        local_cpus=ray_cpus,
    )
    if engine == "uvicorn":
        used = [
            flag
            for flag, value, default in (
                ("--replicas", replicas, "1"),
                ("--min-replicas", min_replicas, 1),
                ("--max-replicas", max_replicas, 4),
                ("--target-ongoing-requests", target_ongoing_requests, 2.0),
                ("--batch-wait-ms", batch_wait_ms, 0.0),
                ("--replica-cpus", replica_cpus, 1.0),
                ("--ray-address", ray_address, None),
                ("--ray-cpus", ray_cpus, None),
                ("--output", output, None),
            )
            if value != default
        ]
        if used:
            verb = "is" if len(used) == 1 else "are"
            raise UsageError(f"{', '.join(used)} {verb} for Ray Serve", "add --engine ray")
        return None
    ray_settings.check()
    if output is None:
        require_ray()  # writing a config needs no Ray here: the cluster has it
    return ray_settings


def _write_config(directory: Path, settings: ServeSettings, ray_settings: RaySettings, output: Path) -> None:
    from dnnsplit.fileio import dump_document, write_text_atomic
    from dnnsplit.runtime.ray_config import config_header, serve_config, served_tiers
    from dnnsplit.splitting.manifest import Manifest

    config = serve_config(directory, settings, ray_settings)
    tiers = served_tiers(Manifest.load(directory), settings)
    write_text_atomic(output, config_header(directory, tiers) + dump_document(config, "yaml"))
    token = " (replicas read the token from $DNNSPLIT_TOKEN on their nodes)" if settings.token else ""
    err.print(
        f"wrote {output}: Ray Serve application of {', '.join(tiers)}{token}; "
        f"deploy with `serve deploy {output}`",
        highlight=False,
    )


def _serve_on_ray(
    directory: Path, manifest: Manifest, settings: ServeSettings, ray_settings: RaySettings
) -> None:
    from dnnsplit.runtime import route
    from dnnsplit.runtime.ray_app import run_ray
    from dnnsplit.runtime.ray_config import served_tiers

    tiers = served_tiers(manifest, settings)
    where = f"http://{settings.host}:{settings.port}"

    def ready(seconds: float) -> None:
        parts = ", ".join(
            f"{t} ({route.describe(manifest, route.tier_segments(manifest, t))})"
            for t in tiers
        )
        scale = "autoscaled" if ray_settings.replicas is None else f"{ray_settings.replicas} replica(s) each"
        batching = (
            f", batches of up to {settings.max_batch} requests within {ray_settings.batch_wait_ms:g} ms"
            if ray_settings.batch_wait_ms > 0
            else ""
        )
        err.print(
            f"serving {parts} on Ray Serve at {where}, {scale}{batching}; ready in {seconds:.1f} s",
            highlight=False,
        )

    run_ray(directory, settings, ray_settings, on_ready=ready)
    err.print("stopped", highlight=False)
