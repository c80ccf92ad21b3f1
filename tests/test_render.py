"""The sampled render backend (FluidSynth + SoundFonts, installed by `make sounds`): labels, levels, determinism.

These tests need fluidsynth and a General MIDI SoundFont; without them they fail with the message of
labelnoise.fluid.RenderUnavailable, which says what to install (CI installs them through the Makefile).
"""
import hashlib
import json
import math
import os

import numpy as np
import pytest

from labelnoise import SOURCES, sampled, synth
from labelnoise.audio import info, read_audio
from labelnoise.fluid import SOUNDFONT_ENV, RenderUnavailable, find_soundfonts

Q = 2 / 32768  # 16-bit rounding
SEED = 3


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _stems(root, track):
    return np.stack([read_audio(root / track / f"{s}.wav", channels=None) for s in SOURCES])


def _clean(root, track):
    return np.stack([read_audio(root / "clean" / track / f"{s}.wav", channels=None) for s in SOURCES])


def _make(root, kind=None, *, tracks=3, seconds=2.0, rate=0.5, samplerate=44100, seed=SEED, **kw):
    kinds = None if kind is None else {k: float(k == kind) for k in synth.NOISE_KINDS}
    path = synth.generate(root, tracks=tracks, seconds=seconds, noise_rate=rate, seed=seed, samplerate=samplerate,
                          kinds=kinds, write_clean=True, progress=False, render="sampled", **kw)
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def kind_sets(tmp_path_factory):
    """One small set per noise kind, that kind alone."""
    out = {}
    for kind in synth.NOISE_KINDS:
        root = tmp_path_factory.mktemp(kind)
        out[kind] = (root, _make(root, kind, rate=1.0 if kind in ("bleed", "swap", "partial") else 0.5))
    return out


def test_soundfonts_are_installed():
    # The message says what to install; CI's `make test` runs `make sounds` first.
    assert find_soundfonts()


def _recording(track: sampled.Track, stem: str, name: str) -> sampled.Recording:
    found = [track.recordings[i] for i in track.of(stem) if track.recordings[i].name == name]
    assert len(found) == 1, (stem, name)
    return found[0]


@pytest.mark.parametrize("instead", [0.0, 1.0])
def test_misgroup_is_where_the_label_says_at_its_level(tmp_path, monkeypatch, instead):
    monkeypatch.setattr(sampled, "MISGROUP_INSTEAD", instead)
    labels = _make(tmp_path, "misgroup", tracks=4, rate=0.5)
    seen = 0
    for i, (track, stem_labels) in enumerate(labels.items()):
        stems, clean = _stems(tmp_path, track), _clean(tmp_path, track)
        for s, lab in stem_labels.items():
            if lab["kind"] != "misgroup":
                continue
            seen += 1
            k, d = SOURCES.index(s), SOURCES.index(lab["holds"])
            assert lab["mode"] == ("instead" if instead else "inside") and lab["holds"] != s
            rendered = sampled.render_track(SEED, i, seconds=2.0, stems=(lab["holds"],))
            rec = _recording(rendered, lab["holds"], lab["recording"])
            assert rec.part.cls == lab["class"]
            sr = 44100
            a, b = round(lab["start"] * sr), round(lab["end"] * sr)
            fade = int(0.01 * sr)
            n = stems.shape[-1]  # (the label's times are rounded to 0.1 ms: a frame or two of slack)
            inside, outside = slice(a + fade + 3, b - fade - 3), np.r_[0:max(0, a - 3), min(n, b + 3):n]
            # Over the span the stem holds the recording, with its own content or instead of it; outside, its own.
            expected = rec.audio if instead else clean[k] + rec.audio
            np.testing.assert_allclose(stems[k][:, inside], expected[:, inside], atol=2 * Q)
            np.testing.assert_allclose(stems[k][:, outside], clean[k][:, outside], atol=Q)
            # The stem it came from lacks it over the span, and says so.
            np.testing.assert_allclose(stems[d][:, inside], (clean[d] - rec.audio)[:, inside], atol=2 * Q)
            gave = stem_labels[lab["holds"]]["gave"]
            assert any(g["to"] == s and g["recording"] == lab["recording"] for g in gave)
            # Its level relative to the stem's own content over the span.
            measured = 20 * math.log10(_rms(rec.audio[:, a:b]) / _rms(clean[k][:, a:b]))
            assert abs(measured - lab["level_db"]) < 0.2
            assert _rms(rec.audio[:, a:b]) > 1e-3
    assert seen >= 2


def test_every_kind_appears_with_its_fields(kind_sets):
    fields = {"bleed": {"source", "level_db"}, "swap": {"holds"}, "other_song": {"track"}, "silent": {"moved_to"},
              "partial": {"holds", "start", "end"},
              "misgroup": {"holds", "class", "recording", "mode", "level_db", "start", "end"}}
    assert set(fields) == set(synth.NOISE_KINDS)
    for kind, (root, labels) in kind_sets.items():
        found = [lab for t in labels.values() for lab in t.values() if lab["kind"] == kind]
        assert found, kind
        for lab in found:
            assert lab["noisy"] and fields[kind] <= set(lab), (kind, lab)
        for t in labels.values():
            for s, lab in t.items():
                # Every stem lists its own recordings: class, level inside the stem, span.
                assert lab["recordings"], (kind, s)
                for r in lab["recordings"]:
                    assert {"name", "class", "program", "font", "level_db", "start", "end"} <= set(r)
                    assert -40 < r["level_db"] <= 0.5 and 0 <= r["start"] < r["end"] <= 2.0
        assert json.loads((root / synth.PARAMS_FILE).read_text())["render"] == "sampled"


def test_stem_kinds_hold_what_their_labels_say(kind_sets):
    root, labels = kind_sets["bleed"]
    for track, stem_labels in labels.items():
        stems, clean = _stems(root, track), _clean(root, track)
        for k, s in enumerate(SOURCES):
            lab = stem_labels[s]
            leak = stems[k] - clean[k]
            assert abs(20 * math.log10(_rms(leak) / _rms(clean[k])) - lab["level_db"]) < 0.5
    root, labels = kind_sets["swap"]
    for track, stem_labels in labels.items():
        stems, clean = _stems(root, track), _clean(root, track)
        for k, s in enumerate(SOURCES):
            np.testing.assert_allclose(stems[k], clean[SOURCES.index(stem_labels[s]["holds"])], atol=Q)
    root, labels = kind_sets["other_song"]
    for track, stem_labels in labels.items():
        stems = _stems(root, track)
        for k, s in enumerate(SOURCES):
            lab = stem_labels[s]
            if lab["kind"] == "other_song":
                np.testing.assert_allclose(stems[k], _clean(root, lab["track"])[k], atol=Q)


def test_mixture_is_the_sum_of_stereo_stems_at_the_rate(tmp_path):
    for rate in (44100, 16000):
        root = tmp_path / str(rate)
        labels = _make(root, tracks=2, seconds=1.5, samplerate=rate)
        for track in labels:
            stems = _stems(root, track)
            for s in SOURCES + ("mixture",):
                meta = info(root / track / f"{s}.wav")
                assert (meta.samplerate, meta.channels, meta.frames) == (rate, 2, int(1.5 * rate))
            np.testing.assert_allclose(read_audio(root / track / "mixture.wav", channels=None), stems.sum(0),
                                       atol=1e-6)
            # The clean stems are the backend's own (the clean twin of a set is recomputed from its seed).
            np.testing.assert_allclose(_clean(root, track), synth.load_clean(root, track), atol=Q)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".wav", ".json"):
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        _make(tmp_path / name, tracks=2, seconds=1.5, rate=0.6, seed=seed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert not np.allclose(_stems(tmp_path / "a", "track_000"), _stems(tmp_path / "c", "track_000"), atol=1e-3)
    # A track does not depend on what was rendered before it in the process.
    np.testing.assert_array_equal(synth.clean_track(5, 1, seconds=1.5, render="sampled"),
                                  synth.clean_track(5, 1, seconds=1.5, render="sampled"))
    np.testing.assert_allclose(synth.clean_source(5, 1, "bass", seconds=1.5, render="sampled"),
                               _clean(tmp_path / "a", "track_001")[1], atol=Q)


def _band_share(wav, sr, lo, hi):
    mag = np.abs(np.fft.rfft(wav.mean(0))) ** 2
    f = np.fft.rfftfreq(wav.shape[-1], 1 / sr)
    return float(mag[(f >= lo) & (f < hi)].sum() / mag.sum())


def test_stems_play_unclipped_and_sound_like_their_class(tmp_path):
    labels = _make(tmp_path, tracks=3, seconds=4.0, rate=0.0)
    for track in labels:
        clean = _clean(tmp_path, track)
        for k, s in enumerate(SOURCES):
            assert 20 * math.log10(_rms(clean[k])) > -40, (track, s)
            assert np.abs(clean[k]).max() <= sampled.STEM_PEAK + 1e-3
        share = {s: _band_share(clean[k], 44100, 20, 250) for k, s in enumerate(SOURCES)}
        high = {s: _band_share(clean[k], 44100, 4000, 22050) for k, s in enumerate(SOURCES)}
        assert share["bass"] > 0.5 and share["bass"] > max(share["other"], share["vocals"]), (track, share)
        assert high["drums"] > high["bass"] and high["drums"] > high["vocals"], (track, high)
        assert _band_share(clean[3], 44100, 150, 5000) > 0.7, track  # the voice's range


def test_cli_and_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        synth.main(["--help"])
    assert "--render {sine,sampled}" in capsys.readouterr().out
    synth.main(["--out", str(tmp_path / "cli"), "--tracks", "1", "--seconds", "1", "--render", "sampled",
                "--noise-rate", "1", "--kinds", "swap=1,bleed=0,other_song=0,silent=0,partial=0,misgroup=0"])
    labels = json.loads((tmp_path / "cli" / synth.LABELS_FILE).read_text())
    assert {lab["kind"] for lab in labels["track_000"].values()} == {"swap"}
    with pytest.raises(SystemExit, match="nope.sf2: SoundFont not found"):
        synth.main(["--out", str(tmp_path / "x"), "--tracks", "1", "--seconds", "1", "--render", "sampled",
                    "--soundfont", str(tmp_path / "nope.sf2")])
    monkeypatch.setenv(SOUNDFONT_ENV, os.pathsep)
    with pytest.raises(RenderUnavailable, match="LABELNOISE_SOUNDFONTS names no SoundFont"):
        find_soundfonts()
    # misgroup needs recordings: the sine backend refuses it.
    with pytest.raises(ValueError, match="misgroup"):
        synth.generate(tmp_path / "sine", tracks=1, seconds=1, noise_rate=1, seed=0, kinds={"misgroup": 1})
