"""Every speed figure of the project in one run: ours against the reference, side by side.

    .venv/bin/python bench/throughput.py                      # CPU, the sizes in docs/BENCHMARKS.md
    .venv/bin/python bench/throughput.py --quick              # a few minutes: small sizes
    .venv/bin/python bench/throughput.py --out runs/bench/throughput.md

Each part is one of the focused benches under ``bench/``, run as its own
process (so one part's threads and memory do not disturb the next), each
timing ours and the reference in the same run:

- model forward+backward, P1 and P2 (``model_speed.py``: ``model.HTDemucs``
  vs ``demucs.htdemucs.HTDemucs``, same weights), with FLOPs per step; on a
  GPU float32, bf16 and bf16 + ``torch.compile``, and the model FLOP
  utilisation (FLOPs over the GPU's dense peak);
- data loader items/s (``data_throughput.py``: our loaders vs temp WAV +
  ``rubberband`` CLI per stem);
- filter stem-minutes per minute (``filter_speed.py``: ``labelnoise.filtering``
  vs the original's method);
- separation real-time factor (``separate_rtf.py``: ``labelnoise.inference``
  vs ``demucs.apply.apply_model``).

The report (``--out``, markdown) holds every command and its full output,
with the machine and the date, ready to be quoted in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labelnoise.atomic import write_text  # noqa: E402


def parts(quick: bool, cuda: bool) -> list[tuple[str, list[str]]]:
    """(title, command arguments after the python executable) of every measurement."""
    bench = str(ROOT / "bench")
    seconds = ["--seconds", "2"] if quick else []
    repeats = ["--repeats", "1", "--warmup", "1"] if quick else ["--repeats", "3"]
    model_configs = ["small"] if quick else ["P1", "P2"]
    out = []
    for config in model_configs:
        variants = [["--precision", "fp32"]]
        if cuda:
            variants += [["--precision", "bf16"], ["--precision", "bf16", "--compile"]]
        for variant in variants:
            device = ["--device", "cuda"] if cuda else []
            out.append((f"model forward+backward, {config}, {' '.join(variant)}",
                        [f"{bench}/model_speed.py", "--config", config, "--flops",
                         *device, *variant, *seconds, *repeats]))
    data = ["--tracks", "2", "--seconds", "12", "--items", "4"] if quick else []
    out.append(("data loader (Part 2 items)", [f"{bench}/data_throughput.py", *data]))
    filt = ["--configs", "small", "--tracks", "1", "--seconds", "3", "--repeats", "1"] if quick else []
    out.append(("filter (stem-minutes per minute)", [f"{bench}/filter_speed.py", *filt]))
    sep = ["--configs", "small", "--seconds", "4", "--repeats", "1"] if quick else []
    if cuda:
        sep += ["--device", "cuda", "--precision", "bf16"]
    out.append(("separation real-time factor", [f"{bench}/separate_rtf.py", *sep]))
    return out


def machine() -> str:
    if torch.cuda.is_available():
        where = torch.cuda.get_device_name()
    else:
        where = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes in all")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is present")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/throughput.md"),
                        help="markdown report (default runs/bench/throughput.md)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    head = (f"# Throughput, ours vs the reference\n\n{datetime.date.today().isoformat()}, {machine()}"
            f"{', quick sizes' if args.quick else ''}.\n")
    print(head, flush=True)
    sections, failed = [head], []
    for title, cmd_args in parts(args.quick, cuda):
        cmd = [sys.executable, *cmd_args]
        shown = shlex.join(["python", *(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a
                                        for a in cmd_args)])
        print(f"## {title}\n$ {shown}", flush=True)
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        output = (done.stdout + (done.stderr if done.returncode else "")).rstrip()
        print(output, flush=True)
        status = "" if done.returncode == 0 else f" — FAILED (exit {done.returncode})"
        if done.returncode:
            failed.append(title)
        sections.append(f"## {title}{status}\n\n```\n$ {shown}\n{output}\n```\n"
                        f"({time.monotonic() - start:.0f} s)\n")
    write_text(args.out, "\n".join(sections))
    print(f"report: {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
