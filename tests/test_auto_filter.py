"""auto_filter: the decision rule, the original's WAV outputs, the pool dataset, thresholds, report, CLI."""
import errno
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import auto_filter
from labelnoise import SOURCES, filter_volumes, synth, volumes
from labelnoise import pool as pool_files
from labelnoise.holdout import count as holdout_count, held_out
from labelnoise.selection import read_selection, select_clean_stems
from labelnoise.thresholds import Rule, keep_fraction as keep_fraction_threshold, otsu as otsu_threshold

REPO = Path(__file__).resolve().parents[1]
SR = 8000
SUFFIX = "m_key6_speed200"


def _make_dataset(root: Path, tracks: list[str]) -> None:
    """Track folders of short noise stems, each file different."""
    rng = np.random.default_rng(0)
    for t in tracks:
        for s in SOURCES:
            (root / t).mkdir(parents=True, exist_ok=True)
            sf.write(str(root / t / f"{s}.wav"), rng.uniform(-0.3, 0.3, (400, 2)).astype(np.float32), SR,
                     subtype="PCM_16")


def _write_volumes(outputs: Path, entries) -> None:
    """entries: (track, stem, {source: dB}, silent)."""
    outputs.mkdir(parents=True, exist_ok=True)
    with open(outputs / "volumes.jsonl", "w") as f:
        for track, stem, vols, silent in entries:
            volumes.append_record(f, volumes.record(track, stem, vols, silent=silent, seconds=0.05))


def _vols(stem: str, own: float, others: float) -> dict:
    return {s: (own if s == stem else others) for s in SOURCES}


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def levels(tmp_path):
    """Four tracks whose drums outputs sit at known levels, every other stem clearly clean."""
    data = tmp_path / "data" / "labelnoise"
    tracks = ["clean", "bleed", "quiet", "edge", "silent"]
    _make_dataset(data, tracks)
    drums = {
        "clean": (_vols("drums", 40.0, 10.0), False),    # margin 30 > 20: kept
        "bleed": (_vols("drums", 40.0, 25.0), False),    # margin 15: left out
        "quiet": (_vols("drums", -85.0, -90.0), False),  # every output <= -80 dB: skipped
        "edge": (_vols("drums", 40.0, 20.0), False),     # margin exactly 20: left out (strict >)
        "silent": (_vols("drums", 30.0, 30.0), True),    # the filter's silent stem: never kept
    }
    entries = []
    for t in tracks:
        for s in SOURCES:
            vols, silent = drums[t] if s == "drums" else (_vols(s, 50.0, 10.0), False)
            entries.append((t, s, vols, silent))
    outputs = tmp_path / f"evaluator_outputs_{SUFFIX}"
    _write_volumes(outputs, entries)
    return data, outputs, tracks


def test_decision_rule_at_known_levels(levels, tmp_path):
    data, outputs, tracks = levels
    sel = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "pool", progress=False)
    assert sel.kept["drums"] == ["clean"]
    assert sel.kept["bass"] == sorted(tracks)
    by_track = {st.track: st for st in sel.stems if st.stem == "drums"}
    assert by_track["edge"].margin == 20.0 and not by_track["edge"].kept
    assert by_track["quiet"].margin is None and not by_track["quiet"].kept
    assert sel.counts["drums"] == {"total": 5, "silent": 1, "skipped": 1, "eligible": 3, "kept": 1, "held_out": 0,
                                   "missing": 0}
    # The same decisions as the shared rule, one stem at a time.
    for st in sel.stems:
        assert st.kept == (not st.silent and bool(volumes.is_clean(st.volumes, st.stem, 20.0)))
    # A negative threshold keeps the edge and the bleed, never the silent stem.
    low = select_clean_stems("m", 6, 200, "-5", data=data, outputs=outputs, dest=tmp_path / "low", progress=False,
                 report=False)
    assert low.kept["drums"] == ["bleed", "clean", "edge"]
    # Without labels: no figures against them, the margins still drawn.
    assert sel.metrics is None and (tmp_path / "pool" / "margins.png").is_file()
    assert not (tmp_path / "pool" / "sweep.png").exists()
    assert "Against the labels" not in (tmp_path / "pool" / "report.md").read_text()


def _write_outputs(outputs: Path, stem: str, track: str, amps: dict, frames: int = 1000) -> None:
    folder = outputs / stem / track
    folder.mkdir(parents=True, exist_ok=True)
    for source, amp in amps.items():
        wav = np.full((frames, 2), amp, np.float32)
        wav[::2] *= -1  # sign changes: the volume sums |x|, not x
        sf.write(str(folder / f"{source}.wav"), wav, SR, subtype="FLOAT")


def test_original_wav_layout_measured_and_cached(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _make_dataset(data, ["a", "b", "c"])
    outputs = tmp_path / "outs"
    amps_a = {"drums": 0.5, "bass": 0.01, "other": 0.002, "vocals": 0.001}
    _write_outputs(outputs, "drums", "a", amps_a)
    _write_outputs(outputs, "vocals", "b", {"drums": 0.3, "bass": 0.01, "other": 0.2, "vocals": 0.25})
    _write_outputs(outputs, "bass", "c", {s: 1e-5 for s in SOURCES})  # a silent stem, copied to all four
    (outputs / "other" / "c").mkdir(parents=True)                       # a folder the writer never filled
    sf.write(str(outputs / "other" / "c" / "drums.wav"), np.zeros((10, 2), np.float32), SR)

    sel = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "pool", progress=False)
    assert sel.volumes_from == "wav"
    a = next(st for st in sel.stems if st.track == "a")
    for source, amp in amps_a.items():  # 20 log10(sum |x|) over 1000 frames x 2 channels
        assert a.volumes[source] == pytest.approx(20 * math.log10(2000 * float(np.float32(amp))), abs=1e-9)
    assert a.margin == pytest.approx(20 * math.log10(0.5 / 0.01), abs=1e-5) and a.kept
    b = next(st for st in sel.stems if st.track == "b")
    assert b.margin == pytest.approx(20 * math.log10(0.25 / 0.3), abs=1e-5) and not b.kept
    c = next(st for st in sel.stems if st.track == "c")
    assert c.silent and not c.kept
    assert list(sel.skipped_outputs) == [str(outputs / "other" / "c")]
    assert sel.kept == {"drums": ["a"], "bass": [], "other": [], "vocals": []}

    cache = outputs / f"volumns_{SUFFIX}.json"
    cached = json.loads(cache.read_text())
    assert {(r["stem"], r["track"]) for r in cached["records"]} == {("drums", "a"), ("vocals", "b"), ("bass", "c")}
    # A second run reads the cache; a changed file is measured again.
    calls = []
    real = filter_volumes._measure_folder
    monkeypatch.setattr(filter_volumes, "_measure_folder", lambda *a: calls.append(a[0].name) or real(*a))
    _write_outputs(outputs, "vocals", "b", {"drums": 0.01, "bass": 0.01, "other": 0.01, "vocals": 0.25}, frames=1200)
    again = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "pool2", progress=False,
                   report=False)
    assert calls == ["b"]
    assert again.kept["vocals"] == ["b"] and again.kept["drums"] == ["a"]


@pytest.fixture
def labelled(tmp_path):
    """Eight tracks with two clear groups of margins per source and hand-made labels."""
    data = tmp_path / "data" / "labelnoise"
    tracks = [f"t{i}" for i in range(8)]
    _make_dataset(data, tracks)
    entries, labels = [], {}
    for i, t in enumerate(tracks):
        labels[t] = {}
        for k, s in enumerate(SOURCES):
            clean = (i + k) % 2 == 0
            margin = (25.0 + i) if clean else (3.0 + i)
            if s == "drums" and t == "t1":
                margin = 30.0                       # a noisy stem that looks clean
            entries.append((t, s, _vols(s, 10.0 + margin, 10.0), False))
            labels[t][s] = ({"noisy": False, "kind": None} if clean else
                            {"noisy": True, "kind": "bleed", "level_db": -8.0 if i < 4 else -15.0})
    outputs = tmp_path / "outs"
    _write_volumes(outputs, entries)
    (data / "noise_labels.json").write_text(json.dumps(labels))
    return data, outputs, tracks, labels


def test_pool_layout_json_and_links(labelled, tmp_path):
    data, outputs, tracks, labels = labelled
    before = _snapshot(data)
    dest = tmp_path / "pool"
    sel = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=dest, progress=False)
    expected = {s: sorted(t for i, t in enumerate(tracks) if (i + k) % 2 == 0 or (s, t) == ("drums", "t1"))
                for k, s in enumerate(SOURCES)}
    assert sel.kept == expected
    assert json.loads((dest / f"labelnoise_track_clean_predicted_by_{SUFFIX}.json").read_text()) == expected
    pool = sorted(str(p.relative_to(dest / "train")) for p in (dest / "train").rglob("*") if p.is_file())
    assert pool == sorted(f"{s}/{t}.wav" for s, ts in expected.items() for t in ts)
    for s, ts in expected.items():
        for t in ts:
            copy, source = dest / "train" / s / f"{t}.wav", data / t / f"{s}.wav"
            assert copy.read_bytes() == source.read_bytes()
            assert copy.stat().st_ino != source.stat().st_ino
    saved = read_selection(dest)
    assert saved["complete"] and saved["kept"] == expected and saved["thresholds"] == {s: 20.0 for s in SOURCES}
    assert saved["settings"]["rule"] == "fixed" and saved["settings"]["value"] == 20.0

    linked = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "linked", link=True,
                    progress=False, report=False)
    assert linked.files["linked"] == sum(map(len, expected.values()))
    for s, ts in expected.items():
        for t in ts:
            link = tmp_path / "linked" / "train" / s / f"{t}.wav"
            assert link.stat().st_ino == (data / t / f"{s}.wav").stat().st_ino
    assert _snapshot(data) == before  # the source dataset is untouched (no new files, same bytes and mtimes)


def test_held_out_tracks_stay_out_of_the_pool(labelled, tmp_path):
    data, outputs, tracks, labels = labelled
    everything = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "all", progress=False,
                        report=False)
    sel = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "held", progress=False,
                 report=False, holdout=3)
    aside = held_out(tracks, 3)
    assert len(aside) == 3 and aside == held_out(reversed(tracks), 3)  # the names decide, not their order
    assert sel.held_out == {t: sorted(s for s in SOURCES if t in everything.kept[s]) for t in aside}
    for s in SOURCES:
        assert sel.kept[s] == [t for t in everything.kept[s] if t not in aside]
        assert sel.counts[s]["held_out"] == sum(t in everything.kept[s] for t in aside)
        assert not any((tmp_path / "held" / "train" / s / f"{t}.wav").exists() for t in aside)
    saved = read_selection(tmp_path / "held")
    assert saved["held_out"] == sel.held_out and saved["settings"]["holdout"] == 3
    with pytest.raises(ValueError, match="other settings"):  # the same DEST with another holdout
        select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "held", progress=False, holdout=2)
    with pytest.raises(ValueError, match="8 of 8 tracks would leave none"):
        held_out(tracks, 8)
    # auto: 15 % of the tracks, at least 2, at most 8; none for a handful.
    assert [holdout_count("auto", n) for n in (3, 8, 16, 24, 203)] == [0, 2, 2, 4, 8]
    assert holdout_count("5", 24) == 5
    with pytest.raises(ValueError, match="neither a number nor 'auto'"):
        holdout_count("some", 24)


def test_link_falls_back_to_copy_across_file_systems(labelled, tmp_path, monkeypatch):
    data, outputs, _, _ = labelled

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(pool_files.os, "link", cross_device)
    sel = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=tmp_path / "pool", link=True, progress=False,
                 report=False)
    n = sum(map(len, sel.kept.values()))
    assert sel.files == {"copied": n, "linked": 0, "existing": 0, "removed": 0}
    f = tmp_path / "pool" / "train" / "bass" / f"{sel.kept['bass'][0]}.wav"
    assert f.read_bytes() == (data / sel.kept["bass"][0] / "bass.wav").read_bytes()


def test_rerun_is_idempotent_and_other_settings_refused(labelled, tmp_path):
    data, outputs, _, _ = labelled
    dest = tmp_path / "pool"
    first = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=dest, progress=False)
    n = sum(map(len, first.kept.values()))
    files = _snapshot(dest / "train")
    (dest / "train" / "drums" / "t7.wav").write_bytes(b"left over")       # not kept (t7 drums is noisy)
    (dest / "train" / "bass" / ".t0.wav.tmp.x.wav").write_bytes(b"half")  # a killed copy's temp file
    again = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=dest, progress=False)
    assert again.files == {"copied": 0, "linked": 0, "existing": n, "removed": 2}
    assert _snapshot(dest / "train") == files
    for other in ({"threshold": "10"}, {"threshold": "auto"}, {"keep_fraction": 0.5}):
        with pytest.raises(ValueError, match="other settings"):
            select_clean_stems("m", 6, 200, data=data, outputs=outputs, dest=dest, progress=False, **other)
    with pytest.raises(ValueError, match="other settings"):
        select_clean_stems("m", 4, 200, "20", data=data, outputs=outputs, dest=dest, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user file")
    with pytest.raises(ValueError, match="not made by auto_filter"):
        select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=foreign, progress=False)


def test_never_writes_into_the_dataset(labelled, tmp_path):
    data, outputs, _, _ = labelled
    before = _snapshot(data)
    for dest in (data / "pool", data, data.parent):
        with pytest.raises(ValueError, match="overlaps the source dataset"):
            select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=dest, progress=False)
    with pytest.raises(ValueError, match="overlaps the filter's outputs"):
        select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=outputs / "drums" / "x", progress=False)
    assert _snapshot(data) == before
    with pytest.raises(ValueError, match="not in the dataset"):  # outputs of another dataset
        other = tmp_path / "other_data"
        _make_dataset(other, ["t0"])
        select_clean_stems("m", 6, 200, "20", data=other, outputs=outputs, dest=tmp_path / "p", progress=False)


def test_thresholds_on_bimodal_margins(tmp_path):
    rng = np.random.default_rng(1)
    low, high = rng.normal(-4, 1, 14), rng.normal(12, 1.5, 6)
    values = np.concatenate([low, high])
    t = otsu_threshold(values)
    assert low.max() < t < high.min()
    assert otsu_threshold([1.0] * 5) is None
    assert otsu_threshold([-np.inf, 0.0, 0.5, np.inf]) is not None
    # keep fraction: the best round(F x n), ties at the boundary left out.
    assert sum(values > keep_fraction_threshold(values, 0.25)) == 5
    assert sum(values > keep_fraction_threshold(values, 1.0)) == 20
    assert sum(np.array([1, 2, 2, 3.0]) > keep_fraction_threshold([1, 2, 2, 3.0], 0.5)) == 1

    data = tmp_path / "data"
    tracks = [f"t{i:02d}" for i in range(20)]
    _make_dataset(data, tracks)
    entries = [(t, s, _vols(s, 10.0 + values[i] + k, 10.0), False)
               for i, t in enumerate(tracks) for k, s in enumerate(SOURCES)]
    # vocals: only 3 stems measured -> Otsu over all sources pooled
    entries = [e for e in entries if e[1] != "vocals" or e[0] in ("t00", "t01", "t19")]
    outputs = tmp_path / "outs"
    _write_volumes(outputs, entries)
    auto = select_clean_stems("m", 6, 200, "otsu", data=data, outputs=outputs, dest=tmp_path / "auto", progress=False,
                  report=False)
    for k, s in enumerate(SOURCES[:3]):
        assert low.max() + k < auto.thresholds[s] < high.min() + k
        assert auto.kept[s] == [tracks[i] for i in range(14, 20)]
        assert auto.threshold_rules[s].startswith("otsu over 20")
    assert "pooled" in auto.threshold_rules["vocals"] and auto.counts["vocals"]["missing"] == 17
    assert auto.threshold_rules["vocals"].startswith("otsu over 63 stems of all sources pooled")
    frac = select_clean_stems("m", 6, 200, keep_fraction=0.25, data=data, outputs=outputs, dest=tmp_path / "frac", progress=False,
                  report=False)
    assert [len(frac.kept[s]) for s in SOURCES] == [5, 5, 5, 1]  # round(0.25 x 3) = 1
    best = np.argsort(values)[-5:]
    assert frac.kept["drums"] == sorted(tracks[i] for i in best)
    assert read_selection(tmp_path / "frac")["threshold_rules"]["bass"] == "keep fraction 0.25"
    with pytest.raises(ValueError, match="keep fraction"):
        Rule.parse("20", 1.5)
    with pytest.raises(ValueError, match="THRESHOLD"):
        Rule.parse("twenty")


def test_precision_without_the_stems_a_per_stem_filter_cannot_see(labelled, tmp_path):
    data, outputs, tracks, labels = labelled
    # At 5 dB the noisy stems of t3..t7 (margins 6..10) are kept too. Those of t4..t7 bleed at -15 dB: blind.
    m = select_clean_stems("m", 6, 200, "5", data=data, outputs=outputs, dest=tmp_path / "pool", progress=False,
               report=False).metrics
    assert m["overall"]["tp"] == 16 and m["overall"]["fp"] == 11
    assert m["blind"] == 8 and m["precision_ceiling"] == pytest.approx(16 / 24)
    j = m["judgeable"]
    assert (j["tp"], j["fp"], j["tn"]) == (16, 3, 5) and j["precision"] == pytest.approx(16 / 19)


def test_report_and_metrics_against_hand_counts(labelled, tmp_path):
    data, outputs, tracks, labels = labelled
    dest = tmp_path / "pool"
    sel = select_clean_stems("m", 6, 200, "20", data=data, outputs=outputs, dest=dest, progress=False)
    m = sel.metrics
    # drums: clean t0 t2 t4 t6 kept; noisy t1 kept too (margin 30); t3 t5 t7 left out.
    assert m["per_source"]["drums"] == {"tp": 4, "fp": 1, "fn": 0, "tn": 3, "precision": 0.8, "recall": 1.0,
                                        "f1": pytest.approx(2 * 0.8 / 1.8)}
    assert m["per_source"]["bass"]["precision"] == 1.0 and m["per_source"]["bass"]["recall"] == 1.0
    assert m["overall"]["tp"] == 16 and m["overall"]["fp"] == 1 and m["overall"]["precision"] == pytest.approx(16 / 17)
    assert m["per_kind"]["clean"] == {"total": 16, "kept": 16, "keep_rate": 1.0}
    assert m["per_kind"]["bleed"]["kept"] == 1 and m["per_kind"]["bleed >= -12 dB"]["total"] == 8
    # The sweep: at 2 dB everything is kept (precision = 16/32); above every margin nothing is.
    sweep = {r["threshold"]: r for r in m["sweep"]}
    lowest = min(sweep)
    assert lowest <= 3.0 and sweep[lowest]["precision"] == 0.5 and sweep[lowest]["recall"] == 1.0
    assert sweep[max(sweep)]["kept"] == 0 and sweep[max(sweep)]["precision"] is None
    assert read_selection(dest)["metrics"]["overall"]["precision"] == pytest.approx(16 / 17)

    for png in ("margins.png", "sweep.png"):
        assert (dest / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (dest / "report.md").read_text()
    assert "| drums | 20.00 | fixed | 5 | 8 |" in report and "| drums | 0.800 | 1.000 |" in report
    assert "Without the 8 noisy stems that no filter judging one stem at a time can see" in report
    assert "below 0.667 at any threshold" in report
    rows = (dest / "margins.csv").read_text().splitlines()
    assert rows[0] == "track,stem,margin_db,kept,silent,noisy,kind,whole_margin_db,window_margin_db,leak_z,leak_into"
    assert len(rows) == 1 + 32
    assert "t1,drums,30.0000,true,false,true,bleed,30.0000,,," in rows


def test_cli_with_the_original_arguments(tmp_path):
    data = tmp_path / "data" / "labelnoise"
    synth.generate(data, tracks=4, seconds=0.5, noise_rate=0.5, seed=3, samplerate=SR, progress=False)
    labels = json.loads((data / "noise_labels.json").read_text())
    # Stand-in volumes: clean stems come out 30 dB above the rest, noisy ones 5 dB.
    entries = [(t, s, _vols(s, 40.0 if not lab[s]["noisy"] else 15.0, 10.0), lab[s]["kind"] == "silent")
               for t, lab in labels.items() for s in SOURCES]
    _write_volumes(tmp_path / f"evaluator_outputs_{SUFFIX}", entries)
    run = subprocess.run([sys.executable, str(REPO / "auto_filter.py"), "m", "6", "200", "20", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    dest = tmp_path / "data" / f"labelnoise_clean_dataset_predicted_by_{SUFFIX}"
    kept = json.loads((dest / f"labelnoise_track_clean_predicted_by_{SUFFIX}.json").read_text())
    assert kept == {s: sorted(t for t, lab in labels.items() if not lab[s]["noisy"]) for s in SOURCES}
    assert read_selection(dest)["metrics"]["overall"]["precision"] == 1.0
    assert "precision 1.000, recall 1.000" in run.stderr
    for s, ts in kept.items():
        for t in ts:
            assert (dest / "train" / s / f"{t}.wav").read_bytes() == (data / t / f"{s}.wav").read_bytes()
    # Other settings into the same DEST: one error line, exit status 1.
    refused = subprocess.run([sys.executable, str(REPO / "auto_filter.py"), "m", "6", "200", "auto"],
                             cwd=tmp_path, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "other settings" in refused.stderr


def test_dry_run_writes_nothing(labelled, tmp_path):
    data, outputs, _, _ = labelled
    assert auto_filter.main(["m", "6", "200", "20", "--data", str(data), "--outputs", str(outputs),
                             "--dest", str(tmp_path / "dry"), "--dry-run", "--no-progress"]) == 0
    assert not (tmp_path / "dry").exists()


def test_auto_leaves_out_a_stem_leaking_where_its_source_does_not(tmp_path):
    # Twenty bass stems whose `other` output is about as loud as their own (margins near 0 dB, one
    # population: all above the -6 dB floor); in t07 the drums output is 15 dB louder than in the rest.
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    tracks = [f"t{i:02d}" for i in range(20)]
    _make_dataset(data, tracks)
    entries = []
    for i, t in enumerate(tracks):
        for s in SOURCES:
            vols = _vols(s, 50.0, 30.0 + rng.normal(0, 2))
            if s == "bass":
                vols.update(other=48.0 + rng.normal(0, 2), drums=(47.0 if t == "t07" else 32.0) + rng.normal(0, 1))
            entries.append((t, s, vols, False))
    outputs = tmp_path / "outs"
    _write_volumes(outputs, entries)
    sel = select_clean_stems("m", 6, 200, "auto", data=data, outputs=outputs, dest=tmp_path / "pool", progress=False)
    assert sel.kept["bass"] == [t for t in tracks if t != "t07"]
    assert sel.leak_tests["bass"].startswith("1 leak beyond 3 MADs of the source's median (into drums)")
    assert read_selection(tmp_path / "pool")["leak_tests"] == sel.leak_tests
    assert [len(sel.kept[s]) for s in ("drums", "other", "vocals")] == [20, 20, 20]
    rows = {(r.split(",")[0], r.split(",")[1]): r for r in (tmp_path / "pool" / "margins.csv").read_text().splitlines()}
    assert rows[("t07", "bass")].endswith(",drums") and ",false," in rows[("t07", "bass")]
    report = (tmp_path / "pool" / "report.md").read_text()
    assert "by more than 3 MADs" in report and "| leak test |" in report
    # A number as THRESHOLD is the original's rule alone: no leak test.
    fixed = select_clean_stems("m", 6, 200, "-10", data=data, outputs=outputs, dest=tmp_path / "fixed",
                               progress=False, report=False)
    assert "t07" in fixed.kept["bass"] and fixed.leak_tests == {}
