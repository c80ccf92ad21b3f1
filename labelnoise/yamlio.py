"""Reading YAML (configs, bags, model configs) with one loader, and errors that name the file.

PyYAML follows YAML 1.1, whose float pattern needs a dot and a signed
exponent: ``lr: 1e-4`` would be the string ``"1e-4"``. ``Loader`` is
``yaml.SafeLoader`` with the YAML 1.2 float pattern, so ``1e-4``, ``3E5`` and
``1.5e+3`` are floats as anyone writing them means. Every YAML this project
reads goes through ``load`` or ``read_mapping``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml


class Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` (no dot, unsigned exponent) as a float."""


# PyYAML's own float resolver (YAML 1.1) plus the forms with an exponent and no dot
# (YAML 1.2 core schema: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?).
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
# Resolvers are looked up by first character; copy the table so SafeLoader itself is untouched.
Loader.yaml_implicit_resolvers = {key: [(tag, rx) for tag, rx in value if tag != "tag:yaml.org,2002:float"]
                                  for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load(text: str):
    """The YAML document in ``text`` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader


def read_mapping(path: str | os.PathLike, error: type[Exception] = ValueError, what: str = "a mapping") -> dict:
    """The mapping in a YAML file (an empty file is ``{}``); ``error`` is raised naming the file."""
    path = Path(path)
    try:
        data = load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: not readable YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected {what}, found {type(data).__name__}")
    return data
