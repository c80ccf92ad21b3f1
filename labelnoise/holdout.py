"""Training tracks held out of Part 2, to score its models on audio they did not learn from.

The held-out tracks are the ``count`` track names with the lowest SHA-1 of
``"{seed}:{name}"``: the same tracks for both selections of one dataset,
whatever the filter kept, and on every machine. Their stems are still
filtered; the ones the filter keeps are the references the final bag's
choice is scored against (labelnoise.final_bag), and none of them enters a
pool.
"""
from __future__ import annotations

import hashlib

SEED = 0
AUTO = "auto"           # the count by the dataset's size: SHARE of its tracks, between MIN and MAX
SHARE, MIN, MAX = 0.15, 2, 8


def count(spec: int | str, tracks: int) -> int:
    """How many of ``tracks`` to hold out for ``spec``: a number, or ``auto`` (none for fewer than 4 tracks)."""
    if str(spec).strip().lower() == AUTO:
        return 0 if tracks < 4 else max(MIN, min(MAX, round(SHARE * tracks)))
    try:
        value = int(spec)
    except ValueError:
        raise ValueError(f"held-out tracks: {spec!r} is neither a number nor {AUTO!r}") from None
    if value < 0:
        raise ValueError(f"held-out tracks: {value} is negative")
    return value


def held_out(tracks, count: int, seed: int = SEED) -> list[str]:
    """``count`` of ``tracks`` chosen by the hash of their names (sorted by name)."""
    names = sorted(set(tracks))
    if count < 0:
        raise ValueError(f"held-out tracks: {count} is negative")
    if count and count >= len(names):
        raise ValueError(f"held-out tracks: {count} of {len(names)} tracks would leave none to train on")
    chosen = sorted(names, key=lambda name: hashlib.sha1(f"{seed}:{name}".encode()).hexdigest())[:count]
    return sorted(chosen)
