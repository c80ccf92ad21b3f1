"""The filter's volumes records on disk: one append-only file per rank, merged into ``volumes.jsonl``.

A stem counts as done once its record is complete in either; a killed
writer's torn last line is cut before the next append (``drop_torn_line``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from . import files
from . import volumes as vol
from .atomic import write_text

VOLUMES_FILE = files.VOLUMES_FILE


def rank_file(out_dir: str | os.PathLike, rank: int) -> Path:
    return files.rank_volumes(out_dir, rank)


def recorded_stems(out_dir: Path) -> set[tuple[str, str]]:
    """``(track, stem)`` of every complete record in ``volumes.jsonl`` and the rank files."""
    return {(r["track"], r["stem"]) for r in _all_records(out_dir)}


def _all_records(out_dir: Path) -> Iterator[dict]:
    yield from vol.read_records(out_dir / VOLUMES_FILE)
    for path in sorted(out_dir.glob(files.RANK_VOLUMES_GLOB)):
        yield from vol.read_records(path)


def merge_records(out_dir: Path) -> Path:
    """Rank files + ``volumes.jsonl`` -> ``volumes.jsonl`` (one record per stem, sorted); rank files removed.

    A kill between the replace and the removal leaves records in both; the
    next merge keeps one of each, so nothing is counted twice.
    """
    merged = {(r["track"], r["stem"]): r for r in _all_records(out_dir)}
    target = out_dir / VOLUMES_FILE
    rank_files = sorted(out_dir.glob(files.RANK_VOLUMES_GLOB))
    if rank_files or not target.exists():
        write_text(target, "".join(json.dumps(merged[k]) + "\n" for k in sorted(merged)))
    for path in rank_files:
        path.unlink()
    return target


def drop_torn_line(path: Path) -> None:
    """Cut a killed writer's incomplete last line, so the next append starts a line of its own."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
