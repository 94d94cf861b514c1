"""`dnnsplit serve`: one tier's segments over HTTP (Starlette + uvicorn), forwarding to the next tier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dnnsplit.cli.common import err, guarded

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
    )
    settings.check()
    if web:
        from dnnsplit.browser import check_vendor

        check_vendor()  # before binding the port: a missing `make web` is one clear line
    manifest = Manifest.load(directory)
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
