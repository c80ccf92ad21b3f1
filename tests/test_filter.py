"""filter.py: the pitch/tempo change, volumes per stem, the output folder, torchrun, resume after kill -9,
and a stand-in separator that knows the ground truth (synthetic data, a tiny model, 16 kHz)."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import filter as filter_cli
from labelnoise import SOURCES
from labelnoise import volumes as vol
from labelnoise.audio import AudioError, read_audio
from labelnoise.checkpoint import load_model, save_model
from labelnoise.config import build_model, load_config
from labelnoise.filter_input import shift_stem
from labelnoise.filter_worklist import share_out
from labelnoise.filter_records import rank_file
from labelnoise.filtering import FilterError, run_filter
from labelnoise.stem_record import Stem
from labelnoise.synth import clean_track, generate

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # One torch thread, as in the subprocesses below, so in-process and
    # subprocess runs do the same arithmetic (and a busy 2-core machine does
    # not stall on thread hand-offs).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """The tiny config's HTDemucs (configs/tiny), 1 s segments, random weights."""
    torch.manual_seed(0)
    model = build_model(load_config(ROOT / "configs/tiny/step1.yaml", ["model.segment=1"]))
    path = tmp_path_factory.mktemp("model") / "tiny.th"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 tracks x 4 s; track_001/bass all zeros, track_002/vocals at -100 dB (both silent), track_002/drums missing."""
    root = tmp_path_factory.mktemp("data") / "set"
    generate(root, tracks=3, seconds=4, noise_rate=0.5, seed=0, samplerate=RATE, progress=False)
    frames = 4 * RATE
    sf.write(str(root / "track_001" / "bass.wav"), np.zeros((frames, 2), np.float32), RATE, subtype="FLOAT")
    quiet = 1e-5 * np.random.default_rng(0).standard_normal((frames, 2)).astype(np.float32)
    sf.write(str(root / "track_002" / "vocals.wav"), quiet, RATE, subtype="FLOAT")
    (root / "track_002" / "drums.wav").unlink()
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data, model_file):
    """One uninterrupted in-process run: {(track, stem): record}."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = run_filter(data, out, load_model(model_file), progress=False)
    assert (summary.done, summary.silent, summary.missing, summary.bad) == (11, 2, 1, 0)
    return records(out)


def records(out: Path) -> dict:
    lines = (out / "volumes.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    keys = [(r["track"], r["stem"]) for r in recs]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), "sorted, one record per stem"
    return dict(zip(keys, recs))


def assert_same_records(got: dict, want: dict, tol_db: float = 1e-4):
    assert set(got) == set(want)
    for key, rec in want.items():
        assert got[key]["silent"] == rec["silent"] and got[key]["seconds"] == rec["seconds"], key
        for source, value in rec["volumes"].items():
            other = got[key]["volumes"][source]
            assert other == value or abs(other - value) <= tol_db, (key, source, other, value)


def env() -> dict:
    out = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(key, None)
    return out


def cli_args(model_file, data, out, *extra) -> list[str]:
    return ["--model", str(model_file), "--data", str(data), "--out", str(out), "--device", "cpu", *extra]


# ---------------------------------------------------------------- the pitch/tempo change

def test_shift_stem_raises_pitch_and_halves_length():
    t = np.arange(2 * RATE) / RATE
    tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    out = shift_stem(tone, RATE, key=6, speed=200)
    assert out.shape[0] == 2 and abs(out.shape[1] - RATE) <= 64
    spectrum = np.abs(np.fft.rfft(out[0, RATE // 4:3 * RATE // 4]))
    peak_hz = np.argmax(spectrum) * RATE / (RATE // 2)
    assert abs(peak_hz - 440 * 2 ** 0.5) < 10  # +6 semitones = x sqrt(2): 622 Hz
    same = shift_stem(tone, RATE, key=0, speed=100)
    assert np.array_equal(same, tone) and same is not tone
    with pytest.raises(ValueError, match="speed"):
        shift_stem(tone, RATE, key=6, speed=0)


# ---------------------------------------------------------------- one process, the folder

def test_cli_end_to_end_save_audio(tmp_path, data, model_file, reference):
    out = tmp_path / "out"
    assert filter_cli.main(cli_args(model_file, data, out, "--save-audio")) == 0
    got = records(out)
    assert_same_records(got, reference)
    assert not list(out.glob("volumes.rank*.jsonl"))  # merged away
    settings = json.loads((out / "filter.json").read_text())
    assert settings["model"] == str(model_file.resolve())
    assert (settings["key"], settings["speed"], settings["mode"], settings["shifts"],
            settings["samplerate"]) == (6, 200, "overlap", 1, RATE)

    # The seed's layout, and volumes measured from the files equal the records.
    for (track, stem), rec in got.items():
        for source in SOURCES:
            wav = read_audio(out / stem / track / f"{source}.wav", channels=None)
            assert abs(vol.volume_db(wav) - rec["volumes"][source]) < 1e-3 or (
                vol.volume_db(wav) == rec["volumes"][source])
    # Silent stems: the stem itself stands for all four outputs (equal volumes).
    assert got[("track_001", "bass")]["silent"] and got[("track_002", "vocals")]["silent"]
    assert set(got[("track_001", "bass")]["volumes"].values()) == {-math.inf}
    quiet = got[("track_002", "vocals")]["volumes"]
    assert len(set(quiet.values())) == 1 and math.isfinite(quiet["vocals"])
    own = read_audio(data / "track_002" / "vocals.wav", channels=None)
    assert np.array_equal(read_audio(out / "vocals" / "track_002" / "drums.wav", channels=None), own)
    assert ("track_002", "drums") not in got  # missing file: skipped
    # Non-silent stems: a separation, not copies of the input.
    loud = got[("track_000", "vocals")]["volumes"]
    assert not got[("track_000", "vocals")]["silent"] and len(set(loud.values())) == 4


def test_default_out_dir_name(tmp_path, data, model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert filter_cli.main(["--model", str(model_file), "--data", str(data), "--device", "cpu",
                            "--key", "3", "--speed", "150"]) == 0
    assert (tmp_path / "evaluator_outputs_tiny_key3_speed150" / "volumes.jsonl").is_file()


def test_resume_skips_recorded_and_other_settings_are_refused(tmp_path, data, model_file, reference):
    out = tmp_path / "out"
    model = load_model(model_file)
    run_filter(data, out, model, progress=False, model_name="tiny")
    # Drop one record, leave a killed writer's torn line in a rank file: the
    # re-run recomputes that stem only, and the torn line disappears.
    lines = (out / "volumes.jsonl").read_text().splitlines(keepends=True)
    (out / "volumes.jsonl").write_text("".join(lines[1:]))
    rank_file(out, 0).write_text(lines[0][:25])
    again = run_filter(data, out, model, progress=False, model_name="tiny")
    assert (again.done, again.already) == (1, 10)
    assert_same_records(records(out), reference)
    assert not rank_file(out, 0).exists()

    nothing = run_filter(data, out, model, progress=False, model_name="tiny")
    assert (nothing.done, nothing.already) == (0, 11)
    with pytest.raises(FilterError, match="key: 6 there, 5 now"):
        run_filter(data, out, model, key=5, progress=False, model_name="tiny")
    with pytest.raises(FilterError, match="model"):
        run_filter(data, out, model, progress=False, model_name="other.th")
    # The command line says so and exits 1.
    assert filter_cli.main(cli_args(model_file, data, out, "--speed", "150")) == 1


def test_plain_mode_the_second_filter(tmp_path, data, model_file, reference):
    out = tmp_path / "out"
    summary = run_filter(data, out, load_model(model_file), mode="plain", shifts=0, progress=False)
    assert summary.done == 11
    got = records(out)
    assert json.loads((out / "filter.json").read_text())["mode"] == "plain"
    assert got[("track_000", "vocals")]["volumes"] != reference[("track_000", "vocals")]["volumes"]
    with pytest.raises(FilterError, match="plain mode has no shifts"):
        run_filter(data, tmp_path / "other", load_model(model_file), mode="plain", shifts=1, progress=False)
    with pytest.raises(SystemExit) as exc:
        filter_cli.parse_args(cli_args(model_file, data, out, "--mode", "plain", "--shifts", "1"))
    assert exc.value.code == 2
    assert filter_cli.parse_args(cli_args(model_file, data, out, "--mode", "plain")).shifts == 0


def test_volumes_without_settings_are_refused(tmp_path, data):
    out = tmp_path / "out"
    out.mkdir()
    (out / "volumes.jsonl").write_text("")
    with pytest.raises(FilterError, match="no filter.json"):
        run_filter(data, out, lambda wav, track, stem: np.stack([wav] * 4), samplerate=RATE, progress=False)


def test_unreadable_stem_stops_the_run_or_is_skipped_and_counted(tmp_path, data):
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "track_000" / "other.wav").write_bytes(b"RIFF not really a wav file")
    halves = lambda wav, track, stem: np.stack([wav / 2, wav / 4, wav / 8, wav / 16])  # noqa: E731
    with pytest.raises(AudioError, match="track_000/other.wav"):
        run_filter(broken, tmp_path / "a", halves, samplerate=RATE, progress=False)
    assert not (tmp_path / "a" / "volumes.jsonl").exists()
    summary = run_filter(broken, tmp_path / "b", halves, samplerate=RATE, skip_bad=True, progress=False)
    assert (summary.done, summary.bad, summary.missing, summary.skipped) == (10, 1, 1, 2)
    assert ("track_000", "other") not in records(tmp_path / "b")
    # A callable separator's outputs are measured as returned: 1/2 .. 1/16 of the shifted stem.
    rec = records(tmp_path / "b")[("track_000", "bass")]["volumes"]
    assert rec["drums"] - rec["bass"] == pytest.approx(20 * math.log10(2), abs=1e-6)


def test_separator_output_of_the_wrong_shape_is_an_error(tmp_path, data):
    with pytest.raises(FilterError, match="expected \\(4, channels, time\\)"):
        run_filter(data, tmp_path / "out", lambda wav, track, stem: wav, samplerate=RATE, progress=False)


def test_share_out_balances_durations_and_mixes_stem_kinds():
    stems = [Stem(f"t{i}", s, Path(f"t{i}/{s}.wav"), 10.0 + (i % 3)) for i in range(12) for s in SOURCES]
    shares = share_out(stems, 4)
    assert share_out(stems, 4) == shares  # every rank computes the same split
    assert sorted((p.track, p.stem) for share in shares for p in share) == sorted((p.track, p.stem) for p in stems)
    loads = [sum(p.seconds for p in share) for share in shares]
    assert max(loads) - min(loads) <= 12.0
    assert all(len({p.stem for p in share}) > 1 for share in shares)  # not one kind per rank


# ---------------------------------------------------------------- torchrun and kill -9

def test_two_processes_equal_one(tmp_path, data, model_file, reference):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "filter.py"), *cli_args(model_file, data, out)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_records(records(out), reference)
    assert not list(out.glob("volumes.rank*.jsonl"))
    assert "filtered 11 stems (2 silent)" in result.stderr  # rank 0 sums every rank's counts


def test_kill_9_then_the_same_command_records_every_pair_once(tmp_path, data, model_file, reference):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "filter.py"), *cli_args(model_file, data, out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not (rank_file(out, 0).is_file() and rank_file(out, 0).read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert proc.poll() is None, "finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "volumes.jsonl").exists()
    partial = len(list(vol.read_records(rank_file(out, 0))))
    assert 1 <= partial < 11
    result = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{partial} already recorded" in result.stderr
    assert_same_records(records(out), reference)


# ---------------------------------------------------------------- a separator that knows the truth

def content(root: Path, label: dict, clean: np.ndarray, track: str, stem: str) -> dict:
    """What a stem file holds, by source slot: ``{source: (C, T)}`` (from the synthetic ground truth)."""
    wav = read_audio(root / track / f"{stem}.wav", channels=None)
    own = clean[SOURCES.index(stem)]
    kind = label["kind"]
    if kind in (None, "other_song"):
        # Another song's drums are still drums: they belong in the drums slot.
        return {stem: wav}
    if kind == "swap":
        return {label["holds"]: wav}
    if kind == "bleed":
        return {stem: own, label["source"]: wav - own}
    if kind == "partial":
        a, b = round(label["start"] * RATE), round(label["end"] * RATE)
        mask = np.zeros(wav.shape[-1], np.float32)
        mask[a:b] = 1
        return {stem: own * (1 - mask), label["holds"]: clean[SOURCES.index(label["holds"])] * mask}
    return {}  # silent: all zeros


def test_stand_in_separator_with_the_ground_truth(tmp_path):
    root = tmp_path / "data"
    labels = json.loads(generate(root, tracks=12, seconds=1.5, noise_rate=0.5, seed=4, samplerate=RATE,
                                 kinds=dict(bleed=4, swap=2, other_song=1, partial=1, silent=0.5),
                                 progress=False).read_text())
    params = json.loads((root / "synth.json").read_text())
    cleans = {t: clean_track(params["seed"], i, seconds=1.5, samplerate=RATE) for i, t in enumerate(params["tracks"])}

    def truth(wav, track, stem):
        parts = content(root, labels[track][stem], cleans[track], track, stem)
        out = np.zeros((len(SOURCES), *wav.shape), np.float32)
        for source, part in parts.items():
            shifted = shift_stem(part, RATE, 6, 200)  # the same change the filter made
            out[SOURCES.index(source), :, :shifted.shape[-1]] = shifted[:, :wav.shape[-1]]
        return out

    run_filter(root, tmp_path / "out", truth, samplerate=RATE, model_name="truth", progress=False)
    # The seed's threshold. With the L1 volume, a leak of drums (peaky) into a
    # sustained stem measures several dB quieter than its RMS level says: a
    # -8.4 dB drum bleed into bass measured a 14.3 dB margin, so 10 dB would call it clean.
    threshold = 20.0
    decided = {}
    for (track, stem), rec in records(tmp_path / "out").items():
        label = labels[track][stem]
        clean = vol.is_clean(rec["volumes"], stem, threshold)
        if clean is None:
            assert label["kind"] == "silent"  # all-zero stems: no decision
            continue
        decided[(track, stem)] = (label, clean)

    truly = [c for lab, c in decided.values() if not lab["noisy"]]
    assert len(truly) >= 15
    for name, kind_of in {"swap": lambda lab: lab["kind"] == "swap",
                          "bleed louder than -12 dB": lambda lab: lab["kind"] == "bleed" and lab["level_db"] > -12,
                          "partial": lambda lab: lab["kind"] == "partial"}.items():
        noisy = [c for lab, c in decided.values() if kind_of(lab)]
        assert len(noisy) >= 3, name
        # Precision and recall of "clean" among the clean stems and the stems of this kind.
        tp, fp = sum(truly), sum(noisy)
        precision, recall = tp / max(tp + fp, 1), tp / len(truly)
        assert precision >= 0.95 and recall >= 0.95, (name, precision, recall)
    # other_song: a perfect separator puts another song's vocals in the vocals
    # slot, so the stem looks clean. Only a model's failure to separate an
    # unfamiliar song could reveal it; the ground truth cannot.
    other_song = [c for lab, c in decided.values() if lab["kind"] == "other_song"]
    assert other_song and all(other_song)
