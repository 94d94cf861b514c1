"""``manifest.yaml`` (``dnnsplit/manifest@1``): what a split directory holds and how its segments chain.

* ``model``: the source's identity (source, name, sha256 of its ONNX file); ``plan``: the plan file and its
  sha256, or the hand-given ``cuts``;
* ``input`` and ``outputs``: the whole model's;
* ``segments``, in order: ``tier``, ``file``, ``sha256``, ``bytes``, ``layers`` and ``inputs`` / ``outputs``
  ({name, shape, dtype, bytes per sample}); each input says which segment it comes ``from`` (``input``
  for the model input) and each output which later segments it goes ``to`` (``result`` for a model output);
  a segment over 2 GB also has ``data_sha256``, its external-data file's (optional: the schema stays @1).
  ``file`` is relative to the directory, and loaders check it stays there and has ``bytes`` and
  ``sha256`` (``splitting.integrity``);
* ``validation``: how many inputs, where from, the max absolute and relative differences, the tolerance;
  for an elastic split also ``per_cut``: the max relative difference of every candidate's chain;
* ``elastic`` (a split written by ``split --elastic``, optional: the schema stays @1): the candidate cuts
  (``dnnsplit/elastic@1``, see ``partition.elastic.ElasticSpec`` and docs/elastic.md). Its segments are
  the *pieces* between candidate boundaries; their tiers follow the default candidate, so every other
  command reads the directory as an ordinary split at that cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document, write_document
from dnnsplit.profiling.graph import TensorSpec

SCHEMA = "dnnsplit/manifest@1"
FILE = "manifest.yaml"
# what the segments were cut by; ``codec`` / ``bottleneck``: a plan that chose a trained bottleneck (the
# segments are its model.onnx cut at the int8 code; ``coding``: how the code's message is coded on the wire)
ORIGIN_KEYS = ("plan", "plan_sha256", "cuts", "compress", "coding", "branch", "codec", "bottleneck")


@dataclass(frozen=True)
class SegmentEntry:
    index: int
    tier: str
    file: str
    sha256: str
    bytes: int
    layers: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sources: dict[str, int | None]  # input name -> segment index it comes from; None: the model input
    targets: dict[str, list[int | str]]  # output name -> later segment indices and/or "result"
    simplified: bool
    notes: tuple[str, ...] = ()
    data_sha256: str | None = None  # the external-data file's (``FILE.data``), for segments over 2 GB

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tier": self.tier,
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "layers": self.layers,
            "simplified": self.simplified,
            "inputs": [
                {**t.to_dict(), "from": "input" if self.sources[t.name] is None else self.sources[t.name]}
                for t in self.inputs
            ],
            "outputs": [{**t.to_dict(), "to": list(self.targets[t.name])} for t in self.outputs],
            "notes": list(self.notes),
            **({} if self.data_sha256 is None else {"data_sha256": self.data_sha256}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentEntry:
        inputs = tuple(TensorSpec.from_dict(t) for t in data["inputs"])
        outputs = tuple(TensorSpec.from_dict(t) for t in data["outputs"])
        return cls(
            index=int(data["index"]),
            tier=str(data["tier"]),
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
            layers=int(data["layers"]),
            inputs=inputs,
            outputs=outputs,
            sources={t["name"]: None if t["from"] == "input" else int(t["from"]) for t in data["inputs"]},
            targets={t["name"]: list(t["to"]) for t in data["outputs"]},
            simplified=bool(data.get("simplified", False)),
            notes=tuple(data.get("notes", [])),
            data_sha256=None if data.get("data_sha256") is None else str(data["data_sha256"]),
        )


@dataclass(frozen=True)
class Validation:
    inputs: int
    source: str  # "random (seed 0)" or the file / folder the inputs came from
    max_abs_diff: float
    max_rel_diff: float  # max |whole - chained| / max |whole|, per output
    tolerance: float
    passed: bool
    top1_agreement: float = 1.0  # share of inputs whose top-1 class is the whole model's
    criterion: str = "max_rel_diff"  # or "top1_agreement" (compressed boundaries are not exact)
    per_cut: dict[str, float] | None = None  # elastic: candidate name -> its chain's max relative difference
    # A split of another model than the plan's (a bottleneck model): the share of inputs whose top-1 is the
    # original model's, and that model's ONNX file
    reference_top1_agreement: float | None = None
    reference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {} if self.per_cut is None else {"per_cut": dict(self.per_cut)}
        if self.reference is not None:
            extra.update(reference=self.reference, reference_top1_agreement=self.reference_top1_agreement)
        return {
            **extra,
            "inputs": self.inputs,
            "source": self.source,
            "criterion": self.criterion,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "tolerance": self.tolerance,
            "top1_agreement": self.top1_agreement,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]
    origin: dict[str, Any]  # {"plan": path, "plan_sha256": ...} or {"cuts": [[...], ...]}; "compress"
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    segments: tuple[SegmentEntry, ...]
    validation: Validation | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # A split written by `dnnsplit branch`: the first segment's boolean output `flag` says the sample may
    # stop there, answered by its output `logits` in place of the model output `answers` (see branch.yaml).
    early_exit: dict[str, Any] | None = None
    elastic: dict[str, Any] | None = None  # split --elastic: the candidate cuts (dnnsplit/elastic@1)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "schema": SCHEMA,
            "model": dict(self.model),
            **self.origin,
            "input": self.input.to_dict(),
            "outputs": [t.to_dict() for t in self.outputs],
            "segments": [s.to_dict() for s in self.segments],
            "validation": None if self.validation is None else self.validation.to_dict(),
            "notes": list(self.notes),
        }
        if self.early_exit is not None:
            data["early_exit"] = dict(self.early_exit)
        if self.elastic is not None:
            data["elastic"] = dict(self.elastic)
        return data

    def save(self, directory: str | Path) -> None:
        write_document(Path(directory) / FILE, self.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / FILE
        if not Path(directory).is_dir():
            raise UsageError(f"'{directory}' is not a directory", "pass the --output DIR of dnnsplit split")
        data = read_document(path, SCHEMA)
        try:
            validation = data.get("validation")
            return cls(
                model=dict(data["model"]),
                origin={k: data[k] for k in ORIGIN_KEYS if k in data},
                input=TensorSpec.from_dict(data["input"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
                segments=tuple(SegmentEntry.from_dict(s) for s in data["segments"]),
                validation=None if validation is None else Validation(**validation),
                notes=tuple(data.get("notes", [])),
                early_exit=data.get("early_exit"),
                elastic=data.get("elastic"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{path} is not a complete manifest ({exc})", "split the model again") from exc


def crossing(manifest: Manifest, first: int) -> list[TensorSpec]:
    """Tensors made before segment ``first`` (or the model input) that segments from ``first`` on read."""
    found: dict[str, TensorSpec] = {}
    for seg in manifest.segments[first:]:
        for t in seg.inputs:
            source = seg.sources[t.name]
            if (source is None or source < first) and t.name not in found:
                found[t.name] = t
    return list(found.values())


def results_from(manifest: Manifest, first: int) -> list[TensorSpec]:
    """Model outputs made by segments from ``first`` on."""
    return [t for seg in manifest.segments[first:] for t in seg.outputs if "result" in seg.targets[t.name]]
