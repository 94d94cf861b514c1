"""Which segments a process runs, and which tensors cross into and out of them.

A tier's process runs a contiguous run of segments starting at ``first``. What it must receive is every
tensor made before ``first`` (or the model input) that a segment at or after ``first`` reads, whichever
earlier segment made it: a skip tensor from segment 1 to segment 3 travels through the edge to the cloud.
What it returns is every model output made at or after ``first``; outputs made earlier stay where they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dnnsplit.errors import UsageError

# crossing and results_from live beside the manifest (the splitter's validation needs them too).
from dnnsplit.splitting.manifest import Manifest
from dnnsplit.splitting.manifest import crossing as crossing
from dnnsplit.splitting.manifest import results_from as results_from


def tier_segments(manifest: Manifest, tier: str) -> tuple[int, ...]:
    """The indices of ``tier``'s segments (contiguous: tiers follow each other along the chain)."""
    indices = tuple(s.index for s in manifest.segments if s.tier == tier)
    if not indices:
        tiers = list(dict.fromkeys(s.tier for s in manifest.segments))
        raise UsageError(f"the split has no '{tier}' segment", f"use one of {', '.join(tiers)}")
    if indices != tuple(range(indices[0], indices[-1] + 1)):
        raise UsageError(f"the '{tier}' segments are not contiguous", "split the model again")
    return indices


CLIENT_TIER = "mobile"


def local_prefix(manifest: Manifest) -> tuple[int, ...]:
    """The segments the client runs itself: the mobile tier's; none when the plan put every layer beyond it
    (an all-edge plan splits into one edge segment that takes the raw input)."""
    if manifest.segments[0].tier != CLIENT_TIER:
        return ()
    return tier_segments(manifest, CLIENT_TIER)


def digest(manifest: Manifest) -> str:
    """A short identity of the split (its segments' hashes and order): client and server must agree on it.

    It hashes the manifest's sha256 of every segment file (and of its external data, when it has some);
    those are the files' own hashes because no loader opens a file that does not match them
    (``splitting.integrity``). A split without external data keeps the digest it always had.
    """
    text = "\n".join(
        f"{s.index}:{s.tier}:{s.sha256}" + (f":{s.data_sha256}" if s.data_sha256 else "")
        for s in manifest.segments
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(manifest: Manifest, indices: Sequence[int]) -> str:
    files = ", ".join(manifest.segments[i].file for i in indices)
    return f"segment{'s' if len(indices) > 1 else ''} {files}"


def served_starts(manifest: Manifest, indices: Sequence[int]) -> tuple[int, ...]:
    """Where a request to a server of segments ``indices`` may start: their first segment, and for an
    elastic split every candidate boundary among them (the edge holds every piece after it)."""
    starts = {indices[0]}
    for candidate in (manifest.elastic or {}).get("candidates", []):
        boundary = int(candidate["boundary"])
        if indices[0] <= boundary <= indices[-1]:
            starts.add(boundary)
    return tuple(sorted(starts))


def elastic_edge_segments(manifest: Manifest) -> tuple[int, ...] | None:
    """For an elastic split, what the edge serves: every piece from the first boundary any candidate
    offloads at (None for a plain split, whose edge serves its tier's segments)."""
    if not manifest.elastic:
        return None
    offloading = [
        int(c["boundary"])
        for c in manifest.elastic.get("candidates", [])
        if int(c["boundary"]) < len(manifest.segments)
    ]
    if not offloading:
        raise UsageError(
            "this elastic split has no candidate that runs on the edge", "run it with dnnsplit run"
        )
    return tuple(range(min(offloading), len(manifest.segments)))


def phone_segments(manifest: Manifest) -> tuple[int, ...]:
    """The segments a phone downloads: its tier's, or for an elastic split every piece up to the last
    candidate boundary (the longest prefix it may run)."""
    if not manifest.elastic:
        return local_prefix(manifest)
    last = max(int(c["boundary"]) for c in manifest.elastic.get("candidates", []))
    return tuple(range(last))
