"""Reading YAML mappings (configs, bags, model configs) with errors that name the file."""
from __future__ import annotations

import os
from pathlib import Path

import yaml


def read_mapping(path: str | os.PathLike, error: type[Exception] = ValueError, what: str = "a mapping") -> dict:
    """The mapping in a YAML file (an empty file is ``{}``); ``error`` is raised naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: not readable YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected {what}, found {type(data).__name__}")
    return data
