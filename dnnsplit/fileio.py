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

    A failure (or Ctrl-C) half-way leaves no partial artifact behind.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(
            f"output directory '{parent}' does not exist", "create it first or pick another path"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; an artifact gets the permissions a plain open() would give it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def read_document(path: str | os.PathLike[str], expected_schema: str | None = None) -> dict[str, Any]:
    """Read a JSON/YAML document; check its ``schema`` field when ``expected_schema`` is given."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"file not found: {path}", "check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path} is not valid YAML/JSON{where}", "fix the syntax") from exc
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
