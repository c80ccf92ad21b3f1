"""The auto threshold rule on hand-built margin sets: one population, two, all clean, all noisy."""
import numpy as np
import pytest

from labelnoise import thresholds
from labelnoise.thresholds import FLOOR_DB, Rule, choose, populations

RNG = np.random.default_rng(7)


def _kept(values, threshold):
    return int((np.asarray(values) > threshold).sum())


def test_one_population_keeps_every_stem():
    clean = RNG.normal(14, 3, 30)
    threshold, words = populations(clean)
    assert threshold == FLOOR_DB and _kept(clean, threshold) == 30
    assert words.startswith("one population (30 stems around") and "all kept" in words


def test_a_clean_source_reaching_below_the_floor_keeps_its_stems():
    # A filter model that leaks the source into another output: clean margins around 0 dB, some below
    # the floor. They are where the source's stems are, so they stay; only a stem far under them goes.
    for seed in range(5):
        rng = np.random.default_rng(seed)
        clean = rng.normal(-0.3, 4.6, 40)
        threshold, words = populations(clean)
        assert threshold < FLOOR_DB and _kept(clean, threshold) >= 0.95 * 40
        assert words.startswith("one population")
        swapped = np.concatenate([clean, [-40.0, -45.0]])
        threshold, words = populations(swapped)
        assert _kept(swapped, threshold) == _kept(clean, threshold)
        assert "MADs under the median" in words or "two populations" in words


def test_two_populations_split_where_they_are_equally_likely():
    clean, noisy = RNG.normal(15, 3, 24), RNG.normal(-10, 3, 8)
    values = np.concatenate([clean, noisy])
    threshold, words = populations(values)
    assert noisy.max() < threshold < clean.min()
    assert _kept(values, threshold) == 24
    assert words.startswith("two populations (24 stems around") and "8 around" in words


def test_a_split_between_clean_bodies_is_not_made_and_the_floor_holds():
    # Clean stems with a broad low shoulder: one population, not a reason to drop a third of them.
    values = np.concatenate([RNG.normal(15, 2, 20), RNG.normal(9, 4, 10)])
    threshold, _ = populations(values)
    assert _kept(values, threshold) == (values > FLOOR_DB).sum()
    # A lower population above the floor but far from the clean one: split off.
    bleeds = np.concatenate([RNG.normal(20, 1.5, 24), RNG.normal(6, 1.5, 6)])
    threshold, words = populations(bleeds)
    assert 8 < threshold < 17 and _kept(bleeds, threshold) == 24 and "two populations" in words


def test_all_noisy_keeps_nothing_below_the_floor():
    swapped = RNG.normal(-15, 3, 20)
    threshold, words = populations(swapped)
    assert _kept(swapped, threshold) == 0
    assert f"all kept but the 20 at or below the {FLOOR_DB:g} dB floor" in words and "most of them" in words
    # The floor holds for two populations too: no stem whose own output is not the loudest...
    mixed = np.concatenate([RNG.normal(FLOOR_DB + 8, 2, 20), RNG.normal(FLOOR_DB - 2, 1, 6), RNG.normal(-30, 1, 4)])
    threshold, _ = populations(mixed)
    assert threshold >= FLOOR_DB and _kept(mixed, threshold) == (mixed > FLOOR_DB).sum()


def test_a_clean_population_below_the_floor_is_split_off_not_emptied():
    # ...unless the clean part itself lies below it: a filter model that hears the source poorly. The floor
    # would then drop every stem of the source (an empty pool); the split keeps the clean part.
    clean, swapped = RNG.normal(FLOOR_DB - 4, 1, 20), RNG.normal(-30, 1.5, 6)
    values = np.concatenate([clean, swapped])
    threshold, words = populations(values)
    assert swapped.max() < threshold < clean.min() and _kept(values, threshold) == 20
    assert "two populations (20 stems around" in words and "lies below the -6 dB floor" in words
    # One population below the floor stays dropped: by its margins alone it is a source of swapped stems.
    assert _kept(clean, populations(clean)[0]) == 0


def test_choose_pools_small_sources_and_names_the_rule():
    margins = {"drums": list(RNG.normal(15, 2, 12)), "vocals": [12.0, 13.0]}
    chosen, words = choose(margins, Rule.parse("auto"))
    assert words["drums"].startswith("drums stems: one population")
    assert words["vocals"].startswith("stems of all sources pooled") and "(vocals has 2 stems, needs 8)" in words["vocals"]
    with pytest.raises(ValueError, match="only 3 stems have a margin"):
        choose({"drums": [1.0, 2.0], "bass": [3.0]}, Rule.parse("auto"))
    assert Rule.parse("otsu").name == "otsu" and Rule.parse(" AUTO ").name == "auto"
    assert thresholds.finite([None, float("nan"), float("inf"), 1.0, float("-inf")]).tolist() == [2.0, 1.0, 0.0]


def test_a_stem_wrong_for_part_of_the_track_shows_it_in_its_windows():
    from labelnoise import volumes
    # Ten windows; in three the stem's own output loses to another (the stem holds another source there).
    own = [40.0] * 7 + [20.0] * 3
    other = [10.0] * 7 + [35.0] * 3
    rec = {"stem": "vocals", "volumes": {"vocals": 50.0, "drums": 38.0, "bass": 0.0, "other": 0.0},
           "windows": {"seconds": 1.0, "input": [40.0] * 10,
                       "volumes": {"vocals": own, "drums": other, "bass": [0.0] * 10, "other": [0.0] * 10}}}
    assert volumes.margin_db(rec["volumes"], "vocals") == 12.0      # the whole stem looks clean
    assert volumes.window_margin(rec) == pytest.approx(-15.0)        # its worst fifth does not
    # Windows where the stem does not play (30 dB below its loudest) take no part.
    quiet = {**rec, "windows": {**rec["windows"], "input": [40.0] * 7 + [5.0] * 3}}
    assert volumes.window_margin(quiet) == pytest.approx(30.0)
    assert volumes.window_margin({"stem": "vocals", "volumes": rec["volumes"]}) is None
