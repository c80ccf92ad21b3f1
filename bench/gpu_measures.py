"""The measurements of ``bench/gpu_check.py``, one function per check, each run in its own process.

A check calls ``emit(key, measure, ours, reference, better, note)`` once per
figure as soon as it has it (a check stopped at its time budget keeps what it
emitted); ``ours``/``reference`` are numbers, or text where there is no
figure. Sizes come from ``SIZES["gpu"]`` (one H100/H200) or ``SIZES["dry"]``
(a CPU, tiny: figures that only show the plumbing works). The work is done by
the focused benches (model_speed, vocoder_speed, filter_speed, separate_rtf)
and by the project's own code (train.py under torchrun, labelnoise.filtering).
"""
from __future__ import annotations

import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import model_speed  # noqa: E402  (bench/, on the path above)

from labelnoise.files import DONE_FILE, METRICS_FILE  # noqa: E402
from labelnoise.synth import generate  # noqa: E402

TINY = dict(channels=8, depth=2, nfft=512, t_layers=1, t_heads=2, dconv_comp=4)  # configs/tiny's network
GIB = 2**30
SIZES = {
    "gpu": {
        # Per-GPU batches of the recipe: step1 4 items (P1), joint360 2 items (P2); 11 s items.
        "train": {"P1": (model_speed.CONFIGS["P1"], 4), "P2": (model_speed.CONFIGS["P2"], 2)},
        "seconds": 11.0, "warmup": 2, "repeats": 5, "compile_backend": "inductor", "compile": ("P1", "P2"),
        "reference_compile_reserve": 60,  # seconds a check must have left to compile demucs' model too
        # The vocoder backend: Repitch on the batch, on the training device, inside the step.
        "torchrun": ("configs/step1.yaml", 44100, 24.0, ["data.items_per_epoch=8", "data.workers=4",
                                                         "augment.repitch.backend=vocoder"]),
        "vocoder_seconds": 11.0, "vocoder_repeats": 10,
        "filter": ("P1", 2, 20.0, True), "separate": ("P1", 60.0, 2),  # filter: model, tracks, s, warm-up
        # Allocator limits for 40 GB and 80 GB cards: 2 GiB below each for the CUDA context,
        # the cuDNN workspace and fragmentation.
        "headroom_caps": {"40 GB": 38 * GIB, "80 GB": 78 * GIB}, "headroom_probe": (2, 4),
    },
    "dry": {
        "train": {"P1": (TINY, 1), "P2": (dict(TINY, bottom_channels=16, dconv_mode=3, t_dropout=0.02), 1)},
        # aot_eager: dynamo's capture and AOTAutograd without code generation, P1 only, ours only
        # (tests/test_compile.py builds with Inductor on a CPU: here it would add a minute per model).
        "seconds": 0.25, "warmup": 0, "repeats": 1, "compile_backend": "aot_eager", "compile": ("P1",),
        "reference_compile_reserve": None,  # None: demucs' model is not compiled
        "torchrun": ("configs/tiny/step1.yaml", 16000, 3.0, ["data.items_per_epoch=4",
                                                              "augment.repitch.backend=vocoder"]),
        "vocoder_seconds": 0.5, "vocoder_repeats": 1,
        "filter": (dict(TINY, segment=1, samplerate=44100), 1, 1.0, False),
        "separate": (dict(TINY, segment=1, samplerate=44100), 1.0, 1),
        "headroom_caps": {"0.5 GiB": GIB // 2, "1 GiB": GIB}, "headroom_probe": (1, 2),
    },
}


class CheckError(RuntimeError):
    """A path of the project that did not work; the check fails with this message."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn, device: torch.device, above_start: bool = False) -> int | None:
    """Peak GPU memory allocated during ``fn``: all of it (weights, optimizer state), or with
    ``above_start`` only what came on top of the memory allocated when it started."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device) if above_start else 0
    fn()
    return torch.cuda.max_memory_allocated(device) - start


# ---------------------------------------------------------------- training throughput

def check_train(which: str, sizes: dict, device, emit, time_left) -> None:
    """fwd+bwd items/s of one stage's network in fp32, bf16, bf16 + compile; MFU; peak memory."""
    config, batch = sizes["train"][which]
    if device.type == "cuda":  # as the trainer does with train.tf32 (the default)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    ours = model_speed.build("ours", config).to(device)
    try:
        reference = model_speed.build("reference", config, ours.state_dict()).to(device)
    except ImportError as exc:
        reference, missing = None, f"demucs not importable ({exc})"
    length = int(sizes["seconds"] * 44100)
    mix = torch.randn(batch, 2, length, device=device)
    target = torch.randn(batch, len(model_speed.SOURCES), 2, length, device=device)
    # Counted once, eagerly: compiling changes the time, not the arithmetic.
    flops = model_speed.step_flops(model_speed.make_step(ours, mix, target, device, "bf16"))
    label = f"{which}, batch {batch} x {sizes['seconds']:g} s"
    variants = ("fp32", "bf16", "bf16 + compile") if which in sizes["compile"] else ("fp32", "bf16")
    for variant in variants:
        precision = "fp32" if variant == "fp32" else "bf16"
        key, what = f"train/{which}/{variant}", f"{label}, {variant}"
        if variant == "bf16 + compile":
            ours.compile_network(backend=sizes["compile_backend"])  # what train.compile does
        step = model_speed.make_step(ours, mix, target, device, precision)
        seconds = median_seconds(step, device, sizes["warmup"], sizes["repeats"])
        # fp32 runs its matmuls in TF32 (train.tf32): its MFU is against the TF32 peak.
        peak = model_speed.peak_tflops(device, "tf32" if precision == "fp32" else "bf16")
        achieved = flops / seconds / 1e12
        emit(f"{key}/items_s", f"{what}: items/s", batch / seconds, None, "higher", "")
        emit(f"{key}/mfu", f"{what}: MFU %", 100 * achieved / peak if peak else "no peak figure", "—", None,
             f"{achieved:.2f} TFLOP/s achieved" + (f" of {peak:g}" if peak else ""))
        # Above what the step starts with (both networks' weights, the last gradients): its own memory.
        memory = peak_bytes(step, device, above_start=True)
        emit(f"{key}/peak_gib", f"{what}: peak GiB over the step's start",
             memory / GIB if memory is not None else "CPU: not measured", None, "lower", "")
        if reference is None:
            emit(f"{key}/items_s", f"{what}: items/s", None, missing, "higher", "")
            continue
        if variant == "bf16 + compile":
            reserve = sizes["reference_compile_reserve"]
            if reserve is None or time_left() < reserve:
                why = "not compiled in a dry run" if reserve is None else "not compiled: time budget"
                emit(f"{key}/items_s", f"{what}: items/s", None, why, "higher", "")
                continue
            reference = torch.compile(reference, backend=sizes["compile_backend"])  # whole: demucs has no split
        ref_step = model_speed.make_step(reference, mix, target, device, precision)
        try:
            ref_seconds = median_seconds(ref_step, device, sizes["warmup"], sizes["repeats"])
            ref_memory = peak_bytes(ref_step, device, above_start=True)
        except Exception as exc:  # the reference's own failure is a figure, not a failure of ours
            emit(f"{key}/items_s", f"{what}: items/s", None, f"failed: {type(exc).__name__}", "higher",
                 f"reference: {str(exc).splitlines()[0][:160]}" if str(exc) else "")
            continue
        emit(f"{key}/items_s", f"{what}: items/s", None, batch / ref_seconds, "higher", "")
        if ref_memory is not None:
            emit(f"{key}/peak_gib", f"{what}: peak GiB over the step's start", None, ref_memory / GIB, "lower", "")


# ---------------------------------------------------------------- torchrun

def check_torchrun(sizes: dict, device, emit, time_left) -> None:
    """One epoch of train.py under torchrun with one process: NCCL on a GPU, gloo on a CPU."""
    config, rate, seconds, extra = sizes["torchrun"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", tracks=2, seconds=seconds, noise_rate=0.3, seed=0, samplerate=rate, progress=False)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               str(ROOT / "train.py"), str(ROOT / config), f"run.root={tmp / 'runs'}", f"data.root={tmp / 'data'}",
               "optim.epochs=1", "valid.tracks=null", *extra, "--device", device.type]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=max(5.0, time_left() - 5))
        wall = time.perf_counter() - start
        if done.returncode:
            raise CheckError(f"torchrun exited {done.returncode}:\n{done.stderr[-2000:]}")
        found = re.search(r"process group: (\w+)", done.stderr)
        backend = found.group(1) if found else None
        expected = "nccl" if device.type == "cuda" else "gloo"
        if backend != expected:
            raise CheckError(f"torchrun ran with process group {backend}, expected {expected}:\n{done.stderr[-2000:]}")
        run = tmp / "runs" / Path(config).stem
        steps = [r for r in map(json.loads, (run / METRICS_FILE).read_text().splitlines()) if r["kind"] == "step"]
        if not (run / DONE_FILE).is_file() or not steps:
            raise CheckError(f"torchrun finished without a finished run in {run}")
    memory = f", peak {max(r['gpu_mem_gb'] for r in steps):.1f} GiB" if "gpu_mem_gb" in steps[0] else ""
    emit("torchrun/run", f"torchrun --nproc_per_node=1 train.py {config}, one epoch ({backend})",
         f"{len(steps)} step(s) in {wall:.0f} s", "—", None,
         f"last step {steps[-1]['items_per_s']:.2f} items/s{memory}")


# ---------------------------------------------------------------- vocoder

def check_vocoder(sizes: dict, device, emit, time_left) -> None:
    """ms per stereo stem of the phase vocoder on the device, against Rubber Band R2 on one CPU thread."""
    import numpy as np
    import vocoder_speed as vs

    from labelnoise.augment import repitch_length
    from labelnoise.vocoder import repitch

    stem = (0.1 * np.random.default_rng(0).standard_normal((2, int(sizes["vocoder_seconds"] * vs.SR))))
    stem = stem.astype(np.float32)
    length = repitch_length(stem.shape[-1])
    cases = {"fixed": (8, torch.tensor(float(vs.FIXED_SEMITONES)), f"{vs.FIXED_SEMITONES:+d} semitones"),
             "spread": (len(vs.SPREAD_SEMITONES), torch.tensor(vs.SPREAD_SEMITONES, dtype=torch.float32)[:, None],
                        "-6..6 semitones but 0")}
    for case, (count, semis, what) in cases.items():
        wav = torch.from_numpy(np.stack([stem] * count)).to(device)
        semis = semis.to(device)
        seconds = median_seconds(lambda: repitch(wav, semis, vs.TEMPO, length=length, stereo=True), device,
                                 1, sizes["vocoder_repeats"])
        engine_ms = [vs.cpu_ms(lambda s=s: vs.rubberband(stem, s, False))
                     for s in ([vs.FIXED_SEMITONES] if case == "fixed" else vs.SPREAD_SEMITONES)]
        emit(f"vocoder/{case}", f"vocoder, {sizes['vocoder_seconds']:g} s stem, {what}, tempo {vs.TEMPO} "
             f"(batch of {count}): ms per stem", 1e3 * seconds / count, statistics.mean(engine_ms), "lower",
             f"ours: wall on {device.type}; reference: Rubber Band R2 (pedalboard), CPU time, one thread")


# ---------------------------------------------------------------- filter

def check_filter(sizes: dict, device, emit, time_left) -> None:
    """Stem-minutes per minute of the filter in bf16 against the original's method."""
    import filter_speed as fs
    from demucs.htdemucs import HTDemucs as Reference

    from labelnoise.model import HTDemucs

    config, tracks, seconds, warm_up = sizes["filter"]
    config = fs.CONFIGS[config] if isinstance(config, str) else config
    torch.manual_seed(0)
    reference = Reference(list(model_speed.SOURCES), **config).to(device).eval()
    ours = HTDemucs(list(model_speed.SOURCES), **config)
    ours.load_state_dict(reference.state_dict())
    ours.to(device).eval()
    rubberband = fs.rubberband_command()
    engine = " ".join(rubberband) if rubberband else "Rubber Band R2 in process (pedalboard): no CLI installed"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", tracks=tracks, seconds=seconds, noise_rate=0.3, seed=0, samplerate=44100,
                 progress=False)
        generate(tmp / "warm", tracks=1, seconds=min(seconds, 4.0), noise_rate=0.0, seed=1, samplerate=44100,
                 progress=False)
        variants = {
            "original": lambda data, out: fs.original_filter(data, out, reference, rubberband, device=device),
            "bf16": lambda data, out: fs.ours_filter(data, out, ours, 1, precision="bf16", device=device),
            "float32": lambda data, out: fs.ours_filter(data, out, ours, 1, precision="float32", device=device),
        }
        rate = {}
        for name, run in variants.items():
            if warm_up:
                run(tmp / "warm", tmp / f"warm-{name}")  # kernels, FFT plans, cuDNN choices
            wall, _, audio = fs.timed(lambda: run(tmp / "data", tmp / f"out-{name}"))
            rate[name] = audio / wall
            if name != "original":
                emit(f"filter/{name}", f"filter {name}, key +{fs.KEY} speed {fs.SPEED}, shifts 1, {4 * tracks} "
                     f"stems x {seconds:g} s: stem-minutes per minute", rate[name], rate["original"], "higher",
                     f"reference: the original's method (float32 apply_model; {engine})")


# ---------------------------------------------------------------- separation

def check_separate(sizes: dict, device, emit, time_left) -> None:
    """Real-time factor of separation in bf16 against demucs.apply.apply_model (same weights)."""
    import separate_rtf

    config, seconds, repeats = sizes["separate"]
    config = separate_rtf.CONFIGS[config] if isinstance(config, str) else config
    got = separate_rtf.measure(config, device=device, seconds=seconds, precision="bf16", repeats=repeats)
    ours, demucs = min(got["times"]["ours"]) / seconds, min(got["times"]["demucs"]) / seconds
    emit("separate/rtf", f"separation, {seconds:g} s, overlap 0.25, bf16: real-time factor", ours, demucs, "lower",
         f"largest difference to apply_model's output {got['diffs']['ours']:.1e}")


# ---------------------------------------------------------------- batch-size headroom

def check_headroom(sizes: dict, device, emit, time_left) -> None:
    """The largest P2 batch (bf16, 11 s items, Adam) whose train step fits in 40 GB and 80 GB.

    Peak memory at two batch sizes gives the memory per item; the line through them is
    extrapolated to each cap, then, on a GPU, checked: a step at that batch under
    ``torch.cuda.set_per_process_memory_fraction`` (stepping down while it does not fit,
    up while one more fits).
    """
    config, _ = sizes["train"]["P2"]
    torch.manual_seed(0)
    ours = model_speed.build("ours", config).to(device)
    optimizer = torch.optim.Adam(ours.parameters(), lr=3e-4)
    length = int(sizes["seconds"] * 44100)

    def step(batch: int) -> None:
        mix = torch.randn(batch, 2, length, device=device)
        target = torch.randn(batch, len(model_speed.SOURCES), 2, length, device=device)
        model_speed.make_step(ours, mix, target, device, "bf16")()
        optimizer.step()

    def peak(batch: int) -> int:
        if device.type == "cuda":
            return peak_bytes(lambda: step(batch), device)
        step(batch)  # CPU: the growth of the process's peak RSS (batches in rising order)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    small, large = sizes["headroom_probe"]
    step(small)  # Adam's state, cuDNN's plans
    low, high = peak(small), peak(large)
    per_item = max(1, (high - low) / (large - small))
    fixed = low - small * per_item
    how = (f"peak {low / GIB:.2f} GiB at batch {small}, {high / GIB:.2f} at {large}: "
           f"{per_item / GIB:.3f} GiB per item + {fixed / GIB:.2f}")
    for cap_name, cap in sizes["headroom_caps"].items():
        predicted = int((cap - fixed) // per_item)
        if device.type != "cuda":
            emit(f"headroom/{cap_name}", f"largest P2 batch in {cap_name} (extrapolated)", predicted, "—", None,
                 f"{how}; a CPU has no allocator cap to check it against")
            continue
        total = torch.cuda.get_device_properties(device).total_memory
        if cap > total:
            emit(f"headroom/{cap_name}", f"largest P2 batch in {cap_name}", predicted, "—", None,
                 f"extrapolated ({how}); this GPU has only {total / GIB:.0f} GiB to check it")
            continue
        torch.cuda.set_per_process_memory_fraction(cap / total, device)
        fits = {}
        batch = max(1, predicted)
        while time_left() > 15 and batch not in fits and len(fits) < 6:
            try:
                step(batch)
                fits[batch] = True
            except torch.cuda.OutOfMemoryError:
                fits[batch] = False
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            batch = batch + 1 if fits[batch] else batch - 1
            if batch < 1:
                break
        largest = max((b for b, ok in fits.items() if ok), default=None)
        checked = largest is not None and fits.get(largest + 1) is False
        emit(f"headroom/{cap_name}", f"largest P2 batch in {cap_name}", largest if largest else "none fits", "—",
             None, f"extrapolated {predicted} ({how}); " + (f"{largest} fits and {largest + 1} does not under an "
                                                           f"allocator cap of {cap / GIB:.0f} GiB" if checked
                                                           else f"search stopped: {fits}"))
        torch.cuda.set_per_process_memory_fraction(1.0, device)


CHECKS = {
    "train-P1": lambda *a: check_train("P1", *a),
    "train-P2": lambda *a: check_train("P2", *a),
    "torchrun": check_torchrun,
    "vocoder": check_vocoder,
    "filter": check_filter,
    "separate": check_separate,
    "headroom": check_headroom,
}
