"""The `dnnsplit` command: one module per subcommand, registered here."""

from __future__ import annotations

import typer

from dnnsplit import __version__
from dnnsplit.cli import bench as bench_cmd
from dnnsplit.cli import bottleneck as bottleneck_cmd
from dnnsplit.cli import boundaries as boundaries_cmd
from dnnsplit.cli import branch as branch_cmd
from dnnsplit.cli import cuts as cuts_cmd
from dnnsplit.cli import devices as devices_cmd
from dnnsplit.cli import infer as infer_cmd
from dnnsplit.cli import models as models_cmd
from dnnsplit.cli import pipeline as pipeline_cmd
from dnnsplit.cli import plan as plan_cmd
from dnnsplit.cli import profile as profile_cmd
from dnnsplit.cli import prune as prune_cmd
from dnnsplit.cli import rl as rl_cmd
from dnnsplit.cli import run as run_cmd
from dnnsplit.cli import serve as serve_cmd
from dnnsplit.cli import split as split_cmd
from dnnsplit.cli import train as train_cmd

app = typer.Typer(
    name="dnnsplit",
    help=(
        "Prepare vision models for collaborative inference across a mobile web client, an edge server and a "
        "cloud: profile, branch, prune, plan, split, serve and infer. Exit codes: 0 ok, 1 a budget or "
        "validation check failed, 2 bad usage or input, 3 internal error."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _register(module: object, name: str) -> None:
    fn = getattr(module, name)
    app.command(name=name, epilog=getattr(module, "EXAMPLES", None))(fn)


_register(profile_cmd, "profile")
_register(plan_cmd, "plan")
_register(boundaries_cmd, "boundaries")
_register(split_cmd, "split")
_register(cuts_cmd, "cuts")
_register(run_cmd, "run")
app.command(name="train", epilog=train_cmd.TRAIN_EXAMPLES)(train_cmd.train)
app.command(name="eval", epilog=train_cmd.EVAL_EXAMPLES)(train_cmd.eval)
_register(branch_cmd, "branch")
_register(bottleneck_cmd, "bottleneck")
_register(serve_cmd, "serve")
_register(infer_cmd, "infer")
_register(bench_cmd, "bench")
app.command(name="prune", epilog=prune_cmd.PRUNE_EXAMPLES)(prune_cmd.prune)
app.command(name="select", epilog=prune_cmd.SELECT_EXAMPLES)(prune_cmd.select)
_register(devices_cmd, "devices")
app.add_typer(rl_cmd.app, name="rl", epilog=rl_cmd.EXAMPLES)
_register(models_cmd, "models")
app.command(name="init", epilog=pipeline_cmd.INIT_EXAMPLES)(pipeline_cmd.init)
app.command(name="pipeline", epilog=pipeline_cmd.PIPELINE_EXAMPLES)(pipeline_cmd.pipeline)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dnnsplit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """dnnsplit: collaborative DNN inference across mobile, edge and cloud."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
