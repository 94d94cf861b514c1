"""Issue 23, point 2: files presented as data must not run code (pickled policies, a checkpoint's ``arch``).

Each hostile file carries a payload that leaves a mark when it runs: a pickle whose ``__reduce__`` creates a
marker file, an ``arch`` of ``tempfile:mkdtemp`` (a new folder in the child's TMPDIR) or ``os:abort``
(the process dies of SIGABRT). A case passes when the command refuses the file in one line, exit 2, and the
mark is absent.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.hardening import Case, CliResult, Observed, dnnsplit

AREA = "2 pickle"


class _Touch:
    """Unpickling this creates ``path``: proof that a load ran code chosen by the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _refused(result: CliResult, marker: Path) -> Observed:
    seen = result.one_line()
    ran = marker.exists()
    text = f"{seen.text}; payload {'RAN' if ran else 'did not run'}"
    return Observed(seen.ok and not ran, text)


def _profile_json(work: Path) -> Path:
    from tests.fixtures.profiles import chain_profile

    path = work / "chain.json"
    chain_profile().save(path)
    return path


def _trained_meta(work: Path) -> dict:
    """The dnnsplit.json of a real (short) training on the chain profile."""
    policy = work / "real.zip"
    result = dnnsplit("rl", "train", _profile_json(work), "--timesteps", "256", "--output", policy)
    if result.code != 0:
        raise RuntimeError(f"rl train failed: {result.stderr.strip()}")
    with zipfile.ZipFile(policy) as zf:
        return json.loads(zf.read("dnnsplit.json"))


def _pickled_policy(work: Path, marker: Path) -> Path:
    """An old-format (rl-policy@1) policy whose SB3 model unpickles a payload when PPO.load reads it."""
    meta = _trained_meta(work)
    meta["schema"] = "dnnsplit/rl-policy@1"
    meta.pop("network", None)
    payload = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    data = {"observation_space": {":type:": "<class 'gymnasium.spaces.box.Box'>", ":serialized:": payload}}
    inner = work / "sb3.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("data", json.dumps(data))
        zf.writestr("_stable_baselines3_version", "2.9.2")
    path = work / "policy.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dnnsplit.json", json.dumps(meta))
        zf.write(inner, "sb3.zip")
    return path


def _rl_eval_pickle(work: Path) -> Observed:
    marker = work / "PAYLOAD_RAN"
    policy = _pickled_policy(work, marker)
    return _refused(dnnsplit("rl", "eval", policy, "--contexts", "5"), marker)


def _plan_rl_pickle(work: Path) -> Observed:
    marker = work / "PAYLOAD_RAN"
    policy = _pickled_policy(work, marker)
    return _refused(
        dnnsplit("plan", work / "chain.json", "--solver", "rl", "--policy", policy, "--network", "4g"), marker
    )


def _bad_weights(work: Path) -> Observed:
    """A new-format policy whose weights do not fit the network it records: one line, not a crash."""
    import numpy as np
    from safetensors.numpy import save

    meta = _trained_meta(work)
    meta["schema"] = "dnnsplit/rl-policy@2"
    tensors = {"action_net.weight": np.zeros((3, 7), np.float32), "action_net.bias": np.zeros(3, np.float32)}
    path = work / "policy.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dnnsplit.json", json.dumps(meta))
        zf.writestr("policy.safetensors", save(tensors))
    return dnnsplit("rl", "eval", path, "--contexts", "5").one_line()


def _checkpoint(work: Path, arch: str, name: str = "ckpt.pt") -> Path:
    import torch

    path = work / name
    torch.save(
        {
            "schema": "dnnsplit/checkpoint@1",
            "arch": arch,
            "num_classes": 10,
            "input_shape": [1, 3, 16, 16],
            "state_dict": {"fc.weight": torch.zeros(10, 8)},
        },
        path,
    )
    return path


@contextmanager
def _tmpdir(path: Path) -> Iterator[Path]:
    """The children's TMPDIR (they inherit the environment), restored afterwards."""
    path.mkdir()
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old


def _arch_mkdtemp(work: Path) -> Observed:
    ckpt = _checkpoint(work, "tempfile:mkdtemp")
    with _tmpdir(work / "tmp") as tmp:
        result = dnnsplit("cuts", ckpt)
        made = [p.name for p in tmp.iterdir() if p.is_dir() and p.name.startswith("tmp")]
    seen = result.one_line()
    ran = f"mkdtemp RAN ({made[0]})" if made else "mkdtemp did not run"
    return Observed(seen.ok and not made, f"{seen.text}; {ran}")


def _arch_abort(work: Path) -> Observed:
    result = dnnsplit("cuts", _checkpoint(work, "os:abort"))
    seen = result.one_line()
    killed = result.code < 0
    return Observed(seen.ok, f"{seen.text}{'; killed by SIGABRT' if killed else ''}")


def _arch_itself(work: Path) -> Observed:
    """A checkpoint whose arch names the checkpoint itself: no endless recursion."""
    path = work / "loop.pt"
    _checkpoint(work, str(path), name="loop.pt")
    return dnnsplit("cuts", path).one_line()


def _from_misses_source(work: Path) -> Observed:
    """prune --from-misses reads MODEL from DIR/variants.yaml: an import path there is data too."""
    from dnnsplit.pruning.context import Context
    from dnnsplit.pruning.select import write_misses
    from dnnsplit.pruning.variants import FILE, VariantsFile

    directory = work / "variants"
    directory.mkdir()
    document = VariantsFile(
        model={"source": "os:abort", "input_shape": [1, 3, 16, 16], "num_classes": 10, "arch": None},
        data="digits",
        context=Context.parse("mobile-web", "wifi", "none"),
        settings={},
        variants=[],
    )
    (directory / FILE).write_text(document.dump())
    write_misses(
        directory,
        [{"network": "wifi", "device_scale": 1.0, "budget_ms": 1.0, "count": 1, "best_effort": "original"}],
    )
    result = dnnsplit("prune", directory, "--from-misses", "--epochs", "0")
    seen = result.one_line()
    return Observed(seen.ok, f"{seen.text}{'; killed by SIGABRT' if result.code < 0 else ''}")


_REFUSED = "exit 2, one line (retrain or --trust-pickle), payload does not run"

CASES: list[Case] = [
    Case(
        AREA,
        "rl eval on an old pickled policy.zip whose sb3.zip unpickles a payload",
        _REFUSED,
        _rl_eval_pickle,
    ),
    Case(AREA, "plan --solver rl with the same pickled policy.zip", _REFUSED, _plan_rl_pickle),
    Case(
        AREA,
        "rl eval on a new-format policy whose weights do not fit its recorded network",
        "exit 2, one line",
        _bad_weights,
    ),
    Case(
        AREA,
        "a checkpoint whose arch is tempfile:mkdtemp",
        "exit 2, one line (--arch or --trust-pickle), no folder made",
        _arch_mkdtemp,
    ),
    Case(
        AREA,
        "a checkpoint whose arch is os:abort",
        "exit 2, one line, the process is not killed",
        _arch_abort,
    ),
    Case(
        AREA,
        "a checkpoint whose arch is its own path",
        "exit 2, one line (no endless recursion)",
        _arch_itself,
    ),
    Case(
        AREA,
        "prune --from-misses on a variants.yaml whose model source is os:abort",
        "exit 2, one line, the process is not killed",
        _from_misses_source,
    ),
]
