"""Index a dataset of stems into a metadata JSON (labelnoise/cli/create_metadata.py; `labelnoise-create-metadata`).

    python create_metadata.py data/labelnoise --workers 8
"""
import sys

from labelnoise.cli.create_metadata import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
