"""Run a model over every stem and record its output volumes (labelnoise/cli/filter.py; `labelnoise-filter`).

    torchrun --nproc_per_node=4 filter.py --model runs/step3/model.th --data data/labelnoise --name pretrain3
"""
import sys

from labelnoise.cli.filter import main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
