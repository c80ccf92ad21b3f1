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

DEFAULT_COUNT = 4
SEED = 0


def held_out(tracks, count: int, seed: int = SEED) -> list[str]:
    """``count`` of ``tracks`` chosen by the hash of their names (sorted by name)."""
    names = sorted(set(tracks))
    if count < 0:
        raise ValueError(f"held-out tracks: {count} is negative")
    if count and count >= len(names):
        raise ValueError(f"held-out tracks: {count} of {len(names)} tracks would leave none to train on")
    chosen = sorted(names, key=lambda name: hashlib.sha1(f"{seed}:{name}".encode()).hexdigest())[:count]
    return sorted(chosen)
