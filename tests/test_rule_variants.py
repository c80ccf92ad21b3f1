"""bench/rule_variants.py on hand-built filter runs: each variant's decisions, counted against the labels."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from labelnoise import SOURCES, leaks, thresholds, volumes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import rule_variants  # noqa: E402


def _filter_run(root: Path, name: str, bass_margin, drums_leak, labels) -> Path:
    """A dataset of 20 tracks with noise_labels.json, and a filter run over it (filter.json, volumes.jsonl).

    Every stem but bass is clearly clean; bass stem i has margin ``bass_margin(i)`` against ``other`` and
    its drums output ``drums_leak(i)`` dB against its own."""
    data, outputs = root / name / "data", root / name / "outputs"
    tracks = [f"t{i:02d}" for i in range(20)]
    for t in tracks:
        (data / t).mkdir(parents=True)
        for s in SOURCES:
            sf.write(str(data / t / f"{s}.wav"), np.full((400, 2), 0.1, np.float32), 8000, subtype="PCM_16")
    (data / "noise_labels.json").write_text(json.dumps(
        {t: {s: labels.get((i, s), {"noisy": False, "kind": None}) for s in SOURCES} for i, t in enumerate(tracks)}))
    outputs.mkdir(parents=True)
    rng = np.random.default_rng(3)
    with open(outputs / "volumes.jsonl", "w") as f:
        for i, t in enumerate(tracks):
            for s in SOURCES:
                vols = {o: 50.0 if o == s else 30.0 + rng.normal(0, 1) for o in SOURCES}
                if s == "bass":
                    vols.update(other=50.0 - bass_margin(i), drums=50.0 + drums_leak(i))
                volumes.append_record(f, volumes.record(t, s, vols, silent=False, seconds=0.05))
    (outputs / "filter.json").write_text(json.dumps({"data": str(data.resolve()), "key": 6, "speed": 200}))
    return outputs


def test_variants_decide_the_recorded_margins_and_count_them(tmp_path):
    spread = np.linspace(-6.0, 6.0, 20)
    # Noisy set: bass margins one wide population around +3 dB; t05 a clean stem reaching -8 dB (below
    # the floor, not 3 MADs under the median), t10 a swap at -15 dB (3 MADs under), t15 a misgroup whose margin looks clean
    # but whose drums output is 15 dB louder against its own than in the other stems.
    margin = {5: -8.0, 10: -15.0}
    noisy = _filter_run(tmp_path, "noisy", lambda i: margin.get(i, 3.0 + spread[i]),
                        lambda i: -5.0 if i == 15 else -20.0 + spread[i] / 4,
                        {(10, "bass"): {"noisy": True, "kind": "swap"},
                         (15, "bass"): {"noisy": True, "kind": "misgroup"}})
    # A clean twin: the same population, t05 and t06 at -8 dB.
    twin = _filter_run(tmp_path, "twin", lambda i: -8.0 if i in (5, 6) else 3.0 + spread[i],
                       lambda i: -20.0 + spread[i] / 4, {})
    before = (thresholds.OUTLIER_MADS, leaks.LEAK_Z)
    runs = rule_variants.filter_runs([tmp_path])
    assert runs == [noisy, twin]
    results = {label: rule_variants.summary([rule_variants.decide(run, values) for run in runs])
               for label, values in rule_variants.VARIANTS.items()}
    assert (thresholds.OUTLIER_MADS, leaks.LEAK_Z) == before     # the constants are put back

    auto, floor, no_leak = results["auto"], results["floor"], results["no leak test"]
    assert auto["noisy_cases"] == 1 and auto["twin_cases"] == 1
    assert auto["clean"] == 78                                   # 80 stems less the two noisy ones
    assert auto["clean_kept"] == 78 and auto["kinds"]["swap"] == [0, 1] and auto["kinds"]["misgroup"] == [0, 1]
    assert auto["precision"] == 1.0 and auto["twin_sources_short"] == 0 and auto["twin_sources"] == 4
    # The floor alone drops t05, and 18 of the twin's 20 bass stems is below 95 %.
    assert floor["clean_kept"] == 77 and floor["twin_sources_short"] == 1
    # Without the leak test the misgroup is kept.
    assert no_leak["kinds"]["misgroup"] == [1, 1]
    assert math.isclose(no_leak["precision"], 78 / 79)

    out = tmp_path / "variants.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench/rule_variants.py"), str(tmp_path),
                           "--variant", "strict:OUTLIER_MADS=0,LEAK_Z=2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 filter runs: 1 on noisy sets, 1 on clean twins" in done.stdout
    assert "| floor | 77/78 | 0/1 | 0/1 |" in done.stdout
    written = json.loads(out.read_text())
    assert written["strict"]["clean_kept"] <= 77
    # The labels' best: every clean stem and neither noisy one (the misgroup is the leak test's outlier).
    assert written[rule_variants.LABELS_BEST]["clean_kept"] == 78 and written[rule_variants.LABELS_BEST]["precision"] == 1.0
    assert "| labels' best | 78/78 |" in done.stdout

    bad = subprocess.run([sys.executable, str(ROOT / "bench/rule_variants.py"), str(tmp_path),
                          "--variant", "x:FLOOR=1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'FLOOR' is not one of OUTLIER_MADS" in bad.stderr


def test_labels_best_thresholds_take_the_highest_precision_at_the_recall_asked():
    from labelnoise.stem_record import Stem

    def stem(track, source, margin, kind=None):
        label = {"noisy": kind is not None, "kind": kind}
        return Stem(track, source, margin=margin, label=label)
    # bass: ten clean stems at 10 .. 1 dB and two noisy ones at 8.5 and 1.5; vocals: clean at 5 .. 2 dB and
    # a swap at -10. Recall 0.8 of the 14 clean stems asks for 12: the four vocals and at least 8 bass.
    # Bass down to 3 dB keeps the misgroup too (12/13), down to 2 dB the same (13/14), all of it both
    # noisy stems (14/16): the best threshold lies between 1.5 and 2 dB.
    bass = [stem(f"t{i}", "bass", float(10 - i)) for i in range(10)]
    bass += [stem("n1", "bass", 8.5, "misgroup"), stem("n2", "bass", 1.5, "swap")]
    vocals = [stem(f"t{i}", "vocals", float(5 - i)) for i in range(4)] + [stem("n1", "vocals", -10.0, "swap")]
    # A blind stem (other_song) counts for neither side, wherever its margin lies.
    blind = stem("n3", "vocals", 9.0, "other_song")
    chosen = rule_variants.best_thresholds(bass + vocals + [blind])
    assert 1.5 < chosen["bass"] < 2.0 and -10.0 < chosen["vocals"] < 2.0
    # Recall 1.0 takes every clean stem, and so both noisy bass stems.
    assert rule_variants.best_thresholds(bass + vocals, recall=1.0)["bass"] < 1.0
    # A source of clean stems only keeps them all.
    assert rule_variants.best_thresholds(vocals[:4])["vocals"] < 2.0
    # An infinite margin (every other output all zero) is kept by the chosen threshold, -inf by none.
    chosen = rule_variants.best_thresholds([stem("t9", "drums", math.inf), stem("n8", "drums", 3.0, "swap")])
    assert 3.0 < chosen["drums"] < math.inf
    chosen = rule_variants.best_thresholds([stem("t9", "drums", 3.0), stem("n8", "drums", -math.inf, "swap")])
    assert chosen["drums"] < 3.0
