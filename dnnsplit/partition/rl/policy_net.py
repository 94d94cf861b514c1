"""The policy network as data: a declarative architecture (JSON) and its weights (safetensors), no pickle.

SB3's own ``PPO.save`` zip pickles the spaces, schedules and other attributes (cloudpickle): reading it
runs whatever code the file chose. A policy file records instead what rebuilds the network: the
observation size, the number of actions, the hidden layer sizes of the actor (``pi``) and critic (``vf``)
and the activation, plus the policy's ``state_dict`` as safetensors. Decisions need only the actor half,
evaluated in numpy (``Actor``); ``sb3_policy`` rebuilds the whole SB3 ``ActorCriticPolicy`` from the same
data (the tests check both decide alike).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ACTIVATIONS = ("tanh", "relu")
_PI = "mlp_extractor.policy_net.{}.{}"  # Sequential(Linear, activation, Linear, activation, ...)


class Actor:
    """The deterministic action of an SB3 ``ActorCriticPolicy`` with an MLP, in numpy."""

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], activation: str) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {activation!r}")
        self.weights = weights
        self.activation = np.tanh if activation == "tanh" else (lambda x: np.maximum(x, 0.0))

    @classmethod
    def from_state(cls, network: dict[str, Any], tensors: dict[str, np.ndarray]) -> Actor:
        """The actor of ``network`` with the weights in ``tensors``; ValueError if they do not fit."""
        hidden = _sizes(network, "pi")
        n_in, n_out = _positive(network, "observation_size"), _positive(network, "actions")
        keys = [(_PI.format(2 * i, "weight"), _PI.format(2 * i, "bias")) for i in range(len(hidden))]
        keys.append(("action_net.weight", "action_net.bias"))
        shapes = list(zip([*hidden, n_out], [n_in, *hidden], strict=True))  # (out, in) of each Linear
        weights = []
        for (w_key, b_key), (rows, cols) in zip(keys, shapes, strict=True):
            w, b = _tensor(tensors, w_key), _tensor(tensors, b_key)
            if w.shape != (rows, cols) or b.shape != (rows,):
                raise ValueError(
                    f"{w_key} is {w.shape} and {b_key} {b.shape}; the recorded network needs {(rows, cols)}"
                )
            weights.append((w, b))
        return cls(weights, str(network.get("activation")))

    def logits(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        for w, b in self.weights[:-1]:
            x = self.activation(x @ w.T + b)
        w, b = self.weights[-1]
        return x @ w.T + b

    def act(self, obs: np.ndarray) -> int:
        return int(np.argmax(self.logits(obs)))


def from_sb3(policy: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The architecture and weights of a trained SB3 ``ActorCriticPolicy`` (``model.policy``)."""
    import torch

    def sizes(net: torch.nn.Module) -> list[int]:
        return [int(m.out_features) for m in net if isinstance(m, torch.nn.Linear)]

    network = {
        "library": "stable-baselines3",
        "policy": "ActorCriticPolicy",
        "observation_size": int(policy.observation_space.shape[0]),
        "actions": int(policy.action_space.n),
        "net_arch": {
            "pi": sizes(policy.mlp_extractor.policy_net),
            "vf": sizes(policy.mlp_extractor.value_net),
        },
        "activation": policy.activation_fn.__name__.lower(),
    }
    tensors = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in policy.state_dict().items()}
    return network, tensors


def sb3_policy(network: dict[str, Any], tensors: dict[str, np.ndarray]) -> Any:
    """The SB3 ``ActorCriticPolicy`` that ``network`` describes, with ``tensors`` loaded (strictly)."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy

    activation = str(network.get("activation"))
    if activation not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {activation!r}")
    policy = ActorCriticPolicy(
        gym.spaces.Box(-1.0, 1.0, shape=(_positive(network, "observation_size"),), dtype=np.float32),
        gym.spaces.Discrete(_positive(network, "actions")),
        lr_schedule=lambda _: 0.0,
        net_arch={"pi": _sizes(network, "pi"), "vf": _sizes(network, "vf")},
        activation_fn=torch.nn.Tanh if activation == "tanh" else torch.nn.ReLU,
    )
    policy.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    return policy.eval()


def _positive(network: dict[str, Any], key: str) -> int:
    value = network.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"network {key} is {value!r}, not a positive integer")
    return value


def _sizes(network: dict[str, Any], head: str) -> list[int]:
    arch = network.get("net_arch")
    sizes = arch.get(head) if isinstance(arch, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"network net_arch.{head} is {sizes!r}, not a list of layer sizes")
    if any(s < 1 for s in sizes):
        raise ValueError(f"network net_arch.{head} has a layer of size < 1: {sizes}")
    return sizes


def _tensor(tensors: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in tensors:
        raise ValueError(f"the weights lack {key}")
    value = np.asarray(tensors[key], dtype=np.float64)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{key} holds NaN or infinite weights")
    return value
