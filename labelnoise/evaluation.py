"""Score separations of a track-folder test set: the challenge SDR, or any of ``labelnoise.track_metrics``.

A test set is ``ROOT/<track>/{drums,bass,other,vocals}.wav`` (+ ``mixture.wav``;
without it the mixture is the sum of the four stems). Estimates are laid out
the same way, ``EST/<track>/<source>.wav`` (what ``separate.py`` writes).

- ``evaluate_dirs(ref_dir, est_dir)``: estimates already on disk.
- ``evaluate_model(model, tracks)``: separate each mixture and score it in one
  go (training validation calls this with tracks loaded once by
  ``load_tracks``).

Both return a JSON-ready report: ``{"sources", "scores": {track: {source:
sdr, "mean": m}}, "aligned": {track: {source: samples cropped}}, "summary"}``;
with ``metrics=[...]`` other than ``["sdr"]``, ``scores``/``summary`` hold the
first one and ``"metrics": {name: {"scores", "summary"}}`` all of them.
Lengths that differ by at most ``max_length_diff`` samples are cropped to the
shorter and reported; more, or different channel counts or sample rates, is
an error naming the file.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from .progress import bar as progress_bar

from . import SOURCES
from .atomic import write_json, write_text
from .audio import AudioError, info, read_audio, resample, write_audio
from .files import MIXTURE_FILE
from .inference import apply
from . import track_metrics
from .metrics import sdr, summarize, track_mean

log = logging.getLogger(__name__)

# Resampling to the model rate and back may change a length by a sample or two;
# anything much longer means the wrong file.
MAX_LENGTH_DIFF = 1024
DEFAULT_METRICS = ("sdr",)


@dataclass
class Track:
    """One test track in memory: ``mix`` and ``stems`` are float32 ``(C, T)``."""
    name: str
    samplerate: int
    mix: np.ndarray
    stems: dict[str, np.ndarray]


def list_tracks(root: str | os.PathLike) -> list[Path]:
    """Track folders under ``root`` (those holding at least one ``.wav``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    tracks = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.wav")))
    if not tracks:
        raise FileNotFoundError(f"{root}: no track folders with .wav files")
    return tracks


def load_track(folder: str | os.PathLike, sources: Sequence[str] = SOURCES,
               channels: int | None = 2) -> Track:
    """Read ``sources`` of a track folder and its mixture (or the sum of all stems)."""
    folder = Path(folder)
    mix_path = folder / MIXTURE_FILE
    needed = list(sources) if mix_path.exists() else list(dict.fromkeys([*sources, *SOURCES]))
    rate = None
    stems = {}
    for name in needed:
        path = folder / f"{name}.wav"
        file_rate = info(path).samplerate
        if rate is not None and file_rate != rate:
            raise AudioError(f"{path}: sample rate {file_rate} differs from the track's {rate}")
        rate = file_rate
        stems[name] = read_audio(path, channels=channels)
    if mix_path.exists():
        if info(mix_path).samplerate != rate:
            raise AudioError(f"{mix_path}: sample rate differs from the stems' {rate}")
        mix = read_audio(mix_path, channels=channels)
    else:
        stems = _crop_all(stems, folder)
        mix = sum(stems[s] for s in SOURCES)
    for name in sources:
        _check_compatible(stems[name], mix, folder / f"{name}.wav")
    return Track(folder.name, rate, mix, {s: stems[s] for s in sources})


def _crop_all(stems: dict, folder: Path) -> dict:
    length = min(s.shape[-1] for s in stems.values())
    first = next(iter(stems.values()))
    for name, wav in stems.items():
        _check_compatible(wav, first, folder / f"{name}.wav")
    return {name: wav[..., :length] for name, wav in stems.items()}


def _check_compatible(wav: np.ndarray, other: np.ndarray, path: Path,
                      max_length_diff: int = MAX_LENGTH_DIFF) -> None:
    if wav.shape[0] != other.shape[0]:
        raise AudioError(f"{path}: {wav.shape[0]} channels where {other.shape[0]} expected")
    if abs(wav.shape[-1] - other.shape[-1]) > max_length_diff:
        raise AudioError(f"{path}: {wav.shape[-1]} samples where {other.shape[-1]} expected")


def load_tracks(root: str | os.PathLike, sources: Sequence[str] = SOURCES,
                channels: int | None = 2) -> list[Track]:
    """Every track of a test set, in memory (for repeated validation)."""
    return [load_track(folder, sources, channels) for folder in list_tracks(root)]


def align(reference: np.ndarray, estimate: np.ndarray, path, max_length_diff: int = MAX_LENGTH_DIFF):
    """Crop both to the shorter length; returns ``(reference, estimate, samples cropped)``.

    Different channel counts, or lengths further apart than
    ``max_length_diff``, are an error naming ``path`` (the estimate).
    """
    _check_compatible(estimate, reference, Path(path), max_length_diff)
    length = min(reference.shape[-1], estimate.shape[-1])
    diff = abs(reference.shape[-1] - estimate.shape[-1])
    return reference[..., :length], estimate[..., :length], diff


class _Scores:
    """Collects per-track scores of every metric, and the crops, into a report."""

    def __init__(self, sources: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS):
        self.sources = list(sources)
        self.metrics = list(metrics)
        self.scores: dict[str, dict[str, dict]] = {m: {} for m in self.metrics}
        self.aligned: dict[str, dict[str, int]] = {}

    def add(self, track: str, pairs: dict, samplerate: int, max_length_diff: int) -> None:
        """``pairs``: ``{source: (reference, estimate, path or label of the estimate)}``, every source."""
        refs, ests = [], []
        for source in self.sources:
            reference, estimate, path = pairs[source]
            reference, estimate, diff = align(reference, estimate, path, max_length_diff)
            if diff:
                log.warning("%s: length differs from the reference by %d samples; cropped", path, diff)
                self.aligned.setdefault(track, {})[source] = diff
            refs.append(reference)
            ests.append(estimate)
        values = {}
        if "sdr" in self.metrics:  # each source on its own crop
            values["sdr"] = [float(sdr(r, e)) for r, e in zip(refs, ests)]
        others = [m for m in self.metrics if m != "sdr"]
        if others:  # metrics of all sources together: one length for all
            n = min(r.shape[-1] for r in refs)
            values.update(track_metrics.compute(others, np.stack([r[..., :n] for r in refs]),
                                                np.stack([e[..., :n] for e in ests]), samplerate))
        for metric in self.metrics:
            self.scores[metric][track] = dict(zip(self.sources, values[metric]))

    def report(self) -> dict:
        """The first metric's table as ``scores``/``summary``; with other metrics, all under ``metrics``."""
        tables = {}
        for metric, scores in self.scores.items():
            for row in scores.values():
                row["mean"] = track_mean(row, self.sources)
            tables[metric] = {"scores": scores, "summary": summarize(scores, self.sources)}
        first = tables[self.metrics[0]]
        report = {"sources": self.sources, "scores": first["scores"], "aligned": self.aligned,
                  "summary": first["summary"]}
        if self.metrics != list(DEFAULT_METRICS):
            report["metric"] = self.metrics[0]
            report["metrics"] = tables
        return report


def evaluate_dirs(ref_dir: str | os.PathLike, est_dir: str | os.PathLike,
                  sources: Sequence[str] = SOURCES, *, max_length_diff: int = MAX_LENGTH_DIFF,
                  progress: bool = False, metrics: Sequence[str] = DEFAULT_METRICS) -> dict:
    """Score ``est_dir/<track>/<source>.wav`` against every track of ``ref_dir``."""
    est_dir = Path(est_dir)
    collected = _Scores(sources, metrics)
    for folder in progress_bar(list_tracks(ref_dir), unit="track", disable=not progress):
        pairs, rate = {}, None
        for source in sources:
            ref_path, est_path = folder / f"{source}.wav", est_dir / folder.name / f"{source}.wav"
            ref_rate, est_rate = info(ref_path).samplerate, info(est_path).samplerate
            if ref_rate != est_rate:
                raise AudioError(f"{est_path}: sample rate {est_rate} differs from the "
                                 f"reference's {ref_rate}")
            rate = ref_rate
            pairs[source] = (read_audio(ref_path, channels=None), read_audio(est_path, channels=None), est_path)
        collected.add(folder.name, pairs, rate, max_length_diff)
    return collected.report()


def evaluate_model(model, tracks: str | os.PathLike | Sequence[Track], *,
                   sources: Sequence[str] | None = None, out_dir: str | os.PathLike | None = None,
                   float32: bool = False, max_length_diff: int = MAX_LENGTH_DIFF,
                   progress: bool = False, metrics: Sequence[str] = DEFAULT_METRICS, **apply_kwargs) -> dict:
    """Separate every track's mixture with ``model`` (or a bag) and score it.

    ``tracks`` is a test-set folder or tracks from ``load_tracks``.
    ``apply_kwargs`` go to ``labelnoise.inference.apply`` (device, segment,
    overlap, shifts, batch_size, precision, mode). The mixture is resampled
    to the model's rate and the estimates back to the track's, as
    ``separate.py`` does; with ``out_dir`` they are also written there.
    """
    model_sources = list(model.sources)
    sources = list(sources) if sources is not None else model_sources
    missing = [s for s in sources if s not in model_sources]
    if missing:
        raise ValueError(f"the model has no source(s) {missing}; it separates {model_sources}")
    if isinstance(tracks, (str, os.PathLike)):
        tracks = load_tracks(tracks, sources, model.audio_channels)
    collected = _Scores(sources, metrics)
    for track in progress_bar(tracks, unit="track", disable=not progress):
        estimates = separate_array(model, track.mix, track.samplerate, **apply_kwargs)
        pairs = {}
        for source in sources:
            estimate = estimates[model_sources.index(source)]
            label = f"{track.name}/{source} (estimate)"
            if out_dir is not None:
                path = Path(out_dir) / track.name / f"{source}.wav"
                write_audio(path, estimate, track.samplerate, float32=float32)
                label = path
            pairs[source] = (track.stems[source], estimate, label)
        collected.add(track.name, pairs, track.samplerate, max_length_diff)
    return collected.report()


def separate_array(model, mix: np.ndarray, samplerate: int, **apply_kwargs) -> np.ndarray:
    """``(C, T)`` at ``samplerate`` -> ``(S, C, T)`` at ``samplerate`` (resampled both ways)."""
    wav = resample(mix, samplerate, model.samplerate)
    est = apply(model, torch.from_numpy(np.ascontiguousarray(wav)), **apply_kwargs)
    est = est.cpu().numpy()
    if samplerate == model.samplerate:
        return est
    return np.stack([resample(source, model.samplerate, samplerate) for source in est])


def format_table(report: dict) -> str:
    """Per-track scores, then the mean and median rows, as aligned text; one table per metric."""
    tables = report.get("metrics") or {"sdr": report}
    parts = []
    for metric, table in tables.items():
        lines = [f"{metric}:"] if len(tables) > 1 or "metrics" in report else []
        parts.append("\n".join(lines + _table(report["sources"], table)))
    return "\n\n".join(parts)


def _cell(value) -> str:
    return f"{value:8.3f}" if value is not None else f"{'n/a':>8}"


def _table(sources, table) -> list[str]:
    names = list(table["scores"])
    width = max([len("median"), *(len(n) for n in names)])
    columns = [*sources, "mean"]
    lines = [f"{'track':<{width}} " + " ".join(f"{c:>8}" for c in columns)]
    for name in names:
        row = table["scores"][name]
        lines.append(f"{name:<{width}} " + " ".join(_cell(row[c]) for c in columns))
    summary = table["summary"]
    for stat in ("mean", "median"):
        cells = [summary["per_source"][s][stat] for s in sources] + [summary[stat]]
        lines.append(f"{stat:<{width}} " + " ".join(_cell(v) for v in cells))
    return lines


def write_scores(report: dict, *, json_path: str | os.PathLike | None = None,
                 csv_path: str | os.PathLike | None = None) -> None:
    """The whole report as JSON; one CSV row per track (sources, then mean), per metric with several."""
    if json_path is not None:
        write_json(json_path, report)
    if csv_path is not None:
        columns = [*report["sources"], "mean"]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        tables = report.get("metrics")
        if tables is None:
            writer.writerow(["track", *columns])
            for name, row in report["scores"].items():
                writer.writerow([name, *(_csv(row[c]) for c in columns)])
        else:
            writer.writerow(["track", "metric", *columns])
            for metric, table in tables.items():
                for name, row in table["scores"].items():
                    writer.writerow([name, metric, *(_csv(row[c]) for c in columns)])
        write_text(csv_path, buffer.getvalue())


def _csv(value) -> str:
    return "" if value is None else f"{value:.6f}"
