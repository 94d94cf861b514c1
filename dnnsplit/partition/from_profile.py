"""Build a partitioning Problem from a measured Profile, device specs and links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from dnnsplit.codecs import check_mode, compressed_bytes
from dnnsplit.errors import UsageError
from dnnsplit.partition.network import BACKHAUL, DEFAULT_NETWORK, LinkSpec, as_link
from dnnsplit.partition.objective import Constraints, Objective, parse_objective
from dnnsplit.partition.problem import (
    DEFAULT_TIERS,
    TIER_ORDER,
    LayerCost,
    MobilePower,
    Problem,
    Tensor,
    check_tiers,
    link_names,
)

if TYPE_CHECKING:  # importing dnnsplit.profiling pulls in torch; the library only needs the types
    from dnnsplit.partition.boundary_costs import BoundaryCodec, BoundaryCosts
    from dnnsplit.profiling.devices import DeviceSpec
    from dnnsplit.profiling.profile import Profile

DEFAULT_DEVICES = {"mobile": "mobile-web", "edge": "edge", "cloud": "cloud"}
WEIGHT_BYTES = 4  # weights are float32


def default_links(
    tiers: Sequence[str] = DEFAULT_TIERS,
    network: LinkSpec | str = DEFAULT_NETWORK,
    backhaul: LinkSpec | str = BACKHAUL,
) -> dict[str, LinkSpec]:
    """The mobile's own link is ``network``; edge-cloud is the wired ``backhaul``."""
    names = link_names(check_tiers(tiers))
    return {name: as_link(network) if k == 0 else as_link(backhaul) for k, name in enumerate(names)}


def problem_from_profile(
    profile: Profile,
    tiers: Sequence[str] = DEFAULT_TIERS,
    devices: Mapping[str, DeviceSpec] | None = None,
    tier_profiles: Mapping[str, Profile] | None = None,
    links: Mapping[str, LinkSpec | str] | None = None,
    objective: Objective | str = "latency",
    constraints: Constraints | None = None,
    input_bytes: int | None = None,
    compress: str | None = None,
    boundaries: BoundaryCosts | None = None,
    lossless: str = "identity",
    max_accuracy_drop: float | None = None,
    session_requests: int | None = None,
) -> Problem:
    """The problem of splitting ``profile``'s layers over ``tiers``.

    A layer's compute time on a tier is its latency in ``tier_profiles[tier]`` (a profile measured on that
    tier, matched by layer name) when given, else the profile's host latency times the tier device's
    ``latency_scale``; a profile whose layers do not add up to its measured whole model (outside ±15%) is
    priced with its layers scaled to the whole (``Profile.calibrated``), never from the low sum. Devices
    default to the presets (mobile: mobile-web, edge: edge, cloud: cloud); links not given default to
    ``default_links`` (wifi for the mobile's link, a wired backhaul for edge-cloud).
    ``input_bytes`` is what the raw input costs on the wire (a JPEG camera frame, say) when it is sent
    as is; default: the input tensor's own size. ``compress`` (``fp16`` or ``int8``) is what ``split
    --compress`` does to the float32 tensors sent between segments: they cost half or a quarter; the model
    outputs still return at their own size (``Tensor.return_bytes``), as the split returns them.
    With ``boundaries`` (a ``dnnsplit boundaries`` file), every tensor it measured costs its measured bytes
    (mean per sample) with ``compress`` (none when None) and ``lossless``, plus the codec's host encode time
    scaled to the sending tier's device and decode time to the receiving one's, per link it crosses; a
    tensor whose measured accuracy drop under the codec is over ``max_accuracy_drop`` (points) goes
    uncoded (float32, the same lossless coding). ``session_requests``: see ``Problem``.
    """
    check_mode(compress)
    if input_bytes is not None and input_bytes < 1:
        raise UsageError(f"input bytes must be at least 1 (got {input_bytes})", "pass the encoded frame size")
    tiers = check_tiers(tiers)
    profile = profile.calibrated()
    specs = tier_devices(tiers, devices or {})
    _check_known(tier_profiles or {}, TIER_ORDER, "tier profile")
    compute = [_compute_times(profile, tier, specs[tier], (tier_profiles or {}).get(tier)) for tier in tiers]
    layers = tuple(
        LayerCost(la.name, tuple(times[i] for times in compute), WEIGHT_BYTES * la.params)
        for i, la in enumerate(profile.layers)
    )
    tensors, outputs = _tensors(profile, input_bytes, compress)
    if boundaries is not None:
        chosen = tensor_codecs(boundaries, compress, lossless, max_accuracy_drop)
        scales = [specs[t].latency_scale for t in tiers]
        tensors = tuple(_measured(x, chosen.get(x.name), scales) for x in tensors)
    mobile = specs["mobile"]
    power = None
    if mobile.compute_power_w is not None and mobile.idle_power_w is not None:
        power = MobilePower(mobile.compute_power_w, mobile.idle_power_w)
    return Problem(
        tiers=tiers,
        layers=layers,
        tensors=tensors,
        outputs=outputs,
        links=_links(tiers, links or {}),
        mobile_power=power,
        objective=parse_objective(objective) if isinstance(objective, str) else objective,
        constraints=constraints or Constraints(),
        session_requests=session_requests,
    )


def tensor_codecs(
    boundaries: BoundaryCosts, compress: str | None, lossless: str, max_accuracy_drop: float | None
) -> dict[str, BoundaryCodec]:
    """The measured option each boundary tensor is sent with: ``compress`` + ``lossless`` where its accuracy
    drop is within ``max_accuracy_drop``, else uncoded (``none`` + ``lossless``)."""
    codec = compress or "none"
    chosen = {}
    for name, costs in boundaries.tensors.items():
        option = costs.option(codec, lossless)
        if option is not None and max_accuracy_drop is not None and option.accuracy_drop > max_accuracy_drop:
            option = None
        option = option or costs.option("none", lossless)
        if option is None:
            raise UsageError(
                f"the boundaries file has no '{codec}' nor 'none' with '{lossless}' for tensor '{name}'",
                "re-run `dnnsplit boundaries` (it measures every codec)",
            )
        chosen[name] = option
    return chosen


def _measured(x: Tensor, option: BoundaryCodec | None, scales: Sequence[float]) -> Tensor:
    """``x`` at its measured size and codec time (encode on tier k, decode on tier k + 1, per link k)."""
    if option is None or x.producer is None:
        return x
    codec_ms = tuple(
        option.encode_ms * scales[k] + option.decode_ms * scales[k + 1] for k in range(len(scales) - 1)
    )
    size = max(1, round(option.bytes_mean))
    returned = x.returned_bytes  # a model output still returns as the model makes it
    return Tensor(x.name, size, x.producer, x.consumers, returned if returned != size else None, codec_ms)


def _check_known(given: Mapping[str, object], known: Sequence[str], what: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UsageError(f"{what} for unknown '{unknown[0]}'", f"use {', '.join(known)}")


def tier_devices(tiers: Sequence[str], given: Mapping[str, DeviceSpec]) -> dict[str, DeviceSpec]:
    """The device of every tier: the one given, else its preset (``DEFAULT_DEVICES``)."""
    _check_known(given, TIER_ORDER, "device")
    missing = [t for t in tiers if t not in given]
    if missing:
        from dnnsplit.profiling.devices import preset  # deferred: see the TYPE_CHECKING import

        given = {**{t: preset(DEFAULT_DEVICES[t]) for t in missing}, **given}
    return {t: given[t] for t in tiers}


def _compute_times(profile: Profile, tier: str, device: DeviceSpec, measured: Profile | None) -> list[float]:
    if measured is None:
        return [la.latency_ms * device.latency_scale for la in profile.layers]
    times = {la.name: la.latency_ms for la in measured.calibrated().layers}
    missing = [la.name for la in profile.layers if la.name not in times]
    if missing:
        raise UsageError(
            f"the {tier} profile lacks {len(missing)} of the model's {len(profile.layers)} layers "
            f"(first: '{missing[0]}')",
            "profile the same model with the same --group on every tier",
        )
    return [times[la.name] for la in profile.layers]


def _links(tiers: tuple[str, ...], given: Mapping[str, LinkSpec | str]) -> tuple[LinkSpec, ...]:
    names = link_names(tiers)
    _check_known(given, names, "link")
    defaults = default_links(tiers)
    return tuple(as_link(given[name]) if name in given else defaults[name] for name in names)


def _tensors(
    profile: Profile, input_bytes: int | None, compress: str | None
) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    """Tensors read by a layer or returned as model outputs, with producers and consumers by layer index."""
    source = profile.input.name
    producer: dict[str, int | None] = {source: None}
    size = {source: profile.input.bytes if input_bytes is None else input_bytes}
    consumers: dict[str, set[int]] = {source: set()}
    order = [source]
    for i, la in enumerate(profile.layers):
        for name in la.inputs:
            if name not in producer:
                where = (
                    "a later layer"
                    if any(name in {t.name for t in x.outputs} for x in profile.layers)
                    else "no layer"
                )
                raise UsageError(
                    f"layer '{la.name}' reads '{name}', which {where} produces",
                    "the profile must list layers in topological order; re-run profile",
                )
            consumers[name].add(i)
        for t in la.outputs:
            producer[t.name], size[t.name], consumers[t.name] = i, compressed_bytes(t, compress), set()
            order.append(t.name)
    wanted = []
    for t in profile.outputs:
        if t.name not in producer:
            raise UsageError(f"model output '{t.name}' is produced by no layer", "re-run profile")
        if t.name not in wanted:
            wanted.append(t.name)
    kept = [name for name in order if consumers[name] or name in wanted]
    # split --compress encodes only what one segment sends to another; the model outputs go back to the
    # caller as the model makes them (float32 logits), so their return is charged at full size.
    full = {t.name: t.bytes for la in profile.layers for t in la.outputs}
    tensors = tuple(
        Tensor(
            name,
            size[name],
            producer[name],
            tuple(sorted(consumers[name])),
            full[name] if name in wanted and full.get(name, size[name]) != size[name] else None,
        )
        for name in kept
    )
    position = {name: j for j, name in enumerate(kept)}
    return tensors, tuple(position[name] for name in wanted)
