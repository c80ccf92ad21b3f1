"""Training throughput: items/s of train.py on synthetic data, read from its metrics.jsonl.

    .venv/bin/python bench/train_speed.py                                   # tiny step1, CPU
    .venv/bin/python bench/train_speed.py --config configs/step1.yaml --steps 4 optim.batch_size=1
    .venv/bin/python bench/train_speed.py --config configs/joint360.yaml --steps 20 train.precision=bf16

Generates a small synthetic set at the config's sample rate in a temporary
folder, runs ``train.py`` for ``--steps`` optimizer steps (one epoch) as one
process, and prints the median items/s and data-wait fraction over the steps
after the first (which pays for warm-up). Extra ``a.b=value`` arguments go to
train.py. On a GPU machine it trains on the GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from labelnoise.config import load_config
from labelnoise.files import METRICS_FILE
from labelnoise.synth import generate

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/tiny/step1.yaml"))
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps to run (default 12)")
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(args.config, [f"run.root={tmp / 'runs'}", *args.overrides])
        data, optim = cfg["data"], cfg["optim"]
        seconds = max(2 * data["segment"] + 1, 5.0)
        generate(tmp / "data", tracks=args.tracks, seconds=seconds, noise_rate=0.3, seed=0,
                 samplerate=data["samplerate"], progress=False)
        items = args.steps * optim["batch_size"] * optim["accumulate"]
        command = [sys.executable, str(ROOT / "train.py"), args.config, f"run.root={tmp / 'runs'}",
                   f"data.root={tmp / 'data'}", f"data.items_per_epoch={items}", "optim.epochs=1",
                   "data.workers=0", "valid.tracks=null", *args.overrides]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"train.py failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        lines = (tmp / "runs" / cfg["run"]["name"] / METRICS_FILE).read_text().splitlines()
        steps = [r for r in map(json.loads, lines) if r.get("kind") == "step"][1:]
    rate = statistics.median(r["items_per_s"] for r in steps)
    wait = statistics.median(r["data_wait"] for r in steps)
    params = f"batch {optim['batch_size']} x accumulate {optim['accumulate']}, {data['segment']} s items " \
             f"at {data['samplerate']} Hz"
    print(f"{Path(args.config).name} ({params}): {rate:.2f} items/s median over {len(steps)} steps, "
          f"data wait {wait:.0%}")


if __name__ == "__main__":
    main()
