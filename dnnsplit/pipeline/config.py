"""The pipeline config, ``dnnsplit.yaml`` (schema ``dnnsplit/pipeline@1``): read, validated, typed.

Every problem is collected (not just the first) with its key path, the line it is on and a hint, so one
``dnnsplit pipeline --check`` lists all of them. The rules live in small tables (``_SECTIONS``), one per
section, so the validator and the typed config cannot drift apart. Relative paths in the file are taken
from the file's own directory, as a checked-in config is read from wherever CI runs it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnnsplit.branching.branch_file import BINARY_ACTIVATIONS
from dnnsplit.errors import UsageError
from dnnsplit.fileio import compose_yaml, parse_yaml, read_text
from dnnsplit.limits import max_threads
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.objective import Objective
from dnnsplit.partition.problem import TIER_ORDER

SCHEMA = "dnnsplit/pipeline@1"
LINK_KEYS = ("up_mbps", "down_mbps", "rtt_ms", "radio")


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the config: where (key path, line) and how to fix it."""

    path: str
    line: int | None
    message: str
    hint: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}; {self.hint}"


class ConfigError(UsageError):
    """A config with one or more problems (exit 2); ``issues`` holds each, ``lines()`` one line per issue."""

    def __init__(self, file: str, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        first = issues[0].render(file)
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{first}{more}")

    def lines(self) -> list[str]:
        return [issue.render(self.file) for issue in self.issues]


# ---------------------------------------------------------------------------------------------------------
# The typed config


@dataclass(frozen=True)
class ModelConfig:
    source: str
    input_shape: str | None = None
    num_classes: int | None = None
    weights: str | None = None
    arch: str | None = None
    seed: int = 0

    @property
    def trained(self) -> bool:
        """Weights come with the model (a state_dict, or a checkpoint as the source): no training stage."""
        return self.weights is not None or self.source.endswith((".pt", ".pth"))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    lr: float = 0.05
    batch_size: int = 64


@dataclass(frozen=True)
class ProfileConfig:
    threads: int | None = None
    warmup: int = 5
    repeat: int = 20
    rounds: int = 3
    # A pipeline plans from this profile: layers that do not add up to the whole model fail the stage
    # (exit 1) rather than ship a plan priced from them; false scales them to the whole instead.
    strict: bool = True


@dataclass(frozen=True)
class BranchConfig:
    enabled: bool = True
    at: str | None = None
    epochs: int = 30
    max_accuracy_drop: float = 0.01
    activations: str = "binary"  # or "real": binary weights over real inputs (`branch --activations`)


@dataclass(frozen=True)
class PruneConfig:
    enabled: bool = True
    levels: int | None = None
    budgets_ms: tuple[float, ...] | None = None
    epochs: int = 5
    threads: int = 1
    repeat: int = 20


@dataclass(frozen=True)
class BottleneckConfig:
    """A trained bottleneck the plan stage weighs as one more codec (`dnnsplit bottleneck`'s flags), or
    one already built (``directory``: loaded, not trained)."""

    enabled: bool = True
    at: str | None = None
    channels: int | None = None
    stride: int = 1
    epochs: int = 10
    lr: float = 3e-3
    rate_lambda: float = 0.0  # the config's key: lambda
    fine_tune: bool = False
    zstd_level: int = 3
    directory: str | None = None


@dataclass(frozen=True)
class PlanConfig:
    networks: tuple[LinkSpec, ...] = ()  # the first is the shipped plan's (links' mobile link)
    private_input: bool = False
    max_mobile_mb: float | None = None
    # requests per phone session the segments' download is amortised over (plan --session-requests; 0: not
    # charged)
    session_requests: int = 100
    boundaries: str | None = None  # a `dnnsplit boundaries` file: measured bytes, the codec chosen
    max_accuracy_drop: float = 1.0  # points a boundary codec may cost (plan --max-accuracy-drop)


@dataclass(frozen=True)
class SplitConfig:
    validate: int = 3
    compress: str | None = None


@dataclass(frozen=True)
class Budgets:
    latency_ms: float | None = None
    mobile_energy_mj: float | None = None
    mobile_download_mb: float | None = None
    accuracy: float | None = None


@dataclass(frozen=True)
class PipelineConfig:
    path: Path  # the config file
    output: Path
    model: ModelConfig
    data: str
    train: TrainConfig
    tiers: dict[str, str]  # tier -> device preset or file
    tier_profiles: dict[str, str]
    links: dict[str, LinkSpec]  # link name -> link
    objective: Objective
    profile: ProfileConfig
    branch: BranchConfig
    prune: PruneConfig
    plan: PlanConfig
    split: SplitConfig
    budgets: Budgets
    bottleneck: BottleneckConfig = field(default_factory=lambda: BottleneckConfig(enabled=False))
    raw: dict[str, Any] = field(default_factory=dict)  # the sections as written: stage hashes use them

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t for t in TIER_ORDER if t in self.tiers)

    @property
    def first_link(self) -> str:
        return "mobile-" + self.tier_names[1]

    def section(self, name: str) -> Any:
        return self.raw.get(name)


# ---------------------------------------------------------------------------------------------------------
# Validation rules: per key, a checker returning (value, problem) where problem is (message, hint) or None


Check = Callable[[Any, "_Context"], tuple[Any, tuple[str, str] | None]]


@dataclass
class _Context:
    base: Path  # the config file's directory


def _typed(kind: type | tuple[type, ...], what: str, example: str) -> Check:
    def check(value: Any, _ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return None, (f"expected {what}, got {value!r}", f"write e.g. {example}")
        if not isinstance(value, kind):
            return None, (f"expected {what}, got {type(value).__name__} {value!r}", f"write e.g. {example}")
        return value, None

    return check


def _number(
    minimum: float | None = None, maximum: float | None = None, integer: bool = False, example: str = "10"
) -> Check:
    what = "an integer" if integer else "a number"
    base = _typed(int if integer else (int, float), what, example)

    def check(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
        value, problem = base(value, ctx)
        if problem:
            return None, problem
        if isinstance(value, float) and not math.isfinite(value):  # YAML .nan passes any range check
            return None, (f"{value!r} is not a finite number", f"write e.g. {example}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            span = f"at least {minimum:g}" if maximum is None else f"between {minimum:g} and {maximum:g}"
            return None, (f"{value!r} is out of range", f"use a value {span}")
        return (int(value) if integer else float(value)), None

    return check


def _optional(inner: Check) -> Check:
    def check(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
        return (None, None) if value is None else inner(value, ctx)

    return check


def _choice(options: tuple[str, ...]) -> Check:
    def check(value: Any, _ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
        if not isinstance(value, str) or value not in options:
            return None, (f"unknown value {value!r}", f"use one of {', '.join(options)}")
        return value, None

    return check


def _file(what: str) -> Check:
    def check(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
        if not isinstance(value, str) or not value:
            return None, (f"expected a path to {what}, got {value!r}", "write a path relative to the config")
        path = (ctx.base / value).expanduser()
        if not path.is_file():
            return None, (f"file not found: {path}", f"give the path of {what}, relative to the config file")
        return str(path), None

    return check


def _bottleneck_directory(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    """A directory `dnnsplit bottleneck` wrote (its bottleneck.yaml there), relative to the config."""
    if not isinstance(value, str) or not value:
        return None, (f"expected a directory, got {value!r}", "write a path relative to the config")
    path = (ctx.base / value).expanduser()
    if not (path / "bottleneck.yaml").is_file():
        return None, (f"no bottleneck.yaml in {path}", "give a directory written by `dnnsplit bottleneck`")
    return str(path), None


def _model_source(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    if not isinstance(value, str) or not value.strip():
        return None, ("expected a MODEL string", "write e.g. torchvision:resnet18 or model.pt")
    if value.endswith(".onnx"):
        return None, (
            "an ONNX model cannot be trained, branched or pruned",
            "give the PyTorch model: torchvision:NAME, package.module:factory or a .pt checkpoint",
        )
    if value.endswith((".pt", ".pth")):
        return _file("the checkpoint")(value, ctx)
    if value.startswith("torchvision:"):
        from dnnsplit.models.torchvision_zoo import classification_model_names

        name = value.split(":", 1)[1]
        known = classification_model_names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean torchvision:{close[0]}?" if close else "`dnnsplit models` lists them"
            return None, (f"unknown torchvision model '{name}'", hint)
        return value, None
    if ":" not in value:
        return None, (
            f"'{value}' is no MODEL",
            "write torchvision:NAME, path/to/model.pt or package.module:factory",
        )
    return value, None


def _shape(value: Any, _ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    from dnnsplit.models import parse_input_shape

    if not isinstance(value, str):
        return None, (f"expected NxCxHxW, got {value!r}", "write e.g. 1x3x32x32 (quoted is fine)")
    try:
        parse_input_shape(value)
    except UsageError as exc:
        return None, (exc.message, exc.hint or "write e.g. 1x3x32x32")
    return value, None


def _data(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    if value == "digits":
        return value, None
    if isinstance(value, str) and value.startswith("imagefolder:"):
        path = (ctx.base / value.split(":", 1)[1]).expanduser()
        if not path.is_dir():
            return None, (f"ImageFolder not found: {path}", "give a directory with one folder per class")
        return f"imagefolder:{path}", None
    return None, (f"unknown data source {value!r}", "use digits or imagefolder:PATH")


def _device(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    from dnnsplit.profiling.devices import PRESETS

    if not isinstance(value, str):
        return None, (f"expected a device preset or file, got {value!r}", f"use one of {', '.join(PRESETS)}")
    if value in PRESETS:
        return value, None
    if value.endswith((".yaml", ".yml", ".json")):
        return _file("a device file")(value, ctx)
    close = difflib.get_close_matches(value, PRESETS, n=1)
    hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(PRESETS)} or a device YAML file"
    return None, (f"unknown device preset '{value}'", hint)


def _link(value: Any, _ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    """A network preset name or {up_mbps, down_mbps, rtt_ms[, radio]}, as a LinkSpec."""
    from dnnsplit.partition.network import NETWORK_PRESETS, parse_link

    if isinstance(value, str):
        if value.lower() not in NETWORK_PRESETS:
            close = difflib.get_close_matches(value.lower(), list(NETWORK_PRESETS), n=1)
            hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(NETWORK_PRESETS)}"
            return None, (f"unknown network preset '{value}'", hint)
        return NETWORK_PRESETS[value.lower()], None
    example = "{up_mbps: 8, down_mbps: 40, rtt_ms: 30}"
    if not isinstance(value, dict):
        return None, (f"expected a network preset or a mapping, got {value!r}", f"write 4g or {example}")
    unknown = [k for k in value if k not in LINK_KEYS]
    missing = [k for k in LINK_KEYS[:3] if k not in value]
    if unknown or missing:
        what = f"unknown key '{unknown[0]}'" if unknown else f"missing key '{missing[0]}'"
        return None, (what, f"a link has {', '.join(LINK_KEYS)} (radio optional), e.g. {example}")
    text = f"up={value['up_mbps']},down={value['down_mbps']},rtt={value['rtt_ms']}"
    if value.get("radio") is not None:
        text += f",radio={value['radio']}"
    try:
        return parse_link(text), None
    except UsageError as exc:
        return None, (exc.message, exc.hint or example)


def _networks(value: Any, ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    if not isinstance(value, list):
        return None, (f"expected a list of networks, got {value!r}", "write e.g. [4g, wifi, 3g]")
    links = []
    for item in value:
        link, problem = _link(item, ctx)
        if problem:
            return None, problem
        links.append(link)
    return tuple(links), None


def _budgets_list(value: Any, _ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf for v in value)
    ):
        return None, (f"expected a list of positive ms, got {value!r}", "write e.g. [10, 20, 40]")
    return tuple(float(v) for v in value), None


def _objective(value: Any, _ctx: _Context) -> tuple[Any, tuple[str, str] | None]:
    from dnnsplit.partition.objective import parse_objective

    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = ",".join(f"{k}={v}" for k, v in value.items())
    else:
        return None, (
            f"expected latency, energy or weights, got {value!r}",
            "write {latency: 1, energy: 0.5}",
        )
    try:
        return parse_objective(text), None
    except UsageError as exc:
        return None, (exc.message, "write latency, energy or {latency: 1, energy: 0.5}")


_STR = _typed(str, "a string", "name")
_BOOL = _typed(bool, "true or false", "true")
_PATH = _optional(_typed(str, "a path", "model.pt"))

# section -> key -> (check, required). A section named here must be a mapping.
_SECTIONS: dict[str, dict[str, tuple[Check, bool]]] = {
    "model": {
        "source": (_model_source, True),
        "input_shape": (_optional(_shape), False),
        "num_classes": (_optional(_number(1, integer=True, example="10")), False),
        "weights": (_optional(_file("the weights (a state_dict or checkpoint)")), False),
        "arch": (_optional(_STR), False),
        "seed": (_number(0, integer=True, example="0"), False),
    },
    "train": {
        "epochs": (_number(1, integer=True, example="15"), False),
        "lr": (_number(1e-9, example="0.05"), False),
        "batch_size": (_number(1, integer=True, example="64"), False),
    },
    "profile": {
        "threads": (_optional(_number(1, max_threads(), integer=True, example="2")), False),
        "warmup": (_number(0, integer=True, example="5"), False),
        "repeat": (_number(1, integer=True, example="20"), False),
        "rounds": (_number(1, 20, integer=True, example="3"), False),
        "strict": (_BOOL, False),
    },
    "branch": {
        "enabled": (_BOOL, False),
        "at": (_optional(_STR), False),
        "epochs": (_number(1, integer=True, example="30"), False),
        "max_accuracy_drop": (_number(0, 1, example="0.01"), False),
        "activations": (_choice(BINARY_ACTIVATIONS), False),
    },
    "prune": {
        "enabled": (_BOOL, False),
        "levels": (_optional(_number(1, 12, integer=True, example="3")), False),
        "budgets_ms": (_optional(_budgets_list), False),
        "epochs": (_number(0, integer=True, example="5"), False),
        "threads": (_number(1, max_threads(), integer=True, example="1"), False),
        "repeat": (_number(1, integer=True, example="20"), False),
    },
    "bottleneck": {
        "enabled": (_BOOL, False),
        "at": (_optional(_STR), False),
        "channels": (_optional(_number(1, integer=True, example="8")), False),
        "stride": (_number(1, 2, integer=True, example="2"), False),
        "epochs": (_number(1, integer=True, example="10"), False),
        "lr": (_number(1e-9, example="0.003"), False),
        "lambda": (_number(0, example="0.5"), False),
        "fine_tune": (_BOOL, False),
        "zstd_level": (_number(1, 22, integer=True, example="3"), False),
        "directory": (_optional(_bottleneck_directory), False),
    },
    "plan": {
        "networks": (_networks, False),
        "private_input": (_BOOL, False),
        "max_mobile_mb": (_optional(_number(0, example="5")), False),
        "session_requests": (_number(0, integer=True, example="100"), False),
        "boundaries": (_optional(_file("a `dnnsplit boundaries` file")), False),
        "max_accuracy_drop": (_number(0, example="1"), False),
    },
    "split": {
        "validate": (_number(0, integer=True, example="3"), False),
        "compress": (_optional(_choice(("fp16", "int8"))), False),
    },
    "budgets": {
        "latency_ms": (_optional(_number(0, example="60")), False),
        "mobile_energy_mj": (_optional(_number(0, example="200")), False),
        "mobile_download_mb": (_optional(_number(0, example="5")), False),
        "accuracy": (_optional(_number(0, 1, example="0.9")), False),
    },
}
_TOP: dict[str, tuple[Check, bool]] = {
    "schema": (_STR, True),
    "output": (_STR, True),
    "data": (_data, True),
    "objective": (_objective, False),
}
_MAPS = ("tiers", "tier_profiles", "links")
_ALL_TOP = (*_TOP, *_SECTIONS, *_MAPS)


# ---------------------------------------------------------------------------------------------------------
# Reading: YAML nodes keep their line numbers, plain data keeps the values


def _lines(node: yaml.Node, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    """Key path -> 1-based line of the key (or of the item in a list)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            out[path] = key.start_mark.line + 1
            _lines(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*prefix, str(i))] = item.start_mark.line + 1
            _lines(item, (*prefix, str(i)), out)


class _Collector:
    def __init__(self, lines: dict[tuple[str, ...], int]) -> None:
        self.lines = lines
        self.issues: list[ConfigIssue] = []

    def add(self, path: tuple[str, ...], message: str, hint: str) -> None:
        line = None
        for depth in range(len(path), 0, -1):  # a missing key reports the line of its section
            line = self.lines.get(path[:depth])
            if line:
                break
        self.issues.append(ConfigIssue(".".join(path), line, message, hint))

    def unknown(self, path: tuple[str, ...], key: str, known: tuple[str, ...] | list[str]) -> None:
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        self.add((*path, key), "unknown key", hint)


def _check_mapping(
    data: Any, path: tuple[str, ...], rules: dict[str, tuple[Check, bool]], ctx: _Context, issues: _Collector
) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        issues.add(path, f"expected a mapping, got {data!r}", "indent the keys under it")
        return {}
    values: dict[str, Any] = {}
    for key in data:
        if str(key) not in rules:
            issues.unknown(path, str(key), list(rules))
    for key, (check, required) in rules.items():
        if key not in data:
            if required:
                issues.add((*path, key), "missing key", "add it (`dnnsplit init` writes an example)")
            continue
        value, problem = check(data[key], ctx)
        if problem:
            issues.add((*path, key), *problem)
        else:
            values[key] = value
    return values


def load_config(path: str | Path, output: str | Path | None = None) -> PipelineConfig:
    """Read and validate ``path``; raise ConfigError naming every problem (exit 2)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config not found: {file}", "run `dnnsplit init` to write an example dnnsplit.yaml")
    text = read_text(file)
    try:
        node = compose_yaml(text)
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(
            str(file), [ConfigIssue("", line, f"not valid YAML: {problem}", "fix the syntax")]
        ) from None
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)
    issues = _Collector(lines)
    if not isinstance(data, dict):
        raise ConfigError(
            str(file), [ConfigIssue("", 1, "the config is not a mapping", "start from `dnnsplit init`")]
        )
    ctx = _Context(file.resolve().parent)

    top = _check_mapping({k: v for k, v in data.items() if k in _TOP}, (), _TOP, ctx, issues)
    for key in data:  # sections are checked below; anything else at the top is unknown
        if str(key) not in _ALL_TOP:
            issues.unknown((), str(key), list(_ALL_TOP))
    if "schema" in top and top["schema"] != SCHEMA:
        issues.add(("schema",), f"unsupported schema {top['schema']!r}", f"this dnnsplit reads {SCHEMA}")
    sections = {
        name: _check_mapping(data.get(name), (name,), rules, ctx, issues) for name, rules in _SECTIONS.items()
    }

    tiers = _check_tiers(data.get("tiers"), ctx, issues)
    # tiers named but with a bad device still name their links: one mistake, one error
    declared = {t: "" for t in TIER_ORDER if isinstance(data.get("tiers"), dict) and t in data["tiers"]}
    links = _check_links(data.get("links"), declared, ctx, issues)
    tier_profiles = _check_tier_profiles(data.get("tier_profiles"), declared, ctx, issues)
    for optional in ("branch", "prune", "bottleneck"):  # a stage without its section does not run
        if optional not in data:
            sections[optional]["enabled"] = False
    prune = sections["prune"]
    if prune.get("enabled", True) and (prune.get("levels") is None) == (prune.get("budgets_ms") is None):
        issues.add(("prune",), "give either levels or budgets_ms", "e.g. levels: 2, or enabled: false")
    bottleneck = sections["bottleneck"]
    if bottleneck.get("enabled", True) and bottleneck.get("directory") is None:
        for key, example in (("at", "layer1"), ("channels", "8")):
            if bottleneck.get(key) is None:
                issues.add(("bottleneck", key), "missing key", f"add {key}: {example}, or directory: DIR")
    if "lambda" in bottleneck:
        bottleneck["rate_lambda"] = bottleneck.pop("lambda")
    if issues.issues:
        raise ConfigError(str(file), issues.issues)

    model = ModelConfig(**sections["model"])
    first = "mobile-" + [t for t in TIER_ORDER if t in tiers][1]
    networks = tuple(sections["plan"].pop("networks", ()))
    networks = (links[first], *[n for n in networks if n != links[first]])
    out_dir = Path(output) if output is not None else ctx.base / top["output"]
    return PipelineConfig(
        path=file,
        output=out_dir,
        model=model,
        data=top["data"],
        train=TrainConfig(**sections["train"]),
        tiers=tiers,
        tier_profiles=tier_profiles,
        links=links,
        objective=top.get("objective", Objective()),
        profile=ProfileConfig(**sections["profile"]),
        branch=BranchConfig(**sections["branch"]),
        prune=PruneConfig(**prune),
        plan=PlanConfig(networks=networks, **sections["plan"]),
        split=SplitConfig(**sections["split"]),
        budgets=Budgets(**sections["budgets"]),
        bottleneck=BottleneckConfig(**bottleneck),
        raw={
            **{k: data.get(k) for k in _ALL_TOP if k not in ("output", "budgets")},
            "resolved": {
                "data": top["data"],
                "tiers": tiers,
                "links": {name: link.to_dict() for name, link in links.items()},
                "tier_profiles": tier_profiles,
                "model": sections["model"],
            },
        },
    )


def _check_tiers(data: Any, ctx: _Context, issues: _Collector) -> dict[str, str]:
    if data is None:
        issues.add(("tiers",), "missing section", "add tiers: {mobile: mobile-web, edge: edge}")
        return {}
    if not isinstance(data, dict):
        issues.add(
            ("tiers",), f"expected a mapping, got {data!r}", "write tiers: {mobile: mobile-web, edge: edge}"
        )
        return {}
    tiers: dict[str, str] = {}
    for key, value in data.items():
        if key not in TIER_ORDER:
            issues.unknown(("tiers",), str(key), TIER_ORDER)
            continue
        device, problem = _device(value, ctx)
        if problem:
            issues.add(("tiers", key), *problem)
        else:
            tiers[key] = device
    if "mobile" in data and "edge" not in data and "cloud" not in data:
        issues.add(
            ("tiers",), "the mobile tier needs a tier to offload to", "add edge: edge and/or cloud: cloud"
        )
    elif "mobile" not in data:
        issues.add(("tiers", "mobile"), "missing key", "add mobile: mobile-web")
    return tiers


def _check_links(data: Any, tiers: dict[str, str], ctx: _Context, issues: _Collector) -> dict[str, LinkSpec]:
    names = [t for t in TIER_ORDER if t in tiers]
    expected = [f"{a}-{b}" for a, b in zip(names, names[1:], strict=False)]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        issues.add(("links",), f"expected a mapping, got {data!r}", "write links: {mobile-edge: 4g}")
        return {}
    links: dict[str, LinkSpec] = {}
    for key, value in data.items():
        if key not in expected:
            issues.unknown(("links",), str(key), expected)
            continue
        link, problem = _link(value, ctx)
        if problem:
            issues.add(("links", key), *problem)
        else:
            links[key] = link
    if expected and expected[0] not in data:
        issues.add(("links", expected[0]), "missing key", f"add {expected[0]}: 4g (the phone's network)")
    return links


def _check_tier_profiles(
    data: Any, tiers: dict[str, str], ctx: _Context, issues: _Collector
) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        issues.add(
            ("tier_profiles",), f"expected a mapping, got {data!r}", "write tier_profiles: {edge: edge.json}"
        )
        return {}
    found: dict[str, str] = {}
    for key, value in data.items():
        if key not in tiers:
            issues.unknown(("tier_profiles",), str(key), list(tiers))
            continue
        path, problem = _file("a profile measured on that tier")(value, ctx)
        if problem:
            issues.add(("tier_profiles", key), *problem)
        else:
            found[key] = path
    return found
