"""Train one stage from one config (the code: labelnoise/cli/train.py; `labelnoise-train` is the same).

    python train.py configs/step1.yaml data.root=/data/labelnoise
"""
import sys

from labelnoise.cli.train import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
