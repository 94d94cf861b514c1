"""Export the branch as two ONNX files and check them against PyTorch.

``mobile.onnx``: input -> ``stem_output`` (the tensor sent to the edge), ``branch_logits``,
``entropy`` (normalised) and ``exit`` (bool: entropy < threshold), with the branch's binary weights
bit-packed. ``edge.onnx``: ``stem_output`` -> ``logits`` (the backbone's rest, real-valued).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from dnnsplit.branching.binary import freeze
from dnnsplit.branching.packing import PackReport, compact_names, pack_model
from dnnsplit.models.export import OPSET

INPUT = "input"
BOUNDARY = "stem_output"
MOBILE_OUTPUTS = (BOUNDARY, "branch_logits", "entropy", "exit")
EDGE_OUTPUT = "logits"


class MobileModel(nn.Module):
    """Stem, branch and exit decision in one module (what the phone runs)."""

    def __init__(self, stem: nn.Module, branch: nn.Module, threshold: float) -> None:
        super().__init__()
        self.stem, self.branch = stem, branch
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.stem(x)
        logits = self.branch(features)
        log_p = torch.log_softmax(logits, dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])
        return features, logits, entropy, entropy < self.threshold


@dataclass(frozen=True)
class BranchFiles:
    mobile: Path
    edge: Path
    packing: PackReport


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]
) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in [*inputs, *outputs]},
            do_constant_folding=True,
        )


def export_branch(
    stem: nn.Module,
    branch: nn.Module,
    rest: nn.Module,
    threshold: float,
    input_shape: tuple[int, ...],
    directory: Path,
) -> BranchFiles:
    """Write ``mobile.onnx`` (bit-packed) and ``edge.onnx`` into ``directory``."""
    example = torch.zeros(input_shape)
    mobile_path, edge_path = directory / "mobile.onnx", directory / "edge.onnx"
    _export(MobileModel(stem, freeze(branch), threshold), example, mobile_path, [INPUT], list(MOBILE_OUTPUTS))
    model = onnx.load(str(mobile_path))
    report = pack_model(model)
    compact_names(model)
    onnx.save(model, str(mobile_path))
    onnx.checker.check_model(str(mobile_path))
    with torch.no_grad():
        features = stem(example)
    _export(rest, features, edge_path, [BOUNDARY], [EDGE_OUTPUT])
    onnx.checker.check_model(str(edge_path))
    return BranchFiles(mobile_path, edge_path, report)


@dataclass(frozen=True)
class BranchValidation:
    """onnxruntime vs PyTorch over a whole split."""

    samples: int
    exit_mismatches: int  # decisions that differ, not counting entropies within 1e-6 of the threshold
    answer_mismatches: int  # final top-1 classes that differ
    max_abs_diff_branch: float
    max_abs_diff_edge: float

    @property
    def passed(self) -> bool:
        return self.exit_mismatches == 0 and self.answer_mismatches == 0


def validate_branch(
    files: BranchFiles,
    stem: nn.Module,
    branch: nn.Module,
    rest: nn.Module,
    threshold: float,
    loader: torch.utils.data.DataLoader,
    threads: int | None = None,
) -> BranchValidation:
    """Run both files in onnxruntime on every sample of ``loader`` and compare with PyTorch."""
    from dnnsplit.onnxrt import ort_session

    mobile = ort_session(files.mobile, threads)
    edge = ort_session(files.edge, threads)
    torch_mobile = MobileModel(stem, branch, threshold).eval()
    samples = exit_bad = answer_bad = 0
    diff_branch = diff_edge = 0.0
    with torch.no_grad():
        for images, _ in loader:
            feats, b_logits, entropy, exits = (t.numpy() for t in torch_mobile(images))
            main_logits = rest(torch.from_numpy(feats)).numpy()
            o_feats, o_logits, o_entropy, o_exits = mobile.run(None, {INPUT: images.numpy()})
            o_main = edge.run(None, {BOUNDARY: o_feats})[0]
            decided = np.abs(entropy - threshold) > 1e-6
            exit_bad += int(np.sum((exits != o_exits) & decided))
            torch_answer = np.where(exits, b_logits.argmax(1), main_logits.argmax(1))
            ort_answer = np.where(o_exits, o_logits.argmax(1), o_main.argmax(1))
            answer_bad += int(np.sum((torch_answer != ort_answer) & decided))
            diff_branch = max(diff_branch, float(np.max(np.abs(b_logits - o_logits))))
            diff_edge = max(diff_edge, float(np.max(np.abs(main_logits - o_main))))
            samples += len(images)
    return BranchValidation(samples, exit_bad, answer_bad, diff_branch, diff_edge)


def file_bytes(path: Path) -> int:
    return os.path.getsize(path)
