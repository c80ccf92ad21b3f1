"""Audio I/O: soundfile for reading and writing, soxr for resampling.

Arrays are float32 ``(channels, frames)``. Every read error names the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .atomic import atomic_path


_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile's sndfile.h; soundfile does not name it


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file."""


def _check_exists(path) -> None:
    # libsndfile reports a missing file as a generic "System error".
    if not os.path.exists(path):
        raise AudioError(f"{path}: file not found")


def info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile.info with an error that names the file."""
    _check_exists(path)
    try:
        return sf.info(str(path))
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from None


def read_audio(path: str | os.PathLike, *, start: int = 0, frames: int = -1,
               samplerate: int | None = None, channels: int | None = 2) -> np.ndarray:
    """Read ``frames`` frames from ``start`` (a seek, not a whole-file read).

    ``channels=2`` turns mono into stereo and rejects more than two channels;
    ``channels=None`` keeps the file's channels. With ``samplerate`` given, a
    file at another rate is resampled (``start``/``frames`` count the file's
    own frames).
    """
    try:
        with sf.SoundFile(str(path)) as f:
            if start:
                f.seek(start)
            wav = f.read(frames, dtype="float32", always_2d=True).T
            file_rate = f.samplerate
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from None
    wav = convert_channels(wav, channels, path)
    if samplerate is not None and file_rate != samplerate:
        wav = resample(wav, file_rate, samplerate)
    return np.ascontiguousarray(wav)


def convert_channels(wav: np.ndarray, channels: int | None, path="audio") -> np.ndarray:
    """Mono -> ``channels`` copies; stereo -> mono by the mean; more is an error."""
    if channels is None or wav.shape[0] == channels:
        return wav
    if wav.shape[0] == 1:
        return np.repeat(wav, channels, axis=0)
    if channels == 1:
        return wav.mean(axis=0, keepdims=True)
    raise AudioError(f"{path}: has {wav.shape[0]} channels, expected mono or {channels}")


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``(channels, frames)`` with soxr (high quality)."""
    if from_rate == to_rate:
        return wav
    out = soxr.resample(np.ascontiguousarray(wav.T), from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def write_audio(path: str | os.PathLike, wav, samplerate: int, *, float32: bool = False) -> None:
    """Write ``(channels, frames)`` atomically; 16-bit PCM (clipped) or 32-bit float."""
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().float().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 2:
        raise ValueError(f"{path}: expected audio of shape (channels, frames), got {wav.shape}")
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower(), "WAV")
    subtype = "FLOAT" if float32 else ("VORBIS" if fmt == "OGG" else "PCM_16")
    if not float32:
        wav = np.clip(wav, -1.0, 1.0)
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate, wav.shape[0], subtype=subtype, format=fmt) as f:
            if subtype == "FLOAT":
                # No PEAK chunk: it holds the time of writing, so the same audio would differ byte for byte.
                sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, sf._snd.SF_FALSE)
            f.write(wav.T)
