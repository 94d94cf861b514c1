"""Is a split directory's segment file the one its manifest describes? Checked before anything loads it.

``manifest.yaml`` names each segment's file, size and sha256. A loader that opened ``file`` as written would
load ``/etc/passwd``, a ``../`` path or a symlink out of the directory, and a segment whose weights were
edited in place (the digest client and server compare hashes the manifest, not the file). So every loader
(``run``, ``serve``, ``infer``, the browser page's server) goes through ``verify_segments`` first: the path
must stay inside the directory once resolved, and the file must have the manifest's size and sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from dnnsplit.errors import UsageError
from dnnsplit.splitting.manifest import FILE, Manifest, SegmentEntry

REDO = "copy the split directory again, or split the model again"


def data_file(path: Path) -> Path:
    """Where a segment over protobuf's 2 GB limit keeps its weights (ONNX external data, see split._save)."""
    return path.with_name(f"{path.name}.data")


def segment_path(directory: str | Path, segment: SegmentEntry) -> Path:
    """The segment's file, resolved; ``UsageError`` when the manifest points outside ``directory``."""
    root = Path(directory).resolve()
    name = segment.file
    where = f"segment {segment.index + 1}'s file '{name}' in {Path(directory) / FILE}"
    hint = "a manifest names files inside its own directory: split the model again"
    if not name or "\0" in name:
        raise UsageError(f"{where} is not a file name", hint)
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        raise UsageError(f"{where} is an absolute path", hint)
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        if ".." in PurePosixPath(name).parts:
            raise UsageError(f"{where} leads out of the split directory (via '..', to {path})", hint)
        raise UsageError(
            f"{where} leads out of the split directory (a symlink to {path})",
            "copy the file into the directory instead of linking to it",
        )
    return path


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify_segments(
    manifest: Manifest, directory: str | Path, indices: Iterable[int] | None = None
) -> dict[int, Path]:
    """Check the segment files of ``indices`` (default: all); their resolved paths, by index.

    Every segment's path is checked, loaded or not (a hostile manifest is refused whichever tier reads
    it); only the files of ``indices`` must exist here with the manifest's size and sha256 (an edge holds
    the files it serves). A segment with external data must have that file covered by ``data_sha256``.
    """
    paths = {seg.index: segment_path(directory, seg) for seg in manifest.segments}
    for index in range(len(manifest.segments)) if indices is None else indices:
        seg = manifest.segments[index]
        path = paths[index]
        shown = Path(directory) / seg.file
        if not path.is_file():
            raise UsageError(f"segment file {shown} is missing", REDO)
        data = data_file(path)
        if data.exists() and not data.resolve().is_relative_to(Path(directory).resolve()):
            raise UsageError(f"segment file {shown}'s weights {data} lead out of the split directory", REDO)
        size = path.stat().st_size + (data.stat().st_size if data.is_file() else 0)
        if size != seg.bytes:
            raise UsageError(
                f"segment file {shown} has {size} bytes, the manifest says {seg.bytes} "
                "(truncated or replaced)",
                REDO,
            )
        if _sha256(path) != seg.sha256:
            raise UsageError(
                f"segment file {shown} does not match its sha256 in {FILE} (modified after the split)", REDO
            )
        if data.is_file():
            if seg.data_sha256 is None:
                raise UsageError(
                    f"segment file {shown}'s weights {data.name} have no sha256 in {FILE} "
                    "(written before dnnsplit checked them)",
                    "split the model again",
                )
            if _sha256(data) != seg.data_sha256:
                raise UsageError(
                    f"segment weights {data} do not match their sha256 in {FILE} (modified after the split)",
                    REDO,
                )
    return paths
