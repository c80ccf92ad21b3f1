"""Score separated stems (labelnoise/cli/evaluate.py; `labelnoise-evaluate`).

    python evaluate.py data/test est/ --metrics sdr,csdr --csv est/scores.csv
"""
import sys

from labelnoise.cli.evaluate import main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
