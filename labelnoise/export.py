"""Export a model or a bag of models as a demucs package (or bag), for the demucs CLI and API.

    python -m labelnoise.export runs/step3/model.th --out release --name pretrain3
    python -m labelnoise.export runs/final.yaml --out release --name final --half
    python -m labelnoise.export model_htdemucs.ckpt --model-config config_musdb18_htdemucs.yaml --out release --name msst
    labelnoise-export runs/final.yaml --out release --name final

then, with demucs installed (no network: ``--repo`` is a local folder):

    python -m demucs.separate --repo release -n final song.wav
    demucs.pretrained.get_model("final", repo=Path("release"))

A model becomes ``OUT/NAME.th``. A bag becomes one package per member,
``OUT/NAME_0.th``, ``OUT/NAME_1.th``..., and ``OUT/NAME.yaml`` naming them
as demucs signatures with the bag's weights and segment; this project's
``separate.py`` reads that YAML too. Only HTDemucs exports: demucs has no
MaskNet. ``--half`` stores float16 weights, as demucs' own packages. Exit
code 0, or 2 with one line naming the file and the problem.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from .atomic import write_text
from .bag import Bag, BagError, load_model_or_bag
from .checkpoint import CheckpointError, export_demucs
from .errors import command_line

log = logging.getLogger("export")


def export(model, out: str | Path, name: str, half: bool = False) -> list[Path]:
    """Write ``model`` (a network or a Bag) under ``out`` for demucs; returns the files written."""
    out = Path(out)
    if not isinstance(model, Bag):
        return [export_demucs(model, out, name, half=half)]
    written = []
    for k, member in enumerate(model.models):
        written.append(export_demucs(member, out, f"{name}_{k}", half=half))
    spec = {"models": [p.stem for p in written], "weights": model.weights}
    if model.segment_override is not None:
        spec["segment"] = float(model.segment_override)
    bag_file = out / f"{name}.yaml"
    write_text(bag_file, yaml.safe_dump(spec, sort_keys=False))
    return [*written, bag_file]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="labelnoise-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a checkpoint load_model reads, or a bag YAML")
    parser.add_argument("--out", type=Path, required=True, help="the demucs repo folder to write into")
    parser.add_argument("--name", required=True, help="the name demucs takes with -n (no '-' or '/')")
    parser.add_argument("--model-config", type=Path,
                        help="the model config of a bare state dict (ours, or an MSST config)")
    parser.add_argument("--half", action="store_true", help="float16 weights (half the size)")
    return parser.parse_args(argv)


@command_line(log)
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        model = load_model_or_bag(args.model, config=args.model_config)
        written = export(model, args.out, args.name, half=args.half)
    except (BagError, CheckpointError, TypeError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    for path in written:
        print(path)
    log.info("python -m demucs.separate --repo %s -n %s SONG", args.out, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
