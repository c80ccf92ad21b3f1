"""The filter's work list: every (track, stem) file of a dataset, and its share-out over ranks."""
from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Sequence

from .audio import AudioError, info
from .evaluation import list_tracks


@dataclasses.dataclass(frozen=True)
class Pair:
    """One stem file: ``ROOT/<track>/<stem>.wav`` and its duration in seconds."""
    track: str
    stem: str
    path: Path
    seconds: float



def list_pairs(data_root: str | os.PathLike, stems: Sequence[str], *,
               skip_bad: bool = False) -> tuple[list[Pair], list[Path], list[str]]:
    """``(pairs, missing files, unreadable files with the reason)`` of a track-folder dataset.

    Every stem file's header is read here (for its duration), so a file that
    is not audio stops the run before any work, or, with ``skip_bad``, is
    left out and counted.
    """
    pairs, missing, bad = [], [], []
    for folder in list_tracks(data_root):
        for stem in stems:
            path = folder / f"{stem}.wav"
            if not path.exists():
                missing.append(path)
                continue
            try:
                header = info(path)
            except AudioError as exc:
                if not skip_bad:
                    raise
                bad.append(str(exc))
                continue
            pairs.append(Pair(folder.name, stem, path, header.frames / header.samplerate))
    return pairs, missing, bad


def share_out(pairs: Sequence[Pair], ranks: int) -> list[list[Pair]]:
    """Pairs per rank: longest first, each to the rank with the least audio so far.

    Deterministic (every rank computes the same split). Equal durations (the
    stems of one track) are taken in a fixed shuffled order, so no rank ends
    up with all the stems of one kind.
    """
    order = list(pairs)
    random.Random(0).shuffle(order)
    order.sort(key=lambda p: -p.seconds)  # stable: ties keep the shuffled order
    shares: list[list[Pair]] = [[] for _ in range(ranks)]
    load = [0.0] * ranks
    for pair in order:
        r = min(range(ranks), key=lambda i: (load[i], i))
        shares[r].append(pair)
        load[r] += pair.seconds
    return shares
