"""The prunable channel groups of a model, from torch-pruning's dependency graph (no hand-written tracking).

A *group* is a set of coupled channels: a conv's output channels with the BatchNorm, the residual adds
and the next convs' input channels that must shrink with them. Each group is pruned in whole *units*
(1/8 of its channels, rounded), so every count the search visits is one the latency table measured.

Units are whole blocks of the runtime's channel blocking where the group allows (``channel_unit``).
onnxruntime's x86 convolutions run in the NCHWc layout only when channel counts are multiples of the
block (16 with AVX-512, 8 with AVX2); one conv off the block drops the graph around it back to NCHW with
layout conversions. resnet18 at 32x32 with torch-pruning's uniform ratio 0.05 (64 -> 61 channels) ran
3.1x *slower* than unpruned (2.73 vs 0.87 ms); at 0.25 (64 -> 48) 2.2x faster. The table times one conv
alone and cannot see that graph-wide effect.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from dnnsplit.errors import UsageError
from dnnsplit.pruning.latency_table import ConvShape, channel_block

LEVELS = 8  # a group keeps 1/8, 2/8, ... 8/8 of its channels


def channel_unit(channels: int, block: int) -> int:
    """Channels a group of ``channels`` loses per step: 1/8 of them, rounded to whole ``block``s when the
    group is whole blocks and has at least two (so every count it visits stays on the block)."""
    unit = max(1, channels // LEVELS)
    if block > 1 and channels % block == 0 and channels >= 2 * block:
        unit = max(block, round(unit / block) * block)
    return unit


@dataclass
class ChannelGroup:
    root: str  # module path of the conv (or linear) whose output channels the group is named after
    channels: int  # channels before pruning
    unit: int  # channels removed per step
    kept: int  # channels now

    @property
    def can_shrink(self) -> bool:
        return self.kept - self.unit >= self.unit


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the classes: never pruned (the answer must keep its meaning)."""
    found = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]
    return found[-1:] if found else []


class Prunable:
    """A model pruned in place, group by group, through one torch-pruning DependencyGraph."""

    def __init__(
        self, model: nn.Module, example: torch.Tensor, num_classes: int, block: int | None = None
    ) -> None:
        import torch_pruning as tp

        self.tp = tp
        self.model = model.eval()
        self.names = {m: n for n, m in model.named_modules()}
        self.ignored = classifier_layers(model, num_classes)
        try:
            self.dg = tp.DependencyGraph().build_dependency(model, example, verbose=False)
        except Exception as exc:  # noqa: BLE001 - torch-pruning raises many types on graphs it cannot trace
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            where = _reshaping_layer(model)
            raise UsageError(
                "torch-pruning cannot follow the channels of this model"
                + (f" through the reshape in layer '{where}'" if where else "")
                + f" ({type(exc).__name__}: {first[:120]})",
                "prune a CNN whose channels torch-pruning can trace (resnet, mobilenet, vgg, ...)",
            ) from exc
        self.spatial = _conv_inputs(model, example)
        self.full_shapes = self.conv_shapes()
        self.groups: list[ChannelGroup] = []
        self.skipped: dict[str, str] = {}  # group root -> why it stays unpruned
        for group in self.dg.get_all_groups(
            ignored_layers=self.ignored, root_module_types=(nn.Conv2d, nn.Linear)
        ):
            root_module = group[0].dep.target.module
            root = self.names.get(root_module, str(root_module))
            channels = len(group[0].idxs)
            why = self._unsupported(group)
            if why:
                self.skipped[root] = why
                continue
            unit = channel_unit(channels, channel_block() if block is None else block)
            if channels < 2 * unit:
                continue
            self.groups.append(ChannelGroup(root, channels, unit, channels))

    def _unsupported(self, group: object) -> str | None:
        """Why torch-pruning's group cannot be pruned safely (leave it unpruned), or None."""
        for dep, _ in group:  # type: ignore[attr-defined]
            module = dep.target.module
            if isinstance(module, nn.Conv2d) and module.groups not in (1, module.in_channels):
                # Grouped convs (shuffle stages, ResNeXt) couple channels in ways the unit steps break.
                return f"grouped convolution {self.names.get(module, module)} (groups={module.groups})"
            if isinstance(module, nn.MultiheadAttention):
                return f"attention {self.names.get(module, module)}"
        return None

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def conv_shapes(self) -> dict[str, ConvShape]:
        """The shape of every conv the model runs, as it is now."""
        return conv_shapes(self.model, self.spatial)

    def _group(self, g: ChannelGroup, idxs: list[int]) -> object:
        root = self.module(g.root)
        fn = (
            self.tp.prune_conv_out_channels
            if isinstance(root, nn.Conv2d)
            else self.tp.prune_linear_out_channels
        )
        return self.dg.get_pruning_group(root, fn, idxs=idxs)

    def importance(self, g: ChannelGroup, scorer: object) -> torch.Tensor:
        """Per-channel importance of ``g`` now (higher: keep)."""
        scores = scorer(self._group(g, list(range(g.kept))))  # type: ignore[operator]
        return scores.detach().float() if scores is not None else torch.zeros(g.kept)

    def shapes_after(
        self, g: ChannelGroup, remove: int, shapes: dict[str, ConvShape]
    ) -> dict[str, ConvShape]:
        """``shapes`` with ``remove`` channels taken out of group ``g`` (without touching the model)."""
        result = dict(shapes)
        for dep, _ in self._group(g, list(range(remove))):  # type: ignore[attr-defined]
            module = dep.target.module
            name = self.names.get(module)
            if name not in result:
                continue
            s = result[name]
            out_fn = self.dg.is_out_channel_pruning_fn(dep.handler)
            in_fn = self.dg.is_in_channel_pruning_fn(dep.handler)
            if s.groups > 1 and s.groups == s.in_channels:  # depthwise: in, out and groups move together
                c = s.in_channels - remove
                result[name] = replace(s, in_channels=c, out_channels=s.out_channels - remove, groups=c)
            elif out_fn:
                result[name] = replace(s, out_channels=s.out_channels - remove)
            elif in_fn:
                result[name] = replace(s, in_channels=s.in_channels - remove)
        return result

    def prune(self, g: ChannelGroup, idxs: list[int]) -> None:
        group = self._group(g, idxs)
        if not self.dg.check_pruning_group(group):
            raise UsageError(f"torch-pruning refuses to prune {g.root}", "leave it out of the search")
        group.prune()  # type: ignore[attr-defined]
        g.kept -= len(idxs)

    def ratios(self) -> dict[str, float]:
        """Fraction of output channels removed per conv (only those pruned)."""
        now = self.conv_shapes()
        return {
            name: round(1 - now[name].out_channels / s.out_channels, 4)
            for name, s in self.full_shapes.items()
            if now[name].out_channels != s.out_channels
        }


def conv_shapes(model: nn.Module, spatial: dict[str, tuple[int, int]]) -> dict[str, ConvShape]:
    """The shape of every conv in ``spatial`` (module path -> input height, width) as ``model`` has it."""
    shapes = {}
    for name, (h, w) in spatial.items():
        conv = model.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        shapes[name] = ConvShape(
            conv.in_channels,
            conv.out_channels,
            _pair(conv.kernel_size),
            _pair(conv.stride),
            _pair(conv.padding) if not isinstance(conv.padding, str) else (0, 0),
            _pair(conv.dilation),
            conv.groups,
            h,
            w,
        )
    return shapes


def _reshaping_layer(model: nn.Module) -> str | None:
    """The first module whose forward reshapes or permutes a tensor (a channel shuffle, an attention
    head split): what torch-pruning's tracer usually cannot follow. None when fx cannot trace either."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - data-dependent control flow: no better name to give
        return None
    for node in graph.nodes:
        target = str(node.target)
        if node.op in ("call_method", "call_function") and (
            target in ("view", "reshape", "transpose", "permute") or "shuffle" in target
        ):
            stack = list(node.meta.get("nn_module_stack", {}))
            if stack:
                return str(stack[-1])
    return None


def _conv_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Input height and width of every Conv2d the forward pass calls."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):

            def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                sizes.setdefault(name, (int(args[0].shape[-2]), int(args[0].shape[-1])))

            hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return sizes
