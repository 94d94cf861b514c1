"""``serve --web``: the browser client's routes, mounted under ``/web`` beside the tier's API.

``/web/`` is the page (static files, gzip), ``/web/config.json`` what it needs to know about the split (the
mobile segments to download, the tensors to send, the early-exit outputs, class names), ``/web/segments/FILE``
the mobile tier's segment files (only those: the edge's weights stay on the edge). Answers carry COOP/COEP
so the page is cross-origin isolated: onnxruntime-web's threads need SharedArrayBuffer, which needs that.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from dnnsplit.browser import STATIC, VENDOR, check_vendor
from dnnsplit.errors import UsageError
from dnnsplit.runtime import route
from dnnsplit.runtime.labels import class_names
from dnnsplit.runtime.web.files import send_file

# Debian's mimetypes lacks .mjs; a module script served as text/plain is refused by the browser.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")

ISOLATION = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "same-origin",
}


def page_config(service: Any) -> dict[str, Any]:
    """What the page needs about the split: what to download, run, send and show."""
    manifest = service.manifest
    local = route.phone_segments(manifest)
    if not local:
        raise UsageError(
            "--web needs a split whose first segment is the mobile tier's", "split with a mobile tier"
        )
    boundary = route.crossing(manifest, len(local)) if len(local) < len(manifest.segments) else []
    first = manifest.outputs[0]
    count = 1
    for d in first.shape[1:]:
        count *= int(d)
    return {
        "split": service.digest,
        "input": {"name": manifest.input.name, "shape": [1, *manifest.input.shape[1:]]},
        "mobile": [
            {
                "file": manifest.segments[i].file,
                "url": f"segments/{manifest.segments[i].file}",
                "bytes": manifest.segments[i].bytes,
                "sha256": manifest.segments[i].sha256,  # the page checks what it downloaded against it
            }
            for i in local
        ],
        "boundary": [t.to_dict() for t in boundary],
        "first_output": first.name,
        "early_exit": dict(manifest.early_exit) if manifest.early_exit else None,
        "labels": class_names(manifest.model, count),
        "infer_url": "/v1/infer",
        "tier": service.tier,  # its Server-Timing entry is compute-<tier>
        "token_required": service.settings.token is not None,
        # The page codes its upload with the browser's CompressionStream, which has deflate, not zstd.
        "coding": "deflate",
        "elastic": elastic_config(manifest),
    }


def elastic_config(manifest: Any) -> dict[str, Any] | None:
    """An elastic split's block, with what crosses each offloading candidate's boundary (static/elastic.js
    decides per frame, app.js sends that cut's tensors with its ``start``)."""
    if not manifest.elastic:
        return None
    count = len(manifest.segments)
    boundaries = [int(c["boundary"]) for c in manifest.elastic["candidates"]]
    return {
        **manifest.elastic,
        "crossings": {
            str(b): [t.to_dict() for t in route.crossing(manifest, b)] for b in boundaries if b < count
        },
    }


KERNEL_STEM, KERNEL_PROGRAM = "stem.onnx", "branch.dnbk"


def branch_kernels(config: dict[str, Any], manifest: Any, mobile: Path) -> dict[str, bytes]:
    """For a split from `dnnsplit branch`: the branch as a bit-kernel program, and the stem alone.

    Sets ``config["kernels"]``: ``{stem, program}`` (file, url, bytes, sha256 of each, which the page
    checks as it checks segments) and ``binary_layers``; or ``{"unavailable": why}`` when the mobile
    segment is not a branch's or has a layer the kernels lack (the page then runs the whole segment in
    onnxruntime-web). Derived from the verified mobile segment when the server starts: the branch
    directory needs no new file. Returns the files by name.
    """
    from dnnsplit.branching.kernels import Unsupported, kernel_files

    if not manifest.early_exit or len(config["mobile"]) != 1:
        return {}
    try:
        built = kernel_files(mobile)
    except Unsupported as exc:
        config["kernels"] = {"unavailable": str(exc)}
        return {}
    blobs = {KERNEL_STEM: built.stem, KERNEL_PROGRAM: built.program}
    config["kernels"] = {
        **{
            key: {**built.describe(name, blobs[name]), "url": f"kernels/{name}"}
            for key, name in (("stem", KERNEL_STEM), ("program", KERNEL_PROGRAM))
        },
        "binary_layers": built.binary_layers,
        "wasm": "bitkernels.wasm",
    }
    return blobs


class _Isolate:
    """ASGI middleware: the cross-origin isolation headers on every answer under /web."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def add_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in ISOLATION.items()]
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)


def web_app(service: Any, directory: str | Path) -> Any:
    """The Starlette sub-app mounted at /web."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from dnnsplit.runtime.web.profiles import ProfileStation, profile_routes

    check_vendor()
    config = page_config(service)
    settings = service.settings
    station = (
        ProfileStation.open(service.manifest, settings.profiles_dir, settings.profile_model)
        if settings.profiles_dir
        else None
    )
    # The phone runs these files: only ones found to be the manifest's are served (the page checks again).
    local = route.phone_segments(service.manifest)
    service.chain.verify(local)
    files = {service.manifest.segments[i].file: service.chain.paths[i] for i in local}
    kernel_blobs = branch_kernels(config, service.manifest, service.chain.paths[local[0]])

    async def config_json(request: Request) -> Response:
        return JSONResponse(config)

    async def segment(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return JSONResponse(
                {"error": f"'{name}' is not a mobile segment of this split", "code": "not_found"},
                status_code=404,
            )
        return send_file(request, files[name], "application/octet-stream")

    async def kernel_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in kernel_blobs:
            return JSONResponse({"error": f"no kernel file '{name}'", "code": "not_found"}, status_code=404)
        return Response(kernel_blobs[name], media_type="application/octet-stream")

    async def vendor(request: Request) -> Response:
        path = VENDOR / request.path_params["name"]
        if "/" in request.path_params["name"] or not path.is_file():
            return JSONResponse({"error": "not found", "code": "not_found"}, status_code=404)
        return send_file(request, path, mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    routes: list[Any] = [
        Route("/config.json", config_json, methods=["GET"]),
        Route("/segments/{name}", segment, methods=["GET"]),
        Route("/vendor/{name}", vendor, methods=["GET"]),
        Route("/kernels/{name}", kernel_file, methods=["GET"]),
        *profile_routes(station, service),
    ]
    routes.append(Mount("/", app=StaticFiles(directory=STATIC, html=True)))
    return Starlette(
        routes=routes,
        middleware=[Middleware(GZipMiddleware, minimum_size=1024), Middleware(_Isolate)],
    )
