"""The volumes of a filter's output folder: its ``volumes.jsonl``, or measured from the original code's WAVs.

The original filter wrote ``OUTPUTS/{stem}/{track}/{source}.wav``; those are
measured with ``volume_db`` in threads and cached in
``OUTPUTS/volumns_{suffix}.json`` (the original's name and spelling), an
entry measured again when one of its four files changed size or mtime. A
stem counts as silent there when its four outputs are equal and its own
output is silent: the original filter wrote a silent stem's own audio as all
four outputs.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .progress import bar as progress_bar

from . import SOURCES
from .atomic import write_json
from .audio import AudioError, read_audio
from .files import VOLUMES_FILE, volume_cache_name
from .silence import is_silent
from .volumes import read_records, volume_db

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # the format of the volume cache
_CACHE_SAVE_SECONDS = 60.0


def load_volumes(outputs: Path, sfx: str, *, sources=SOURCES, progress: bool = True,
                 workers: int | None = None, save_cache: bool = True) -> tuple[list[dict], str, dict[str, str]]:
    """The volume records of an outputs folder, where they came from, and the folders not read."""
    outputs = Path(outputs)
    jsonl = outputs / VOLUMES_FILE
    if jsonl.is_file():
        latest = {}
        for rec in read_records(jsonl):
            latest[(rec["track"], rec["stem"])] = rec  # a stem recorded twice: the last line wins
        return list(latest.values()), VOLUMES_FILE, {}
    if any((outputs / s).is_dir() for s in sources):
        records, skipped = wav_volumes(outputs, sfx, sources=sources, progress=progress, workers=workers,
                                       save_cache=save_cache)
        return records, "wav", skipped
    if not outputs.is_dir():
        raise FileNotFoundError(f"{outputs}: outputs folder not found (run filter.py, or give --outputs)")
    raise ValueError(f"{outputs}: has neither {VOLUMES_FILE} nor the {{stem}}/{{track}}/{{source}}.wav "
                     "folders of a filter run")


def _stamp(files: list[Path]) -> list[list[int]]:
    return [[st.st_size, st.st_mtime_ns] for st in (f.stat() for f in files)]


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        cache = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to measure the volumes again") from None
    if not isinstance(cache, dict) or cache.get("version") != CACHE_VERSION or "records" not in cache:
        raise ValueError(f"{path}: not a volume cache of this project; move it away to measure the volumes again")
    return {(r["stem"], r["track"]): r for r in cache["records"]}


def _measure_folder(folder: Path, stem: str, sources) -> dict:
    volumes, own = {}, None
    for source in sources:
        wav = read_audio(folder / f"{source}.wav", channels=None)
        volumes[source] = volume_db(wav)
        if source == stem:
            own = wav
    # The original filter wrote a silent stem's own audio as all four outputs.
    silent = len(set(volumes.values())) == 1 and is_silent(own)
    return {"track": folder.name, "stem": stem, "silent": bool(silent), "volumes": volumes}


def wav_volumes(outputs: Path, sfx: str, *, sources=SOURCES, progress: bool = True,
                workers: int | None = None, save_cache: bool = True) -> tuple[list[dict], dict[str, str]]:
    """Measure ``OUTPUTS/{stem}/{track}/{source}.wav`` (the original code's outputs), with a cache."""
    cache_path = outputs / volume_cache_name(sfx)
    cache = _read_cache(cache_path)
    records, todo, skipped = {}, [], {}
    for stem in sources:
        if not (outputs / stem).is_dir():
            continue
        for folder in sorted(p for p in (outputs / stem).iterdir() if p.is_dir()):
            files = [folder / f"{s}.wav" for s in sources]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                skipped[str(folder)] = f"no {', '.join(absent)}"
                continue
            stamp = _stamp(files)
            hit = cache.get((stem, folder.name))
            if hit is not None and hit.get("stamp") == stamp:
                records[(stem, folder.name)] = hit
            else:
                todo.append((stem, folder, stamp))
    if todo:
        log.info("measuring the outputs of %d stems in %s (%d cached)", len(todo), outputs, len(records))
    last_save = time.monotonic()
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [(stem, folder, stamp, pool.submit(_measure_folder, folder, stem, sources))
                   for stem, folder, stamp in todo]
        for stem, folder, stamp, fut in progress_bar(futures, desc="volumes", unit="stem", disable=not progress):
            try:
                rec = fut.result()
            except AudioError as exc:  # a file the original's writer left half-written, say
                skipped[str(folder)] = str(exc)
                continue
            rec["stamp"] = stamp
            records[(stem, folder.name)] = rec
            if save_cache and time.monotonic() - last_save > _CACHE_SAVE_SECONDS:  # a long measurement survives a kill
                _write_cache(cache_path, sfx, records)
                last_save = time.monotonic()
    if save_cache and (todo or set(cache) != set(records)):
        _write_cache(cache_path, sfx, records)
    for folder, reason in skipped.items():
        log.warning("skipped %s: %s", folder, reason)
    return [records[k] for k in sorted(records)], skipped


def _write_cache(path: Path, sfx: str, records: dict) -> None:
    write_json(path, {"version": CACHE_VERSION, "suffix": sfx, "records": [records[k] for k in sorted(records)]},
               indent=None)
