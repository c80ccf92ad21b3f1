"""Index a dataset of stems once, so that training never scans files.

Two layouts are recognised:

- ``tracks``: ``ROOT/<track>/{drums,bass,other,vocals}.wav`` (the SDX23
  label-noise set, MUSDB18-HQ's ``train/``, MoisesDB exports); ``mixture.wav``
  and other files are ignored;
- ``pool``: ``ROOT/train/<source>/<track>.wav`` (what auto_filter writes).

The metadata (a JSON-able dict) holds::

    {"version": 1, "layout": "tracks" | "pool", "root": "/abs/ROOT",
     "sources": ["drums", "bass", "other", "vocals"],
     "files": {source: {relative path: {"track", "frames", "samplerate",
                                        "channels", "subtype", "silent",
                                        "size", "mtime"}}},
     "errors": {relative path: reason},        # unusable files, skipped
     "missing": {track: [source, ...]},        # tracks layout: absent stems
     "extra": {track: [file name, ...]},       # tracks layout: .wav files that are no source
     "uneven": {track: {source: seconds}},     # tracks layout: stems of unequal length
     "summary": {...counts...}}

A stem is ``silent`` when ``20*log10(mean|x|) < -80`` (mean over all samples
and channels), the rule of the original filter (labelnoise.silence). Mono files
and files at another sample rate are recorded as they are and converted when read
(``labelnoise.data``); files with more than two channels, no frames, NaN or
infinite samples, a WAV header announcing more frames than the file holds
(truncated), or that cannot be decoded go to ``errors``: each is a counted
skip, listed with its reason by ``create_metadata.py`` and counted in the
training log (its track then lacks a stem and is skipped in tracks mode).
Tracks whose stems differ in length (``uneven``; training reads a track up to
its shortest stem) and ``.wav`` files other than the sources and
``mixture.wav`` (``extra``, e.g. ``Vocals.wav``) are reported, not errors.
Re-indexing reuses every entry whose size and mtime did not change.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import soundfile as sf
from .progress import bar as progress_bar

from . import SOURCES
from .atomic import write_json
from .audio import FLOAT_SUBTYPES, AudioError, check_finite, info
from .files import METADATA_DIR, METADATA_FILE, MIXTURE_FILE
from .silence import is_silent_level, mean_level_db

log = logging.getLogger(__name__)

VERSION = 1
# Where create_metadata.py writes by default: never inside the user's dataset.
METADATA_DIR_ENV = "LABELNOISE_METADATA_DIR"
_BLOCK = 1 << 18  # frames per read in the silence pass: bounded memory


def detect_layout(root: str | os.PathLike, sources=SOURCES) -> str:
    """``"pool"`` when ``ROOT/train/<source>/`` exists for some source, else ``"tracks"``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if any((root / "train" / s).is_dir() for s in sources):
        return "pool"
    return "tracks"


def _visible(p: Path) -> bool:
    # Dot files include the temp files of atomic writes still in progress.
    return not p.name.startswith(".")


def list_files(root: Path, layout: str, sources=SOURCES) -> tuple[dict, dict, dict]:
    """``{source: {relpath: track}}`` of the stems present, ``{track: [missing sources]}`` and
    ``{track: [.wav files that are no source]}``."""
    files = {s: {} for s in sources}
    missing, extra = {}, {}
    if layout == "pool":
        for s in sources:
            folder = root / "train" / s
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.is_file() and _visible(f) and f.suffix.lower() == ".wav":
                    files[s][f.relative_to(root).as_posix()] = f.stem
    elif layout == "tracks":
        for d in sorted(root.iterdir()):
            if not d.is_dir() or not _visible(d):
                continue
            present = [s for s in sources if (d / f"{s}.wav").is_file()]
            if not present:
                continue  # not a track folder (e.g. synth's clean/ or a valid/ split)
            for s in present:
                files[s][f"{d.name}/{s}.wav"] = d.name
            absent = [s for s in sources if s not in present]
            if absent:
                missing[d.name] = absent
            known = {f"{s}.wav" for s in sources} | {MIXTURE_FILE}
            others = sorted(f.name for f in d.iterdir() if f.suffix.lower() == ".wav" and _visible(f)
                            and f.name not in known)
            if others:
                extra[d.name] = others
    else:
        raise ValueError(f"unknown layout {layout!r}; expected 'tracks' or 'pool'")
    return files, missing, extra


def mean_abs_db(path: str | os.PathLike) -> float:
    """``20*log10(mean|x|)`` over all samples and channels, read in blocks; NaN or Inf is an AudioError."""
    total, count = 0.0, 0
    try:
        with sf.SoundFile(str(path)) as f:
            floats = f.subtype in FLOAT_SUBTYPES
            for block in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                if floats:
                    check_finite(block, path)
                total += float(np.abs(block).sum(dtype=np.float64))
                count += block.size
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from None
    return mean_level_db(total, count)


def index_file(path: str | os.PathLike) -> dict:
    """The metadata entry of one stem; AudioError when it cannot be used."""
    path = Path(path)
    st = path.stat()
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    meta = info(path)
    if meta.frames <= 0:
        raise AudioError(f"{path}: no audio frames")
    if meta.channels > 2:
        raise AudioError(f"{path}: has {meta.channels} channels, expected mono or stereo")
    level = mean_abs_db(path)
    return {"frames": int(meta.frames), "samplerate": int(meta.samplerate),
            "channels": int(meta.channels), "subtype": meta.subtype,
            "silent": is_silent_level(level), "level_db": round(level, 2) if math.isfinite(level) else None,
            "size": st.st_size, "mtime": st.st_mtime}


def _stat_matches(path: Path, entry: dict) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime


def uneven_tracks(files: dict) -> dict:
    """``{track: {source: seconds}}`` of the tracks whose stems differ in length by more than a millisecond."""
    seconds: dict[str, dict[str, float]] = {}
    for source, entries in files.items():
        for e in entries.values():
            seconds.setdefault(e["track"], {})[source] = round(e["frames"] / e["samplerate"], 3)
    return {t: lengths for t, lengths in sorted(seconds.items())
            if max(lengths.values()) - min(lengths.values()) > 1e-3}


def _summary(meta: dict) -> dict:
    per_source = {}
    for s, entries in meta["files"].items():
        per_source[s] = {
            "files": len(entries),
            "silent": sum(e["silent"] for e in entries.values()),
            "mono": sum(e["channels"] == 1 for e in entries.values()),
            "samplerates": dict(sorted(Counter(str(e["samplerate"]) for e in entries.values()).items())),
            "errors": sum(1 for p in meta["errors"] if meta.get("error_sources", {}).get(p) == s),
        }
    return {"per_source": per_source, "errors": len(meta["errors"]),
            "tracks_missing_stems": len(meta["missing"]), "tracks_uneven": len(meta.get("uneven", {})),
            "tracks_extra_files": len(meta.get("extra", {}))}


def index_dataset(root: str | os.PathLike, *, out: str | os.PathLike | None = None,
                  workers: int | None = None, sources=SOURCES, layout: str | None = None,
                  progress: bool = True) -> dict:
    """Index ``root`` (either layout) and return the metadata dict.

    With ``out``, the JSON is written there atomically, and entries already in
    it whose file size and mtime are unchanged are reused instead of re-read.
    If indexing is interrupted, what was indexed so far is still written (with
    ``"complete": false``), so the next run resumes.
    """
    root = Path(root).resolve()
    layout = layout or detect_layout(root, sources)
    listing, missing, extra = list_files(root, layout, sources)
    old = {}
    if out is not None and Path(out).is_file():
        try:
            prev = load_metadata(out)
        except (ValueError, OSError) as exc:
            log.warning("%s: cannot reuse previous metadata (%s); re-indexing everything", out, exc)
            prev = None
        if prev and prev.get("root") == str(root) and prev.get("layout") == layout:
            old = {p: e for entries in prev["files"].values() for p, e in entries.items()}
    meta = {"version": VERSION, "layout": layout, "root": str(root), "sources": list(sources),
            "files": {s: {} for s in sources}, "errors": {}, "error_sources": {},
            "missing": missing, "extra": extra, "complete": False}
    todo = []
    for s, entries in listing.items():
        for rel, track in entries.items():
            prev_entry = old.get(rel)
            if prev_entry is not None and _stat_matches(root / rel, prev_entry):
                meta["files"][s][rel] = prev_entry
            else:
                todo.append((s, rel, track))
    reused = sum(len(v) for v in meta["files"].values())
    workers = workers or min(8, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(index_file, root / rel): (s, rel, track) for s, rel, track in todo}
            for fut in progress_bar(as_completed(futures), total=len(futures), desc="index", unit="file",
                            disable=not progress or not futures):
                s, rel, track = futures[fut]
                try:
                    entry = fut.result()
                except (AudioError, OSError) as exc:
                    meta["errors"][rel] = str(exc)
                    meta["error_sources"][rel] = s
                    continue
                meta["files"][s][rel] = {"track": track, **entry}
        meta["complete"] = True
    finally:
        # Sorted keys: the JSON does not depend on the order threads finished in.
        for s in sources:
            meta["files"][s] = dict(sorted(meta["files"][s].items()))
        meta["errors"] = dict(sorted(meta["errors"].items()))
        meta["uneven"] = uneven_tracks(meta["files"]) if layout == "tracks" else {}
        meta["summary"] = _summary(meta)
        meta["summary"]["reused"] = reused
        if out is not None:
            write_json(out, meta)
    total = sum(len(v) for v in meta["files"].values())
    if total == 0:
        raise ValueError(f"{root}: no stems found (expected {layout} layout: "
                         + ("ROOT/train/<source>/<track>.wav)" if layout == "pool"
                            else "ROOT/<track>/<source>.wav); for MUSDB18-HQ give its train/ folder"))
    return meta


def default_metadata_path(root: str | os.PathLike) -> Path:
    """``$LABELNOISE_METADATA_DIR/<name>-<hash of the absolute path>.json`` (default dir: ``./metadata``)."""
    root = Path(root).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return Path(os.environ.get(METADATA_DIR_ENV, METADATA_DIR)) / f"{root.name}-{digest}.json"


def load_metadata(root_or_json) -> dict:
    """Metadata from a dict (as is), a JSON file, or a dataset folder.

    For a folder: ``ROOT/metadata.json`` when the user put one there, else
    the default output of ``create_metadata.py`` (``default_metadata_path``),
    else the folder is indexed in memory.
    """
    if isinstance(root_or_json, dict):
        return root_or_json
    path = Path(root_or_json)
    if path.is_dir():
        if (path / METADATA_FILE).is_file():
            path = path / METADATA_FILE
        elif default_metadata_path(path).is_file():
            path = default_metadata_path(path)
        else:
            log.info("%s: indexing in memory: no index at %s or %s (python create_metadata.py %s writes "
                     "the second; training then reads it)", path, path / METADATA_FILE,
                     default_metadata_path(path), path)
            return index_dataset(path, progress=False)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: metadata file or dataset folder not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION or "files" not in meta:
        raise ValueError(f"{path}: not a metadata file of this project (version {VERSION}); "
                         "re-run create_metadata.py")
    return meta
