"""`dnnsplit rl`: train a deep-RL partitioner (PPO) and measure it against the exact solver and baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dnnsplit.cli.common import (
    Format,
    Group,
    Runtime,
    TrustPickleOpt,
    err,
    guarded,
    out,
    print_document,
    print_summary,
    progress_bar,
    takes_model,
)
from dnnsplit.errors import UsageError
from dnnsplit.fileio import check_writable

EXAMPLES = """
Examples:

  dnnsplit rl train profile.json --scenario context --output policy.zip

  dnnsplit rl train torchvision:resnet18 --scenario multiuser --input-bytes 30000 --users 20 --output mu.zip

  dnnsplit rl eval policy.zip                       # table: policy vs exact optimum and baselines

  dnnsplit rl eval policy.zip --format json          # the same; "gap" = mean relative gap to the optimum

  dnnsplit plan profile.json --solver rl --policy policy.zip --network 4g
"""

TRAIN_EXAMPLES = """
Examples:

  dnnsplit rl train profile.json --scenario context --output policy.zip

  dnnsplit rl train profile.json --tiers mobile,edge,cloud --timesteps 100000 --seed 1 --output p3.zip

  dnnsplit rl train torchvision:resnet18 --scenario multiuser --input-bytes 30000 --output mu.zip
"""

EVAL_EXAMPLES = """
Examples:

  dnnsplit rl eval policy.zip

  dnnsplit rl eval policy.zip --contexts 200 --format json

  dnnsplit rl eval mu.zip --loads 0.3,1.0,1.5 --seeds 3 --requests 3000
"""

app = typer.Typer(
    name="rl",
    help="Deep-RL partitioner: train a PPO policy over candidate partitions (context or multiuser scenario) "
    "and evaluate it against the exact solver and baselines.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command(epilog=TRAIN_EXAMPLES)
@guarded
@takes_model
def train(
    model: Annotated[
        str,
        typer.Argument(
            help="A profile file from `dnnsplit profile` (.json/.yaml), or a MODEL to profile first.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The policy file to write (.zip).")],
    scenario: Annotated[
        str, typer.Option(help="context (one request, changing conditions) or multiuser (a shared edge).")
    ] = "context",
    timesteps: Annotated[
        int | None,
        typer.Option(help="PPO steps (default: context 60000, multiuser 200000: enough for the targets)."),
    ] = None,
    tiers: Annotated[
        str, typer.Option(help="mobile,edge | mobile,edge,cloud | mobile,cloud.")
    ] = "mobile,edge",
    users: Annotated[int, typer.Option(help="multiuser: phones sharing the edge.")] = 20,
    input_bytes: Annotated[
        int | None,
        typer.Option(
            help="Bytes the raw input takes on the wire (e.g. a 30000-byte JPEG); default: its tensor."
        ),
    ] = None,
    compress: Annotated[
        str | None, typer.Option(help="fp16 or int8 boundary tensors (as split --compress).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the whole run (candidates, contexts, PPO).")] = 0,
    fmt: Annotated[
        Format, typer.Option("--format", help="How to print the training summary.")
    ] = Format.table,
    runtime: Annotated[Runtime, typer.Option(help="Runtime to profile MODEL on.")] = Runtime.onnxruntime,
    group: Annotated[Group, typer.Option(help="Profile rows: node, module or block.")] = Group.node,
    threads: Annotated[int | None, typer.Option(help="Threads when profiling MODEL.")] = None,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Train a partitioning policy with PPO and write a self-contained policy file.

    The file records the profile, tiers and scenario it was trained for: `rl eval` and
    `plan --solver rl` need nothing else. Exit 2 on bad input.
    """
    from dnnsplit.partition import parse_tiers, problem_from_profile
    from dnnsplit.partition.request import profile_context
    from dnnsplit.partition.rl.multiuser import MultiUserConfig
    from dnnsplit.partition.rl.policy_file import save_policy
    from dnnsplit.partition.rl.train import Scenario, check_scenario, default_space, train_policy
    from dnnsplit.profiling import ProfileSettings
    from dnnsplit.profiling.run import is_profile_path, load_or_profile

    check_scenario(scenario)
    tier_list = parse_tiers(tiers)
    if scenario == "multiuser" and "edge" not in tier_list:
        raise UsageError("the multiuser scenario needs an edge tier", "use --tiers mobile,edge[,cloud]")
    if output.suffix.lower() != ".zip":
        raise UsageError(f"--output '{output}' must end in .zip", "name it policy.zip, say")
    check_writable(output)  # before minutes of training
    if timesteps is not None and timesteps < 1:
        raise UsageError(f"--timesteps must be at least 1 (got {timesteps})", "pass --timesteps 60000, say")
    config = MultiUserConfig(users=users) if scenario == "multiuser" else None
    from_file = is_profile_path(model)
    settings = ProfileSettings(runtime=runtime.value, threads=threads, group=group.value)
    settings.check()
    options = None if from_file else model_opts
    with progress_bar() as progress:
        profile = load_or_profile(model, options, settings, progress)
        base = problem_from_profile(profile, tiers=tier_list, input_bytes=input_bytes, compress=compress)
        # The provenance a plan of this profile records; `plan --solver rl` checks its sha256 against its own.
        context = profile_context(profile.calibrated(), model if from_file else None, input_bytes, compress)
        policy = train_policy(
            base,
            Scenario(scenario, default_space(base), config),
            timesteps=timesteps,
            seed=seed,
            model=context.model,
            profile={**context.profile, "compress": context.compress},
            progress=progress,
        )
        save_policy(output, policy.meta, policy.weights)
    t = policy.meta["training"]
    summary = {
        "policy": str(output),
        "scenario": scenario,
        "model": profile.model.get("name") or model,
        "tiers": list(tier_list),
        "candidates": len(policy.candidates),
        "timesteps": t["timesteps"],
        "seed": seed,
        "train_seconds": t["seconds"],
        "candidate_search": t["candidate_search"],
    }
    if fmt == Format.table:
        out.print(
            Text.assemble(
                (str(summary["model"]), "bold"),
                f" over {' -> '.join(tier_list)}, {scenario} scenario: PPO, "
                f"{t['timesteps']} steps, {len(policy.candidates)} candidate partitions "
                f"(from {t['candidate_search']['contexts_solved']} exact solves), {t['seconds']:.1f} s",
            ),
            highlight=False,
        )
    else:
        print_document(summary, fmt.value)
    err.print(f"wrote policy to {output}", highlight=False)


@app.command(name="eval", epilog=EVAL_EXAMPLES)
@guarded
def eval_(
    policy_path: Annotated[
        Path,
        typer.Argument(metavar="POLICY", help="A policy file from `dnnsplit rl train`.", show_default=False),
    ],
    contexts: Annotated[int, typer.Option(help="context: held-out contexts to evaluate on.")] = 1000,
    loads: Annotated[
        str,
        typer.Option(help="multiuser: offered loads (edge utilisation if all went there), comma-separated."),
    ] = "0.3,1.5",
    seeds: Annotated[int, typer.Option(help="multiuser: simulated traces per load.")] = 3,
    requests: Annotated[int, typer.Option(help="multiuser: requests per trace.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the held-out contexts or traces.")] = 10_007,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Evaluate a policy on held-out contexts or traces against the exact solver and baselines.

    `--format json` prints the same figures; its "gap" is the policy's mean relative gap to the exact
    optimum (context) or its mean latency relative to load-aware exact (multiuser). Exit 2 on bad input.
    """
    from dnnsplit.partition.rl.evaluate import evaluate_context, evaluate_multiuser
    from dnnsplit.partition.rl.policy_file import load_policy
    from dnnsplit.partition.rl.summary import evaluation_summary

    if contexts < 1 or seeds < 1 or requests < 1:
        raise UsageError("--contexts, --seeds and --requests must be at least 1", "pass positive numbers")
    load_list = _loads(loads)
    policy = load_policy(policy_path, trust_pickle)
    with progress_bar() as progress:
        if policy.scenario == "context":
            result = evaluate_context(policy, contexts, seed, progress)
        else:
            result = evaluate_multiuser(policy, load_list, seeds, requests, seed, progress)
    result = {"policy": str(policy_path), "model": policy.model_name, "tiers": list(policy.tiers), **result}
    if fmt != Format.table:
        print_document(result, fmt.value)
    else:
        print_summary(evaluation_summary(result))


def _loads(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"malformed --loads '{text}'", "write numbers like 0.3,1.5") from None
    if not values or any(not v > 0 for v in values):
        raise UsageError(f"bad --loads '{text}'", "loads must be positive, e.g. 0.3,1.5")
    return values
