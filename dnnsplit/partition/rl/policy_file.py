"""The policy file (``policy.zip``, schema ``dnnsplit/rl-policy@1``): a policy that needs nothing else.

A zip holding ``dnnsplit.json`` (what the policy was trained for: the scenario and its settings, the model's
identity, the whole base problem in the plan file's layout, the candidate partitions its actions index, and
how it was trained) and ``sb3.zip`` (the stable-baselines3 model as ``PPO.save`` writes it). ``rl eval`` and
``plan --solver rl`` read both from this one file.

Decisions use ``Actor``: the policy network's actor half evaluated in numpy, the same function as the
SB3 policy's deterministic ``predict`` (argmax of the action logits; tests check they agree) at a fraction of
its per-call overhead, which is what keeps a decision well under a millisecond.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.fileio import atomic_path
from dnnsplit.partition.plan_file import problem_fields, problem_from_document
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.rl.candidates import CandidateSet
from dnnsplit.partition.rl.contexts import ContextSpace
from dnnsplit.partition.rl.multiuser import MultiUserConfig

SCHEMA = "dnnsplit/rl-policy@1"
SCENARIOS = ("context", "multiuser")
_META = "dnnsplit.json"
_MODEL = "sb3.zip"


class Actor:
    """The deterministic action of an SB3 ``ActorCriticPolicy`` with an MLP, in numpy."""

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], activation: str) -> None:
        if activation not in ("tanh", "relu"):
            raise UsageError(
                f"policy uses an unsupported activation '{activation}'", "train it with dnnsplit rl"
            )
        self.weights = weights
        self.activation = np.tanh if activation == "tanh" else (lambda x: np.maximum(x, 0.0))

    @classmethod
    def from_sb3(cls, model: Any) -> Actor:
        import torch

        policy = model.policy
        layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
        layers.append(policy.action_net)
        weights = [
            (
                m.weight.detach().cpu().numpy().astype(np.float64),
                m.bias.detach().cpu().numpy().astype(np.float64),
            )
            for m in layers
        ]
        name = policy.activation_fn.__name__.lower()
        return cls(weights, name)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        for w, b in self.weights[:-1]:
            x = self.activation(x @ w.T + b)
        w, b = self.weights[-1]
        return x @ w.T + b

    def act(self, obs: np.ndarray) -> int:
        return int(np.argmax(self.logits(obs)))


@dataclass
class PolicyFile:
    meta: dict[str, Any]
    base: Problem
    candidates: CandidateSet
    model_bytes: bytes
    path: str | None = None
    _actor: Actor | None = None

    @property
    def scenario(self) -> str:
        return str(self.meta["scenario"])

    @property
    def tiers(self) -> tuple[str, ...]:
        return self.base.tiers

    @property
    def space(self) -> ContextSpace:
        return ContextSpace.from_dict(self.meta["context_space"])

    @property
    def config(self) -> MultiUserConfig:
        return MultiUserConfig.from_dict(self.meta["multiuser"])

    @property
    def model_name(self) -> str:
        return str(self.meta.get("model", {}).get("name") or "model")

    def sb3_model(self) -> Any:
        from stable_baselines3 import PPO

        return PPO.load(io.BytesIO(self.model_bytes), device="cpu")

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            self._actor = Actor.from_sb3(self.sb3_model())
        return self._actor

    def act(self, obs: np.ndarray) -> int:
        return self.actor.act(obs)


def policy_meta(
    scenario: str,
    base: Problem,
    candidates: CandidateSet,
    *,
    model: dict[str, Any],
    profile: dict[str, Any],
    space: ContextSpace,
    config: MultiUserConfig | None,
    training: dict[str, Any],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "scenario": scenario,
        "tiers": list(base.tiers),
        "model": model,
        "profile": profile,
        "context_space": space.to_dict(),
        "multiuser": None if config is None else config.to_dict(),
        "candidates": [list(a) for a in candidates.assignments],
        "training": training,
        "problem": problem_fields(base),
    }


def save_policy(path: str | Path, meta: dict[str, Any], model_bytes: bytes) -> None:
    """Write the policy zip atomically (a crash half-way leaves no partial file)."""
    if Path(path).suffix.lower() != ".zip":
        raise UsageError(f"policy file '{path}' must end in .zip", "name it policy.zip, say")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_META, json.dumps(meta, indent=1))
        zf.writestr(_MODEL, model_bytes)


def load_policy(path: str | Path) -> PolicyFile:
    """Read a policy zip; anything that is not one (missing, not a zip, another schema) is a UsageError."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"policy file not found: {path}", "train one with `dnnsplit rl train`")
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if _META not in names or _MODEL not in names:
                raise UsageError(
                    f"{path} is not a dnnsplit policy (no {_META})", "train one with `dnnsplit rl train`"
                )
            meta = json.loads(zf.read(_META))
            model_bytes = zf.read(_MODEL)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(
            f"{path} is not a policy zip ({exc})", "train one with `dnnsplit rl train`"
        ) from None
    except json.JSONDecodeError:
        raise UsageError(f"{path} holds a damaged {_META}", "train the policy again") from None
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if schema != SCHEMA:
        raise UsageError(
            f"{path} has schema {schema!r}, this dnnsplit reads {SCHEMA}", "train the policy again"
        )
    try:
        if meta["scenario"] not in SCENARIOS:
            raise ValueError(f"unknown scenario {meta['scenario']!r}")
        base = problem_from_document(meta["problem"])
        candidates = CandidateSet(base, meta["candidates"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path} is not a complete policy ({exc})", "train the policy again") from None
    return PolicyFile(meta, base, candidates, model_bytes, str(path))
