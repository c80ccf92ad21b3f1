"""Bad input and faults through the real command lines, each run as a subprocess.

Every case asserts the exit code, the one line that explains it (the words it
must hold), no traceback on stderr, and that its input folders are byte for
byte what they were (sha256 over names, link targets and contents). Crafted
pickles never run: each would create MARKER (a control test shows that each
does when loaded without weights_only). Kills are real SIGKILLs of the real
CLI process, sent from inside it at a chosen point (the nth call of a write),
so the state they leave is the same on every run. Read-only and full output
folders are small tmpfs mounts: root only, skipped with the reason otherwise.

Data: two 2-second tracks at 16 kHz from labelnoise.synth, copied and broken
per case; one training run (configs/tiny, 1 epoch) gives the checkpoints.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from labelnoise import SOURCES

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"
SR = 16000
QUICK = ["optim.epochs=1", "augment.repitch.proba=0"]


# ---------------------------------------------------------------- running and checking

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def env(work) -> dict:
    # create_metadata's default output goes here, never into the checkout.
    return {**os.environ, "LABELNOISE_METADATA_DIR": str(work / "metadata"), "PYTHONUNBUFFERED": "1"}


def cli(env, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def tree_sha(*folders: Path) -> str:
    """sha256 over every name, link target and file content under the folders (links not followed)."""
    h = hashlib.sha256()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]):
                path = Path(dirpath, name)
                h.update(str(path.relative_to(folder)).encode())
                h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return h.hexdigest()


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def _is_error(line: str) -> bool:
    return " ERROR " in line or line.startswith("ERROR ") or ": error: " in line


def check(result: subprocess.CompletedProcess, code: int, *words: str, extra_errors: int = 0) -> str:
    """Exit ``code``, no traceback, and the one line holding all ``words``: the error line, or (exit 0) a log line."""
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out[-3000:]
    assert result.returncode == code, f"exit {result.returncode}, expected {code}\n{out[-3000:]}"
    errors = [line for line in _lines(result.stderr) if _is_error(line)]
    if code == 0:
        assert not errors, errors
        candidates = _lines(out)
    else:
        assert 1 <= len(errors) <= 1 + extra_errors, errors
        candidates = errors
    matching = [line for line in candidates if all(w in line for w in words)]
    assert matching, f"no line holds {words}:\n" + "\n".join(candidates[-20:])
    return matching[0]


def unchanged(*folders: Path):
    """Context: the folders' sha256 after equals the one before."""
    class Guard:
        def __enter__(self):
            self.before = tree_sha(*folders)

        def __exit__(self, *exc):
            if exc[0] is None:
                assert tree_sha(*folders) == self.before, f"an input folder changed: {folders}"
    return Guard()


# Runs SCRIPT ARGS... with MODULE.ATTR replaced. ACTION "kill": its NTH call writes a little to
# any file object among its arguments, then the process SIGKILLs itself (a real kill -9 at a
# fixed point). ACTION "wait=PATH": its NTH call first waits until PATH exists.
DRIVER = r"""
import importlib, os, runpy, signal, sys, time
module, attr, nth, action, script, *args = sys.argv[1:]
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
calls = [0]
def patched(*a, **k):
    calls[0] += 1
    if calls[0] == int(nth) and action.startswith("wait="):
        while not os.path.exists(action[5:]):
            time.sleep(0.05)
    elif calls[0] == int(nth):
        for f in a:
            if hasattr(f, "write") and hasattr(f, "flush"):
                try:
                    f.write(b"PK\x03\x04 cut")
                except TypeError:
                    f.write('{"track": "cut')
                f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*a, **k)
setattr(owner, name, patched)
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def driven(module: str, attr: str, nth: int, action: str, script: str, *args) -> list:
    return [sys.executable, "-c", DRIVER, module, attr, str(nth), action, script, *map(str, args)]


def killed_at(env, module: str, attr: str, nth: int, script: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run(driven(module, attr, nth, "kill", script, *args), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return result


# ---------------------------------------------------------------- data

def write_wav(path: Path, wav: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, rate, subtype=subtype)


def stereo(seconds: float = 2.0, rate: int = SR, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * rate), 2))).astype(np.float32)


@pytest.fixture(scope="module")
def good(work, env) -> Path:
    out = work / "good"
    result = cli(env, "-m", "labelnoise.synth", "--out", out, "--tracks", 2, "--seconds", 2,
                 "--samplerate", SR, "--seed", 0)
    check(result, 0)
    return out


def dataset(work: Path, good: Path, name: str, tracks: int = 2) -> Path:
    """A fresh copy of the first ``tracks`` track folders of the good dataset (no labels)."""
    root = work / name
    assert not root.exists(), root
    for track in sorted(p for p in good.iterdir() if p.is_dir())[:tracks]:
        shutil.copytree(track, root / track.name)
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def one(work, good) -> Path:
    """One track: what the filter runs on (a stem takes seconds on a loaded CPU)."""
    return dataset(work, good, "one", tracks=1)


def truncate_wav(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each irregular stem, written into a third track "odd" of its own dataset: (name, writer).
def _odd(kind: str, folder: Path) -> None:
    for s in SOURCES:
        write_wav(folder / f"{s}.wav", stereo(seed=SOURCES.index(s) + 7))
    target = folder / "bass.wav"
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "random_bytes":
        target.write_bytes(np.random.default_rng(0).bytes(20000))
    elif kind == "truncated":
        truncate_wav(target)
    elif kind == "mono":
        write_wav(target, stereo()[:, :1])
    elif kind == "other_rate":
        write_wav(target, stereo(rate=22050), rate=22050)
    elif kind == "other_length":
        write_wav(target, stereo(seconds=1.25))
    elif kind in ("nan", "inf"):
        wav = stereo()
        wav[1000:1010, 0] = np.nan if kind == "nan" else np.inf
        write_wav(target, wav, subtype="FLOAT")
    elif kind == "silent":
        write_wav(target, np.zeros((2 * SR, 2), np.float32))
    elif kind == "missing":
        target.unlink()
    elif kind == "extra":
        write_wav(folder / "piano.wav", stereo())
    elif kind == "four_channels":
        write_wav(target, np.zeros((2 * SR, 4), np.float32) + 0.1)
    elif kind == "symlink_loop":
        target.unlink()
        target.symlink_to(target.name)  # bass.wav -> bass.wav
    else:
        raise ValueError(kind)


# kind -> (words the create_metadata line about it holds)
AUDIO_CASES = {
    "empty": ("odd/bass.wav", "empty file"),
    "random_bytes": ("odd/bass.wav", "not readable as audio"),
    "truncated": ("odd/bass.wav", "truncated: its header announces 32000 frames"),
    "nan": ("odd/bass.wav", "holds 10 NaN or infinite sample(s)"),
    "inf": ("odd/bass.wav", "holds 10 NaN or infinite sample(s)"),
    "four_channels": ("odd/bass.wav", "has 4 channels"),
    "missing": ("track odd has no bass",),
    "symlink_loop": ("track odd has no bass",),
    "extra": ("track odd: piano.wav not a source name",),
    "other_length": ("track odd: stems of unequal length", "bass 1.25"),
    "mono": ("bass", "3 files", "1 mono"),
    "other_rate": ("bass", "3 files", "sample rates {'16000': 2, '22050': 1}"),
    "silent": ("bass", "3 files", "1 silent"),
}


@pytest.mark.parametrize("kind", AUDIO_CASES)
def test_create_metadata_reports_each_irregular_stem(kind, work, good, env):
    root = dataset(work, good, f"audio_{kind}")
    _odd(kind, root / "odd")
    out = work / f"meta_{kind}.json"
    with unchanged(root):
        result = cli(env, "create_metadata.py", root, "--out", out)
    check(result, 0, *AUDIO_CASES[kind])
    meta = json.loads(out.read_text())
    refused = kind in ("empty", "random_bytes", "truncated", "nan", "inf", "four_channels")
    assert ("odd/bass.wav" in meta["errors"]) == refused
    assert ("odd/bass.wav" in meta["files"]["bass"]) == (not refused and kind not in ("missing", "symlink_loop"))


def test_create_metadata_unicode_paths(work, good, env):
    root = work / "dätä ü"
    shutil.copytree(good / "track_000", root / "trâck_ö")
    out = work / "unicode.json"
    with unchanged(root):
        result = cli(env, "create_metadata.py", root, "--out", out)
    check(result, 0, "drums", "1 files")
    assert "trâck_ö/drums.wav" in json.loads(out.read_text())["files"]["drums"]


def test_create_metadata_missing_folder(work, env):
    check(cli(env, "create_metadata.py", work / "no_such_data"), 1, "no_such_data", "dataset folder not found")


@pytest.fixture(scope="module")
def zoo(work, good) -> Path:
    """The good tracks plus one track for every irregular stem (odd_<kind>)."""
    root = dataset(work, good, "zoo")
    for kind in AUDIO_CASES:
        _odd(kind, root / f"odd_{kind}")
    return root


# ---------------------------------------------------------------- training: configs and data

def train_args(work: Path, data: Path, name: str, *extra: str) -> list:
    return ["train.py", TINY / "step1.yaml", f"data.root={data}", f"run.root={work / 'runs'}",
            f"run.name={name}", *QUICK, *extra, "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(work, good, env) -> Path:
    """The one trained run: model.th and checkpoint.th for every checkpoint case."""
    result = cli(env, *train_args(work, good, "trained"))
    check(result, 0, "done (1 epochs")
    return work / "runs" / "trained"


CONFIG_CASES = {
    "batch_size_0": (["optim.batch_size=0"], "optim.batch_size must be an integer >= 1, got 0"),
    "batch_size_negative": (["optim.batch_size=-4"], "optim.batch_size must be an integer >= 1, got -4"),
    "trunc_ratio_above_1": (["optim.trunc_ratio=1.5"], "optim.trunc_ratio must be a number > 0 and <= 1"),
    "lr_negative": (["optim.lr=-1"], "optim.lr must be a number > 0, got -1"),
    "segment_0": (["data.segment=0"], "data.segment must be a number > 0, got 0"),
    "unknown_key": (["optim.batchsize=4"], "unknown config key 'optim.batchsize' (did you mean 'optim.batch_size'?)"),
    "wrong_type": (["optim.lr=fast"], "'optim.lr' must be a number", "got a string"),
    "not_a_choice": (["optim.loss=l3"], "optim.loss must be one of"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_train_refuses_bad_config_before_any_run_dir(case, work, good, env):
    overrides, *words = CONFIG_CASES[case]
    with unchanged(good):
        result = cli(env, *train_args(work, good, f"cfg_{case}", *overrides))
    check(result, 2, *words)
    assert not (work / "runs" / f"cfg_{case}").exists()


@pytest.mark.parametrize("case", ["extends_cycle", "missing_file", "missing_extends"])
def test_train_refuses_bad_config_files(case, work, good, env):
    folder = work / f"configs_{case}"
    folder.mkdir()
    config = folder / "stage.yaml"
    if case == "extends_cycle":
        config.write_text("extends: other.yaml\n")
        (folder / "other.yaml").write_text("extends: stage.yaml\n")
        words = ("extends itself",)
    elif case == "missing_extends":
        config.write_text("extends: nowhere.yaml\n")
        words = ("nowhere.yaml: file not found",)
    else:
        words = ("stage.yaml: file not found",)
    args = train_args(work, good, f"cfgfile_{case}")
    args[1] = config
    with unchanged(good):
        check(cli(env, *args), 2, *words)
    assert not (work / "runs" / f"cfgfile_{case}").exists()


def test_train_data_root_missing(work, env):
    result = cli(env, *train_args(work, work / "no_data_here", "no_data"))
    check(result, 1, "no_data_here", "not found")
    assert not (work / "runs" / "no_data").exists()


def test_train_on_irregular_stems_skips_and_counts_them(work, zoo, env):
    with unchanged(zoo):
        result = cli(env, *train_args(work, zoo, "zoo"))
    check(result, 0, "6 unusable file(s) skipped")
    check(result, 0, "track(s) without all of drums/bass/other/vocals skipped")
    assert (work / "runs" / "zoo" / "model.th").is_file()


def test_train_every_step_non_finite_fails_without_model(work, good, env):
    # Finite files, but drums at 3e38 make every mixture overflow: every step is skipped.
    root = dataset(work, good, "overflow")
    for track in root.iterdir():
        write_wav(track / "drums.wav", np.full((2 * SR, 2), 3e38, np.float32), subtype="FLOAT")
    with unchanged(root):
        result = cli(env, *train_args(work, root, "overflow"))
    check(result, 1, "every one of the 1 steps had a non-finite loss", "no model.th is written")
    run = work / "runs" / "overflow"
    assert not (run / "model.th").exists() and not (run / "done").exists()


# ---------------------------------------------------------------- crafted and broken checkpoints

class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _torch_zip(path: Path, payload: bytes) -> None:
    """A torch.save zip whose data.pkl is ``payload``."""
    buffer = io.BytesIO()
    torch.save({}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, payload if item.filename.endswith("data.pkl") else data)


def craft(kind: str, path: Path, marker: Path) -> None:
    touch = f'touch "{marker}"'
    if kind == "raw_reduce_os_system":      # a plain pickle: GLOBAL posix.system + REDUCE
        path.write_bytes(pickle.dumps({"model": _System(touch)}, protocol=2))
    elif kind == "torch_zip_exec":          # torch.save's own format calling builtins.exec
        torch.save({"format": "mdx-labelnoise/train-state-v1", "model": _Exec(f"open({str(marker)!r}, 'w')")},
                   path)
    elif kind == "inst_opcode":             # protocol 0 INST: subprocess.getoutput(touch)
        path.write_bytes(b"(S'" + touch.encode() + b"'\nisubprocess\ngetoutput\n.")
    elif kind == "stack_global_protocol4":  # STACK_GLOBAL inside a torch zip
        _torch_zip(path, pickle.dumps(_System(touch), protocol=4))
    elif kind == "nested_load_from_bytes":  # torch.storage._load_from_bytes unpickles its bytes unsafely
        inner = pickle.dumps(_System(touch), protocol=2)
        outer = (b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00B" + len(inner).to_bytes(4, "little") + inner
                 + b"q\x01\x85q\x02Rq\x03.")
        _torch_zip(path, outer)
    else:
        raise ValueError(kind)


KINDS = ["raw_reduce_os_system", "torch_zip_exec", "inst_opcode", "stack_global_protocol4",
         "nested_load_from_bytes"]


@pytest.fixture(scope="module")
def marker(work) -> Path:
    return work / "MARKER"


@pytest.fixture(scope="module")
def bad_ckpt(work, trained, marker) -> dict[str, Path]:
    """Every broken checkpoint by name: the crafted kinds, random bytes, truncated, wrong shape."""
    folder = work / "ckpt"
    folder.mkdir()
    files = {}
    for kind in KINDS:
        craft(kind, folder / f"{kind}.th", marker)
        files[kind] = folder / f"{kind}.th"
    files["random"] = folder / "random.th"
    files["random"].write_bytes(np.random.default_rng(1).bytes(5000))
    files["truncated"] = folder / "truncated.th"
    files["truncated"].write_bytes((trained / "model.th").read_bytes()[:40000])
    package = torch.load(trained / "model.th", weights_only=True)
    package["model_config"]["channels"] = 12
    files["wrong_shape"] = folder / "wrong_shape.th"
    torch.save(package, files["wrong_shape"])
    files["demucs_class_called"] = folder / "demucs_class_called.th"  # REDUCE on an allow-listed name
    files["demucs_class_called"].write_bytes(
        b"\x80\x02cdemucs.htdemucs\nHTDemucs\nq\x00X\x04\x00\x00\x00evilq\x01\x85q\x02Rq\x03.")
    return files


def test_crafted_pickles_would_run_if_loaded_unsafely(work, env):
    """Control: loaded without weights_only, every crafted kind does run its payload (in a subprocess)."""
    folder = work / "control"
    folder.mkdir()
    for kind in KINDS:
        craft(kind, folder / f"{kind}.th", folder / f"RAN_{kind}")
    code = ("import sys, torch\nfor path in sys.argv[1:]:\n    try:\n        torch.load(path, weights_only=False)\n"
            "    except Exception:\n        pass\n")
    result = subprocess.run([sys.executable, "-c", code, *(str(folder / f"{k}.th") for k in KINDS)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in folder.glob("RAN_*")) == sorted(f"RAN_{k}" for k in KINDS)


CKPT_WORDS = {
    "raw_reduce_os_system": "refused to load: the file asks to import `posix.system`",
    "torch_zip_exec": "refused to load: the file asks to import `exec`",
    "inst_opcode": "not a readable checkpoint",
    "stack_global_protocol4": "not a readable checkpoint",
    "nested_load_from_bytes": "refused to load: the file asks to import `torch.storage._load_from_bytes`",
    "random": "not a readable checkpoint",
    "truncated": "not a readable checkpoint",
    "wrong_shape": "the weights do not fit the model config",
    "demucs_class_called": "not a readable checkpoint",
}


def _no_unsafe_advice(result) -> None:
    assert "weights_only" not in result.stderr and "safe_globals" not in result.stderr


@pytest.mark.parametrize("name", list(CKPT_WORDS))
def test_separate_refuses_every_broken_checkpoint(name, work, good, bad_ckpt, marker, env):
    out = work / f"sep_{name}"
    with unchanged(good, bad_ckpt[name].parent):
        result = cli(env, "separate.py", bad_ckpt[name], good / "track_000" / "mixture.wav", "--out", out,
                     "--device", "cpu")
    check(result, 2, bad_ckpt[name].name, CKPT_WORDS[name])
    _no_unsafe_advice(result)
    assert not marker.exists() and not out.exists()


def test_bag_with_a_crafted_model(work, good, bad_ckpt, marker, env):
    bag = work / "bag.yaml"
    bag.write_text(f"models: [{bad_ckpt['torch_zip_exec']}]\n")
    with unchanged(good, bad_ckpt["torch_zip_exec"].parent):
        result = cli(env, "separate.py", bag, good / "track_000" / "mixture.wav", "--out", work / "sep_bag",
                     "--device", "cpu")
    check(result, 2, "torch_zip_exec.th", CKPT_WORDS["torch_zip_exec"])
    assert not marker.exists()


def test_filter_model_crafted(work, good, bad_ckpt, marker, env):
    with unchanged(good):
        result = cli(env, "filter.py", "--model", bad_ckpt["inst_opcode"], "--data", good, "--out",
                     work / "filter_crafted", "--device", "cpu")
    check(result, 1, "inst_opcode.th", CKPT_WORDS["inst_opcode"])
    _no_unsafe_advice(result)
    assert not marker.exists()


def test_evaluate_model_crafted(work, good, bad_ckpt, marker, env):
    with unchanged(good):
        result = cli(env, "evaluate.py", "--model", bad_ckpt["stack_global_protocol4"], "--tracks", good,
                     "--device", "cpu")
    check(result, 1, "stack_global_protocol4.th", "not a readable checkpoint")
    _no_unsafe_advice(result)
    assert not marker.exists()


@pytest.mark.parametrize("key,name", [("resume_from", "nested_load_from_bytes"), ("resume_from", "random"),
                                      ("init_from", "raw_reduce_os_system"), ("init_from", "truncated")])
def test_train_refuses_broken_chained_checkpoint(key, name, work, good, bad_ckpt, marker, env):
    run = f"chain_{key}_{name}"
    with unchanged(good, bad_ckpt[name].parent):
        result = cli(env, *train_args(work, good, run, f"run.{key}={bad_ckpt[name]}"))
    check(result, 1, f"{name}.th", CKPT_WORDS[name])
    _no_unsafe_advice(result)
    assert not marker.exists() and not (work / "runs" / run / "model.th").exists()


@pytest.mark.parametrize("name", ["torch_zip_exec", "inst_opcode", "truncated"])
def test_train_refuses_its_own_broken_checkpoint(name, work, good, bad_ckpt, marker, env):
    run = work / "runs" / f"own_{name}"
    run.mkdir(parents=True)
    shutil.copyfile(bad_ckpt[name], run / "checkpoint.th")
    with unchanged(good):
        result = cli(env, *train_args(work, good, run.name))
    check(result, 1, "this run's own checkpoint", "checkpoint.th", CKPT_WORDS[name])
    _no_unsafe_advice(result)
    assert not marker.exists() and not (run / "model.th").exists()


def test_train_own_checkpoint_of_another_model(work, good, trained, env):
    run = work / "runs" / "own_other_model"
    run.mkdir(parents=True)
    shutil.copyfile(trained / "checkpoint.th", run / "checkpoint.th")
    with unchanged(good):
        result = cli(env, *train_args(work, good, run.name, "model.channels=12"))
    check(result, 1, "checkpoint.th", "the weights do not fit this config's model")


def test_no_crafted_pickle_ever_ran(marker, bad_ckpt):
    assert not marker.exists()


# ---------------------------------------------------------------- separate, filter, auto_filter

def test_separate_refuses_nan_input(work, good, trained, env):
    song = work / "songs" / "nan_song.wav"
    wav = stereo()
    wav[100:200] = np.nan
    write_wav(song, wav, subtype="FLOAT")
    out = work / "sep_nan"
    with unchanged(song.parent):
        result = cli(env, "separate.py", trained / "model.th", song, "--out", out, "--device", "cpu")
    check(result, 1, "nan_song.wav", "holds 200 NaN or infinite sample(s)", extra_errors=1)
    assert not out.exists()


def filter_args(model: Path, data: Path, out: Path, *extra) -> list:
    return ["filter.py", "--model", model, "--data", data, "--out", out, "--device", "cpu", *extra]


def test_filter_missing_data_folder(work, trained, env):
    result = cli(env, *filter_args(trained / "model.th", work / "no_such_data", work / "f_missing"))
    check(result, 1, "no_such_data: dataset folder does not exist")


@pytest.mark.parametrize("kind,words", [("nan", "holds 10 NaN or infinite sample(s)"),
                                        ("truncated", "truncated: its header announces")])
def test_filter_stops_at_an_unusable_stem(kind, words, work, good, trained, env):
    root = dataset(work, good, f"filter_{kind}", tracks=0)
    _odd(kind, root / "odd")
    for s in SOURCES:
        if s != "bass":
            (root / "odd" / f"{s}.wav").unlink()  # the bad stem alone: no other stem to filter first
    with unchanged(root):
        result = cli(env, *filter_args(trained / "model.th", root, work / f"f_{kind}"))
    check(result, 1, "odd/bass.wav", words)


REFUSED = ["empty", "random_bytes", "truncated", "nan", "inf", "four_channels"]


def test_filter_skip_bad_counts_every_irregular_stem(work, good, trained, env):
    # Tracks holding only their bad bass.wav (refused, or a symlink loop: missing), and one good stem.
    root = dataset(work, good, "filter_zoo", tracks=0)
    for kind in REFUSED + ["symlink_loop"]:
        _odd(kind, root / kind)
        for s in SOURCES:
            if s != "bass":
                (root / kind / f"{s}.wav").unlink()
    (root / "fine").mkdir()
    shutil.copyfile(good / "track_000" / "vocals.wav", root / "fine" / "vocals.wav")
    with unchanged(root):
        result = cli(env, *filter_args(trained / "model.th", root, work / "f_zoo", "--skip-bad"))
    # 8 tracks x 4 stems = 32: 1 filtered, 6 refused, 25 absent (3 per track and the looping bass).
    check(result, 0, "filtered 1 stems", "skipped 31 (25 missing, 6 unreadable)")


def test_filter_fails_when_no_stem_can_be_used(work, good, trained, env):
    root = dataset(work, good, "filter_none", tracks=0)
    _odd("nan", root / "odd")
    for s in ("drums", "other", "vocals"):
        (root / "odd" / f"{s}.wav").unlink()
    with unchanged(root):
        result = cli(env, *filter_args(trained / "model.th", root, work / "f_none", "--skip-bad"))
    check(result, 1, "no stem could be used (1 unusable, 3 missing)")


@pytest.mark.parametrize("args,words", [(["--key", "-6"], "--key >= 0"), (["--speed", "0"], "--speed > 0")])
def test_filter_bad_arguments(args, words, work, good, trained, env):
    with unchanged(good):
        check(cli(env, *filter_args(trained / "model.th", good, work / "f_args", *args)), 2, words)
    assert not (work / "f_args").exists()


@pytest.fixture(scope="module")
def outputs(work, one, trained, env) -> Path:
    out = work / "outputs_one"
    check(cli(env, *filter_args(trained / "model.th", one, out)), 0, "filtered 4 stems")
    return out


def auto_args(outputs: Path, data: Path, dest: Path, *extra) -> list:
    return ["auto_filter.py", "m", "6", "200", "-100", "--outputs", outputs, "--data", data, "--dest", dest,
            "--no-progress", *extra]


@pytest.mark.parametrize("args,words", [(["m", "6", "0"], "SPEED > 0"), (["m", "-1", "200"], "KEY >= 0")])
def test_auto_filter_bad_arguments(args, words, work, one, outputs, env):
    with unchanged(one, outputs):
        result = cli(env, "auto_filter.py", *args, "--outputs", outputs, "--data", one, "--dry-run")
    check(result, 2, words)


@pytest.mark.parametrize("threshold", ["-5", "-5.0"])
def test_auto_filter_negative_threshold_without_dashes(threshold, work, one, outputs, env):
    with unchanged(one, outputs):
        result = cli(env, "auto_filter.py", "m", "6", "200", threshold, "--outputs", outputs, "--data", one,
                     "--dry-run", "--no-progress")
    check(result, 0, "threshold -5.00 dB")


def test_auto_filter_refuses_outputs_of_other_data(work, good, one, outputs, env):
    other = dataset(work, good, "other_data", tracks=1)
    dest = work / "pool_other"
    with unchanged(one, other, outputs):
        result = cli(env, *auto_args(outputs, other, dest))
    check(result, 1, "filter.json", f"the dataset {one}, not --data {other}")
    assert not dest.exists()


def test_auto_filter_killed_while_copying_then_train_refuses_then_rerun(work, one, outputs, env):
    dest = work / "pool_killed"
    with unchanged(one, outputs):
        killed_at(env, "shutil", "copyfile", 3, *auto_args(outputs, one, dest))
    assert json.loads((dest / "selection.json").read_text())["complete"] is False
    train = ["train.py", TINY / "joint360.yaml", f"data.root={dest}", f"run.root={work / 'runs'}",
             "run.name=on_unfinished_pool", *QUICK, "--device", "cpu"]
    check(cli(env, *train), 1, "selection.json", "this pool is unfinished")
    assert not (work / "runs" / "on_unfinished_pool").exists()
    with unchanged(one, outputs):
        check(cli(env, *auto_args(outputs, one, dest)), 0, "pool", "2 already there")
    record = json.loads((dest / "selection.json").read_text())
    assert record["complete"] is True
    kept = sum(len(v) for v in record["kept"].values())
    pool = [p for p in (dest / "train").rglob("*") if p.is_file()]
    assert len(pool) == kept and not [p for p in pool if p.name.startswith(".")]


def test_filter_killed_mid_record_then_rerun(work, one, trained, env):
    out = work / "f_killed"
    with unchanged(one):
        killed_at(env, "labelnoise.volumes", "append_record", 3, *filter_args(trained / "model.th", one, out))
    assert not (out / "volumes.jsonl").exists()
    assert not (out / "volumes.rank0.jsonl").read_text().endswith("\n")  # the torn line of the kill
    with unchanged(one):
        result = cli(env, *filter_args(trained / "model.th", one, out))
    check(result, 0, "filtered 2 stems", "2 already recorded")
    records = [json.loads(line) for line in (out / "volumes.jsonl").read_text().splitlines()]
    assert sorted((r["track"], r["stem"]) for r in records) == sorted(("track_000", s) for s in SOURCES)


def test_train_killed_while_saving_then_rerun(work, good, env):
    args = train_args(work, good, "killed", "optim.epochs=2")
    with unchanged(good):
        killed_at(env, "torch", "save", 2, *args)  # the second save: epoch 2's checkpoint, half written
    run = work / "runs" / "killed"
    assert list(run.glob(".checkpoint.th.tmp.*")) and not (run / "model.th").exists()
    with unchanged(good):
        check(cli(env, *args), 0, "done (2 epochs, 2 steps")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert steps == [1, 2]
    assert not list(run.glob(".*.tmp.*"))


def test_two_trainers_on_one_run_dir(work, good, env):
    args = train_args(work, good, "twice")
    go = work / "twice_go"
    # The first trainer holds the lock, then waits (in restore) until the second has tried.
    first = subprocess.Popen(driven("labelnoise.run_state", "RunState.restore", 1, f"wait={go}", *args), cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = work / "runs" / "twice" / "lock"
    deadline = time.monotonic() + 240
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.monotonic() < deadline, "the first trainer never took the lock"
        time.sleep(0.1)
    try:
        second = cli(env, *args)
    finally:
        go.touch()
    check(second, 1, str(work / "runs" / "twice"), f"another trainer is running in this folder (PID {first.pid}")
    assert not (lock.parent / "metrics.jsonl").exists()
    out, err = first.communicate(timeout=300)
    check(subprocess.CompletedProcess(args, first.returncode, out, err), 0, "done (1 epochs, 1 steps")
    steps = [json.loads(line)["step"] for line in (lock.parent / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert steps == [1]


# ---------------------------------------------------------------- read-only and full output folders

def _mount(folder: Path, size: str, *options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (read-only and full disks)")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                             str(folder)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True, check=True)


@pytest.fixture(scope="module")
def readonly(work):
    folder = work / "readonly"
    _mount(folder, "1m", "ro")
    yield folder
    _umount(folder)


@pytest.fixture
def full(tmp_path):
    """A tmpfs with ``free(pages)`` pages of 4 KiB left: every byte else is a filler file."""
    folder = tmp_path / "full"
    _mount(folder, "2m")
    filler = folder / "filler"

    def free(pages: int) -> Path:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        os.close(fd)
        os.truncate(filler, filler.stat().st_size - 4096 * pages)
        return folder

    yield free
    _umount(folder)


@pytest.mark.parametrize("tool", ["train", "filter", "auto_filter", "create_metadata", "separate"])
def test_read_only_output_folder(tool, readonly, work, good, one, trained, outputs, env):
    if tool == "train":
        args = [*train_args(readonly, good, "ro")]
        args[3] = f"run.root={readonly / 'runs'}"
    elif tool == "filter":
        args = filter_args(trained / "model.th", one, readonly / "out")
    elif tool == "auto_filter":
        args = auto_args(outputs, one, readonly / "pool")
    elif tool == "create_metadata":
        args = ["create_metadata.py", good, "--out", readonly / "meta.json"]
    else:
        args = ["separate.py", trained / "model.th", good / "track_000" / "mixture.wav", "--out",
                readonly / "sep", "--device", "cpu"]
    with unchanged(good, one, outputs):
        result = cli(env, *args)
    check(result, 1, str(readonly), "Read-only file system (EROFS)", extra_errors=1 if tool == "separate" else 0)


def test_full_disk_train(full, work, good, env):
    folder = full(8)  # room for config.yaml and metrics.jsonl, not for a checkpoint
    args = train_args(folder, good, "full")
    args[3] = f"run.root={folder / 'runs'}"
    with unchanged(good):
        result = cli(env, *args)
    check(result, 1, "No space left on device (ENOSPC)", "runs/full/")
    run = folder / "runs" / "full"
    assert not (run / "model.th").exists() and not (run / "done").exists() and not (run / "checkpoint.th").exists()


def test_full_disk_filter_leaves_no_empty_volumes(full, work, one, trained, env):
    folder = full(1)  # filter.json fits, the first record does not
    out = folder / "out"
    with unchanged(one):
        result = cli(env, *filter_args(trained / "model.th", one, out))
    check(result, 1, str(out / "volumes.rank0.jsonl"), "No space left on device (ENOSPC)")
    assert (out / "filter.json").is_file() and not (out / "volumes.rank0.jsonl").exists()


def test_full_disk_auto_filter(full, work, one, outputs, env):
    folder = full(3)  # selection.json and the clean-stem JSON fit, the stems do not
    with unchanged(one, outputs):
        result = cli(env, *auto_args(outputs, one, folder / "pool"))
    check(result, 1, str(folder / "pool" / "train"), "No space left on device (ENOSPC)")
    assert json.loads((folder / "pool" / "selection.json").read_text())["complete"] is False


def test_full_disk_create_metadata(full, work, good, env):
    folder = full(0)
    with unchanged(good):
        result = cli(env, "create_metadata.py", good, "--out", folder / "meta.json")
    check(result, 1, str(folder / "meta.json"), "No space left on device (ENOSPC)")


# ---------------------------------------------------------------- help and the synth

@pytest.mark.parametrize("tool,example", [
    (["train.py"], "python train.py configs/step1.yaml data.root="),
    (["filter.py"], "python filter.py --model runs/step3/model.th --data"),
    (["auto_filter.py"], "python auto_filter.py pretrain3 6 200 20"),
    (["create_metadata.py"], "python create_metadata.py data/labelnoise"),
    (["-m", "labelnoise.synth"], "python -m labelnoise.synth --out data/synth --tracks 20"),
])
def test_help_shows_the_example_commands(tool, example, env):
    check(cli(env, *tool, "--help"), 0, example)


@pytest.mark.parametrize("float32", [False, True])
def test_synth_same_seed_same_bytes(float32, work, env):
    args = ["--tracks", 2, "--seconds", 1, "--samplerate", SR, "--seed", 3, "--noise-rate", 0.5,
            *(["--float32"] if float32 else [])]
    first, second = work / f"synth_a_{float32}", work / f"synth_b_{float32}"
    check(cli(env, "-m", "labelnoise.synth", "--out", first, *args), 0)
    time.sleep(1.1)  # a timestamp in the files would now differ
    check(cli(env, "-m", "labelnoise.synth", "--out", second, *args), 0)
    assert tree_sha(first) == tree_sha(second)
    assert len(list(first.rglob("*.wav"))) == 10
