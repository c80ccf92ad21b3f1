"""Data pipeline figures: synth CPU time, indexing speed, item read time.

Command::

    python bench/data_prep.py --tracks 4 --seconds 60 --out /tmp/bench_data
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from labelnoise.data import PoolDataset, TrackDataset
from labelnoise.files import METADATA_FILE
from labelnoise.metadata import index_dataset
from labelnoise.synth import generate, remove_generated


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_data"), help="scratch folder (deleted first; only a folder made by labelnoise.synth)")
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--items", type=int, default=40, help="items read per dataset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    remove_generated(args.out)

    cpu = time.process_time()
    generate(args.out, tracks=args.tracks, seconds=args.seconds, noise_rate=0.3, seed=0, progress=False)
    cpu = time.process_time() - cpu
    print(f"synth: {cpu / (args.tracks * args.seconds / 60):.3f} CPU s per track-minute (44.1 kHz, noise 0.3)")

    wall = time.perf_counter()
    index_dataset(args.out, out=args.out / METADATA_FILE, progress=False)
    wall = time.perf_counter() - wall
    print(f"index: {4 * args.tracks / wall:.1f} files/s ({args.seconds:.0f} s stems, default workers)")
    wall = time.perf_counter()
    index_dataset(args.out, out=args.out / METADATA_FILE, progress=False)
    print(f"index re-run (all reused): {(time.perf_counter() - wall) * 1e3:.1f} ms")

    for name, ds in (("track", TrackDataset(args.out, segment=11.0, stride=1.0)),
                     ("pool", PoolDataset(args.out, segment=11.0, items_per_epoch=args.items))):
        n = min(args.items, len(ds))
        ds[0]  # warm the page cache path
        wall = time.perf_counter()
        for i in range(n):
            ds[i * (len(ds) // n)]
        per_item = (time.perf_counter() - wall) / n
        print(f"{name} item (4 stems x 11 s, 44.1 kHz stereo): {per_item * 1e3:.1f} ms, "
              f"{per_item / 4 * 1e3:.1f} ms per stem segment")


if __name__ == "__main__":
    main()
