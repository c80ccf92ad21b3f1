"""Run a model over every stem of a dataset (pitch +6, twice as fast) and record its four output volumes.

One process (CPU, or one GPU):

    python filter.py --model runs/step3/model.th --data data/labelnoise --name pretrain3
    python filter.py --model bags/joint360.yaml --data data/labelnoise --mode plain --name joint360

One node, 4 GPUs (the stems are shared out over the processes by duration):

    torchrun --standalone --nproc_per_node=4 filter.py --model runs/step3/model.th \\
        --data data/labelnoise --name pretrain3 --device cuda --precision bf16 --batch-size 8

Two processes on a CPU (gloo), as the tests do:

    torchrun --standalone --nproc_per_node=2 filter.py --model model.th --data data/tiny --device cpu

The dataset is ``ROOT/<track>/{drums,bass,other,vocals}.wav`` (``mixture.wav``
is not read). The output folder (default
``evaluator_outputs_{name}_key{key}_speed{speed}``, ``name`` defaulting to the
model file's name) gets ``volumes.jsonl`` (one line per track and stem: the
four output volumes in dB, the silent flag, the stem's duration; see
labelnoise/volumes.py), ``filter.json`` (the settings) and, with
``--save-audio``, the four outputs as float WAVs in the original's layout
``{stem}/{track}/{source}.wav``; ``auto_filter.py`` reads either.

``--mode overlap`` (overlap-add, overlap 0.25, ``--shifts 1``) is the first
filter; ``--mode plain`` (normalised back-to-back chunks, no shifts) the
second. Running the same command again resumes: stems already recorded are
skipped; into a folder made with other settings it refuses. A missing stem
file is skipped and counted; a stem file that cannot be used (not audio,
truncated, NaN or infinite samples, more than two channels) stops the run
with its name, or, with ``--skip-bad``, is skipped, counted and tried again
by the next run; a run that could use no stem at all fails.

Exit codes: 0 done; 1 the run failed (a dataset folder that does not exist,
an unusable file, other settings in the folder, a model that cannot be
loaded, a read-only or full disk); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from labelnoise import distributed
from labelnoise.audio import AudioError
from labelnoise.bag import BagError, load_model_or_bag
from labelnoise.errors import command_line
from labelnoise.files import filter_outputs_dir, suffix
from labelnoise.filtering import FilterError, default_out_dir, run_filter
from labelnoise.inference import MODES, PRECISIONS

log = logging.getLogger("filter")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="checkpoint (any format labelnoise.checkpoint reads) or a bag YAML")
    parser.add_argument("--data", required=True, type=Path, help="dataset root: ROOT/<track>/<stem>.wav")
    parser.add_argument("--name", default=None,
                        help="name in the default output folder (default: the model file's name)")
    parser.add_argument("--key", type=int, default=6, help="pitch change in semitones (default 6)")
    parser.add_argument("--speed", type=int, default=200, help="tempo in percent (default 200: twice as fast)")
    parser.add_argument("--mode", choices=MODES, default="overlap",
                        help="overlap-add (first filter, default) or plain normalised chunks (second)")
    parser.add_argument("--shifts", type=int, default=None,
                        help="random shifts averaged (default 1 in overlap mode, 0 in plain)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {filter_outputs_dir(suffix('{name}', '{key}', '{speed}'))})")
    parser.add_argument("--save-audio", action="store_true",
                        help="also write the four outputs as OUT/{stem}/{track}/{source}.wav")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="bf16 runs the model under autocast (CUDA)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="segments per forward pass (default: 1 on CPU, 4 on GPU)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip and count unreadable stem files instead of stopping")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random shift offsets (default 0)")
    args = parser.parse_args(argv)
    if args.shifts is None:
        args.shifts = 0 if args.mode == "plain" else 1
    if args.mode == "plain" and args.shifts:
        parser.error("--mode plain has no shifts; leave --shifts out")
    if args.speed <= 0 or args.key < 0 or args.shifts < 0 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("need --speed > 0, --key >= 0 (semitones up), --shifts >= 0 and --batch-size >= 1")
    return args


@command_line(log)
def main(argv=None) -> int:
    args = parse_args(argv)
    distributed.setup_logging(distributed.env_rank())
    name = args.name or args.model.stem
    out = args.out or default_out_dir(name, args.key, args.speed)
    dist = distributed.setup(args.device)
    try:
        model = load_model_or_bag(args.model)
        with logging_redirect_tqdm():
            summary = run_filter(args.data, out, model, key=args.key, speed=args.speed, mode=args.mode,
                                 shifts=args.shifts, precision=args.precision, device=dist.device,
                                 batch_size=args.batch_size, model_name=str(args.model.resolve()),
                                 save_audio=args.save_audio, skip_bad=args.skip_bad, seed=args.seed,
                                 dist=dist)
    except (FilterError, AudioError, BagError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        distributed.cleanup()
    if dist.is_main:
        log.info("%s", summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
