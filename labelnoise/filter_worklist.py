"""The filter's work list: every (track, stem) file of a dataset, and its share-out over ranks."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

from .audio import AudioError, info
from .evaluation import list_tracks
from .stem_record import Stem


def list_stems(data_root: str | os.PathLike, sources: Sequence[str], *,
               skip_bad: bool = False) -> tuple[list[Stem], list[Path], list[str]]:
    """``(stems, missing files, unreadable files with the reason)`` of a track-folder dataset.

    Every stem file's header is read here (for its duration), so a file that
    is not audio stops the run before any work, or, with ``skip_bad``, is
    left out and counted.
    """
    stems, missing, bad = [], [], []
    for folder in list_tracks(data_root):
        for source in sources:
            path = folder / f"{source}.wav"
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
            stems.append(Stem(folder.name, source, path, header.frames / header.samplerate))
    return stems, missing, bad


def share_out(stems: Sequence[Stem], ranks: int) -> list[list[Stem]]:
    """Stems per rank: longest first, each to the rank with the least audio so far.

    Deterministic (every rank computes the same split). Equal durations (the
    stems of one track) are taken in a fixed shuffled order, so no rank ends
    up with all the stems of one kind.
    """
    order = list(stems)
    random.Random(0).shuffle(order)
    order.sort(key=lambda st: -st.seconds)  # stable: ties keep the shuffled order
    shares: list[list[Stem]] = [[] for _ in range(ranks)]
    load = [0.0] * ranks
    for st in order:
        r = min(range(ranks), key=lambda i: (load[i], i))
        shares[r].append(st)
        load[r] += st.seconds
    return shares
