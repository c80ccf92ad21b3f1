"""What ``separate.py`` writes: which stems, under which names, in which encoding, kept from clipping.

The flags and their meaning follow the demucs CLI (demucs 4.x ``separate``):
a filename template with the keys ``{track}``, ``{trackext}``, ``{stem}``,
``{ext}`` (default ``{track}/{stem}.{ext}``); ``--two-stems STEM`` writes STEM
and ``no_STEM``, the sum of the other stems (``--other-method add``), or
``minus_STEM``, the mixture minus STEM (``minus``), or STEM alone (``none``);
the clip modes ``rescale`` (the whole stem divided by ``max(1.01 * peak, 1)``,
demucs' default), ``clamp`` (to +-0.99) and ``none``.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import write_audio

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
TEMPLATE_KEYS = ("track", "trackext", "stem", "ext")
CLIP_MODES = ("rescale", "clamp", "none")
OTHER_METHODS = ("add", "minus", "none")


def check_template(template: str) -> None:
    """A template naming only the known keys, and ``{stem}`` (else every stem would go to one file)."""
    try:
        keys = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"--filename {template!r}: {exc}") from None
    unknown = sorted(set(keys) - set(TEMPLATE_KEYS))
    if unknown:
        raise ValueError(f"--filename {template!r}: unknown key(s) {unknown}; the keys are "
                         + ", ".join("{" + k + "}" for k in TEMPLATE_KEYS))
    if "stem" not in keys:
        raise ValueError(f"--filename {template!r} has no {{stem}}: every stem would be written to one file")


def prevent_clip(wav: np.ndarray, mode: str) -> np.ndarray:
    """demucs' ``prevent_clip``: ``rescale`` keeps the shape below full scale, ``clamp`` cuts it."""
    if mode == "rescale":
        return wav / max(1.01 * float(np.abs(wav).max(initial=0.0)), 1.0)
    if mode == "clamp":
        return np.clip(wav, -0.99, 0.99)
    if mode == "none":
        return wav
    raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {mode!r}")


@dataclass(frozen=True)
class StemOutput:
    """How stems are written: ``ext`` wav/flac/mp3, ``subtype`` for wav/flac, ``bitrate`` for mp3 (kbps)."""
    template: str = DEFAULT_TEMPLATE
    ext: str = "wav"
    subtype: str = "PCM_16"
    bitrate: int = 320
    clip: str = "rescale"
    two_stems: str | None = None
    other_method: str = "add"

    def stems(self, sources, estimate: np.ndarray, mix: np.ndarray) -> dict[str, np.ndarray]:
        """``{stem name: (C, T)}`` to write from ``estimate`` ``(S, C, T)`` and the mixture ``(C, T)``."""
        sources = list(sources)
        if self.two_stems is None:
            return dict(zip(sources, estimate))
        if self.two_stems not in sources:
            raise ValueError(f"--two-stems {self.two_stems!r}: the model separates {sources}")
        k = sources.index(self.two_stems)
        out = {self.two_stems: estimate[k]}
        if self.other_method == "add":
            out[f"no_{self.two_stems}"] = np.delete(estimate, k, axis=0).sum(axis=0)
        elif self.other_method == "minus":
            out[f"minus_{self.two_stems}"] = mix - estimate[k]
        return out

    def names(self, sources) -> list[str]:
        """The stem names ``stems`` returns, in order."""
        sources = list(sources)
        if self.two_stems is None:
            return sources
        other = {"add": f"no_{self.two_stems}", "minus": f"minus_{self.two_stems}"}.get(self.other_method)
        return [self.two_stems] + ([other] if other else [])

    def path(self, out: Path, track: str, trackext: str, stem: str) -> Path:
        return out / self.template.format(track=track, trackext=trackext, stem=stem, ext=self.ext)

    def write(self, path: Path, wav: np.ndarray, samplerate: int) -> None:
        write_audio(path, prevent_clip(wav, self.clip), samplerate, subtype=self.subtype, bitrate=self.bitrate)
