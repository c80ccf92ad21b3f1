"""The filter: a separator run over every stem of a dataset, pitch-raised and sped up, and its output volumes.

For every ``(track, stem)`` of a track-folder dataset
(``ROOT/<track>/{drums,bass,other,vocals}.wav``; ``mixture.wav`` is ignored):

1. read the stem at the separator's sample rate;
2. silent (``20 log10(mean |x|) < -80``): its own audio stands for all four
   outputs; else
3. ``shift_stem`` (``labelnoise.filter_input``): pitch +``key`` semitones, tempo x ``speed``/100, with
   Rubber Band in process (``pedalboard.time_stretch``), so a model cannot
   simply recall the labels it was trained on;
4. separate it as if it were a mixture, measure the four outputs
   (``labelnoise.volumes.volume_db``) and append one record to this rank's
   ``volumes.rank{r}.jsonl`` (with ``save_audio``, the four outputs first go to
   ``OUT/{stem}/{track}/{source}.wav``, the original's layout).

At the end rank 0 merges the rank files into ``OUT/volumes.jsonl`` (sorted by
track, then stem; atomic replace); over several nodes OUT must be a folder
every node sees, and a rank 0 that does not find every rank's records stops
with that reason instead. ``OUT/filter.json`` holds the settings; a
run into the same folder with other settings is refused, with the same
settings it resumes: stems already recorded are skipped. Under ``torchrun``
the pending stems are shared out by duration (longest first to the least
loaded rank), so no rank waits for one stem kind as the original's one
process per kind did. The work list and its share-out are
``labelnoise.filter_worklist``, the record files ``labelnoise.filter_records``.

From Python, with a model (``labelnoise.inference.apply`` separates) or any
callable ``(wav (C, T), track, stem) -> (S, C, T)``::

    from labelnoise.filtering import run_filter
    summary = run_filter("data/train", "evaluator_outputs_m_key6_speed200", model, key=6, speed=200)
    summary = run_filter(root, out, my_separator, samplerate=16000, model_name="oracle")

The command line is ``filter.py`` (see its docstring).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from .progress import bar as progress_bar
from torch import nn

from . import SOURCES
from . import distributed, files
from . import volumes as vol
from .atomic import write_json
from .audio import write_audio
from .filter_input import prepare, read_ahead
from .filter_worklist import list_stems, share_out
from .filter_records import drop_torn_line, merge_records, rank_file, recorded_stems
from .inference import MODES, PRECISIONS, apply
from .stem_record import Stem

log = logging.getLogger(__name__)

SETTINGS_FILE = files.FILTER_SETTINGS_FILE
VOLUMES_FILE = files.VOLUMES_FILE
FORMAT = "mdx-labelnoise/filter-v1"
# Rubber Band's R2 engine, formants not preserved: what the original's
# `rubberband` command line used (R2 is its default and `rubberband-r3
# --fast`'s; formant preservation is off unless -F is given).
SHIFT_ENGINE = "rubberband-r2"
OVERLAP = 0.25

Separator = Callable[[np.ndarray, str, str], "np.ndarray | torch.Tensor"]


class FilterError(ValueError):
    """A filter run that cannot go on; the message names the file or the setting."""


def default_out_dir(name: str, key: int, speed: int) -> Path:
    """The original's folder name: ``evaluator_outputs_{name}_key{key}_speed{speed}``."""
    return files.filter_outputs_dir(files.suffix(name, key, speed))



def model_separator(model: nn.Module, *, mode: str = "overlap", shifts: int = 1,
                    overlap: float = OVERLAP, precision: str = "float32",
                    device: str | torch.device | None = None, batch_size: int | None = None,
                    seed: int = 0) -> Separator:
    """A separator running ``labelnoise.inference.apply`` with these settings.

    The random shift offsets of each stem come from ``random.Random`` seeded
    with ``(seed, track, stem)``, so a stem gets the same result however the
    stems are shared out over processes and whatever ran before it.
    """
    if mode not in MODES:
        raise FilterError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise FilterError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if mode == "plain" and shifts:
        raise FilterError("plain mode has no shifts; give shifts=0 with mode='plain'")
    device = torch.device(device) if device is not None else torch.device("cpu")
    model.to(device)

    def separate(wav: np.ndarray, track: str, stem: str) -> torch.Tensor:
        mix = torch.from_numpy(np.ascontiguousarray(wav)).to(device)
        rng = random.Random(f"{seed}/{track}/{stem}")
        return apply(model, mix, mode=mode, overlap=overlap, shifts=shifts, precision=precision,
                     device=device, batch_size=batch_size, rng=rng)

    return separate


@dataclasses.dataclass
class Counts:
    """What one rank did; summed over ranks for the summary."""
    done: int = 0
    silent: int = 0
    bad: int = 0
    seconds: float = 0.0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.done + other.done, self.silent + other.silent, self.bad + other.bad,
                      self.seconds + other.seconds)


@dataclasses.dataclass
class FilterSummary:
    """A run's figures: stems filtered now, silent among them, skipped, already recorded before."""
    done: int
    silent: int
    missing: int
    bad: int
    already: int
    seconds: float
    wall_seconds: float
    volumes_path: Path

    @property
    def skipped(self) -> int:
        return self.missing + self.bad

    @property
    def stem_minutes_per_minute(self) -> float:
        """Minutes of stem audio filtered per minute of wall-clock time (all ranks together)."""
        return self.seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def line(self) -> str:
        return (f"filtered {self.done} stems ({self.silent} silent), skipped {self.skipped} "
                f"({self.missing} missing, {self.bad} unreadable), {self.already} already recorded; "
                f"{self.seconds:.1f} s of audio in {self.wall_seconds:.1f} s = "
                f"{self.stem_minutes_per_minute:.2f} stem-minutes per minute -> {self.volumes_path}")


# ------------------------------------------------------------------ the output folder

def check_settings(out_dir: Path, settings: dict) -> bool:
    """Compare ``settings`` with ``OUT/filter.json``; True when the file is still to be written.

    Refuses a folder made with other settings, and a folder holding volumes
    but no settings (nothing says how they were made).
    """
    path = out_dir / SETTINGS_FILE
    if not path.exists():
        if (out_dir / VOLUMES_FILE).exists() or any(out_dir.glob(files.RANK_VOLUMES_GLOB)):
            raise FilterError(f"{out_dir}: holds volumes but no {SETTINGS_FILE}; "
                              "choose another output folder")
        return True
    try:
        saved = json.loads(path.read_text())
    except ValueError as exc:
        raise FilterError(f"{path}: not a JSON settings file ({exc})") from None
    differing = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if differing:
        details = "; ".join(f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now" for k in differing)
        raise FilterError(f"{path}: made with other settings ({details}); "
                          "use another --out folder, or the same settings to resume")
    return False


# ------------------------------------------------------------------ one stem's outputs

def _as_outputs(estimate, st: Stem, sources: Sequence[str]) -> np.ndarray:
    if isinstance(estimate, torch.Tensor):
        estimate = estimate.detach().float().cpu().numpy()
    estimate = np.asarray(estimate, dtype=np.float32)
    if estimate.ndim != 3 or estimate.shape[0] != len(sources):
        raise FilterError(f"{st.path}: the separator returned shape {estimate.shape}, "
                          f"expected ({len(sources)}, channels, time) for sources {list(sources)}")
    if not np.isfinite(estimate).all():
        # Its volumes would read as -inf dB, a silent output, and the stem would drop out unseen.
        raise FilterError(f"{st.path}: the separator's output holds NaN or infinite values "
                          "(a diverged model?); no volume recorded")
    return estimate


def _write_outputs(out_dir: Path, st: Stem, sources: Sequence[str], outputs, samplerate: int) -> None:
    # Float WAVs: a volume measured from the files equals the one recorded
    # (16-bit would clip loud outputs and round quiet ones).
    for source, wav in zip(sources, outputs):
        write_audio(out_dir / st.stem / st.track / f"{source}.wav", wav, samplerate, float32=True)


# ------------------------------------------------------------------ the run

def run_filter(data_root: str | os.PathLike, out_dir: str | os.PathLike,
               separator: nn.Module | Separator, *, key: float = 6, speed: float = 200,
               mode: str = "overlap", shifts: int = 1, overlap: float = OVERLAP,
               precision: str = "float32", device: str | torch.device | None = None,
               batch_size: int | None = None, samplerate: int | None = None,
               sources: Sequence[str] | None = None, channels: int | None = None,
               model_name: str | None = None, save_audio: bool = False, skip_bad: bool = False,
               seed: int = 0, prefetch: int = 1, progress: bool = True,
               dist: distributed.DistInfo | None = None) -> FilterSummary:
    """Filter every pending ``(track, stem)`` of ``data_root`` into ``out_dir``; return the summary.

    ``separator`` is a model (or ``labelnoise.bag.Bag``), run with
    ``mode``/``shifts``/``overlap``/``precision``/``device``/``batch_size``;
    or a callable ``(wav (C, T), track, stem) -> (S, C, T)`` (numpy or
    torch), which then needs ``samplerate`` (``sources`` default to the four,
    ``channels`` to 2). ``model_name`` goes into ``filter.json`` (a model's
    checkpoint path, say) and must match on a resume. ``skip_bad``: a stem
    that cannot be read is skipped and counted (and tried again next run)
    instead of stopping the run. ``dist``: this process's place under
    torchrun (``labelnoise.distributed.setup()``); None is one process.
    """
    out_dir, data_root = Path(out_dir), Path(data_root)
    dist = dist or distributed.DistInfo(0, 0, 1, torch.device("cpu"))
    if speed <= 0:
        raise FilterError(f"speed must be a positive percentage, got {speed}")
    if not data_root.is_dir():
        raise FilterError(f"{data_root}: dataset folder does not exist" if not data_root.exists()
                          else f"{data_root}: not a folder (expected ROOT/<track>/<stem>.wav)")
    is_model = isinstance(separator, nn.Module)
    if is_model:
        samplerate = samplerate or separator.samplerate
        sources = list(sources or separator.sources)
        channels = channels or separator.audio_channels
        if samplerate != separator.samplerate or list(sources) != list(separator.sources):
            raise FilterError(f"samplerate/sources must be the model's ({separator.samplerate}, "
                              f"{list(separator.sources)})")
        separate = model_separator(separator, mode=mode, shifts=shifts, overlap=overlap,
                                   precision=precision, device=device or dist.device,
                                   batch_size=batch_size, seed=seed)
    else:
        if samplerate is None:
            raise FilterError("a separator that is not a model needs samplerate=")
        sources, channels, separate = list(sources or SOURCES), channels or 2, separator
    settings = {"format": FORMAT, "model": model_name, "data": str(data_root.resolve()),
                "key": key, "speed": speed, "mode": mode, "shifts": shifts, "overlap": overlap,
                "samplerate": samplerate, "sources": list(sources), "seed": seed,
                "shift_engine": SHIFT_ENGINE, "save_audio": save_audio}

    # Every rank reads the same folder state before any rank writes to it,
    # then waits: so all ranks compute the same pending set and split.
    write_settings = check_settings(out_dir, settings)
    done = recorded_stems(out_dir)
    stems, missing, bad_headers = list_stems(data_root, sources, skip_bad=skip_bad)
    distributed.barrier()
    if write_settings and dist.is_main:
        write_json(out_dir / SETTINGS_FILE, settings)
    pending = [st for st in stems if (st.track, st.stem) not in done]
    mine = share_out(pending, dist.world_size)[dist.rank]
    if dist.is_main:
        _log_skips(missing, bad_headers)
        log.info("%s: %d stems, %d already recorded, %d to filter on %d process(es)",
                 data_root, len(stems), len(stems) - len(pending), len(pending), dist.world_size)

    start = time.perf_counter()
    counts = _filter_share(mine, out_dir, separate, sources=sources, samplerate=samplerate,
                           channels=channels, key=key, speed=speed, save_audio=save_audio,
                           skip_bad=skip_bad, prefetch=prefetch,
                           progress=progress and dist.is_main, rank=dist.rank)
    # The gather is also the barrier before rank 0 merges everyone's file.
    mine = {(r["track"], r["stem"]) for r in vol.read_records(rank_file(out_dir, dist.rank))}
    shares = distributed.gather_objects((counts, mine))
    total = sum((c for c, _ in shares), Counts())
    wall = time.perf_counter() - start
    _check_all_recorded(out_dir, set().union(*(keys for _, keys in shares)), dist)
    target = out_dir / VOLUMES_FILE
    if dist.is_main:
        target = merge_records(out_dir)
    distributed.barrier()
    if not done and not total.done and (bad_headers or total.bad):
        raise FilterError(f"{data_root}: no stem could be used ({len(bad_headers) + total.bad} unusable, "
                          f"{len(missing)} missing); nothing was filtered")
    return FilterSummary(done=total.done, silent=total.silent, missing=len(missing),
                         bad=len(bad_headers) + total.bad, already=len(stems) - len(pending),
                         seconds=total.seconds, wall_seconds=wall, volumes_path=target)


def _check_all_recorded(out_dir: Path, written: set[tuple[str, str]], dist: distributed.DistInfo) -> None:
    """Before rank 0 merges: the records every rank wrote must be in rank 0's view of ``out_dir``.

    An ``out_dir`` on each node's own disk would otherwise give a ``volumes.jsonl`` of rank 0's
    stems alone, and the stage would count as done. Rank 0 looks; every rank raises its verdict.
    """
    problem = None
    unseen = sorted(written - recorded_stems(out_dir)) if dist.is_main else []
    if unseen:
        track, stem = unseen[0]
        problem = (f"{out_dir}: {len(unseen)} stems filtered by other processes have no record here (e.g. "
                   f"{track}/{stem}); the output folder must be one every node sees (a shared filesystem)")
    problem = distributed.gather_objects(problem)[0]
    if problem:
        raise FilterError(problem)


def _log_skips(missing: list[Path], bad: list[str]) -> None:
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (", ..." if len(missing) > 3 else "")
        log.warning("%d stem files missing, skipped: %s", len(missing), shown)
    for reason in bad:
        log.warning("skipped: %s", reason)


def _filter_share(stems: Sequence[Stem], out_dir: Path, separate: Separator, *, sources, samplerate,
                  channels, key, speed, save_audio, skip_bad, prefetch, progress, rank) -> Counts:
    """Filter this rank's stems, appending one record per stem to its own file."""
    counts = Counts()
    path = rank_file(out_dir, rank)
    drop_torn_line(path)
    out_dir.mkdir(parents=True, exist_ok=True)

    def load(st):
        return prepare(st, samplerate, channels, key, speed, skip_bad)

    records = vol.RecordFile(path)
    with contextlib.closing(records), progress_bar(total=len(stems), unit="stem", desc="filter",
                                                   disable=not progress) as bar:
        for item in read_ahead(stems, load, prefetch):
            st = item.stem
            bar.update(1)
            if item.error is not None:
                log.warning("skipped: %s", item.error)
                counts.bad += 1
                continue
            if item.shifted is None:
                # Silent: the stem itself stands for every output.
                level = vol.volume_db(item.wav)
                volumes = dict.fromkeys(sources, level)
                outputs = [item.wav] * len(sources)
                counts.silent += 1
                windows = None
            else:
                outputs = _as_outputs(separate(item.shifted, st.track, st.stem), st, sources)
                volumes = {source: vol.volume_db(out) for source, out in zip(sources, outputs)}
                windows = vol.window_volumes(item.shifted, dict(zip(sources, outputs)), samplerate)
            if save_audio:
                _write_outputs(out_dir, st, sources, outputs, samplerate)
            seconds = item.wav.shape[-1] / samplerate
            # After the WAVs: a recorded stem always has its files.
            records.append(vol.record(st.track, st.stem, volumes, silent=item.shifted is None,
                                      seconds=seconds, windows=windows))
            counts.done += 1
            counts.seconds += seconds
    return counts
