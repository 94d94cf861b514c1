"""A trained context policy (``dnnsplit rl train --scenario context``) choosing among an elastic split's cuts.

The policy was trained on its own problem (the profile's layers, the tiers' device presets, the plan's
tensor sizes) and acts on the context it sees: the phone's link, the tiers' compute scales. Per request the
client's estimate (``partition.elastic.Context``: uplink, downlink, rtt, phone speed, edge load) becomes
that context: the link as estimated, and the scales of the policy's own base compute that give the
elastic split's profile times at the estimated speed and load (``scales``). The policy's action is an
assignment of every layer to a tier; the number of layers it keeps on the phone (a prefix, for the chains
and most DAGs the candidates come from) picks the candidate with that many layers on the phone, or, when
the split has no such cut (the policy's choice is not among the exact optima the split kept), the one
closest to it (fewer on the phone on ties); the decision says what the policy wanted
(``policy_layers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import Context, Decision, ElasticSpec, predict_ms
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.rl.contexts import Context as PolicyContext
from dnnsplit.partition.rl.policy_file import PolicyFile


def layers_on_phone(assignment: Sequence[int]) -> int:
    """How many layers an assignment keeps on the phone (tier 0): its prefix, when it is one."""
    return sum(1 for t in assignment if t == 0)


@dataclass(frozen=True)
class ElasticPolicy:
    """``policy`` fitted to ``spec``: which of the split's cuts each of the policy's actions means."""

    policy: PolicyFile
    spec: ElasticSpec
    mobile_ratio: float  # the split's phone compute over the policy's base phone compute (whole model)
    edge_ratio: float
    on_phone: dict[int, int]  # candidate boundary -> the layers it keeps on the phone

    @classmethod
    def fit(cls, policy: PolicyFile, spec: ElasticSpec) -> ElasticPolicy:
        where = policy.path or "the policy"
        if policy.scenario != "context":
            raise UsageError(
                f"{where} was trained for the {policy.scenario} scenario; an elastic client needs a "
                "context policy",
                "train one with `dnnsplit rl train MODEL --scenario context`",
            )
        base = policy.base
        if tuple(base.tiers) != tuple(spec.tiers):
            raise UsageError(
                f"{where} was trained for tiers {','.join(base.tiers)}; this split runs on "
                f"{','.join(spec.tiers)}",
                f"train it with --tiers {','.join(spec.tiers)}",
            )
        layers = [name for piece in spec.pieces for name in piece.layers]
        if [la.name for la in base.layers] != layers:
            raise UsageError(
                f"{where} was trained for another model or profile ({base.n} layers; this split has "
                f"{len(layers)})",
                "train a policy on the profile the split's plan was made from",
            )
        mobile = sum(la.compute_ms[0] for la in base.layers)
        edge = sum(la.compute_ms[1] for la in base.layers)
        mobile_ratio = spec.phone_ms(len(spec.pieces)) / mobile if mobile > 0 else 1.0
        edge_ratio = spec.edge_ms(0) / edge if edge > 0 else 1.0
        pieces = spec.pieces
        on_phone = {c.boundary: sum(len(p.layers) for p in pieces[: c.boundary]) for c in spec.candidates}
        return cls(policy, spec, mobile_ratio, edge_ratio, on_phone)

    def policy_context(self, context: Context) -> PolicyContext:
        """The client's estimate as the policy's context: the link, and scales of its base compute."""
        base = self.policy.base
        first = base.links[0]
        link = replace(first, up_mbps=context.up_mbps, down_mbps=context.down_mbps, rtt_ms=context.rtt_ms)
        links: tuple[LinkSpec, ...] = (link, *base.links[1:])
        scales = (self.mobile_ratio / context.phone_speed, self.edge_ratio * context.edge_load)
        return PolicyContext(links=links, scales=scales, objective=base.objective)

    def act(self, context: Context) -> int:
        """The policy's action for ``context``, as the number of layers it keeps on the phone."""
        features = self.policy.space.features(self.policy_context(context))
        return layers_on_phone(self.policy.candidates.assignments[self.policy.act(features)])

    def decide(
        self, context: Context, allowed: Sequence[int] | None = None, priced: ElasticSpec | None = None
    ) -> Decision:
        """The policy's cut for ``context`` among the boundaries ``allowed``; ``priced``: the spec to predict
        the candidates' times with (the client's, with what each cut really sent), for the record."""
        priced = priced or self.spec
        pool = [c for c in priced.candidates if allowed is None or c.boundary in allowed]
        if not pool:
            raise UsageError(
                "no candidate cut is available", "serve the elastic split on the edge, or run locally"
            )
        wanted = self.act(context)
        on_phone = self.on_phone
        chosen = min(pool, key=lambda c: (abs(on_phone[c.boundary] - wanted), on_phone[c.boundary]))
        costs = {c.name: predict_ms(priced, c, context) for c in pool}
        return Decision(chosen, costs[chosen.name], context, costs, by="rl", policy_layers=wanted)
