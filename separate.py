"""Separate songs into stems (labelnoise/cli/separate.py; `labelnoise-separate`).

    python separate.py runs/final.yaml song.flac --out separated/ --mp3
"""
import sys

from labelnoise.cli.separate import main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
