"""What every command shares: MODEL options, error handling, output rendering, progress bars."""

from __future__ import annotations

import csv
import errno
import functools
import inspect
import io
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from dnnsplit.errors import DnnsplitError, UsageError
from dnnsplit.fileio import dump_document
from dnnsplit.progress import ProgressFn, describe, no_progress
from dnnsplit.text import Summary, TextTable, human_bytes  # noqa: F401 - human_bytes: the commands' too

# Piped or captured output is not squeezed into 80 columns: tables stay readable in logs and CI.
_WIDE = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
# User text (paths, names, messages, a server's answers) prints literally: no markup (a path holding
# "[/]" made rich raise, "[bold]" vanished from messages) and no emoji codes. Styling is explicit: Text.
out = Console(soft_wrap=True, width=_WIDE, markup=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)

# OS errors that say something about the user's files or machine, not about dnnsplit: exit 2.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}

F = TypeVar("F", bound=Callable[..., Any])


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class TableFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"
    csv = "csv"


# Where `profile` (and `plan` / `rl train` on a MODEL) measure, and how it groups the rows.
class Runtime(StrEnum):
    onnxruntime = "onnxruntime"
    torch = "torch"
    browser = "browser"


class Group(StrEnum):
    node = "node"
    module = "module"
    block = "block"


# MODEL and the options that shape how it loads; every command that takes a MODEL declares these.
ModelArg = Annotated[
    str,
    typer.Argument(
        help="torchvision:NAME, path/to/model.onnx, path/to/checkpoint.pt or package.module:factory.",
        show_default=False,
    ),
]
InputShapeOpt = Annotated[
    str | None, typer.Option("--input-shape", help="NxCxHxW, e.g. 1x3x224x224 (default: the model's own).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random initialisation.")]
WeightsOpt = Annotated[
    str | None, typer.Option("--weights", help="A state_dict file to load into the model.")
]
NumClassesOpt = Annotated[int | None, typer.Option("--num-classes", help="Number of output classes.")]
ArchOpt = Annotated[
    str | None,
    typer.Option("--arch", help="Architecture for a state_dict checkpoint, e.g. torchvision:resnet18."),
]
TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Trust the files read: load pickled objects (a whole nn.Module, an old policy.zip) and build "
        "the architecture a checkpoint names by import path. Runs code from the file.",
    ),
]


def model_options(
    *,
    input_shape: str | None = None,
    seed: int = 0,
    weights: str | None = None,
    num_classes: int | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
) -> Any:
    """The MODEL flags as one ``dnnsplit.models.ModelOptions``, checked."""
    from dnnsplit.models import ModelOptions, parse_input_shape

    if num_classes is not None and num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1 (got {num_classes})", "pass a positive number")
    return ModelOptions(
        seed=seed,
        weights=weights,
        num_classes=num_classes,
        arch=arch,
        trust_pickle=trust_pickle,
        input_shape=parse_input_shape(input_shape) if input_shape else None,
    )


# The flags every MODEL command takes, declared once: (name, annotation, default).
_MODEL_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("input_shape", InputShapeOpt, None),
    ("seed", SeedOpt, 0),
    ("weights", WeightsOpt, None),
    ("num_classes", NumClassesOpt, None),
    ("arch", ArchOpt, None),
    ("trust_pickle", TrustPickleOpt, False),
)


def takes_model(fn: F) -> F:
    """Give a command the MODEL flags and call it with them as one ``model: ModelOptions`` argument.

    The command declares a keyword parameter ``model_opts`` instead of six flags; a flag it declares
    itself (``seed``, with its own help) is kept and also fed into the options.
    """
    signature = inspect.signature(fn)
    own = set(signature.parameters) - {"model_opts"}

    def resolved(annotation: Any) -> Any:  # `from __future__ import annotations` leaves strings
        return eval(annotation, fn.__globals__) if isinstance(annotation, str) else annotation  # noqa: S307

    kept = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=resolved(p.annotation))
        for p in signature.parameters.values()
        if p.name != "model_opts"
    ]
    kept += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, annotation, default in _MODEL_FLAGS
        if name not in own
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: (kwargs[name] if name in own else kwargs.pop(name)) for name, _, _ in _MODEL_FLAGS}
        return fn(*args, **kwargs, model_opts=model_options(**flags))

    # typer reads the parameters from the signature and their types from the annotations.
    wrapper.__signature__ = signature.replace(parameters=kept, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in kept}
    return wrapper  # type: ignore[return-value]


def guarded(fn: F) -> F:
    """Turn user errors into one line on stderr and an exit code; never a traceback for them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DnnsplitError as exc:
            print_error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except MemoryError as exc:  # a size the user chose (input shape, batch) that does not fit here
            detail = f" ({_first_line(exc)[:160]})" if _first_line(exc) else ""
            print_error(f"out of memory{detail}; use a smaller input or batch, or a machine with more memory")
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in _ENVIRONMENT_ERRNOS:
                _internal_error(exc)
            where = f" '{exc.filename}'" if exc.filename else ""
            reason = exc.strerror or type(exc).__name__
            print_error(f"{reason}{where}; check its permissions and the free space")
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported as one
            _internal_error(exc)

    return wrapper  # type: ignore[return-value]


def print_error(line: str, label: str = "error:") -> None:
    """``error: LINE`` on stderr, LINE as it is (a Text, never parsed as markup)."""
    err.print(Text.assemble((label, "bold red"), " ", line), highlight=False)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _internal_error(exc: Exception) -> NoReturn:
    if os.environ.get("DNNSPLIT_DEBUG"):
        traceback.print_exc()
    print_error(
        f"{type(exc).__name__}: {_first_line(exc)} (set DNNSPLIT_DEBUG=1 for the traceback and report it)",
        "internal error:",
    )
    raise typer.Exit(3) from None


def new_progress() -> Progress:
    """The one look of every progress display: spinner, description, bar, done/total, elapsed, on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr, driven by the library's progress callbacks (dnnsplit.progress)."""
    if not enabled or not err.is_terminal and os.environ.get("DNNSPLIT_PROGRESS") != "1":
        yield no_progress
        return
    with new_progress() as progress:
        task = progress.add_task("starting", total=None)

        def update(stage: str, done: int, total: int, detail: str = "") -> None:
            total_or_none = total if total > 1 else None
            progress.update(task, description=describe(stage, detail), completed=done, total=total_or_none)

        yield update


def print_document(data: Any, fmt: str) -> None:
    """JSON/YAML on stdout, plain (no colours or wrapping) so it can be piped."""
    sys.stdout.write(dump_document(data, fmt))
    sys.stdout.flush()


def print_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    sys.stdout.write(buffer.getvalue())


def simple_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    return table


def text_table(table: TextTable) -> Table:
    drawn = Table(title=table.title, title_justify="left")
    for i, name in enumerate(table.columns):
        drawn.add_column(name, justify=table.justify(i))  # type: ignore[arg-type]
    for row in table.rows:
        drawn.add_row(*row)
    return drawn


def print_summary(summary: Summary) -> None:
    """A library's summary (its headline, tables and lines), drawn; the library chose every word."""
    out.print(Text.assemble((summary.name, "bold"), summary.headline), highlight=False)
    for block in summary.blocks:
        out.print(text_table(block) if isinstance(block, TextTable) else block, highlight=False)


def check_top(top: int) -> None:
    """``--top`` of run and infer: at least one class."""
    if top < 1:
        raise UsageError(f"--top must be at least 1 (got {top})", "pass --top 5, say")


def classes_table(title: str, classes: list[dict[str, Any]]) -> Table:
    """The top classes of ``run`` and ``infer``, as a table."""
    return simple_table(
        title,
        ["class", "name", "probability"],
        [[c["class"], c["name"] or "-", f"{c['probability']:.4f}"] for c in classes],
    )
