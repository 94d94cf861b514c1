"""Writing artifacts atomically and reading/writing the versioned file formats."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dnnsplit.errors import UsageError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure (or Ctrl-C) half-way leaves no partial artifact behind. A path that cannot be written (a
    directory, ``/proc/x``, a read-only place) is a usage error, found before the block runs.
    """
    target = Path(path)
    tmp_path = _temp_beside(target)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; an artifact gets the permissions a plain open() would give it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise _unwritable(target, exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail now, with a usage error, if ``path`` could not be written: before minutes of work, not after."""
    _temp_beside(Path(path)).unlink()


def _temp_beside(target: Path) -> Path:
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(
            f"output directory '{parent}' does not exist", "create it first or pick another path"
        )
    if target.is_dir():
        raise UsageError(f"output '{target}' is a directory", "pass a file path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    os.close(fd)
    return Path(tmp)


def _unwritable(target: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"cannot write '{target}': {exc.strerror or type(exc).__name__}",
        "pick a path in a writable directory",
    )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dump_document(data: Any, fmt: str) -> str:
    """Render plain data as JSON or YAML text."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    raise UsageError(f"unknown document format '{fmt}'", "use json or yaml")


def format_for_path(path: str | os.PathLike[str]) -> str:
    """JSON for ``.json`` files, YAML for ``.yaml``/``.yml``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise UsageError(f"cannot tell the format of '{path}' from its extension", "name it .json, .yaml or .yml")


def write_document(path: str | os.PathLike[str], data: Any) -> None:
    write_text_atomic(path, dump_document(data, format_for_path(path)))


# A document's aliases may reuse a block; they may not multiply it. A billion-laughs file (9 aliases on
# each of 9 levels, under 1 kB) expands to ~10^9 nodes for whatever walks the data next. Real dnnsplit
# files use few aliases or none: 100,000 nodes past the ones written is far above any of them.
MAX_ALIAS_EXPANSION = 100_000


class _Refused(yaml.composer.ComposerError):
    pass


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses (with a ``yaml.YAMLError``) alias bombs, recursive aliases and
    nesting too deep to walk: each fails in milliseconds instead of eating memory or the stack."""
    loader = yaml.SafeLoader(text)
    try:
        node = _checked_node(loader)
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def compose_yaml(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (for line numbers), with ``parse_yaml``'s limits."""
    loader = yaml.SafeLoader(text)
    try:
        return _checked_node(loader)
    finally:
        loader.dispose()


def _checked_node(loader: yaml.SafeLoader) -> yaml.Node | None:
    try:
        node = loader.get_single_node()
    except RecursionError:  # the composer recurses once per level
        raise _Refused(None, None, "the document is nested too deeply", None) from None
    if node is not None:
        _check_aliases(node)
    return node


def _check_aliases(root: yaml.Node) -> None:
    """Count the nodes the tree has with every alias expanded (each shared node once, so this is quick)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    unique = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            continue
        if key in size:
            continue
        if key in on_path:  # only descendants are visited while a node is on the path
            raise _Refused(None, None, "an alias refers to a node that holds it", node.start_mark)
        on_path.add(key)
        unique += 1
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    if size[id(root)] - unique > MAX_ALIAS_EXPANSION:
        raise _Refused(
            None,
            None,
            f"its aliases expand it to {size[id(root)]:.3g} nodes from {unique} (more than "
            f"{MAX_ALIAS_EXPANSION:,} added: an alias bomb?)",
            root.start_mark,
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def read_text(path: str | os.PathLike[str]) -> str:
    """A user's text file as a string; not UTF-8 or unreadable is a usage error naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "save it as UTF-8",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}", "check the path and its permissions"
        ) from None


def read_document(path: str | os.PathLike[str], expected_schema: str | None = None) -> dict[str, Any]:
    """Read a JSON/YAML document; check its ``schema`` field when ``expected_schema`` is given."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"file not found: {path}", "check the path")
    try:
        data = parse_yaml(read_text(p))  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = f": {exc.problem}" if isinstance(exc, _Refused) else ""
        raise UsageError(f"{path} is not valid YAML/JSON{where}{problem}", "fix the syntax") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold a mapping at the top level", "check the file's contents")
    if expected_schema is not None:
        schema = data.get("schema")
        family = expected_schema.split("@")[0]
        if not isinstance(schema, str) or schema.split("@")[0] != family:
            raise UsageError(
                f"{path} is not a {family} file (schema: {schema!r})",
                f"pass a file with schema {expected_schema}",
            )
        if schema != expected_schema:
            raise UsageError(
                f"{path} has schema {schema}, this dnnsplit reads {expected_schema}",
                "regenerate the file with this version of dnnsplit",
            )
    return data
