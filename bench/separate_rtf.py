"""Real-time factor of separation: our inference vs ``demucs.apply.apply_model``.

    python bench/separate_rtf.py                          # small and P1, 30 s of audio
    python bench/separate_rtf.py --configs P1 --seconds 60 --repeats 3
    python bench/separate_rtf.py --device cuda --precision bf16

RTF = seconds of compute / seconds of audio (below 1 is faster than real
time). For each config, with the same weights and input (overlap 0.25, no
shifts), it times:

- ``demucs``: ``demucs.apply.apply_model`` on ``demucs.htdemucs.HTDemucs``;
- ``ours/demucs-net``: ``labelnoise.inference.apply`` on that same network
  (the overlap-add machinery alone);
- ``ours``: ``labelnoise.inference.apply`` on ``model.htdemucs.HTDemucs``.

The variants run interleaved, ``--repeats`` times after a one-segment warm-up; the
best and the median wall-clock RTF are printed (the best is the least
disturbed by other load on the machine), the best CPU time of this process per
second of audio (steadier on a shared machine), and the largest difference
between the outputs.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demucs.apply import apply_model  # noqa: E402  (benchmarks may import demucs)
from demucs.htdemucs import HTDemucs as DemucsHTDemucs  # noqa: E402

from labelnoise import SOURCES  # noqa: E402
from labelnoise.inference import apply  # noqa: E402
from labelnoise.model.htdemucs import HTDemucs  # noqa: E402

CONFIGS = {
    # Segment 11 s: the training segment, which a trained model's `segment` becomes.
    "small": dict(channels=16, depth=4, nfft=1024, t_layers=1, t_heads=4, segment=11, samplerate=44100),
    "P1": dict(segment=11, samplerate=44100),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """(wall seconds, CPU seconds of this process, result)."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


@torch.no_grad()
def measure(config: dict, *, device, seconds: float, precision: str = "float32", batch_size=None,
            repeats: int = 2) -> dict:
    """Wall and CPU seconds of each variant per repeat, and each variant's largest difference to demucs'."""
    device = torch.device(device)
    torch.manual_seed(0)
    reference = DemucsHTDemucs(list(SOURCES), **config).to(device).eval()
    ours_net = HTDemucs(list(SOURCES), **config)
    ours_net.load_state_dict(reference.state_dict())
    ours_net.to(device).eval()
    length = int(seconds * config["samplerate"])
    mix = 0.1 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(1))
    mix = mix.to(device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast(device.type, enabled=False))

    def run_demucs():
        with autocast:
            return apply_model(reference, mix, shifts=0, overlap=0.25, device=device).float()

    variants = {
        "demucs": run_demucs,
        "ours/demucs-net": lambda: apply(reference, mix, device=device, batch_size=batch_size,
                                         precision=precision),
        "ours": lambda: apply(ours_net, mix, device=device, batch_size=batch_size, precision=precision),
    }
    times = {k: [] for k in variants}
    cpu_times = {k: [] for k in variants}
    outputs = {}
    warm = mix[..., :int(config["segment"] * config["samplerate"])]
    apply_model(reference, warm, shifts=0, device=device)
    apply(ours_net, warm, device=device, batch_size=batch_size, precision=precision)
    for _ in range(repeats):
        for k, fn in variants.items():
            wall, cpu_seconds, outputs[k] = timed(fn, device)
            times[k].append(wall)
            cpu_times[k].append(cpu_seconds)
    diffs = {k: (outputs[k] - outputs["demucs"]).abs().max().item() for k in variants}
    return {"times": times, "cpu_times": cpu_times, "diffs": diffs,
            "params": sum(p.numel() for p in reference.parameters())}


def bench(name, config, args):
    got = measure(config, device=args.device, seconds=args.seconds, precision=args.precision,
                  batch_size=args.batch_size, repeats=args.repeats)
    times, cpu_times = got["times"], got["cpu_times"]
    print(f"\n{name}: {got['params']:,} parameters, {args.seconds:g} s of audio, segment {config['segment']} s, "
          f"batch_size {args.batch_size or 'default'}, {args.precision}")
    print(f"  {'variant':<16} {'best RTF':>9} {'median RTF':>11} {'CPU s/audio s':>14} "
          f"{'max |diff| vs demucs':>21}")
    for k in times:
        print(f"  {k:<16} {min(times[k]) / args.seconds:9.3f} "
              f"{statistics.median(times[k]) / args.seconds:11.3f} "
              f"{min(cpu_times[k]) / args.seconds:14.3f} {got['diffs'][k]:21.2e}")
    for label, table in (("best wall", times), ("best CPU", cpu_times)):
        print(f"  ours / demucs ({label} times): {min(table['ours']) / min(table['demucs']):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["small", "P1"])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length (default 30)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant (default 2)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="our segments per forward (default: apply's, 1 on CPU, 4 on GPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["float32", "bf16"], default="float32")
    args = parser.parse_args(argv)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, device {args.device}")
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}")
    for name in args.configs:
        bench(name, CONFIGS[name], args)


if __name__ == "__main__":
    main()
