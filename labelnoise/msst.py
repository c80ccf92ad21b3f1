"""Model configs of Music-Source-Separation-Training (MSST) read as they are.

An MSST config names its network (``model: htdemucs``) and holds the
constructor keywords in the section of that name; the sources, sample rate,
channels and segment live under ``training``. Its other sections (``audio``,
the rest of ``training``, ``augmentations``, ``inference``, ``loss``...) are
about training and inference there and are ignored here. Keywords our
HTDemucs does not have are refused by name: MSST's ``num_subbands`` (only 1,
the plain network, is the same network).

    model = load_model("model_htdemucs.ckpt", config="config_musdb18_htdemucs.yaml")
"""
from __future__ import annotations

from pathlib import Path

# MSST `training:` key -> HTDemucs keyword (MSST's models/demucs4ht.py builds the network with these).
TRAINING_KEYS = {"instruments": "sources", "samplerate": "samplerate", "channels": "audio_channels",
                 "segment": "segment"}
# Keywords MSST's HTDemucs takes beyond demucs' and the one value that means demucs' network.
SAME_AS_DEMUCS = {"num_subbands": 1}
ARCHITECTURES = ("htdemucs",)


def is_msst_config(config: dict) -> bool:
    """An MSST config: ``model`` names a section of the same file."""
    return isinstance(config.get("model"), str) and isinstance(config.get(config["model"]), dict)


def model_keywords(config: dict, where: str | Path, error: type[Exception] = ValueError) -> dict:
    """Our ``{"arch": ..., **keywords}`` from an MSST config; ``error`` names ``where`` and the option refused."""
    arch = config["model"]
    if arch not in ARCHITECTURES:
        raise error(f"{where}: an MSST config of model {arch!r}; only {', '.join(ARCHITECTURES)} is supported")
    kwargs = dict(config[arch])
    for key, plain in SAME_AS_DEMUCS.items():
        value = kwargs.pop(key, plain)
        if value != plain:
            raise error(f"{where}: {arch}.{key} = {value!r} is not supported (only {plain}: the network "
                        "demucs and this project share)")
    training = config.get("training") or {}
    if not isinstance(training, dict):
        raise error(f"{where}: 'training' must be a mapping")
    for key, keyword in TRAINING_KEYS.items():
        if key in training and training[key] is not None:
            kwargs[keyword] = list(training[key]) if keyword == "sources" else training[key]
    if "sources" not in kwargs:
        raise error(f"{where}: an MSST config without training.instruments (the sources, in the order of the "
                    "network's outputs)")
    return {"arch": arch, **kwargs}
