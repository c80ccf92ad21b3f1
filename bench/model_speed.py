"""Forward+backward time and peak memory: our HTDemucs vs demucs 4.1.0's.

Both models get the same weights and the same 11 s stereo item (batch 1, train
mode, an L1 loss, then backward). Timed repeats alternate between the two
models in one process, after warm-up, and the medians of wall time and of
process CPU time are reported. Peak
memory: on CUDA ``torch.cuda.max_memory_allocated`` around one step; on CPU
each model runs one step in a fresh subprocess that reports its peak RSS
growth (``ru_maxrss``) over the RSS it had before the step.

    .venv/bin/python bench/model_speed.py                       # P1, CPU, fp32
    .venv/bin/python bench/model_speed.py --config P2 --repeats 5
    .venv/bin/python bench/model_speed.py --device cuda --precision bf16 --compile
    .venv/bin/python bench/model_speed.py --config small --flops     # + model FLOP utilisation

``--flops`` counts the FLOPs of one forward+backward step of our model with
``torch.utils.flop_counter`` (matrix products and convolutions; the FFTs are
not counted) and divides the achieved rate by the device's dense peak at
that precision (a table of common GPUs; on a CPU only the achieved rate).

Needs demucs==4.1.0 (a test dependency) for the reference.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labelnoise.model import HTDemucs  # noqa: E402

log = logging.getLogger("model_speed")

SOURCES = ["drums", "bass", "other", "vocals"]
CONFIGS = {
    "P1": {},
    "P2": dict(bottom_channels=512, dconv_mode=3, t_dropout=0.02, t_sparse_attn_window=400),
    "small": dict(channels=8, depth=2, nfft=1024, t_layers=2, t_heads=2),
}


def build(which: str, config: str | dict, state=None) -> torch.nn.Module:
    """``ours`` or ``reference`` with a config of CONFIGS (by name) or the keywords themselves."""
    kwargs = CONFIGS[config] if isinstance(config, str) else config
    if which == "ours":
        model = HTDemucs(SOURCES, **kwargs)
    else:
        from demucs.htdemucs import HTDemucs as Reference
        model = Reference(SOURCES, **kwargs)
    if state is not None:
        model.load_state_dict(state)
    return model.train()


def make_step(model, mix, target, device, precision):
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if precision == "bf16" else contextlib.nullcontext())

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            out = model(mix)
        loss = (out.float() - target).abs().mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


# Dense peak TFLOP/s by device-name fragment and precision (vendor data sheets, SXM parts);
# tf32: float32 matmuls on the tensor cores (torch.backends.cuda.matmul.allow_tf32).
PEAK_TFLOPS = {"H200": {"bf16": 989.0, "tf32": 494.5, "fp32": 67.0},
               "H100": {"bf16": 989.0, "tf32": 494.5, "fp32": 67.0},
               "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}}


def step_flops(step) -> int:
    """FLOPs of one call of ``step`` (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for key, peaks in PEAK_TFLOPS.items() if key in name), None)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_child(args) -> None:
    """One step of one model; prints the peak RSS growth in bytes as JSON."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(args.memory_child, args.config).to(device)
    mix = torch.randn(1, 2, int(args.seconds * 44100), device=device)
    target = torch.randn(1, len(SOURCES), 2, mix.shape[-1], device=device)
    step = make_step(model, mix, target, device, args.precision)
    before = rss_bytes()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"peak_delta": peak - before}))


def cpu_peak(which: str, args) -> float:
    cmd = [sys.executable, __file__, "--memory-child", which, "--config", args.config,
           "--device", args.device, "--precision", args.precision,
           "--seconds", str(args.seconds)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_delta"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--config", default="P1", choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16 = autocast to bfloat16 (STFT stays float32)")
    parser.add_argument("--compile", action="store_true",
                        help="ours: compile_network() (what train.compile does); the reference: torch.compile")
    parser.add_argument("--seconds", type=float, default=11.0, help="item length (default 11)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs, print achieved rate and MFU")
    parser.add_argument("--memory-child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = build("ours", args.config).to(device)
    reference = build("reference", args.config, ours.state_dict()).to(device)
    mix = torch.randn(1, 2, int(args.seconds * 44100), device=device)
    target = torch.randn(1, len(SOURCES), 2, mix.shape[-1], device=device)
    # Counted on the eager model: the count is the same compiled or not.
    flops = step_flops(make_step(ours, mix, target, device, args.precision)) if args.flops else None
    models = {"ours": ours, "reference": reference}
    if args.compile:
        # Ours as train.compile does it (the network between the STFT and the iSTFT); demucs' whole.
        ours.compile_network()
        models["reference"] = torch.compile(reference)
    steps = {k: make_step(m, mix, target, device, args.precision) for k, m in models.items()}

    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {k: [] for k in steps}
    cpu_times = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():  # alternate, so drift hits both alike
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)

    peaks = {}
    for name, step in steps.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step()
            peaks[name] = torch.cuda.max_memory_allocated(device) - base
        else:
            peaks[name] = cpu_peak(name, args)

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"HTDemucs {args.config}, {args.seconds:g} s stereo, batch 1, train mode, "
          f"{args.precision}{', compiled' if args.compile else ''}, {where}, torch {torch.__version__}")
    for name in ("ours", "reference"):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:9s} fwd+bwd median {med[name]:.3f} s wall, {med_cpu[name]:.3f} s CPU  "
              f"(wall runs: {runs})  peak memory +{peaks[name] / 2**20:.0f} MiB")
    # CPU time (all threads of this process) is less disturbed by other
    # processes sharing the machine than wall time; on CUDA only wall counts.
    print(f"  ratio ours/reference: time {med['ours'] / med['reference']:.3f}x wall, "
          f"{med_cpu['ours'] / med_cpu['reference']:.3f}x CPU; "
          f"memory {peaks['ours'] / peaks['reference']:.3f}x")
    print(f"  items/s: ours {1 / med['ours']:.3f}, reference {1 / med['reference']:.3f}")
    if flops is not None:
        achieved = flops / med["ours"] / 1e12
        peak = peak_tflops(device, args.precision)
        mfu = f", MFU {100 * achieved / peak:.1f} % of {peak:g} TFLOP/s" if peak else \
            " (no peak figure for this device: MFU not computed)"
        print(f"  FLOPs per step (ours): {flops / 1e9:.1f} GFLOP; achieved {achieved * 1e3:.1f} GFLOP/s{mfu}")


if __name__ == "__main__":
    main()
