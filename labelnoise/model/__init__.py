"""The networks, ``labelnoise.model``: their source is the repository's ``model/`` folder.

An installed package holds those files here (pyproject.toml maps ``model/`` to
``labelnoise/model/``); in a checkout this file points the package at the
folder instead, so the same files load under the same name either way.
"""
from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "model")]

from .htdemucs import HTDemucs  # noqa: E402
from .masknet import MaskNet  # noqa: E402

__all__ = ["HTDemucs", "MaskNet"]
