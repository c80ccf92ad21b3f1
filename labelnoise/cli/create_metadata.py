"""Index a dataset of stems into a metadata JSON (once; training reads only that).

Either layout: track folders ``ROOT/<track>/{bass,drums,other,vocals}.wav`` or
a stem pool ``ROOT/train/<source>/<track>.wav``. Re-running reuses the entries
of files whose size and mtime did not change. Files that cannot be used
(unreadable, empty, truncated, NaN or infinite samples, more than two
channels) are listed with their reason and skipped; tracks missing a stem,
holding other .wav files or stems of unequal length are listed too. The
JSON is written atomically; exit code 1 for a folder that cannot be indexed.

Commands::

    python create_metadata.py data/labelnoise                 # -> metadata/labelnoise-<hash>.json
    python create_metadata.py data/pool --out runs/meta/pool.json --workers 8
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from labelnoise.errors import command_line
from labelnoise.metadata import METADATA_DIR_ENV, default_metadata_path, index_dataset

log = logging.getLogger("create_metadata")


@command_line(log)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="dataset folder (track folders, or a pool with train/<source>/)")
    parser.add_argument("--out", type=Path, default=None, help=f"metadata JSON (default: ${METADATA_DIR_ENV}/<root name>-<hash>.json, "
                        "the directory defaulting to ./metadata; the dataset itself is never written to)")
    parser.add_argument("--workers", type=int, default=None, help="parallel readers (default: min(8, CPUs))")
    parser.add_argument("--layout", choices=("tracks", "pool"), default=None,
                        help="force the layout instead of detecting it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or default_metadata_path(args.root)
    try:
        meta = index_dataset(args.root, out=out, workers=args.workers, layout=args.layout)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    summary = meta["summary"]
    log.info("%s layout, %s: %d files reused, written to %s", meta["layout"], meta["root"], summary["reused"], out)
    for source, counts in summary["per_source"].items():
        log.info("  %-7s %4d files, %d silent, %d mono, sample rates %s, %d skipped as unusable", source,
                 counts["files"], counts["silent"], counts["mono"], counts["samplerates"], counts["errors"])
    for track, absent in meta["missing"].items():
        log.warning("  track %s has no %s", track, ", ".join(absent))
    for track, names in meta["extra"].items():
        log.warning("  track %s: %s not a source name, ignored", track, ", ".join(names))
    for track, seconds in meta["uneven"].items():
        log.warning("  track %s: stems of unequal length (%s s); training reads up to the shortest", track,
                    ", ".join(f"{s} {v:g}" for s, v in seconds.items()))
    for path, reason in meta["errors"].items():
        log.warning("  skipped %s: %s", path, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
