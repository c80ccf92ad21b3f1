"""The ``auto`` rule's second test: a stem whose leak into one output stands out from its source's stems.

The margin compares a stem's own output with the loudest other, whichever
that is. A weak filter model leaks every source into some other output (a
pitch-raised bass into ``other``), so a clean source's margins can sit near
0 dB, and a stem that holds a foreign recording (a drum kit grouped into
bass.wav, a drums bleed) moves a *different* output that the margin does
not look at. Per source and per other output ``Y`` this test takes each
stem's leak into ``Y`` (``labelnoise.volumes.leaks_db``: ``Y``'s volume
minus the stem's own, in its louder windows) and its robust z-score over
the source's stems: ``(leak - median) / (1.4826 MAD)``. The median and MAD
are those of every eligible stem of the source, noisy ones included: with
fewer than half of them noisy they describe the clean ones. A stem whose
z-score for some ``Y`` exceeds ``LEAK_Z`` leaks into ``Y`` in a way its
source's stems do not, and is not kept, whatever its margin.

A source with fewer than ``thresholds.MIN_STEMS`` eligible stems is not
tested (a median of a handful says little); a MAD below ``MIN_SPREAD_DB``
counts as that much, so near-identical stems do not make a fraction of a dB
an outlier.
"""
from __future__ import annotations

import numpy as np

from .stem_record import Stem
from .thresholds import MIN_SPREAD_DB, MIN_STEMS, median_spread

LEAK_Z = 3.0            # robust z-scores: beyond 3 MADs of the source's median is an outlier
# The test in the reports' words: what a stem the auto rule keeps also satisfies.
RULE = (f"no other output is louder against its own than in the source's other stems by more than "
        f"{LEAK_Z:g} MADs")


def is_outlier(st: Stem) -> bool:
    """The stem failed this test (False where it was not tested)."""
    return st.leak_z is not None and st.leak_z > LEAK_Z


def robust_z(values) -> np.ndarray:
    """``(v - median) / max(1.4826 MAD, MIN_SPREAD_DB)`` of each value; an infinite one (an all-zero
    output) counts as 1 dB past the finite ones."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    v = np.clip(v, fin.min() - 1.0, fin.max() + 1.0) if fin.size else np.zeros_like(v)
    median, spread = median_spread(v)
    return (v - median) / spread


def mark_outliers(stems: list[Stem], sources) -> dict[str, str]:
    """Set ``leak_z`` and ``leak_into`` of each eligible stem and unkeep the outliers; per source, the words.

    Call after the thresholds decided: only ``kept`` is changed, and only to False.
    """
    words = {}
    for s in sources:
        mine = [st for st in stems if st.stem == s and st.eligible and st.leaks]
        if len(mine) < MIN_STEMS:
            words[s] = f"no leak test ({len(mine)} stems with a margin, it needs {MIN_STEMS})"
            continue
        outputs = sorted(set.intersection(*(set(st.leaks) for st in mine)))   # the outputs every stem has
        if not outputs:
            words[s] = "no leak test (no other output measured for every stem)"
            continue
        z = np.stack([robust_z([st.leaks[y] for st in mine]) for y in outputs], axis=1)  # (stems, outputs)
        for st, row in zip(mine, z):
            worst = int(np.argmax(row))
            st.leak_z, st.leak_into = float(row[worst]), outputs[worst]
        out = [st for st in mine if is_outlier(st)]
        unkept = [st for st in out if st.kept]
        for st in unkept:
            st.kept = False
        if not out:
            words[s] = f"no stem leaks beyond {LEAK_Z:g} MADs of the source's median into another output"
        else:
            into = ", ".join(sorted({st.leak_into for st in out}))
            words[s] = (f"{len(out)} leak beyond {LEAK_Z:g} MADs of the source's median (into {into}); "
                        f"left out: {len(unkept)} the threshold had kept")
    return words
