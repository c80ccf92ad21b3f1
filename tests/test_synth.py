"""The synthetic label-noise generator: clean content, labels that tell the truth, determinism."""
import json
import math

import numpy as np
import pytest

from labelnoise import SOURCES, synth
from labelnoise.audio import info, read_audio

SR = 8000
SECONDS = 2.0
Q = 2 / 32768  # 16-bit rounding


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _stems(root, track):
    return np.stack([read_audio(root / track / f"{s}.wav", channels=None) for s in SOURCES])


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    labels = json.loads(synth.generate(root, tracks=3, seconds=SECONDS, noise_rate=0.0, seed=5,
                                       samplerate=SR, write_clean=True, progress=False).read_text())
    return root, labels


def _noisy_set(tmp_path_factory, kind, rate=1.0, tracks=4):
    root = tmp_path_factory.mktemp(kind)
    weights = {k: (1.0 if k == kind else 0.0) for k in synth.NOISE_KINDS}
    path = synth.generate(root, tracks=tracks, seconds=SECONDS, noise_rate=rate, seed=11,
                          samplerate=SR, kinds=weights, progress=False)
    return root, json.loads(path.read_text())


def test_clean_set_layout_and_labels(clean_set):
    root, labels = clean_set
    assert sorted(labels) == ["track_000", "track_001", "track_002"]
    for track, stems in labels.items():
        assert set(stems) == set(SOURCES)
        assert all(lab == {"noisy": False, "kind": None} for lab in stems.values())
        for s in SOURCES + ("mixture",):
            meta = info(root / track / f"{s}.wav")
            assert (meta.samplerate, meta.channels, meta.frames) == (SR, 2, int(SECONDS * SR))


def test_clean_stem_equals_its_source_and_mixture_is_the_sum(clean_set):
    root, labels = clean_set
    for track in labels:
        stems = _stems(root, track)
        clean = synth.load_clean(root, track)
        np.testing.assert_allclose(stems, clean, atol=Q)
        written_clean = np.stack([read_audio(root / "clean" / track / f"{s}.wav", channels=None) for s in SOURCES])
        np.testing.assert_allclose(written_clean, clean, atol=Q)
        mixture = read_audio(root / track / "mixture.wav", channels=None)
        np.testing.assert_allclose(mixture, stems.sum(0), atol=1e-6)
        # Every source plays, and stereo channels differ (a pan or width).
        for k in range(4):
            assert _rms(clean[k]) > 1e-3
            assert np.abs(clean[k]).max() <= 0.3 + 1e-6
            assert not np.allclose(clean[k, 0], clean[k, 1])


def test_sources_are_distinguishable(clean_set):
    # Spectral centroids: bass lowest; drums' hats make them the brightest.
    root, labels = clean_set
    clean = synth.load_clean(root, "track_000")
    freqs = np.fft.rfftfreq(clean.shape[-1], 1 / SR)
    centroid = {}
    for k, s in enumerate(SOURCES):
        mag = np.abs(np.fft.rfft(clean[k].mean(0)))
        centroid[s] = float((freqs * mag).sum() / mag.sum())
    assert centroid["bass"] < min(centroid["other"], centroid["vocals"], centroid["drums"])
    # Different tracks differ (random key, tempo, level).
    other = synth.load_clean(root, "track_001")
    assert not np.allclose(clean, other, atol=1e-3)


def test_deterministic_per_seed(tmp_path):
    paths = [synth.generate(tmp_path / name, tracks=3, seconds=1.0, noise_rate=0.6, seed=seed,
                            samplerate=SR, progress=False) for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    a, b, c = (p.parent for p in paths)
    assert paths[0].read_text() == paths[1].read_text()
    for s in SOURCES + ("mixture",):
        assert (a / "track_001" / f"{s}.wav").read_bytes() == (b / "track_001" / f"{s}.wav").read_bytes()
    assert not np.allclose(_stems(a, "track_000"), _stems(c, "track_000"))
    # A track's content does not depend on how many tracks are generated.
    np.testing.assert_array_equal(synth.clean_track(1, 2, seconds=1.0, samplerate=SR),
                                  synth.load_clean(a, "track_002"))


def test_bleed_level_and_source_match_label(tmp_path_factory):
    root, labels = _noisy_set(tmp_path_factory, "bleed")
    seen = 0
    for track, stems_labels in labels.items():
        clean = synth.load_clean(root, track)
        stems = _stems(root, track)
        for k, s in enumerate(SOURCES):
            lab = stems_labels[s]
            assert lab["noisy"] and lab["kind"] == "bleed" and lab["source"] != s
            leak = stems[k] - clean[k]
            measured = 20 * math.log10(_rms(leak) / _rms(clean[k]))
            assert abs(measured - lab["level_db"]) < 0.5
            assert -20.5 < lab["level_db"] < -5.5
            # The leak is the labelled source, scaled.
            src = clean[SOURCES.index(lab["source"])]
            gain = float((leak * src).sum() / (src * src).sum())
            assert _rms(leak - gain * src) < 0.05 * _rms(leak) + Q
            seen += 1
    assert seen == 16


def test_swap_holds_the_labelled_source(tmp_path_factory):
    root, labels = _noisy_set(tmp_path_factory, "swap")
    for track, stems_labels in labels.items():
        clean, stems = synth.load_clean(root, track), _stems(root, track)
        for k, s in enumerate(SOURCES):
            lab = stems_labels[s]
            assert lab["kind"] == "swap" and lab["holds"] != s
            np.testing.assert_allclose(stems[k], clean[SOURCES.index(lab["holds"])], atol=Q)


def test_other_song_holds_the_same_source_of_the_labelled_track(tmp_path_factory):
    root, labels = _noisy_set(tmp_path_factory, "other_song")
    for track, stems_labels in labels.items():
        stems = _stems(root, track)
        for k, s in enumerate(SOURCES):
            lab = stems_labels[s]
            assert lab["kind"] == "other_song" and lab["track"] != track and lab["track"] in labels
            np.testing.assert_allclose(stems[k], synth.load_clean(root, lab["track"])[k], atol=Q)
            assert not np.allclose(stems[k], synth.load_clean(root, track)[k], atol=1e-3)


def test_silent_moves_content_to_a_labelled_receiver(tmp_path_factory):
    root, labels = _noisy_set(tmp_path_factory, "silent", rate=0.5, tracks=8)
    moves = 0
    for track, stems_labels in labels.items():
        clean, stems = synth.load_clean(root, track), _stems(root, track)
        for k, s in enumerate(SOURCES):
            lab = stems_labels[s]
            if lab["kind"] != "silent":
                continue
            moves += 1
            r = lab["moved_to"]
            assert np.abs(stems[k]).max() == 0
            rlab = stems_labels[r]
            assert rlab["noisy"] and rlab["via"] == "silent" and rlab["source"] == s
            np.testing.assert_allclose(stems[SOURCES.index(r)], clean[SOURCES.index(r)] + clean[k], atol=Q)
    assert moves > 0


def test_partial_is_mislabelled_only_inside_its_span(tmp_path_factory):
    root, labels = _noisy_set(tmp_path_factory, "partial", tracks=2)
    for track, stems_labels in labels.items():
        clean, stems = synth.load_clean(root, track), _stems(root, track)
        for k, s in enumerate(SOURCES):
            lab = stems_labels[s]
            a, b = int(lab["start"] * SR), int(lab["end"] * SR)
            assert 0.3 * SECONDS - 0.01 <= lab["end"] - lab["start"] <= 0.7 * SECONDS + 0.01
            margin = int(0.011 * SR)  # the crossfade
            held = clean[SOURCES.index(lab["holds"])]
            np.testing.assert_allclose(stems[k, :, a + margin:b - margin], held[:, a + margin:b - margin], atol=Q)
            np.testing.assert_allclose(stems[k, :, :a], clean[k, :, :a], atol=Q)
            np.testing.assert_allclose(stems[k, :, b:], clean[k, :, b:], atol=Q)


def test_noise_rate_is_roughly_respected(tmp_path):
    path = synth.generate(tmp_path, tracks=12, seconds=0.5, noise_rate=0.25, seed=3, samplerate=SR,
                          kinds={"silent": 0}, progress=False)
    labels = json.loads(path.read_text())
    noisy = sum(lab["noisy"] for t in labels.values() for lab in t.values())
    assert 3 <= noisy <= 24  # 48 stems at 0.25: 12 expected
    kinds = {lab["kind"] for t in labels.values() for lab in t.values() if lab["noisy"]}
    assert "silent" not in kinds


def test_kinds_option_and_errors():
    assert synth.parse_kinds("swap=2,other_song=2") == {"swap": 2.0, "other_song": 2.0}
    assert synth.parse_kinds(None) is None
    with pytest.raises(ValueError, match="KIND=WEIGHT"):
        synth.parse_kinds("swap")
    with pytest.raises(ValueError, match="unknown noise kind"):
        synth._kind_weights({"drift": 1})
    with pytest.raises(ValueError, match="noise_rate"):
        synth.generate("/nonexistent", tracks=1, seconds=1, noise_rate=2, seed=0)


def test_every_noise_kind_is_registered_with_its_maker():
    # One registry: the weights, the CLI's list and the filter report's blind kinds all come from it.
    from labelnoise import filter_report, noise

    assert synth.NOISE_KINDS == tuple(noise.KINDS)
    for name, kind in noise.KINDS.items():
        # A kind no step of noisy_track makes is made by the one backend that can (sampled.misgroup).
        assert kind.make or kind.finish or kind.renders, f"{name}: nothing makes it"
    assert synth._kind_weights(None, "sine")[synth.NOISE_KINDS.index("misgroup")] == 0
    with pytest.raises(ValueError, match="needs the sampled render backend"):
        synth._kind_weights({"misgroup": 1}, "sine")
    assert filter_report.BLIND_KINDS == ("other_song", "bleed < -12 dB")


def test_cli(tmp_path, capsys):
    synth.main(["--out", str(tmp_path), "--tracks", "2", "--seconds", "0.5", "--noise-rate", "1",
                "--seed", "4", "--samplerate", "16000", "--kinds", "swap=1,bleed=0,other_song=0,silent=0,partial=0"])
    labels = json.loads((tmp_path / "noise_labels.json").read_text())
    assert all(lab["kind"] == "swap" for t in labels.values() for lab in t.values())
    assert info(tmp_path / "track_000" / "vocals.wav").samplerate == 16000
    assert str(tmp_path / "noise_labels.json") in capsys.readouterr().out
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--tracks", "1", "--seconds", "1", "--kinds", "nope=1"])
