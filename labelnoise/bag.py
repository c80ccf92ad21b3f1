"""Bags of models: several separators mixed with a per-model, per-source weight matrix.

The final system of the original takes each source from its own fine-tuned
model; a bag says so with one-hot rows::

    # final.yaml -- model paths are relative to this file
    models: [drums.th, bass.th, other.th, vocals.th]
    weights:            # one row per model, one column per source (drums, bass, other, vocals)
      - [1, 0, 0, 0]
      - [0, 1, 0, 0]
      - [0, 0, 1, 0]
      - [0, 0, 0, 1]
    segment: 10         # optional, seconds: every model's segment (when no longer than its own)

A bag that demucs wrote (``models: [955717e8, ...]``: signatures naming
``955717e8.th`` or ``955717e8-<sha256 prefix>.th`` in the same folder) reads
the same way; ``python -m labelnoise.export`` writes one of ours for demucs.

The estimate of source ``k`` is ``sum_i w[i][k] * est_i[k] / sum_i w[i][k]``
(``labelnoise.inference.apply`` does the arithmetic). Without ``weights``
every model counts the same.
"""
from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from .yamlio import read_mapping

BAG_KEYS = {"models", "weights", "segment", "choices"}  # choices: how each source was chosen (words only)


class BagError(ValueError):
    """A bag that cannot be built; the message names the file or model."""


class Bag(nn.Module):
    """Models sharing sources, sample rate and channels, with a weight matrix.

    ``weights`` has shape ``(len(models), len(sources))``; ``names`` label the
    models in error messages (file paths when loaded from YAML).
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[Sequence[float]] | None = None,
                 *, segment: float | None = None, names: Sequence[str] | None = None):
        super().__init__()
        if not models:
            raise BagError("a bag needs at least one model")
        names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
        if len(names) != len(models):
            raise BagError(f"{len(names)} names given for {len(models)} models")
        first, first_name = models[0], names[0]
        for model, name in zip(models[1:], names[1:]):
            for attr in ("sources", "samplerate", "audio_channels"):
                if _as_list(getattr(model, attr)) != _as_list(getattr(first, attr)):
                    raise BagError(f"{name}: {attr} {getattr(model, attr)!r} differs from "
                                   f"{getattr(first, attr)!r} of {first_name}")
        n_sources = len(first.sources)
        if weights is None:
            weights = [[1.0] * n_sources for _ in models]
        weights = [[float(w) for w in row] for row in weights]
        if len(weights) != len(models):
            raise BagError(f"weights has {len(weights)} rows for {len(models)} models")
        for row, name in zip(weights, names):
            if len(row) != n_sources:
                raise BagError(f"{name}: weight row {row} has {len(row)} values for "
                               f"{n_sources} sources {list(first.sources)}")
            if any(w < 0 for w in row):
                raise BagError(f"{name}: negative weight in {row}")
        for k, source in enumerate(first.sources):
            # A zero column would divide by zero when the estimates are averaged.
            if sum(row[k] for row in weights) <= 0:
                raise BagError(f"source {source!r} has zero total weight: no model provides it")
        if segment is not None and segment <= 0:
            raise BagError(f"segment must be positive, got {segment}")
        if segment is not None:
            for model in models:
                # As demucs' BagOfModels: a member runs at the bag's segment, an HTDemucs only when it
                # is no longer than its own (it pads shorter inputs to that, so the two agree).
                if segment <= float(model.segment):
                    model.segment = segment
        self.models = nn.ModuleList(models)
        self.weights = weights
        self.names = names
        self.segment_override = segment
        self.sources = list(first.sources)
        self.samplerate = first.samplerate
        self.audio_channels = first.audio_channels

    @property
    def segment(self) -> float:
        """The longest segment every model accepts (the override when one is set)."""
        if self.segment_override is not None:
            return self.segment_override
        return min(float(m.segment) for m in self.models)

    def forward(self, mix):
        raise TypeError("a Bag is applied with labelnoise.inference.apply, not called")


def _as_list(value):
    # Sources may come as tuple or list; compare them as lists.
    return list(value) if isinstance(value, (list, tuple)) else value


def _default_loader(path: Path) -> nn.Module:
    # Imported here: checkpoints are only needed when a model is read from disk.
    from .checkpoint import load_model
    return load_model(path)


def load_bag(path: str | os.PathLike, *, loader: Callable[[Path], nn.Module] | None = None) -> Bag:
    """Read a bag YAML; model paths are relative to the YAML's folder.

    ``loader(path) -> nn.Module`` defaults to ``labelnoise.checkpoint.load_model``.
    """
    path = Path(path)
    spec = read_mapping(path, BagError, "a mapping with 'models' and 'weights'")
    unknown = set(spec) - BAG_KEYS
    if unknown:
        raise BagError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(BAG_KEYS)}")
    models = spec.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise BagError(f"{path}: 'models' must be a non-empty list of checkpoint paths")
    model_paths = [member_path(path, m) for m in models]
    loader = loader or _default_loader
    loaded = [loader(p) for p in model_paths]
    try:
        return Bag(loaded, spec.get("weights"), segment=spec.get("segment"),
                   names=[str(p) for p in model_paths])
    except BagError as exc:
        raise BagError(f"{path}: {exc}") from None


def member_path(bag: Path, entry: str) -> Path:
    """A bag's model: a path relative to the bag, or a demucs signature ``SIG`` naming ``SIG.th`` or
    ``SIG-CHECKSUM.th`` beside it (a demucs bag; the checksum, a prefix of the file's sha256, is checked)."""
    folder = bag.parent
    candidate = (folder / entry).resolve()
    if candidate.exists():
        return candidate
    if "/" not in entry and not entry.endswith(".th"):
        if (folder / f"{entry}.th").is_file():
            return (folder / f"{entry}.th").resolve()
        signed = sorted(folder.glob(f"{glob.escape(entry)}-*.th"))
        if len(signed) == 1:
            checksum = signed[0].stem.split("-", 1)[1]
            digest = hashlib.sha256(signed[0].read_bytes()).hexdigest()
            if not digest.startswith(checksum):
                raise BagError(f"{signed[0]}: its sha256 {digest[:len(checksum)]} does not match the "
                               f"checksum {checksum} in its name (a corrupt or replaced file)")
            return signed[0].resolve()
        if len(signed) > 1:
            raise BagError(f"{bag}: signature {entry!r} names several files: {[p.name for p in signed]}")
    raise BagError(f"{bag}: model file {candidate} not found"
                   + ("" if "/" in entry or entry.endswith(".th") else f" (nor {entry}.th, a demucs signature)"))


def load_model_or_bag(path: str | os.PathLike, *,
                      loader: Callable[[Path], nn.Module] | None = None, config=None) -> nn.Module:
    """A ``.yaml``/``.yml`` file is a bag; anything else is one checkpoint.

    ``config`` (a model config file: ours, or an MSST config) goes to ``load_model`` for a bare
    or Lightning state dict.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_bag(path, loader=loader)
    if not path.exists():
        raise BagError(f"{path}: file not found")
    if config is not None and loader is None:
        from .checkpoint import load_model
        return load_model(path, config=config)
    return (loader or _default_loader)(path)
