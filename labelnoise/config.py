"""Stage configs: ``configs/base.yaml`` <- ``configs/<stage>.yaml`` <- command-line ``a.b=value``.

A stage file names what it extends (``extends: base.yaml``, or a list, paths
relative to the file) and states only what differs. ``base.yaml`` is the
schema: a key it does not have is an error naming the key and where it came
from, and a value of another kind (a string where base has a number, ...)
too. The ``model`` section holds the network's constructor keywords, checked
against the architecture's signature instead. A file that sets ``model.arch``
to another architecture than the one merged so far replaces the whole
``model`` section rather than merging into it, so it states every keyword its
network needs (``sources``, ``samplerate``...): ``configs/demo/joint360.yaml``
extends ``../joint360.yaml`` (HTDemucs P2 keywords) and swaps in MaskNet this
way. A command-line ``model.arch=...`` merges like any override.

The resolved config is then checked as a whole (``RANGES``): counts are
integers in range (``optim.batch_size >= 1``), ratios lie in their interval
(``0 < optim.trunc_ratio <= 1``), choices are among their words
(``optim.loss``), so that a bad value is a ConfigError (train.py: exit 2)
before any run dir exists, not a failure in the middle of training.

    cfg = load_config("configs/step2.yaml", ["optim.lr=2e-4", "data.root=/scratch/labelnoise"])
    cfg["run"]["name"]     # "step2": runs go to runs/step2/
"""
from __future__ import annotations

import difflib
import inspect
import math
import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import metric_log
from .atomic import write_text
from .yamlio import load as load_yaml
from .yamlio import read_mapping

BASE_NAME = "base.yaml"
# The schema and the defaults of every stage: this checkout's configs/base.yaml.
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / BASE_NAME
# Sections whose keys are not fixed by base.yaml.
FREE_SECTIONS = ("model",)
# Keys whose value may be a word or a boolean (auto, true, false): checked by their owner instead.
MIXED_KINDS = ("run.tensorboard", "run.wandb")
# The network a config builds when its model section names none.
DEFAULT_ARCH = "htdemucs"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file or the key."""


def _read_yaml(path: Path) -> dict:
    return read_mapping(path, ConfigError, "a mapping of config sections")


def _merge(base: dict, update: dict) -> dict:
    out = deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = deepcopy(value)
    return out


def _drop_other_arch(config: dict, update: dict) -> dict:
    """``config`` without its ``model`` section when the file ``update`` names another architecture.

    The keywords of one network mean nothing to another (HTDemucs' ``channels``
    would be an unknown keyword of MaskNet), so a file that switches
    ``model.arch`` starts the section afresh instead of merging into it.
    """
    model = update.get("model")
    arch = model.get("arch") if isinstance(model, dict) else None
    if arch is None or arch == config.get("model", {}).get("arch", DEFAULT_ARCH):
        return config
    return {key: value for key, value in config.items() if key != "model"}


def _layers(path: Path, seen: tuple = ()) -> list[tuple[Path, dict]]:
    """The chain of files behind ``path``, most general first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(p.name for p in seen)}")
    data = _read_yaml(path)
    parents = data.pop("extends", [])
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: 'extends' must be a file name or a list of them")
    chain = []
    for parent in parents:
        for layer in _layers(path.parent / parent, seen + (path,)):
            if layer[0] not in [p for p, _ in chain]:
                chain.append(layer)
    return chain + [(path, data)]


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null"


def _check(update: dict, schema: dict, where: str, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown config key '{dotted}'{hint}")
        if not prefix and key in FREE_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' must be a mapping")
            continue
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' must be a mapping, got {_kind(value)}")
            _check(value, expected, where, dotted + ".")
        elif (expected is not None and value is not None and _kind(value) != _kind(expected)
              and dotted not in MIXED_KINDS):
            raise ConfigError(f"{where}: '{dotted}' must be {_kind(expected)} (as in {BASE_NAME}), "
                              f"got {_kind(value)}: {value!r}")


def parse_override(text: str) -> dict:
    """``"optim.lr=1e-4"`` -> ``{"optim": {"lr": 0.0001}}`` (the value read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"command line: expected KEY=VALUE with a dotted key, got {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"command line: cannot read the value of {key} ({exc})") from None
    # What YAML leaves a string but float() reads (inf, nan, 1e5 written as 1e5): a number is what anyone means.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(path: str | os.PathLike, overrides=()) -> dict:
    """Resolve a stage config: its ``extends`` chain, then ``overrides`` (``a.b=value`` strings)."""
    path = Path(path)
    layers = _layers(path)
    base_path, schema = layers[0]
    if base_path.name != BASE_NAME:
        raise ConfigError(f"{path}: its extends chain must start at {BASE_NAME}, starts at {base_path.name}")
    config = {}
    for file, data in layers:
        if file != base_path:
            _check(data, schema, str(file))
        config = _merge(_drop_other_arch(config, data), data)
    for text in overrides:
        update = parse_override(text)
        _check(update, schema, f"command line '{text}'")
        config = _merge(config, update)
    if config.get("run", {}).get("name") is None:
        config.setdefault("run", {})["name"] = path.stem
    check_model_config(config.get("model", {}), str(path))
    _check_ranges(config, str(path))
    _check_consistent(config, str(path))
    return config


@dataclass(frozen=True)
class Range:
    """The numbers a config value may be: ``low``/``high`` bounds (None: none), each open or closed."""
    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    def fits(self, value) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        bounds = [f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "",
                  f"{'<' if self.high_open else '<='} {self.high:g}" if self.high is not None else ""]
        text = ("an integer " if self.integer else "a number ") + " and ".join(b for b in bounds if b)
        return text.strip() + (" or null" if self.nullable else "")


COUNT = Range(1, integer=True)      # 1, 2, ...
SIZE = Range(0, integer=True)       # 0, 1, ...
POSITIVE = Range(0, low_open=True)  # > 0
AT_LEAST_0 = Range(0)
PROBA = Range(0, 1)
# Every value with a range or a set of choices; the network's own keywords (model.*) only where
# data and inference rely on them (a keyword left out takes the network's default).
RANGES: dict[str, Range | tuple] = {
    "run.seed": Range(integer=True), "run.save_every_minutes": POSITIVE,
    "model.samplerate": COUNT, "model.segment": POSITIVE, "model.audio_channels": Range(1, 2, integer=True),
    "data.mode": ("tracks", "pool"), "data.samplerate": COUNT, "data.segment": POSITIVE,
    "data.stride": POSITIVE, "data.grid": POSITIVE, "data.items_per_epoch": Range(1, integer=True, nullable=True),
    "data.workers": SIZE,
    "augment.shift": AT_LEAST_0, "augment.scale.proba": PROBA, "augment.scale.min": POSITIVE,
    "augment.scale.max": POSITIVE, "augment.remix.proba": PROBA, "augment.remix.group_size": SIZE,
    "augment.repitch.backend": ("rubberband", "vocoder"), "augment.repitch.proba": PROBA,
    "augment.repitch.max_pitch": AT_LEAST_0, "augment.repitch.max_tempo": Range(0, 100, high_open=True),
    "augment.repitch.tempo_std": AT_LEAST_0,
    "optim.loss": ("l1", "mse", "l1_trunc", "mse_trunc"), "optim.trunc_ratio": Range(0, 1, low_open=True),
    "optim.trunc_by": ("absolute", "relative"), "optim.trunc_scope": ("local", "global", "running"),
    "optim.trunc_window": COUNT, "optim.lr": POSITIVE, "optim.weight_decay": AT_LEAST_0,
    "optim.clip_grad": AT_LEAST_0, "optim.ema": Range(0, 1, high_open=True), "optim.epochs": SIZE,
    "optim.batch_size": COUNT, "optim.accumulate": COUNT,
    "train.precision": ("bf16", "float32"), "train.max_bad_steps": COUNT,
    "valid.every": COUNT, "valid.shifts": SIZE, "valid.overlap": Range(0, 1, high_open=True),
}


def _lookup(config: dict, dotted: str):
    value = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def base_default(dotted: str):
    """A key's value in the checkout's ``configs/base.yaml``, the one place a default such as ``data.root``
    is written (ConfigError where the file is absent, as in an installed wheel without the configs)."""
    value = _lookup(_read_yaml(BASE_CONFIG), dotted)
    if value is None:
        raise ConfigError(f"{BASE_CONFIG}: has no value for '{dotted}'")
    return value


def _check_ranges(config: dict, where: str) -> None:
    """Every value of ``RANGES`` in its range, then the lists and the pairs of values."""
    for dotted, allowed in RANGES.items():
        value = _lookup(config, dotted)
        if dotted.startswith("model.") and value is None:
            continue  # a network keyword left to its default
        if isinstance(allowed, Range) and not allowed.fits(value):
            raise ConfigError(f"{where}: {dotted} must be {allowed.describe()}, got {value!r}")
        if isinstance(allowed, tuple) and value not in allowed:
            raise ConfigError(f"{where}: {dotted} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    weights, betas = config["optim"]["weights"], config["optim"]["betas"]
    if not all(AT_LEAST_0.fits(w) for w in weights) or not sum(weights) > 0:
        raise ConfigError(f"{where}: optim.weights must be numbers >= 0 with a positive sum, got {weights!r}")
    if len(betas) != 2 or not all(Range(0, 1, high_open=True).fits(b) for b in betas):
        raise ConfigError(f"{where}: optim.betas must be two numbers >= 0 and < 1, got {betas!r}")
    scale = config["augment"]["scale"]
    if scale["min"] > scale["max"]:
        raise ConfigError(f"{where}: augment.scale.min {scale['min']} is above augment.scale.max {scale['max']}")
    if config["data"]["mode"] == "pool" and config["data"]["items_per_epoch"] is None:
        raise ConfigError(f"{where}: data.items_per_epoch must be set for data.mode pool "
                          "(an epoch is that many items)")


def _check_consistent(config: dict, where: str) -> None:
    model, data, optim = config["model"], config["data"], config["optim"]
    problem = metric_log.unavailable(config["run"])
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if model.get("samplerate", 44100) != data["samplerate"]:
        raise ConfigError(f"{where}: model.samplerate {model.get('samplerate', 44100)} differs from "
                          f"data.samplerate {data['samplerate']}")
    sources = model.get("sources", [])
    if len(optim["weights"]) != len(sources):
        raise ConfigError(f"{where}: optim.weights has {len(optim['weights'])} entries for "
                          f"{len(sources)} sources {sources}")


def check_model_config(model: dict, where: str) -> None:
    """Keys of the ``model`` section must be the architecture's constructor keywords."""
    from .checkpoint import architectures

    arch = model.get("arch", DEFAULT_ARCH)
    if arch not in architectures():
        raise ConfigError(f"{where}: unknown model.arch {arch!r}, expected one of {sorted(architectures())}")
    params = inspect.signature(architectures()[arch]).parameters
    for key in model:
        if key != "arch" and key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean 'model.{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown config key 'model.{key}': not a keyword of {arch}{hint}")


def build_model(config: dict):
    """The network a resolved config describes (its ``model`` section)."""
    from .checkpoint import architectures

    model = dict(config["model"])
    arch = model.pop("arch", DEFAULT_ARCH)
    return architectures()[arch](**model)


def run_dir(config: dict) -> Path:
    """``<run.root>/<run.name>``: deterministic, never a timestamp."""
    return Path(config["run"]["root"]) / config["run"]["name"]


def run_path(config: dict, value: str | None) -> Path | None:
    """An ``init_from``/``resume_from`` value: a bare name is a run under ``run.root``, else a path."""
    if value is None:
        return None
    if "/" not in value and os.sep not in value and not value.endswith((".th", ".ckpt", ".pt")):
        return Path(config["run"]["root"]) / value
    return Path(value)


def save_config(config: dict, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text(path, yaml.safe_dump(config, sort_keys=False))
