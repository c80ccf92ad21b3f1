"""The auto rule's leak test on hand-built stems: an outlier left out, a clean source left alone."""
import numpy as np
import pytest

from labelnoise import leaks, volumes
from labelnoise.leaks import LEAK_Z, mark_outliers
from labelnoise.stem_record import Stem
from labelnoise.thresholds import MIN_STEMS

RNG = np.random.default_rng(3)
# How loud a weak filter model makes each other output against a clean bass stem's own: `other` about
# as loud (a pitch-raised bass sounds like another instrument), drums far below.
TYPICAL = {"drums": (-15.0, 3.0), "other": (2.0, 3.0), "vocals": (-5.0, 3.0)}


def _bass(n, rng=None):
    """n clean bass stems: leaks drawn at random with ``rng``, else spread evenly over +-1.6 sd, shuffled."""
    spread = {y: (rng.normal(m, sd, n) if rng is not None else m + sd * RNG.permutation(np.linspace(-1.6, 1.6, n)))
              for y, (m, sd) in TYPICAL.items()}
    return [Stem(f"t{i:03d}", "bass", margin=5.0, kept=True, leaks={y: float(v[i]) for y, v in spread.items()})
            for i in range(n)]


def test_a_stem_leaking_where_its_source_does_not_is_left_out():
    stems = _bass(20)
    # A drum kit grouped into this bass stem: its drums output is 15 dB louder than the source's usual,
    # still below the `other` leak, so its margin (own minus the loudest other) does not show it.
    stems[7].leaks["drums"] = 0.0
    words = mark_outliers(stems, ["bass"])
    assert not stems[7].kept and stems[7].leak_into == "drums" and stems[7].leak_z > LEAK_Z
    assert sum(st.kept for st in stems) == 19
    assert words["bass"].startswith("1 leak beyond 3 MADs") and "(into drums)" in words["bass"]
    assert words["bass"].endswith("left out: 1 the threshold had kept")


def test_a_source_with_no_noisy_stem_keeps_its_stems():
    for seed in range(5):
        stems = _bass(40, np.random.default_rng(seed))
        words = mark_outliers(stems, ["bass"])
        assert sum(st.kept for st in stems) >= 0.95 * 40
    stems = _bass(24)
    assert mark_outliers(stems, ["bass"])["bass"].startswith("no stem leaks beyond")
    assert all(st.kept for st in stems) and all(st.leak_z is not None for st in stems)


def test_only_unkeeps_and_says_when_it_cannot_judge():
    stems = _bass(12)
    stems[0].leaks["vocals"] = 30.0
    stems[0].kept = False        # already below its threshold: stays out, counted, not "left out" again
    words = mark_outliers(stems, ["bass"])
    assert "1 leak beyond" in words["bass"] and words["bass"].endswith("left out: 0 the threshold had kept")
    assert sum(st.kept for st in stems) == 11

    few = _bass(MIN_STEMS - 1)
    few[0].leaks["drums"] = 40.0
    assert mark_outliers(few, ["bass"])["bass"] == f"no leak test ({MIN_STEMS - 1} stems with a margin, it needs {MIN_STEMS})"
    assert all(st.kept for st in few) and few[0].leak_z is None
    # Silent stems and stems without a margin take no part.
    silent = _bass(MIN_STEMS)
    silent[0].silent = True
    assert mark_outliers(silent, ["bass"])["bass"].startswith("no leak test")


def test_a_tiny_spread_does_not_make_a_fraction_of_a_db_an_outlier():
    stems = _bass(16)
    for st in stems:
        st.leaks = {"drums": -15.0, "other": 2.0, "vocals": -5.0}
    stems[3].leaks["drums"] = -14.5                        # 0.5 dB above a median with no spread at all
    mark_outliers(stems, ["bass"])
    assert all(st.kept for st in stems)
    assert leaks.robust_z([0.0] * 9 + [0.5])[-1] == pytest.approx(0.5 / leaks.MIN_SPREAD_DB)
    # An all-zero output on either side: 1 dB past the finite leaks, never NaN.
    z = leaks.robust_z([-np.inf, 0.0, 1.0, 2.0, np.inf])
    assert np.isfinite(z).all() and z[0] < z[1] and z[-1] > z[-2]


def test_leaks_read_the_louder_windows_or_the_whole_stem():
    # Ten windows; in three of them the stem holds drums that the model puts out 5 dB above its own.
    rec = {"stem": "bass", "volumes": {"bass": 50.0, "drums": 44.0, "other": 48.0, "vocals": -np.inf},
           "windows": {"seconds": 1.0, "input": [40.0] * 10,
                       "volumes": {"bass": [40.0] * 10, "drums": [20.0] * 7 + [45.0] * 3,
                                   "other": [38.0] * 10, "vocals": [-np.inf] * 10}}}
    got = volumes.leaks_db(rec)
    assert got["drums"] == pytest.approx(5.0)          # its louder fifth holds the drums
    assert got["other"] == pytest.approx(-2.0)
    assert got["vocals"] < -50                         # an all-zero output: below every finite leak
    whole = volumes.leaks_db({"stem": "bass", "volumes": rec["volumes"]})
    assert whole["drums"] == -6.0 and whole["other"] == -2.0
    both_silent = volumes.leaks_db({"stem": "bass", "volumes": {"bass": -90.0, "drums": -95.0}})
    assert both_silent == {"drums": 0.0}
