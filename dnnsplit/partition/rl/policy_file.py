"""The policy file (``policy.zip``, schema ``dnnsplit/rl-policy@2``): a policy that needs nothing else.

A zip holding ``dnnsplit.json`` (what the policy was trained for: the scenario and its settings, the model's
identity, the whole base problem in the plan file's layout, the candidate partitions its actions index, how
it was trained, and ``network``: the policy network's architecture, see policy_net) and
``policy.safetensors`` (the network's weights). ``rl eval`` and ``plan --solver rl`` read both from this
one file, and nothing on that path unpickles: a policy file is data.

Schema ``dnnsplit/rl-policy@1`` held ``sb3.zip`` (``PPO.save``'s zip, which pickles) instead of the last
two; such a file is refused unless the user passes ``--trust-pickle``, which reads it with ``PPO.load``.

Decisions use ``Actor``: the policy network's actor half evaluated in numpy, the same function as the
SB3 policy's deterministic ``predict`` (argmax of the action logits; tests check they agree) at a fraction of
its per-call overhead, which is what keeps a decision well under a millisecond.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
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
from dnnsplit.partition.rl.policy_net import Actor, from_sb3, sb3_policy

SCHEMA = "dnnsplit/rl-policy@2"
PICKLED_SCHEMA = "dnnsplit/rl-policy@1"
SCENARIOS = ("context", "multiuser")
_META = "dnnsplit.json"
_WEIGHTS = "policy.safetensors"
_PICKLED_MODEL = "sb3.zip"
_RETRAIN = "train the policy again with `dnnsplit rl train`"

__all__ = ["Actor", "PolicyFile", "SCHEMA", "load_policy", "policy_meta", "save_policy"]


@dataclass
class PolicyFile:
    meta: dict[str, Any]
    base: Problem
    candidates: CandidateSet
    weights: dict[str, np.ndarray]  # the SB3 policy's state_dict, by name
    path: str | None = None
    _actor: Actor | None = field(default=None, repr=False)

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

    @property
    def network(self) -> dict[str, Any]:
        return dict(self.meta["network"])

    def sb3_policy(self) -> Any:
        """The whole SB3 ``ActorCriticPolicy``, rebuilt from the recorded architecture and weights."""
        return sb3_policy(self.network, self.weights)

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            self._actor = Actor.from_state(self.network, self.weights)
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
    network: dict[str, Any],
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
        "network": network,
    }


def save_policy(path: str | Path, meta: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
    """Write the policy zip atomically (a crash half-way leaves no partial file)."""
    from safetensors.numpy import save

    if Path(path).suffix.lower() != ".zip":
        raise UsageError(f"policy file '{path}' must end in .zip", "name it policy.zip, say")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_META, json.dumps(meta, indent=1))
        zf.writestr(_WEIGHTS, save({k: np.ascontiguousarray(v) for k, v in weights.items()}))


def load_policy(path: str | Path, trust_pickle: bool = False) -> PolicyFile:
    """Read a policy zip; anything that is not one (missing, not a zip, another schema) is a UsageError.

    Nothing read from the file is unpickled, except an old pickled one (schema @1) with ``trust_pickle``.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"policy file not found: {path}", "train one with `dnnsplit rl train`")
    try:
        with zipfile.ZipFile(p) as zf:
            if _META not in zf.namelist():
                raise UsageError(
                    f"{path} is not a dnnsplit policy (no {_META})", "train one with `dnnsplit rl train`"
                )
            meta = json.loads(zf.read(_META))
            schema = meta.get("schema") if isinstance(meta, dict) else None
            if schema == SCHEMA:
                weights = _read_weights(zf, path)
            elif schema == PICKLED_SCHEMA:
                meta["network"], weights = _read_pickled(zf, path, trust_pickle)
            else:
                raise UsageError(f"{path} has schema {schema!r}, this dnnsplit reads {SCHEMA}", _RETRAIN)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(
            f"{path} is not a policy zip ({exc})", "train one with `dnnsplit rl train`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"{path} holds a damaged {_META}", _RETRAIN) from None
    try:
        if meta["scenario"] not in SCENARIOS:
            raise ValueError(f"unknown scenario {meta['scenario']!r}")
        base = problem_from_document(meta["problem"])
        candidates = CandidateSet(base, meta["candidates"])
        policy = PolicyFile(meta, base, candidates, weights, str(path))
        _check_network(policy)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path} is not a complete policy ({exc})", _RETRAIN) from None
    return policy


def _read_weights(zf: zipfile.ZipFile, path: str | Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if _WEIGHTS not in zf.namelist():
        raise UsageError(f"{path} is not a complete policy (no {_WEIGHTS})", _RETRAIN)
    try:
        return load(zf.read(_WEIGHTS))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise UsageError(f"{path} holds damaged weights ({_WEIGHTS}: {exc})", _RETRAIN) from None


def _read_pickled(
    zf: zipfile.ZipFile, path: str | Path, trust_pickle: bool
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """An old policy's network, through ``PPO.load``: it unpickles, so only when the user trusts the file."""
    if not trust_pickle:
        raise UsageError(
            f"{path} is an old policy file ({PICKLED_SCHEMA}) whose model is pickled: reading it can run "
            "code from the file",
            "train it again with `dnnsplit rl train`, or pass --trust-pickle if you trust the file",
        )
    if _PICKLED_MODEL not in zf.namelist():
        raise UsageError(f"{path} is not a complete policy (no {_PICKLED_MODEL})", _RETRAIN)
    from stable_baselines3 import PPO

    try:
        model = PPO.load(io.BytesIO(zf.read(_PICKLED_MODEL)), device="cpu")
        return from_sb3(model.policy)
    except Exception as exc:  # noqa: BLE001 - PPO.load fails in many ways on a file it cannot read
        raise UsageError(f"{path} holds a damaged {_PICKLED_MODEL} ({exc})", _RETRAIN) from None


def _check_network(policy: PolicyFile) -> None:
    """The recorded network must take this scenario's observation and pick one of these candidates."""
    network = policy.network
    if policy.scenario == "context":
        n_features = policy.space.n_features
    else:
        from dnnsplit.partition.rl.multiuser_env import n_features as multiuser_features

        policy.config  # noqa: B018 - a damaged multiuser block fails here, at load time
        n_features = multiuser_features(policy.candidates)
    if network.get("observation_size") != n_features or network.get("actions") != len(policy.candidates):
        raise ValueError(
            f"its network takes {network.get('observation_size')!r} features and has "
            f"{network.get('actions')!r} actions; the scenario needs {n_features} and "
            f"{len(policy.candidates)}"
        )
    policy.actor  # noqa: B018 - the weights must fit the architecture now, not at the first decision
