"""Per-source thresholds on the filter's margins: the rules auto_filter offers, each with its reason in words.

A margin is how much louder a stem's own output is than the loudest other
output (dB, labelnoise.volumes); ``margin > threshold`` keeps the stem. The
rules (``Rule.parse``):

- a number: the same threshold for every source (the original: 20 dB);
- ``auto``: does the source hold one population
  of margins or two? A one-component and a two-component Gaussian mixture
  are fitted (EM, in one dimension) and compared by BIC. Two populations
  count only when the mixture is clearly better (``BIC_MARGIN``), its parts
  are well apart (Ashman's D >= ``MIN_SEPARATION``) and the upper part, the
  clean stems, holds at least ``MIN_CLEAN_SHARE`` of them; the threshold is
  then where a margin is equally likely to come from either part. One
  population: every stem is kept but those at or below ``FLOOR_DB`` (a
  stem whose own output is less than half as loud as another output) that
  also lie ``OUTLIER_MADS`` robust spreads (1.4826 MAD) or more below the
  source's median. A weak filter model leaks a clean source into another
  output (a pitch-raised bass into ``other``), and then some of the
  source's clean stems lie below the floor too: they are where its stems
  are, not a second group. A population whose median is at or below the
  floor is a source of swapped stems: nothing at or below the floor is
  kept. Two populations: no stem is kept at or below the floor either,
  but for one exception: a clean part that itself lies below the floor (a
  filter model that hears the source poorly) takes the split, where the
  floor would drop every clean stem.
  After the threshold, ``labelnoise.leaks`` leaves out a stem whose leak
  into one other output stands out from its source's stems;
- ``otsu``: Otsu's split of the margins, whether or not they form two groups
  (the threshold between the two groups that maximises the between-group
  variance, midway in the gap);
- ``keep_fraction F``: the best ``round(F x n)`` stems of each source; the
  threshold lies midway between the last kept and the first left out, and
  stems tied at that boundary are all left out.

``auto`` and ``otsu`` need ``MIN_STEMS`` margins in a source; a source with
fewer takes the rule over all sources' margins pooled (the words say so).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLOOR_DB = -6.0         # own output at least half as loud as the loudest other: below, another source dominates
BIC_MARGIN = 6.0        # "strong" evidence for the second component
MIN_SEPARATION = 2.0    # Ashman's D: sqrt(2) |m1 - m2| / sqrt(s1^2 + s2^2)
MIN_CLEAN_SHARE = 0.3   # the upper population is the clean one only when it is not a handful
MIN_SD_DB = 0.5         # no component narrower than this (a single stem would otherwise fit perfectly)
EM_STEPS = 200
MIN_STEMS = 8           # auto and otsu: fewer margins than this in a source, and its rule is the pooled one
OUTLIER_MADS = 3.0      # one population: below the floor, a stem is left out only this far below the median
MIN_SPREAD_DB = 1.0     # the smallest robust spread (1.4826 MAD) a stem's distance is measured in
MAD_TO_SD = 1.4826      # a normal's standard deviation over its median absolute deviation


@dataclass(frozen=True)
class Rule:
    """How the per-source thresholds are chosen: ``fixed`` (dB), ``auto``, ``otsu`` or ``keep_fraction``."""
    name: str
    value: float | None = None

    @classmethod
    def parse(cls, threshold: str | float | None = "20", keep_fraction: float | None = None) -> "Rule":
        if keep_fraction is not None:
            if not 0 < keep_fraction <= 1:
                raise ValueError(f"keep fraction must be in (0, 1], got {keep_fraction}")
            return cls("keep_fraction", float(keep_fraction))
        word = str(threshold).strip().lower()
        if word in ("auto", "otsu"):
            return cls(word)
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"THRESHOLD must be a number of dB, 'auto' or 'otsu', got {threshold!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"THRESHOLD must be finite, got {threshold!r}")
        return cls("fixed", value)

    def describe(self) -> str:
        if self.name == "fixed":
            return f"fixed {self.value:g} dB"
        if self.name == "keep_fraction":
            return f"keep the best {self.value:g} of each source by margin"
        if self.name == "otsu":
            return "otsu (Otsu's split of each source's margins)"
        return (f"auto (one population of margins or two, per source, over each stem's windows; nothing "
                f"at or below {FLOOR_DB:g} dB, where another output is twice as loud, unless one population's "
                f"stems reach below it (then only those {OUTLIER_MADS:g} MADs under its median are left out) or "
                f"a clean part lies below it; no stem whose leak into another output stands out from its "
                f"source's stems)")


def choose(margins: dict[str, list[float]], rule: Rule) -> tuple[dict[str, float], dict[str, str]]:
    """Per-source thresholds and, per source, the words saying how each was chosen."""
    sources = list(margins)
    if rule.name == "fixed":
        return {s: rule.value for s in sources}, {s: "fixed" for s in sources}
    if rule.name == "keep_fraction":
        return ({s: keep_fraction(margins[s], rule.value) for s in sources},
                {s: f"keep fraction {rule.value:g}" for s in sources})
    thresholds, words, pooled = {}, {}, None
    for s in sources:
        if len(finite(margins[s])) >= MIN_STEMS:
            thresholds[s], words[s] = _by_rule(margins[s], rule, f"{s} stems")
            continue
        if pooled is None:
            everything = [m for ms in margins.values() for m in ms]
            if len(finite(everything)) < MIN_STEMS:
                raise ValueError(f"THRESHOLD {rule.name}: only {len(finite(everything))} stems have a margin "
                                 f"(it needs {MIN_STEMS}); give a number of dB")
            pooled = _by_rule(everything, rule, "stems of all sources pooled")
        thresholds[s] = pooled[0]
        words[s] = f"{pooled[1]} ({s} has {len(finite(margins[s]))} stems, needs {MIN_STEMS})"
    return thresholds, words


def _by_rule(values, rule: Rule, what: str) -> tuple[float, str]:
    if rule.name == "otsu":
        value = otsu(values)
        if value is None:
            raise ValueError(f"THRESHOLD otsu: the {what} have fewer than two distinct margins; give a number")
        return value, f"otsu over {len(finite(values))} {what}"
    threshold, words = populations(values)
    return threshold, f"{what}: {words}"


def finite(values) -> np.ndarray:
    """Margins as numbers: None and NaN left out, +-inf moved just past the finite ones (order kept)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[~np.isnan(v)]
    fin = v[np.isfinite(v)]
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
    return np.where(v == np.inf, hi + 1.0, np.where(v == -np.inf, lo - 1.0, v))


def median_spread(values) -> tuple[float, float]:
    """The median of finite numbers and their robust spread, ``max(1.4826 MAD, MIN_SPREAD_DB)``."""
    v = np.asarray(values, dtype=np.float64)
    median = float(np.median(v))
    return median, max(MAD_TO_SD * float(np.median(np.abs(v - median))), MIN_SPREAD_DB)


def otsu(values) -> float | None:
    """Otsu's split of a set of numbers: midway in the gap that maximises the between-group variance.

    Exact over the sorted values (no histogram bins); None for fewer than two distinct values.
    """
    v = np.sort(finite(values))
    n = v.size
    if n < 2 or v[0] == v[-1]:
        return None
    k = np.arange(1, n)                       # the lower group is v[:k]
    csum = np.cumsum(v)[:-1]
    mean_low = csum / k
    mean_high = (v.sum() - csum) / (n - k)
    between = (k / n) * (1 - k / n) * (mean_low - mean_high) ** 2
    between[v[k] == v[k - 1]] = -1.0          # no split inside a run of equal values
    best = int(np.argmax(between)) + 1
    return float((v[best - 1] + v[best]) / 2)


def keep_fraction(values, fraction: float) -> float:
    """A threshold keeping (with ``margin > threshold``) the best ``round(fraction x n)`` values."""
    v = np.sort(finite(values))
    n = v.size
    if n == 0:
        return 0.0
    keep = int(math.floor(fraction * n + 0.5))
    if keep >= n:
        return float(v[0] - 1.0)
    if keep == 0:
        return float(v[-1])
    lowest_kept, highest_left = v[n - keep], v[n - keep - 1]
    if lowest_kept == highest_left:  # a tie at the boundary: all of it left out
        return float(lowest_kept)
    return float((lowest_kept + highest_left) / 2)


def _normal_logpdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return -0.5 * ((x - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def fit_two(x: np.ndarray) -> dict:
    """A two-component Gaussian mixture of ``x`` by EM, started from Otsu's split; ``low`` has the lower mean."""
    split = otsu(x)
    low = x <= split
    params = [[float(x[low].mean()), max(float(x[low].std()), MIN_SD_DB), float(low.mean())],
              [float(x[~low].mean()), max(float(x[~low].std()), MIN_SD_DB), float((~low).mean())]]
    for _ in range(EM_STEPS):
        logp = np.stack([math.log(w) + _normal_logpdf(x, m, s) for m, s, w in params])
        top = logp.max(axis=0)
        resp = np.exp(logp - top)
        resp /= resp.sum(axis=0)
        new = []
        for r in resp:
            total = r.sum()
            if total < 1e-9:  # a component that lost every point: keep it as it was
                return _two_result(x, params)
            mean = float((r * x).sum() / total)
            sd = max(math.sqrt(float((r * (x - mean) ** 2).sum() / total)), MIN_SD_DB)
            new.append([mean, sd, float(total / x.size)])
        done = max(abs(a - b) for p, q in zip(params, new) for a, b in zip(p, q)) < 1e-6
        params = new
        if done:
            break
    return _two_result(x, params)


def _two_result(x: np.ndarray, params) -> dict:
    (m1, s1, w1), (m2, s2, w2) = sorted(params, key=lambda p: p[0])
    logp = np.logaddexp(math.log(w1) + _normal_logpdf(x, m1, s1), math.log(w2) + _normal_logpdf(x, m2, s2))
    return {"low": (m1, s1, w1), "high": (m2, s2, w2), "loglik": float(logp.sum())}


def equal_odds(low: tuple, high: tuple) -> float:
    """Where, between the two means, a value is as likely to come from either weighted component."""
    (m1, s1, w1), (m2, s2, w2) = low, high
    grid = np.linspace(m1, m2, 2001)
    odds = (math.log(w2) + _normal_logpdf(grid, m2, s2)) - (math.log(w1) + _normal_logpdf(grid, m1, s1))
    above = np.nonzero(odds > 0)[0]
    return float(grid[above[0]]) if above.size else float(m2)


def populations(values, floor: float = FLOOR_DB) -> tuple[float, str]:
    """The threshold of one source's margins and the reason, in a sentence (see the module's docstring)."""
    x = finite(values)
    n = x.size
    if n == 0:
        return floor, f"no margins; nothing is kept below the {floor:g} dB floor"
    mean, sd = float(x.mean()), max(float(x.std()), MIN_SD_DB)
    one = float(_normal_logpdf(x, mean, sd).sum())
    two = fit_two(x) if n >= 4 and otsu(x) is not None else None
    if two is not None:
        (m1, s1, w1), (m2, s2, w2) = two["low"], two["high"]
        bic1, bic2 = -2 * one + 2 * math.log(n), -2 * two["loglik"] + 5 * math.log(n)
        separation = math.sqrt(2) * (m2 - m1) / math.sqrt(s1 ** 2 + s2 ** 2)
        if bic2 + BIC_MARGIN < bic1 and separation >= MIN_SEPARATION and w2 >= MIN_CLEAN_SHARE:
            split = equal_odds(two["low"], two["high"])
            if m2 < floor:
                # The clean stems themselves lie below the floor: the filter model hears this source
                # poorly, and the floor would empty its pool. The split is all the margins can tell.
                threshold = split
                where = (f"at {split:.1f} dB, where they are equally likely: the clean part lies below the "
                         f"{floor:g} dB floor, so the filter model hears this source poorly")
            else:
                threshold = max(split, floor)
                where = (f"at {split:.1f} dB, where they are equally likely" if split >= floor
                         else f"at the {floor:g} dB floor (they are equally likely at {split:.1f} dB)")
            return threshold, (f"two populations ({round(w2 * n)} stems around {m2:.1f} dB, {round(w1 * n)} "
                               f"around {m1:.1f} dB; BIC {bic1 - bic2:.0f} lower with two): threshold {where}")
    one = f"one population ({n} stems around {mean:.1f} dB, spread {sd:.1f} dB)"
    median, spread = median_spread(x)
    if median <= floor:
        below = int((x <= floor).sum())
        return floor, (f"{one}: all kept but the {below} at or below the {floor:g} dB floor (another output "
                       f"twice as loud), where most of them are")
    threshold = min(floor, median - OUTLIER_MADS * spread)
    below = int((x <= threshold).sum())
    if below == 0:
        return threshold, f"{one}: all kept"
    return threshold, (f"{one}: all kept but the {below} below the {floor:g} dB floor (another output twice "
                       f"as loud) and {OUTLIER_MADS:g} MADs under the median, at or below {threshold:.1f} dB")
