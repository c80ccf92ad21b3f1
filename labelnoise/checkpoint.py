"""Model checkpoints: this project's format, demucs packages, bare and Lightning state dicts.

    from labelnoise.checkpoint import load_model, save_model, export_demucs
    model = load_model("runs/step3/model.th")             # our format
    model = load_model("164037a4.th")                      # a demucs package
    model = load_model("epoch=359.th", config="p2.yaml")   # a state dict + its model config
    export_demucs(model, "release/", name="pretrain3")    # -> release/pretrain3.th for demucs

Every file is read with ``torch.load(weights_only=True)``: only tensors, plain
containers and an allow-list of names are accepted. The demucs model classes
are on that list as inert markers (``klass`` in a demucs package names its
class; we map the name, we never import or run demucs), and ``Fraction``
because demucs stores segment lengths such as 39/5 s. Any other global in the
pickle (``os.system``, ...) makes the load fail before anything runs.
"""
from __future__ import annotations

import inspect
import io
import os
import pickle
import re
import warnings
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from . import msst
from .atomic import atomic_path
from .yamlio import read_mapping

FORMAT = "mdx-labelnoise/model-v1"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names the file."""


def architectures() -> dict[str, type[nn.Module]]:
    """Networks a checkpoint may name, by architecture name."""
    from .model.htdemucs import HTDemucs
    from .model.masknet import MaskNet
    return {"htdemucs": HTDemucs, "masknet": MaskNet}


def _architecture_name(model: nn.Module) -> str:
    for name, cls in architectures().items():
        if type(model) is cls:
            return name
    raise TypeError(f"cannot save a {type(model).__name__}: not one of {sorted(architectures())}")


class _DemucsClass:
    """Stands for a demucs model class inside a pickle, by its dotted name."""

    def __init__(self, dotted: str):
        self.dotted = dotted
        self.module, self.name = dotted.rsplit(".", 1)

    def __repr__(self):
        return f"<demucs class {self.dotted}>"


# The classes a demucs package may name; only HTDemucs maps to a network here.
_DEMUCS_CLASSES = {dotted: _DemucsClass(dotted) for dotted in (
    "demucs.htdemucs.HTDemucs", "demucs.hdemucs.HDemucs", "demucs.demucs.Demucs",
    "demucs.wdemucs.WDemucs")}
_DEMUCS_TO_ARCH = {"demucs.htdemucs.HTDemucs": "htdemucs"}
_SAFE_GLOBALS = [(marker, dotted) for dotted, marker in _DEMUCS_CLASSES.items()] + [Fraction]


# ---------------------------------------------------------------- reading

def _reason(exc: BaseException) -> str:
    """One line from torch's (often multi-line) error: the weights-only cause, else the first line.

    Never torch's advice to load with ``weights_only=False``: for a file that
    fails the weights-only check, that advice is how code gets run.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            lines = lines[i + 1:]
            break
    reason = lines[0] if lines else ""
    if "weights_only" in reason or "safe_globals" in reason:
        reason = ""
    # Some failures carry only a number (a bad pickle key): name the error instead.
    return reason if any(c.isalpha() for c in reason) else f"{type(exc).__name__} {reason}".strip()


def read_checkpoint(path: str | os.PathLike):
    """What a checkpoint file holds, read with ``weights_only=True`` and the allow-list above.

    Any failure is a CheckpointError of one line naming the file: missing,
    empty, truncated, not a torch file, or a pickle that asks for a global
    outside the allow-list (nothing in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, expected a model checkpoint")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS), warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the file is refused or read either way.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path}: refused to load: the file asks to import `{found.group(1)}`; a model checkpoint needs "
                "only tensors, plain containers and the demucs model class names") from None
        raise CheckpointError(f"{path}: not a readable checkpoint: corrupt or not a torch file "
                              f"({_reason(exc)})") from None
    except PermissionError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure to parse them means "not a checkpoint"
        # (RuntimeError, EOFError, ValueError, OSError "Invalid argument" from torch's zip reader;
        # TypeError from a pickle that calls an allow-listed name, a demucs class marker, with arguments.)
        raise CheckpointError(f"{path}: not a readable checkpoint: truncated, corrupt or not a torch file "
                              f"({_reason(exc)})") from None


def _model_config_file(config, path: Path) -> dict:
    """The model keywords from a dict or a YAML file: top level, under ``model:``, or an MSST config."""
    if config is None:
        raise CheckpointError(
            f"{path}: holds bare weights without a model config; pass config= (a YAML file or dict with the "
            "model's constructor keywords, e.g. the `model:` section of a stage config)")
    where = path
    if isinstance(config, (str, os.PathLike)):
        where = config
        config = read_mapping(config, CheckpointError, "a mapping of model keywords")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the model config must be a mapping, got {type(config).__name__}")
    if msst.is_msst_config(config):  # MSST's layout: `model: htdemucs` and an `htdemucs:` section
        return msst.model_keywords(config, where, CheckpointError)
    if isinstance(config.get("model"), dict):
        config = config["model"]
    return dict(config)


def _split_arch(config: dict, path: Path) -> tuple[str, dict]:
    config = dict(config)
    arch = config.pop("arch", "htdemucs")
    if arch not in architectures():
        raise CheckpointError(f"{path}: unknown architecture {arch!r}, expected one of {sorted(architectures())}")
    return arch, config


def _build(arch: str, kwargs: dict, state: dict, path: Path) -> nn.Module:
    cls = architectures()[arch]
    unknown = set(kwargs) - set(inspect.signature(cls).parameters)
    if unknown:
        raise CheckpointError(f"{path}: model config has keywords {sorted(unknown)} that {cls.__name__} does not take")
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {cls.__name__} from its config: {exc}") from None
    _load_state(model, state, path)
    return model.eval()


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the weights are not a state dict of tensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise CheckpointError(f"{path}: the weights do not fit the model config ({'; '.join(parts)})")
    # load_state_dict copies into float32 parameters, so float16 demucs states load as float32.
    model.load_state_dict(state, strict=True)


def _from_demucs_package(package: dict, path: Path) -> nn.Module:
    klass = package["klass"]
    dotted = klass.dotted if isinstance(klass, _DemucsClass) else repr(klass)
    if dotted not in _DEMUCS_TO_ARCH:
        raise CheckpointError(f"{path}: a demucs package of {dotted}; only demucs.htdemucs.HTDemucs is supported")
    if package.get("args"):
        raise CheckpointError(f"{path}: a demucs package with positional args {package['args']!r}; expected keywords only")
    state = package["state"]
    if isinstance(state, dict) and "__quantized" in state:
        raise CheckpointError(f"{path}: a diffq-quantized demucs package; only unquantized packages are supported")
    kwargs = dict(package["kwargs"])
    # demucs' own loader drops keywords its class no longer takes; so do we.
    params = inspect.signature(architectures()["htdemucs"]).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    return _build(_DEMUCS_TO_ARCH[dotted], kwargs, state, path)


def load_model(path: str | os.PathLike, config: dict | str | os.PathLike | None = None) -> nn.Module:
    """Load a network in eval mode from any supported checkpoint (see the module docstring).

    ``config`` (a dict or YAML path of constructor keywords, optionally under
    ``model:``) is needed only for bare or Lightning state dicts.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a model checkpoint: expected a dict, found a {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        arch, kwargs = _split_arch(_decode_config(obj["model_config"]), path)
        return _build(arch, kwargs, obj["state_dict"], path)
    if "format" in obj:
        raise CheckpointError(f"{path}: unknown checkpoint format {obj['format']!r}, expected {FORMAT!r}")
    if {"klass", "kwargs", "state"} <= set(obj):
        return _from_demucs_package(obj, path)
    if isinstance(obj.get("state_dict"), dict):
        # Lightning: the network lives under the LightningModule's `model` attribute.
        state = obj["state_dict"]
        prefix = "model."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        arch, kwargs = _split_arch(_model_config_file(config, path), path)
        return _build(arch, kwargs, state, path)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        arch, kwargs = _split_arch(_model_config_file(config, path), path)
        return _build(arch, kwargs, obj, path)
    raise CheckpointError(
        f"{path}: not a model checkpoint: expected our format, a demucs package, a state dict or a Lightning "
        f"checkpoint; found a dict with keys {sorted(map(str, obj))[:6]}")


# ---------------------------------------------------------------- writing

def model_config(model: nn.Module) -> dict:
    """The constructor keywords of ``model`` (recorded by the model itself) plus its architecture name."""
    kwargs = getattr(model, "init_kwargs", None)
    if kwargs is None:
        raise TypeError(f"{type(model).__name__} does not record its constructor keywords (init_kwargs)")
    return {"arch": _architecture_name(model), **kwargs}


def _encode_config(config: dict) -> dict:
    # weights_only loading accepts no Fraction in our own format: keep it exact as "num/den".
    return {k: (f"{v.numerator}/{v.denominator}" if isinstance(v, Fraction) else v) for k, v in config.items()}


def _decode_config(config: dict) -> dict:
    out = dict(config)
    if isinstance(out.get("segment"), str) and "/" in out["segment"]:
        out["segment"] = Fraction(out["segment"])
    return out


def _cpu_state(model: nn.Module, half: bool = False) -> dict:
    dtype = torch.float16 if half else None
    return {k: (v.detach().to("cpu", dtype=dtype if v.is_floating_point() else None).clone())
            for k, v in model.state_dict().items()}


class _WriteRecorder(io.RawIOBase):
    """A file torch.save writes through that keeps the OSError of a failed write.

    torch turns a failed write into a RuntimeError without the cause
    ("unexpected pos ..."); the recorded error says what happened (a full
    disk, a read-only folder).
    """

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise


def save_atomic(obj, path: str | os.PathLike, **kwargs) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a failed write raises the OSError that caused it."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        recorder = _WriteRecorder(handle)
        try:
            torch.save(obj, recorder, **kwargs)
            handle.flush()
        except RuntimeError:
            if recorder.error is None:
                raise
            raise recorder.error from None


def save_model(model: nn.Module, path: str | os.PathLike, **extra) -> None:
    """Write ``model`` in our format, atomically; ``extra`` holds plain metadata (e.g. the run config)."""
    package = {"format": FORMAT, "model_config": _encode_config(model_config(model)),
               "state_dict": _cpu_state(model), **extra}
    save_atomic(package, path)


class _DemucsPickler(pickle._Pickler):
    """Writes our class markers as demucs globals, so demucs can be absent while exporting."""

    def save_global(self, obj, name=None):
        if not isinstance(obj, _DemucsClass):
            return super().save_global(obj, name)
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    def save(self, obj, save_persistent_id=True):
        # Markers are instances, not classes: route them to save_global.
        if isinstance(obj, _DemucsClass):
            memo = self.memo.get(id(obj))
            if memo is not None:
                self.write(self.get(memo[0]))
                return None
            return self.save_global(obj)
        return super().save(obj, save_persistent_id)


class _DemucsPickleModule:
    """The ``pickle_module`` torch.save needs: our Pickler, the rest from pickle."""
    Pickler = _DemucsPickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)
    dump = staticmethod(pickle.dump)


def export_demucs(model: nn.Module, directory: str | os.PathLike, name: str = "exported",
                  half: bool = False, training_args: dict | None = None) -> Path:
    """Write ``directory/name.th``, a package that ``demucs.pretrained.get_model(name, repo=directory)`` loads.

    ``half`` stores float16 weights as demucs' own packages do (half the size).
    """
    if "-" in name or "/" in name:
        raise ValueError(f"demucs package name {name!r} may not contain '-' or '/' (demucs reads '-' as a checksum)")
    config = model_config(model)
    arch = config.pop("arch")
    dotted = {v: k for k, v in _DEMUCS_TO_ARCH.items()}.get(arch)
    if dotted is None:
        raise TypeError(f"cannot export a {type(model).__name__} ({arch}) as a demucs package: demucs has no "
                        "such network, only HTDemucs exports; keep it in this project's format (save_model)")
    package = {"klass": _DEMUCS_CLASSES[dotted], "args": [], "kwargs": config,
               "state": _cpu_state(model, half=half), "training_args": dict(training_args or {})}
    path = Path(directory) / f"{name}.th"
    save_atomic(package, path, pickle_module=_DemucsPickleModule)
    return path
