"""Where a pipeline puts every artifact under its output directory ``OUT``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_FILE = ".stages.yaml"


@dataclass(frozen=True)
class Layout:
    """Where every artifact goes under OUT."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def profile(self) -> Path:
        return self.root / "profile.json"

    @property
    def branch(self) -> Path:
        return self.root / "branch"

    @property
    def bottleneck(self) -> Path:
        return self.root / "bottleneck"

    @property
    def variants(self) -> Path:
        return self.root / "variants"

    @property
    def plan(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def plans(self) -> Path:
        return self.root / "plans"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE
