"""``serve --engine ray``: what the Ray Serve application of a split looks like, without importing Ray.

A split's served tiers become one Ray Serve application: the first tier's deployment is the HTTP ingress
(the same Starlette app as the single-process server, so routes, wire format, limits and token auth are
the server's own) and runs that tier's segments; every later tier is a deployment of its own, reached
through a ``DeploymentHandle`` (or over HTTP with ``--next URL``, when it runs on another cluster).

The application is described by plain ``args`` (``dnnsplit/ray-serve@1``): what ``serve --engine ray``
hands to ``dnnsplit.runtime.ray_app:build`` itself, and what ``serve --engine ray --output FILE`` writes
into a Ray Serve config file for ``serve deploy`` on an existing cluster. Each tier's replicas ask for a
sliver of the custom resource ``dnnsplit-<tier>``, so edge replicas land on nodes started with
``--resources='{"dnnsplit-edge": 1}'`` and cloud replicas on cloud nodes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.network import LinkSpec
from dnnsplit.runtime import route
from dnnsplit.runtime.server import ServeSettings
from dnnsplit.splitting.manifest import Manifest

SCHEMA = "dnnsplit/ray-serve@1"
IMPORT_PATH = "dnnsplit.runtime.ray_app:build"
APP_NAME = "dnnsplit"
RESOURCE_PREFIX = "dnnsplit-"
# A replica asks for this much of its tier's resource: a node started with 1 of it holds 100 replicas, so
# the resource says where replicas go and num_cpus how many fit.
RESOURCE_PER_REPLICA = 0.01
TOKEN_ENV = "DNNSPLIT_TOKEN"
INSTALL_HINT = "pip install 'dnnsplit[ray]' (Ray Serve), or leave out --engine ray"


@dataclass(frozen=True)
class RaySettings:
    """Replicas, autoscaling, batching and placement of every tier's deployment."""

    replicas: int | None = 1  # None: autoscale between min_replicas and max_replicas
    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float = 2.0
    batch_wait_ms: float = 0.0  # @serve.batch's wait for a batch to fill; 0: no batching
    replica_cpus: float = 1.0  # each replica's num_cpus; its onnxruntime threads follow (ray issue 28044)
    address: str | None = None  # an existing cluster (``auto``, ``ray://HOST:10001``); None: a local one
    local_cpus: int | None = None  # CPUs of the local instance (default: this machine's)

    def check(self) -> None:
        if self.replicas is not None and self.replicas < 1:
            raise UsageError(f"--replicas must be at least 1 (got {self.replicas})", "pass 2, or auto")
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise UsageError(
                f"--min-replicas {self.min_replicas} and --max-replicas {self.max_replicas} make no range",
                "pass 0 <= --min-replicas <= --max-replicas, --max-replicas at least 1",
            )
        if not (self.target_ongoing_requests > 0 and math.isfinite(self.target_ongoing_requests)):
            raise UsageError(
                f"--target-ongoing-requests must be a finite number > 0 (got {self.target_ongoing_requests})",
                "pass 2, say",
            )
        if not (0 <= self.batch_wait_ms <= 10_000):
            raise UsageError(
                f"--batch-wait-ms must be between 0 and 10000 (got {self.batch_wait_ms})",
                "pass 5 to batch, 0 not to",
            )
        if not (self.replica_cpus > 0 and math.isfinite(self.replica_cpus)):
            raise UsageError(f"--replica-cpus must be > 0 (got {self.replica_cpus})", "pass 1, say")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise UsageError(f"--ray-cpus must be at least 1 (got {self.local_cpus})", "pass 2, say")

    @property
    def threads(self) -> int:
        """onnxruntime intra-op threads of a replica: its CPUs (onnxruntime sizes its pool to the host)."""
        return replica_threads(self.replica_cpus)


def replica_threads(num_cpus: float) -> int:
    return max(1, int(num_cpus))


def parse_replicas(text: str) -> int | None:
    """``--replicas N|auto``: a count, or None for autoscaling."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--replicas '{text}' is neither a number nor 'auto'", "pass 2, or auto") from None


def require_ray() -> None:
    """One clear line when Ray Serve is not installed (it is an optional extra)."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"--engine ray needs Ray Serve, which is not installed ({exc})", INSTALL_HINT
        ) from None


def served_tiers(manifest: Manifest, settings: ServeSettings) -> list[str]:
    """The tiers in this application: ``settings.tier`` and, without ``--next``, every later one."""
    tiers = list(dict.fromkeys(s.tier for s in manifest.segments))
    tier = settings.tier or "edge"
    if tier not in tiers:
        raise UsageError(f"the split has no '{tier}' segments (it has {', '.join(tiers)})", "pick --tier")
    first = route.tier_segments(manifest, tier)[0]
    if first in route.local_prefix(manifest):
        raise UsageError(
            f"'{tier}' runs the first segment: that is the client's (dnnsplit infer)",
            "serve a later tier (edge, cloud)",
        )
    later = tiers[tiers.index(tier) :]
    return later[:1] if settings.next_url else later


def tier_resource(tier: str) -> str:
    return f"{RESOURCE_PREFIX}{tier}"


def settings_to_dict(settings: ServeSettings) -> dict[str, Any]:
    data = dataclasses.asdict(settings)  # the link (a LinkSpec) becomes a dict of its fields
    if data["segments"] is not None:
        data["segments"] = list(data["segments"])
    return data


def settings_from_dict(data: dict[str, Any]) -> ServeSettings:
    known = {f.name for f in dataclasses.fields(ServeSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"unknown serve settings {', '.join(unknown)}", f"write the config with {SCHEMA}")
    values = dict(data)
    if values.get("link") is not None:
        values["link"] = LinkSpec(**values["link"])
    if values.get("segments") is not None:
        values["segments"] = tuple(values["segments"])
    return ServeSettings(**values)


def app_args(
    directory: str | Path, settings: ServeSettings, ray: RaySettings, *, token_in_env: bool = False
) -> dict[str, Any]:
    """What ``build`` takes: the split, the server's settings and the Ray ones (YAML-safe values).

    ``token_in_env``: the token is not written down; replicas read it from ``DNNSPLIT_TOKEN`` (a config file
    must not hold the secret).
    """
    serve_settings = settings_to_dict(settings)
    if token_in_env and settings.token is not None:
        serve_settings["token"] = None
    ray_settings = dataclasses.asdict(ray)
    return {
        "schema": SCHEMA,
        "directory": str(Path(directory).resolve()),
        "serve": serve_settings,
        "ray": ray_settings,
        "token_env": TOKEN_ENV if token_in_env and settings.token is not None else None,
    }


@dataclass(frozen=True)
class AppPlan:
    """``args`` read back: what a replica (or the application builder) needs."""

    directory: Path
    settings: ServeSettings
    ray: RaySettings

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> AppPlan:
        if args.get("schema") != SCHEMA:
            raise UsageError(
                f"the application's args declare schema {args.get('schema')!r}, not {SCHEMA}",
                "write the config again with `dnnsplit serve DIR --engine ray --output FILE`",
            )
        settings = settings_from_dict(args["serve"])
        env = args.get("token_env")
        if env:
            token = os.environ.get(env)
            if not token:
                raise UsageError(
                    f"the application needs its bearer token in ${env}, which is not set on this node",
                    f"start the node with {env}=SECRET ray start ...",
                )
            settings = dataclasses.replace(settings, token=token)
        return cls(Path(args["directory"]), settings, RaySettings(**args["ray"]))


def deployment_options(tier: str, ray: RaySettings, settings: ServeSettings) -> dict[str, Any]:
    """Ray Serve options of one tier's deployment: replicas or autoscaling, CPUs, placement, queue."""
    options: dict[str, Any] = {
        "name": tier,
        "ray_actor_options": {
            "num_cpus": ray.replica_cpus,
            "resources": {tier_resource(tier): RESOURCE_PER_REPLICA},
        },
        # A replica takes what the single-process server would let queue; beyond that Ray's router holds
        # requests until one has room (a batch fills from these).
        "max_ongoing_requests": settings.concurrency + max(settings.max_queue, 1),
    }
    if ray.replicas is None:
        options["autoscaling_config"] = {
            "min_replicas": ray.min_replicas,
            "max_replicas": ray.max_replicas,
            "target_ongoing_requests": ray.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = ray.replicas
    return options


def serve_config(directory: str | Path, settings: ServeSettings, ray: RaySettings) -> dict[str, Any]:
    """A Ray Serve config file (``serve deploy FILE``) for the split's application on an existing cluster."""
    settings.check()
    ray.check()
    manifest = Manifest.load(directory)
    tiers = served_tiers(manifest, settings)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": settings.host, "port": settings.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": app_args(directory, settings, ray, token_in_env=True),
                "deployments": [deployment_options(tier, ray, settings) for tier in tiers],
            }
        ],
    }


def config_header(directory: str | Path, tiers: list[str]) -> str:
    resources = " ".join(f"'{{\"{tier_resource(t)}\": 1}}'" for t in tiers)
    return (
        f"# {SCHEMA}: Ray Serve config for the split in {Path(directory).resolve()} "
        f"(written by `dnnsplit serve --engine ray --output`)\n"
        f"# the split must be at this path on every node; nodes join with --resources, one of {resources};\n"
        f"# then: serve deploy THIS_FILE\n"
    )
