"""The arithmetic behind every sentence of a report that says whether something helped.

A difference between two systems is the mean over test tracks of the per-track difference in mean
SDR, called a rise or a fall only when it is larger than ``CLEAR`` standard errors.
"""
from __future__ import annotations

import math

import numpy as np

CLEAR = 2.0  # a difference counts when it exceeds this many standard errors


def compare(a: dict, b: dict) -> dict | None:
    """Per-track mean SDR of ``a`` minus ``b`` (two score reports) over their common tracks."""
    return paired({t: s["mean"] for t, s in a["scores"].items()}, {t: s["mean"] for t, s in b["scores"].items()})


def paired(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """Per-track ``a`` minus ``b`` over their common tracks: mean, standard error (None below 2), wins."""
    tracks = sorted(set(a) & set(b))
    if not tracks:
        return None
    d = np.array([a[t] - b[t] for t in tracks])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return {"diff": float(d.mean()), "se": se, "n": len(d), "wins": int((d > 0).sum()),
            "a": float(np.mean([a[t] for t in tracks])), "b": float(np.mean([b[t] for t in tracks]))}


def clear_rise(c: dict | None) -> bool:
    """Whether a paired difference is a rise by the report's rule: more than ``CLEAR`` standard errors."""
    return c is not None and c["se"] is not None and c["diff"] > CLEAR * c["se"]


def verdict(c: dict | None) -> str:
    """``raised``, ``lowered``, ``no clear difference`` or, with fewer than 3 tracks, ``too few tracks``."""
    if c is None:
        return "not measured"
    if c["n"] < 3 or c["se"] is None:
        return "too few test tracks to tell"
    if clear_rise(c):
        return "raised"
    if c["diff"] < -CLEAR * c["se"]:
        return "lowered"
    return "no clear difference"


def comparison_text(label_a: str, label_b: str, c: dict | None) -> str:
    if c is None:
        return f"{label_a} vs {label_b}: not measured (a stage has not run)."
    se = "n/a" if c["se"] is None else f"{c['se']:.2f}"
    numbers = (f"{c['a']:.2f} vs {c['b']:.2f} dB, {c['diff']:+.2f} dB (standard error {se} over "
               f"{c['n']} test tracks; {c['wins']} of {c['n']} tracks higher)")
    v = verdict(c)
    words = {"raised": f"**{label_a} raised SDR** over {label_b}",
             "lowered": f"**{label_a} lowered SDR** below {label_b}",
             "no clear difference": f"**no clear difference** between {label_a} and {label_b} at this scale",
             "too few test tracks to tell": f"{label_a} vs {label_b}: **too few test tracks to tell**"}[v]
    return f"{words}: {numbers}."


def noisy_share(record: dict) -> dict | None:
    """The share of noisy stems among a step's (or epoch's) dropped and kept entries, from its counts.

    The direct measure of truncation: noisy stems should be over-represented among the dropped.
    None without counts (data without noise labels); a share is None where there were no entries.
    """
    counts = record.get("noisy_entries")
    if counts is None:
        return record.get("noisy_share")  # written by runs from before the counts
    return {"dropped": counts["noisy_dropped"] / counts["dropped"] if counts["dropped"] else None,
            "kept": counts["noisy_kept"] / counts["kept"] if counts["kept"] else None}


def noisy_shares(records: list[dict], config: dict) -> dict | None:
    """Noisy stems among the entries truncation dropped and among those it kept, over a run's steps.

    A step record counts its entries (``noisy_entries``, summed over micro-batches and ranks). Records
    written before the counts were kept hold only shares and kept fractions; their counts are rebuilt
    from the config's batch size (the entries of one rank).
    """
    items = config["optim"]["batch_size"] * config["optim"]["accumulate"]
    totals = np.zeros(4)  # noisy dropped, dropped, noisy kept, kept
    for r in records:
        if r.get("kind") != "step" or r.get("skipped") or noisy_share(r) is None:
            continue
        totals += _entry_counts(r, items)
    if totals[1] == 0 or totals[3] == 0:
        return None
    return _shares(totals)


def _entry_counts(record: dict, items: int) -> np.ndarray:
    """(noisy dropped, dropped, noisy kept, kept) entries of one step record."""
    counts = record.get("noisy_entries")
    if counts is not None:
        return np.array([counts["noisy_dropped"], counts["dropped"], counts["noisy_kept"], counts["kept"]], float)
    share = record["noisy_share"]
    kept = items * sum(record["kept"].values())
    dropped = items * len(record["kept"]) - kept
    out = np.zeros(4)
    if share["dropped"] is not None:
        out[:2] = share["dropped"] * dropped, dropped
    if share["kept"] is not None:
        out[2:] = share["kept"] * kept, kept
    return out


def combined_shares(parts: list[dict]) -> dict | None:
    """The shares of several runs' :func:`noisy_shares` pooled (by their entry counts)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return _shares(np.sum([p["totals"] for p in parts], axis=0))


def _shares(t: np.ndarray) -> dict:
    """The shares of entry counts (noisy dropped, dropped, noisy kept, kept)."""
    dropped, kept = t[0] / t[1], t[2] / t[3]
    return {"dropped": float(dropped), "kept": float(kept), "ratio": float(dropped / kept) if kept else None,
            "kept_fraction": float(t[3] / (t[1] + t[3])), "entries": float(t[1] + t[3]), "totals": t.tolist()}
