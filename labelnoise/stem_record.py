"""One (track, stem) of a track-folder dataset: the record the filter works through and the selection decides on."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stem:
    """``ROOT/<track>/<stem>.wav``: what the filter reads (path, duration) and what it measured of it."""
    track: str
    stem: str
    path: Path | None = None
    seconds: float = 0.0        # the file's duration: the filter shares out work by it
    volumes: dict[str, float] = field(default_factory=dict)  # dB of each filter output
    silent: bool = False
    margin: float | None = None  # what the rule decides on; None: every output at or below -80 dB (no decision)
    kept: bool = False
    label: dict | None = None    # the stem's entry of noise_labels.json, if any
    whole_margin: float | None = None   # over the whole stem (the original's)
    window_margin: float | None = None  # a low percentile over its windows (volumes.window_margin)
    leaks: dict[str, float] | None = None  # each other output against its own, dB (volumes.leaks_db)
    leak_z: float | None = None         # its largest leak's robust z-score in its source (labelnoise.leaks)
    leak_into: str | None = None        # ... and the output it leaks into

    @property
    def eligible(self) -> bool:
        """Takes part in thresholds and may be kept."""
        return not self.silent and self.margin is not None

    @property
    def noisy(self) -> bool | None:
        return None if self.label is None else bool(self.label.get("noisy"))

    @property
    def kind(self) -> str | None:
        """The noise kind, ``"clean"`` for a clean label, None without a label."""
        if self.label is None:
            return None
        return self.label.get("kind") or ("noisy" if self.noisy else "clean")
