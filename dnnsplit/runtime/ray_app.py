"""The Ray Serve application of a split (imported only where Ray is installed; see runtime/ray_config.py).

``build(args)`` is the application builder ``serve deploy`` calls (``import_path:
dnnsplit.runtime.ray_app:build``) and ``serve --engine ray`` runs locally. Every replica holds a
``RayTierService``: the single-process server's ``TierService`` (the same checks, answers and metrics),
whose compute may go through ``@serve.batch`` and whose next tier is a ``DeploymentHandle``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from dnnsplit.errors import UsageError
from dnnsplit.runtime.ray_config import (
    APP_NAME,
    AppPlan,
    RaySettings,
    app_args,
    deployment_options,
    served_tiers,
    tier_resource,
)
from dnnsplit.runtime.server import ServeSettings, TierAnswer, TierService, create_app, listen
from dnnsplit.runtime.wire import WireError
from dnnsplit.splitting.manifest import Manifest

# Room enough for a local instance's replicas of every tier (each asks RESOURCE_PER_REPLICA).
LOCAL_RESOURCE = 1000.0


class ChainBatcher:
    """Requests that arrive together run as one batch: their tensors joined on the batch axis."""

    def __init__(self, service: TierService, max_batch: int, wait_ms: float) -> None:
        self.service = service
        self.max_batch, self.wait_ms = max_batch, wait_ms
        self.runs = self.requests = 0  # batches computed, requests in them
        self.run_batch.set_max_batch_size(max_batch)
        self.run_batch.set_batch_wait_timeout_s(wait_ms / 1000)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def run_batch(self, requests: list[dict[str, np.ndarray]]) -> list[float]:
        # A thread: the replica's event loop goes on taking requests (the next batch fills meanwhile).
        return await asyncio.to_thread(self.compute_joined, requests)

    def compute_joined(self, requests: list[dict[str, np.ndarray]]) -> list[float]:
        """Compute every request's tensors in one run; each request gets its rows of the results."""
        self.runs += 1
        self.requests += len(requests)
        if len(requests) == 1:
            return [self.service.compute(requests[0])]
        given = list(requests[0])
        joined = {name: np.concatenate([r[name] for r in requests]) for name in given}
        compute_ms = self.service.compute(joined)
        cuts = np.cumsum([len(r[given[0]]) for r in requests])[:-1]
        for name, value in joined.items():
            if name not in requests[0]:
                for request, rows in zip(requests, np.split(value, cuts), strict=True):
                    request[name] = rows
        return [compute_ms] * len(requests)


class RayTierService(TierService):
    """One replica's tier: the server's service, batched compute, the next tier through a handle."""

    def __init__(self, plan: AppPlan, tier: str, next_handle: Any = None, *, ingress: bool = False) -> None:
        settings = dataclasses.replace(
            plan.settings,
            tier=tier,
            segments=None,
            threads=plan.ray.threads,  # set from num_cpus: onnxruntime would size its pool to the host
            next_url=plan.settings.next_url if next_handle is None else None,
            web=plan.settings.web and ingress,
            profiles_dir=plan.settings.profiles_dir if ingress else None,
            profile_model=plan.settings.profile_model if ingress else None,
        )
        super().__init__(Manifest.load(plan.directory), plan.directory, settings)
        self.next_handle = next_handle
        self.next_tier = self.manifest.segments[self.last + 1].tier if self.later else None
        if next_handle is not None:
            self.forwards = True
        wait = plan.ray.batch_wait_ms
        self.batcher = ChainBatcher(self, settings.max_batch, wait) if wait > 0 else None

    async def compute_async(self, tensors: dict[str, np.ndarray], first: int | None = None) -> float:
        # Batched only from this tier's own start: requests an elastic client starts later run alone.
        if self.batcher is None or first not in (None, self.first):
            return await super().compute_async(tensors, first)
        return await self.batcher.run_batch(tensors)

    async def forward(
        self, pending: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
        if self.next_handle is None:
            return await super().forward(pending)
        try:
            answer: TierAnswer = await self.next_handle.infer.remote(pending)
        except Exception as exc:  # noqa: BLE001 - a dead replica, a timeout, its own error: Ray's share no base
            raise WireError(
                502, "next_failed", f"the {self.next_tier} deployment failed ({type(exc).__name__}: {exc})"
            ) from None
        return answer.tensors, {"complete": answer.complete}, ", ".join(answer.timing)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.next_handle is not None:
            described["next"] = f"ray:{self.next_tier}"
        options = self.chain.session(self.first).get_session_options()
        described["onnxruntime_threads"] = {
            "intra_op": options.intra_op_num_threads,
            "inter_op": options.inter_op_num_threads,
        }
        if self.batcher is not None:
            b = self.batcher
            described["batching"] = {
                "max_batch_requests": b.max_batch,
                "wait_ms": b.wait_ms,
                "batches": b.runs,
                "requests": b.requests,
            }
        return described


@serve.ingress()
class TierIngress:
    """The first served tier: the HTTP routes of the single-process server, and that tier's segments."""

    def __init__(self, args: dict[str, Any], tier: str, next_handle: Any = None) -> None:
        self.service = RayTierService(AppPlan.from_args(args), tier, next_handle, ingress=True)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.service)


class TierSegments:
    """A later tier: its segments behind a handle (``infer(tensors) -> TierAnswer``)."""

    async def __init__(self, args: dict[str, Any], tier: str, next_handle: Any = None) -> None:
        self.service = RayTierService(AppPlan.from_args(args), tier, next_handle)
        await self.service.open()

    async def infer(self, tensors: dict[str, np.ndarray]) -> TierAnswer:
        return await self.service.process(tensors)


def build(args: dict[str, Any]) -> Any:
    """The application: the first tier's ingress, chained to each later tier's deployment by handles."""
    plan = AppPlan.from_args(args)
    plan.settings.check()
    plan.ray.check()
    tiers = served_tiers(Manifest.load(plan.directory), plan.settings)
    handle = None
    for tier in reversed(tiers[1:]):
        options = deployment_options(tier, plan.ray, plan.settings)
        handle = serve.deployment(TierSegments).options(**options).bind(args, tier, handle)
    options = deployment_options(tiers[0], plan.ray, plan.settings)
    return serve.deployment(TierIngress).options(**options).bind(args, tiers[0], handle)


WORKER_NICENESS = 0  # the replicas run at the priority of the process that serves them, as uvicorn does


def start_ray(tiers: list[str], ray_settings: RaySettings, **local: Any) -> None:
    """Join ``--ray-address``'s cluster, or start a local instance offering every tier's resource."""
    import ray

    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if ray_settings.address:
        ray.init(address=ray_settings.address, log_to_driver=False, logging_level=logging.WARNING)
        return
    ray.init(
        num_cpus=ray_settings.local_cpus,
        resources={tier_resource(t): LOCAL_RESOURCE for t in tiers},
        # Ray renices every worker to 15 (its worker_niceness), so that the raylet wins over tasks; here the
        # replicas are the service, and at nice 15 anything else on the box at the default nice 0 (another
        # server, a build) outweighs them 28 to 1 in the kernel's scheduler (weights 1024 against 36).
        _system_config={"worker_niceness": WORKER_NICENESS},
        **quiet,
        **local,
    )


def deploy(
    directory: str | Path,
    settings: ServeSettings,
    ray_settings: RaySettings,
    name: str = APP_NAME,
    route_prefix: str = "/",
) -> float:
    """Run the split's application on the Ray instance this process is connected to; seconds it took.

    ``route_prefix``: where the routes hang (``/a``: ``/a/v1/infer``), so several applications share the
    proxy (the benchmark's configurations, side by side).
    """
    start = time.perf_counter()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build(app_args(directory, settings, ray_settings)), name=name, route_prefix=route_prefix)
    return time.perf_counter() - start


def run_ray(
    directory: str | Path,
    settings: ServeSettings,
    ray_settings: RaySettings,
    on_ready: Callable[[float], None] | None = None,
) -> None:
    """``serve --engine ray``: deploy, then hold until SIGTERM or SIGINT, then shut Serve (and Ray) down."""
    import ray

    settings.check()
    ray_settings.check()
    tiers = served_tiers(Manifest.load(directory), settings)
    listen(settings.host, settings.port).close()  # a taken port is one clear line, not a proxy retrying
    stop = threading.Event()
    previous: dict[int, Any] = {}
    try:
        start_ray(tiers, ray_settings)
        # After ray.init, which installs its own SIGTERM handler (it would end the driver with a stack dump)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            seconds = deploy(directory, settings, ray_settings)
        except RuntimeError as exc:  # an application that failed to start: its replicas' error
            raise UsageError(f"the Ray Serve application did not start ({exc})", "see the Ray logs") from None
        if on_ready is not None:
            on_ready(seconds)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


@contextmanager
def ray_serving(
    directory: str | Path,
    settings: ServeSettings,
    ray_settings: RaySettings,
    name: str = APP_NAME,
    route_prefix: str = "/",
) -> Iterator[str]:
    """The split's application on the running Ray instance (tests, bench) for the block; its URL."""
    deploy(directory, settings, ray_settings, name, route_prefix)
    try:
        yield serve_url() + route_prefix.rstrip("/")
    finally:
        serve.delete(name)


def serve_url() -> str:
    """The URL of the running Serve instance's HTTP proxy."""
    from ray.serve.context import _get_global_client

    options = _get_global_client().http_config
    return f"http://{options.host}:{options.port}"
