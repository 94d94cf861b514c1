"""``serve --web --profiles-dir DIR``: a phone profiles the whole model in its browser (``/web/profile.html``)
and posts the trace back; the server maps it to layers (as ``profile --runtime browser`` does) and saves a
``dnnsplit/profile@1`` file for ``plan --profile mobile=FILE``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnnsplit.errors import DnnsplitError, UsageError

MAX_POST_BYTES = 32 * 1024 * 1024  # a trace of 20 runs of a large model is a few MB
WARMUP, REPEAT = 5, 20


@dataclass
class ProfileStation:
    """What the profiling page needs: the whole model (prepared once) and where profiles go."""

    prepared: Any  # profiling.run.PreparedModel
    directory: Path
    name: str  # for the page and the file names

    @classmethod
    def open(cls, manifest: Any, directory: str | Path, model: str | None) -> ProfileStation:
        from dnnsplit.models.export import file_sha256
        from dnnsplit.profiling.run import prepare_model

        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--profiles-dir {out} is a file", "pass a directory")
        out.mkdir(parents=True, exist_ok=True)
        name = None
        if model is None:
            # The split's own export, when it is still where split left it: the phone then profiles exactly
            # the graph the host profile and the plan were made from.
            onnx = Path(str(manifest.model.get("onnx") or ""))
            if not onnx.is_file() or file_sha256(onnx) != manifest.model.get("sha256"):
                raise UsageError(
                    f"the split's source model ({onnx}) is not on this machine",
                    "pass --profile-model MODEL (the model you split)",
                )
            model = str(onnx)
            name = manifest.model.get("name")  # the export's file name is a hash
        prepared = prepare_model(model)
        return cls(prepared, out, str(name or prepared.loaded.name))

    def config(self) -> dict[str, Any]:
        exported = self.prepared.exported
        return {
            "name": self.name,
            "model_url": "profile/model.onnx",
            "bytes": exported.path.stat().st_size,
            "input_shape": [1, *exported.input_shape[1:]],
            "warmup": WARMUP,
            "repeat": REPEAT,
        }

    def save(self, result: Any) -> dict[str, Any]:
        """Map a posted result to a profile and save it; a summary for the page."""
        from dnnsplit.profiling.browser_runtime import browser_device, measurement_from_browser
        from dnnsplit.profiling.run import ProfileSettings, build_profile

        measurement = measurement_from_browser(self.prepared.graph, result)
        settings = ProfileSettings(
            runtime="browser", warmup=int(result["warmup"]), repeat=measurement.layer_ms.shape[0]
        )
        device = browser_device(result)
        profile = build_profile(self.prepared, measurement, device, settings)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.directory / f"{self.name}-{device['backend']}-{stamp}.json"
        for n in range(2, 100):
            if not path.exists():
                break
            path = path.with_name(f"{path.stem.rsplit('~', 1)[0]}~{n}.json")
        profile.save(path)
        return {
            "file": str(path),
            "latency_ms": profile.latency_ms,
            "layer_sum_ms": profile.layer_sum_ms,
            "layers": len(profile.layers),
            "device": device,
        }


async def read_limited(request: Any, limit: int) -> bytes | None:
    """The body, or None once it is over ``limit``: refused on Content-Length before reading, and a body
    without one read only up to the limit (``request.body()`` read 300 MB, RSS +500 MB, then refused it)."""
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        return None
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def profile_routes(station: ProfileStation | None, service: Any) -> list[Any]:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from dnnsplit.runtime.web.files import send_file

    off = {"error": "this server does not take profiles: start it with --profiles-dir DIR", "code": "off"}

    async def config(request: Request) -> Response:
        if station is None:
            return JSONResponse(off, status_code=404)
        return JSONResponse(station.config())

    async def model(request: Request) -> Response:
        from dnnsplit.runtime.wire import WireError

        if station is None:
            return JSONResponse(off, status_code=404)
        try:
            service.authorize(request.headers)  # the whole model, weights and all: not for anyone who asks
        except WireError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return send_file(request, station.prepared.exported.path, "application/octet-stream")

    async def post(request: Request) -> Response:
        from dnnsplit.runtime.wire import WireError

        if station is None:
            return JSONResponse(off, status_code=404)
        try:
            service.authorize(request.headers)  # it writes files here: the same token as /v1/infer
        except WireError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        body = await read_limited(request, MAX_POST_BYTES)
        if body is None:
            return JSONResponse(
                {"error": f"a profile is at most {MAX_POST_BYTES} bytes", "code": "too_large"},
                status_code=413,
                headers={"connection": "close"},  # the rest of the body is not read
            )
        try:
            result = json.loads(body)
            summary = station.save(result)
        except ValueError as exc:
            return JSONResponse({"error": f"not JSON: {exc}", "code": "bad_json"}, status_code=400)
        except DnnsplitError as exc:
            return JSONResponse({"error": exc.one_line(), "code": "bad_profile"}, status_code=422)
        return JSONResponse(summary)

    return [
        Route("/profile-config.json", config, methods=["GET"]),
        Route("/profile/model.onnx", model, methods=["GET"]),
        Route("/profiles", post, methods=["POST"]),
    ]
