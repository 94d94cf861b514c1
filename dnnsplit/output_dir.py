"""Output directories: what a command may write into, and what ``--force`` may replace.

``--force`` never removes what dnnsplit did not write (``split --output . --force`` once emptied the
current directory: the staging folder was made in ``target.parent``, which for ``.`` is the target
itself, and then the target was deleted). It replaces only a directory that holds the same kind of
dnnsplit output, by its marker file (a split's ``manifest.yaml``, ...) declaring that kind's schema, and
nothing but the files that marker lists; anything else is refused with a usage error. Paths are resolved
first (``.``, ``..``, symlinks, trailing slashes); a replacement is staged in a sibling of the resolved
directory and swapped in by renames.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document

# A marker is a small YAML file; a bigger file of that name is somebody else's (and not worth parsing).
_MAX_MARKER_BYTES = 16 * 1024 * 1024


def _split_files(manifest: dict[str, Any]) -> set[str]:
    files = {str(s.get("file")) for s in _dicts(manifest.get("segments"))}
    return files | {f"{f}.data" for f in files}  # a segment over 2 GB keeps its weights beside it


def _variant_files(variants: dict[str, Any]) -> set[str]:
    keys = ("file", "checkpoint", "profile")
    files = {str(v.get(k)) for v in _dicts(variants.get("variants")) for k in keys}
    return files | {"misses.yaml", ".misses.lock"}  # `dnnsplit select` records its misses there


def _bottleneck_files(document: dict[str, Any]) -> set[str]:
    files = document.get("files")
    return {str(v) for v in files.values()} if isinstance(files, dict) else set()


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class OutputKind:
    what: str  # for messages: "a split"
    marker: str  # the file every finished output of this kind holds
    schema: str  # the schema family the marker declares
    files: Callable[[dict[str, Any]], set[str]] | None = None  # the files the marker accounts for
    unfinished: str | None = None  # a file that marks an interrupted one (a branch's training state)
    transient: tuple[str, ...] = ()  # files the command itself creates before it checks the directory


SPLIT = OutputKind("a split", "manifest.yaml", "dnnsplit/manifest", files=_split_files)
# A branch and a pipeline are written into, never replaced: they need no list of their files.
BRANCH = OutputKind(
    "a branch", "branch.yaml", "dnnsplit/branch", unfinished=".train/fingerprint", transient=(".lock",)
)
VARIANTS = OutputKind("a prune output", "variants.yaml", "dnnsplit/variants", files=_variant_files)
PIPELINE = OutputKind("a pipeline output", ".stages.yaml", "dnnsplit/stages")
BOTTLENECK = OutputKind("a bottleneck", "bottleneck.yaml", "dnnsplit/bottleneck", files=_bottleneck_files)
# Most specific first: a branch directory also holds a manifest.yaml (so `run` and `serve` take it).
KINDS = (BRANCH, VARIANTS, BOTTLENECK, PIPELINE, SPLIT)


def kind_of(directory: Path) -> OutputKind | None:
    """Which kind of dnnsplit output ``directory`` holds, by its marker; None: none (or not ours)."""
    for kind in KINDS:
        if declares(directory / kind.marker, kind.schema):
            return kind
    for kind in KINDS:
        if kind.unfinished and (directory / kind.unfinished).is_file():
            return kind
    return None


def declares(path: Path, family: str) -> bool:
    """Whether ``path`` is a dnnsplit document of schema ``family`` (``dnnsplit/manifest``, any version)."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_MARKER_BYTES:
            return False
        schema = read_document(path).get("schema")
    except (UsageError, OSError):
        return False
    return isinstance(schema, str) and schema.split("@")[0] == family


def claim(
    directory: str | os.PathLike[str], kind: OutputKind, force: bool, *, into: bool = False
) -> Path:
    """The resolved ``directory`` if ``kind``'s output may go there; a UsageError (exit 2) otherwise.

    Free: missing, or empty. Taken, only with ``force``: it holds ``kind``'s marker and no file the marker
    does not list. ``into``: the command writes into the directory instead of replacing it (and removes
    only its own files), so other files may stay and it may be the current directory.
    """
    target = Path(directory).resolve()
    shown = f"'{directory}'" if str(directory) == str(target) else f"'{directory}' ({target})"
    if target.exists() and not target.is_dir():
        raise UsageError(f"output {shown} is a file", "pick a directory")
    if not target.parent.is_dir():
        raise UsageError(f"the parent of {shown} does not exist", "create it first")
    if _is_free(target, kind, shown):
        return _writable(target, into, shown)
    if not force:
        raise UsageError(f"output {shown} exists and is not empty", "pick a new directory or pass --force")
    found = kind_of(target)
    if found is None:
        raise UsageError(
            f"output {shown} is not empty and is not {kind.what} (it has no dnnsplit {kind.marker})",
            "pick a new or empty directory: dnnsplit replaces only what it wrote",
        )
    if found is not kind:
        raise UsageError(
            f"output {shown} holds {found.what} ({found.marker}), not {kind.what}",
            "pick another directory; --force replaces only the same kind of output",
        )
    if into:
        return _writable(target, into, shown)
    foreign = _foreign(target, kind)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UsageError(
            f"output {shown} holds {kind.what} and files dnnsplit did not write "
            f"({', '.join(foreign[:3])}{more})",
            "move them out first, or pick another directory",
        )
    if _holds_cwd(target):
        raise UsageError(
            f"output {shown} is the current directory or holds it", "run from elsewhere or pick another"
        )
    return _writable(target, into, shown)


def _writable(target: Path, into: bool, shown: str) -> Path:
    """``target`` if a folder can be made where the command will write (``/proc/x``: no), before any work."""
    where = target if into and target.exists() else target.parent  # a replacement is staged beside
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dnnsplit-probe-", dir=where))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"cannot write output {shown}: {reason}", "pick a writable directory") from None
    return target


def _foreign(target: Path, kind: OutputKind) -> list[str]:
    """What replacing ``target`` would remove beyond the regular files its marker lists."""
    listed = {kind.marker}
    if kind.files is not None:
        listed |= kind.files(read_document(target / kind.marker))
    return sorted(
        p.name
        for p in target.iterdir()
        if not (p.name in listed and p.is_file() and not p.is_symlink())
    )


def _is_free(target: Path, kind: OutputKind, shown: str) -> bool:
    if not target.exists():
        return True
    try:
        return not [p for p in target.iterdir() if p.name not in kind.transient]
    except OSError as exc:
        raise UsageError(f"cannot read output {shown}: {exc.strerror}", "check its permissions") from None


def _holds_cwd(target: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current directory was deleted
        return False
    return cwd == target or target in cwd.parents


@contextlib.contextmanager
def staged(directory: str | os.PathLike[str], kind: OutputKind, force: bool) -> Iterator[Path]:
    """A fresh folder beside ``directory`` to write ``kind``'s output into; when the block succeeds it
    becomes ``directory`` (replacing the old output, which ``claim`` checked), else it is removed."""
    target = claim(directory, kind, force)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    except OSError as exc:
        raise UsageError(
            f"cannot write beside '{directory}': {exc.strerror}", "pick a writable directory"
        ) from None
    try:
        yield staging
        _swap_in(staging, directory, kind, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, directory: str | os.PathLike[str], kind: OutputKind, force: bool) -> None:
    """Rename ``staging`` onto the target: readers see the old output or the new one, never a mix."""
    target = claim(directory, kind, force)  # again: the directory may have changed while we worked
    if not target.exists():
        os.replace(staging, target)
        return
    # rename(2) may replace an empty directory: the old output moves onto a fresh, unique, empty one.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
