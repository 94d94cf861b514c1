"""`dnnsplit pipeline CONFIG`: every stage from one config, a report, and budgets as exit codes;
`dnnsplit init`: a commented example config that runs as is."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from dnnsplit.cli.common import Format, err, guarded, new_progress, out, print_document, print_error
from dnnsplit.errors import BudgetError, UsageError
from dnnsplit.progress import describe

PIPELINE_EXAMPLES = """
Examples:

  dnnsplit init                                   # writes a commented dnnsplit.yaml here
  dnnsplit pipeline dnnsplit.yaml                 # exit 0: every budget holds; 1: one is missed
  dnnsplit pipeline dnnsplit.yaml --check         # validate the config only
  dnnsplit pipeline dnnsplit.yaml --force profile # rerun one stage (and whatever its outputs feed)
  dnnsplit pipeline dnnsplit.yaml --format json > summary.json
"""

INIT_EXAMPLES = """
Examples:

  dnnsplit init && dnnsplit pipeline dnnsplit.yaml
"""

CONFIG_NAME = "dnnsplit.yaml"


class _Display:
    """One rich progress display across the stages: the stage counter and what the current stage does."""

    def __init__(self, progress: Progress) -> None:
        self.bar = progress
        self.stages = progress.add_task("stages", total=None)
        self.step = progress.add_task("", total=None)

    def stage_started(self, name: str, index: int, total: int) -> None:
        self.bar.update(
            self.stages, description=f"stage {index + 1}/{total}: {name}", completed=index, total=total
        )
        self.bar.update(self.step, description="  checking inputs", completed=0, total=None)

    def progress(self, message: str, done: int, total: int, detail: str = "") -> None:
        self.bar.update(
            self.step,
            description=f"  {describe(message, detail)}",
            completed=done,
            total=total if total > 1 else None,
        )

    def stage_finished(self, outcome: Any) -> None:
        how = f"{outcome.seconds:.1f} s" if outcome.status == "ran" else outcome.why
        self.bar.console.print(f"{outcome.name}: {outcome.status} ({how})", highlight=False)


@guarded
def pipeline(
    config: Annotated[Path, typer.Argument(help="The config file (dnnsplit.yaml).", show_default=False)],
    check: Annotated[bool, typer.Option("--check", help="Validate the config and exit.")] = False,
    force: Annotated[
        list[str] | None,
        typer.Option(
            "--force", help="Rerun a stage although its inputs did not change: a stage name or all."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output directory (default: the config's output).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the summary.")] = Format.table,
) -> None:
    """Run train -> profile -> branch -> prune -> bottleneck -> plan -> split from CONFIG, write
    OUT/report.md with plots, and check the budgets.

    Exit 0 when every budget holds, 1 naming each one missed, 2 on a bad config (every problem listed
    with its line).
    """
    from dnnsplit.pipeline.budgets import check_budgets, missed
    from dnnsplit.pipeline.config import ConfigError, load_config
    from dnnsplit.pipeline.stages import Pipeline, Reporter

    try:
        cfg = load_config(config, output)
    except ConfigError as exc:
        for line in exc.lines()[:-1]:  # all but the last here; guarded prints the last and sets exit 2
            print_error(line)
        raise UsageError(exc.lines()[-1]) from None
    if check:
        out.print(f"{config}: ok ({len(cfg.tier_names)} tiers, output {cfg.output})", highlight=False)
        return
    runner = Pipeline(cfg, force=frozenset(force or ()))
    start = time.perf_counter()
    show = fmt == Format.table and (err.is_terminal or os.environ.get("DNNSPLIT_PROGRESS") == "1")
    if show:
        with new_progress() as progress:
            runner.reporter = _Display(progress)  # type: ignore[assignment]
            outcomes = runner.run()
    else:
        runner.reporter = Reporter()
        outcomes = runner.run()
    results = check_budgets(cfg.budgets, outcomes)
    from dnnsplit.pipeline.report import write_report

    report = write_report(cfg, runner.layout, outcomes, results)
    summary = {
        "config": str(config),
        "output": str(cfg.output),
        "report": str(report),
        "seconds": round(time.perf_counter() - start, 2),
        "stages": [
            {"name": o.name, "status": o.status, "seconds": round(o.seconds, 2), "why": o.why}
            for o in outcomes
        ],
        "budgets": [r.to_dict() for r in results],
        "passed": not missed(results),
    }
    if fmt != Format.table:
        print_document(summary, fmt.value)
    else:
        _print_summary(outcomes, results)
        out.print(f"report: {report}", highlight=False)
    failed = missed(results)
    if failed:
        raise BudgetError(
            f"{len(failed)} budget(s) missed: " + "; ".join(r.describe() for r in failed),
            f"see {report}",
        )


def _print_summary(outcomes: list[Any], results: list[Any]) -> None:
    stages = Table(title="Stages", title_justify="left")
    for name, justify in (("stage", "left"), ("status", "left"), ("s", "right"), ("result", "left")):
        stages.add_column(name, justify=justify)  # type: ignore[arg-type]
    for o in outcomes:
        stages.add_row(o.name, o.status, f"{o.seconds:.1f}" if o.status == "ran" else "-", _headline(o))
    out.print(stages)
    budgets = Table(title="Budgets", title_justify="left")
    for name, justify in (("budget", "left"), ("limit", "right"), ("actual", "right"), ("holds", "left")):
        budgets.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in results:
        op = {"max": "<= ", "min": ">= ", "check": ""}[r.kind]
        limit = "-" if r.limit is None else f"{op}{r.limit:g} {r.unit}".strip()
        actual = "-" if r.actual is None else f"{r.actual:.4g} {r.unit}".strip()
        verdict: str | Text = "yes" if r.holds else Text("MISSED", style="bold red")
        if r.limit is None and r.kind != "check":
            verdict = "(not enforced)"
        budgets.add_row(r.name, limit, actual, verdict)
    out.print(budgets)


def _headline(o: Any) -> str:
    """A stage's key figure in a few words."""
    r = o.result
    if o.status == "off":
        return o.why
    if o.name == "train":
        return f"test accuracy {r.get('test_accuracy', 0):.4f}" + (
            "" if r.get("trained") else " (given weights)"
        )
    if o.name == "profile":
        return f"{r.get('layers')} layers, {r.get('latency_ms', 0):.2f} ms on this host"
    if o.name == "branch":
        ok = (r.get("validation") or {}).get("passed", True)
        return f"exit rate {r.get('exit_rate', 0):.1%}, accuracy {r.get('accuracy', 0):.4f}" + (
            "" if ok else " (onnxruntime mismatches: see the report)"
        )
    if o.name == "prune":
        return f"{len(r.get('variants', []))} variants"
    if o.name == "bottleneck":
        return (
            f"after {r.get('at')}: {r.get('bytes_mean', 0):.0f} B code (float32 {r.get('float32_bytes')} B), "
            f"drop {r.get('drop_points', 0):.2f} points" + ("" if r.get("trained") else " (given)")
        )
    if o.name == "plan":
        nets = r.get("networks", {})
        return ", ".join(f"{k} {v['latency_ms']:.1f} ms" for k, v in nets.items())
    if o.name == "split":
        segs = r.get("segments", [])
        v = r.get("validation") or {}
        return f"{len(segs)} segments, validation {'ok' if v.get('passed', True) else 'FAILED'}"
    return ""


@guarded
def init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing dnnsplit.yaml.")] = False,
) -> None:
    """Write a commented example dnnsplit.yaml into the current directory: the built-in demo (resnet18 on the
    bundled digits, mobile-web / edge / cloud over 4G), which runs as is."""
    from importlib import resources

    from dnnsplit.fileio import write_text_atomic
    from dnnsplit.output_dir import declares
    from dnnsplit.pipeline.config import SCHEMA

    target = Path(CONFIG_NAME)
    if target.exists() and not force:
        raise UsageError(f"{target} exists", "pass --force to overwrite it")
    if target.exists() and not declares(target, SCHEMA.split("@")[0]):
        # --force overwrites a pipeline config (one `init` wrote, maybe edited since), nothing else
        raise UsageError(
            f"{target} is not a dnnsplit pipeline config (schema {SCHEMA})", "move it away first"
        )
    text = resources.files("dnnsplit.pipeline").joinpath("demo.yaml").read_text(encoding="utf-8")
    write_text_atomic(target, text)
    out.print(f"wrote {target}; run: dnnsplit pipeline {target}", highlight=False)
