"""The arithmetic behind every sentence of a report that says whether something helped.

A difference between two systems is the mean over test tracks of the per-track difference in mean
SDR, called a rise or a fall only when it is larger than ``CLEAR`` standard errors.
"""
from __future__ import annotations

import math

import numpy as np

CLEAR = 2.0  # a difference counts when it exceeds this many standard errors


def compare(a: dict, b: dict) -> dict | None:
    """Per-track mean SDR of ``a`` minus ``b`` over their common tracks: mean, standard error, wins."""
    tracks = sorted(set(a["scores"]) & set(b["scores"]))
    if not tracks:
        return None
    d = np.array([a["scores"][t]["mean"] - b["scores"][t]["mean"] for t in tracks])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return {"diff": float(d.mean()), "se": se, "n": len(d), "wins": int((d > 0).sum()),
            "a": float(np.mean([a["scores"][t]["mean"] for t in tracks])),
            "b": float(np.mean([b["scores"][t]["mean"] for t in tracks]))}


def verdict(c: dict | None) -> str:
    """``raised``, ``lowered``, ``no clear difference`` or, with fewer than 3 tracks, ``too few tracks``."""
    if c is None:
        return "not measured"
    if c["n"] < 3 or c["se"] is None:
        return "too few test tracks to tell"
    if c["diff"] > CLEAR * c["se"]:
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


def noisy_shares(records: list[dict], config: dict) -> dict | None:
    """Noisy stems among the entries truncation dropped and among those it kept, over a run's steps."""
    items = config["optim"]["batch_size"] * config["optim"]["accumulate"]
    totals = np.zeros(4)  # noisy dropped, dropped, noisy kept, kept
    for r in records:
        share = r.get("noisy_share")
        if r.get("kind") != "step" or r.get("skipped") or share is None:
            continue
        kept = items * sum(r["kept"].values())
        dropped = items * len(r["kept"]) - kept
        if share["dropped"] is not None:
            totals[0] += share["dropped"] * dropped
            totals[1] += dropped
        if share["kept"] is not None:
            totals[2] += share["kept"] * kept
            totals[3] += kept
    if totals[1] == 0 or totals[3] == 0:
        return None
    dropped, kept = totals[0] / totals[1], totals[2] / totals[3]
    return {"dropped": float(dropped), "kept": float(kept), "ratio": float(dropped / kept) if kept else None,
            "kept_fraction": float(totals[3] / (totals[1] + totals[3])), "entries": float(totals[1] + totals[3]),
            "totals": totals.tolist()}


def combined_shares(parts: list[dict]) -> dict | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    t = np.sum([p["totals"] for p in parts], axis=0)
    dropped, kept = t[0] / t[1], t[2] / t[3]
    return {"dropped": float(dropped), "kept": float(kept), "ratio": float(dropped / kept) if kept else None,
            "kept_fraction": float(t[3] / (t[1] + t[3])), "entries": float(t[1] + t[3]), "totals": t.tolist()}
