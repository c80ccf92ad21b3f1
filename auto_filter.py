"""Keep the stems the filter found clean (labelnoise/cli/auto_filter.py; `labelnoise-auto-filter`).

    python auto_filter.py pretrain3 6 200 20
"""
import sys

from labelnoise.cli.auto_filter import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
