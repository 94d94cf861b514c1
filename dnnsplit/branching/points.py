"""Where a model can be split in two for a branch: points in its torch.fx graph crossed by one tensor.

A *point* is a node after which exactly one computed value is still needed (parameters read with
get_attr are constants and may be read on both sides). Splitting there gives a ``stem`` (input ->
that value) and a ``rest`` (that value -> outputs) whose composition is the model. Each point is
named by the module paths that end at its node (``maxpool``, ``features.0``, ``layer1``), falling back
to the fx node name for functions called outside any module (``flatten``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from dnnsplit.errors import UsageError


@dataclass(frozen=True)
class BranchPoint:
    """A valid split point: ``name`` (what ``--at`` takes), other names for it, and its fx node."""

    name: str
    aliases: tuple[str, ...]
    node: str
    index: int

    def matches(self, text: str) -> bool:
        return text == self.name or text in self.aliases or text == self.node


def trace(module: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``module``; a model that cannot be traced gets a clear error."""
    try:
        return fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises many types on dynamic control flow
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(
            f"cannot trace the model with torch.fx ({type(exc).__name__}: {first[:160]})",
            "branching needs a model without data-dependent control flow (torchvision CNNs trace)",
        ) from exc


def _compute_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")]


def _module_paths(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path in stack if path]


def list_points(gm: fx.GraphModule) -> list[BranchPoint]:
    """Every valid split point of a traced model, in execution order (the last compute node excluded)."""
    nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position[u] for u in n.users), default=position[n]) for n in nodes}
    compute = _compute_nodes(gm.graph)
    # A module path "ends" at the last compute node inside it.
    ends: dict[int, list[str]] = {}
    last_in: dict[str, int] = {}
    for n in compute:
        for path in _module_paths(n):
            last_in[path] = position[n]
    for path, pos in last_in.items():
        ends.setdefault(pos, []).append(path)
    inputs = [n for n in nodes if n.op == "placeholder"]
    points: list[BranchPoint] = []
    for n in compute[:-1]:
        i = position[n]
        live = [
            m for m in nodes[: i + 1] if m.op not in ("get_attr", "output") and last_use[m] > i and m is not n
        ]
        if live or last_use[n] <= i or any(last_use[p] > i for p in inputs):
            continue
        names = sorted(ends.get(i, []), key=lambda p: (p.count("."), p))
        name = names[0] if names else n.name
        points.append(BranchPoint(name, tuple(names[1:]), n.name, len(points)))
    return points


def _conv_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(modules.get(str(n.target)), nn.Conv2d | nn.Conv1d)
    ]


def default_point(gm: fx.GraphModule, points: list[BranchPoint]) -> BranchPoint:
    """The end of the first convolution stage: the last point before the second convolution.

    ResNet: ``maxpool``; MobileNet / EfficientNet: ``features.0``; VGG: ``features.2`` (conv, ReLU,
    max-pool); DenseNet: ``features.pool0``.
    """
    if not points:
        raise UsageError("the model has no point where one tensor crosses", "it cannot take a branch")
    convs = _conv_nodes(gm)
    if len(convs) < 2:
        return points[0]
    position = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    second = position[convs[1].name]
    before = [p for p in points if position[p.node] < second]
    return before[-1] if before else points[0]


def resolve_point(gm: fx.GraphModule, at: str | None) -> BranchPoint:
    """The point ``--at`` names (default: :func:`default_point`); an unknown name lists valid ones."""
    points = list_points(gm)
    if at is None:
        return default_point(gm, points)
    for point in points:
        if point.matches(at):
            return point
    shown = ", ".join(p.name for p in points[:12]) + (" ..." if len(points) > 12 else "")
    raise UsageError(
        f"'{at}' is not a point where the model can be split in two (valid: {shown})",
        "run `dnnsplit branch MODEL --list-points` for all of them",
    )


def split_at(gm: fx.GraphModule, point: BranchPoint) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(stem, rest): ``rest(stem(x)) == gm(x)``; both share ``gm``'s submodules (copy before training)."""
    nodes = list(gm.graph.nodes)
    cut = next(i for i, n in enumerate(nodes) if n.name == point.node)
    stem_graph, rest_graph = fx.Graph(), fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes[: cut + 1]:
        env[n] = stem_graph.node_copy(n, lambda m: env[m])
    stem_graph.output(env[nodes[cut]])
    rest_env: dict[fx.Node, fx.Node] = {}
    boundary = rest_graph.placeholder("features")
    rest_env[nodes[cut]] = boundary
    for n in nodes[: cut + 1]:  # constants read after the point are read again on the rest's side
        if n.op == "get_attr" and any(u not in env for u in n.users):
            rest_env[n] = rest_graph.node_copy(n, lambda m: rest_env[m])
    for n in nodes[cut + 1 :]:
        rest_env[n] = rest_graph.node_copy(n, lambda m: rest_env[m])
    stem = fx.GraphModule(gm, stem_graph, class_name="Stem")
    rest = fx.GraphModule(gm, rest_graph, class_name="Rest")
    stem.graph.eliminate_dead_code()
    stem.recompile()
    rest.graph.eliminate_dead_code()
    rest.recompile()
    return stem, rest
