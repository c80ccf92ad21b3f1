"""What a folder was made from, compared before it is used.

Two folders record their origin:

- the filter's outputs (``filter.py``): ``OUTPUTS/filter.json`` names the
  dataset, key and speed it ran with; ``auto_filter.py`` refuses to apply
  those volumes to another ``--data`` or with another KEY or SPEED (it would
  copy one dataset's files on another's decisions). The original code's WAV
  folders record nothing and are taken as they are.
- a stem pool (``auto_filter.py``): ``DEST/selection.json`` says
  ``"complete": false`` from the moment it starts writing until the pool is
  whole; training refuses such a pool (a killed run leaves a few files of
  some sources) until the same command has run to its end.

    from labelnoise.provenance import check_pool_finished, check_outputs_origin
    check_pool_finished("data/labelnoise_clean_dataset_predicted_by_pretrain3_key6_speed200")
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .files import FILTER_SETTINGS_FILE, SELECTION_FILE


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(record).__name__}")
    return record


def check_pool_finished(root: str | os.PathLike) -> None:
    """A folder whose ``selection.json`` says ``"complete": false`` is a ValueError; no record passes."""
    path = Path(root) / SELECTION_FILE
    if path.is_file() and _read_record(path).get("complete") is False:
        raise ValueError(f"{path}: this pool is unfinished (\"complete\": false: auto_filter.py stopped while "
                         "writing it); run the same auto_filter.py command again to finish it")


def check_outputs_origin(outputs: str | os.PathLike, data: str | os.PathLike, key, speed) -> None:
    """``OUTPUTS/filter.json`` must name ``data``, ``key`` and ``speed``; without it nothing is compared."""
    path = Path(outputs) / FILTER_SETTINGS_FILE
    if not path.is_file():
        return
    made = _read_record(path)
    wrong = []
    if made.get("data") is not None and Path(made["data"]) != Path(data).resolve():
        wrong.append(f"the dataset {made['data']}, not --data {Path(data).resolve()}")
    for name, value in (("key", key), ("speed", speed)):
        if made.get(name) is not None and made[name] != value:
            wrong.append(f"{name} {made[name]}, not {value}")
    if wrong:
        raise ValueError(f"{path}: these filter outputs were made with {'; '.join(wrong)}; give the "
                         "--data, KEY and SPEED the filter ran with, or the --outputs of this data's run")
