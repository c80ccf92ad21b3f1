"""Audio I/O: soundfile for reading and writing, soxr for resampling.

Arrays are float32 ``(channels, frames)``. Every read error names the file.
Two faults libsndfile lets through silently are errors here: a WAV whose
header announces more frames than the file holds (libsndfile reads what is
there, a shorter file), checked by ``info`` and by whole-file reads; and NaN
or infinite samples in a float file, checked by every read (``check_finite``).

Float WAVs are written without libsndfile's PEAK chunk, which holds the time
of writing: the same samples always give the same bytes.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .atomic import atomic_path


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file."""


def _check_exists(path) -> None:
    # libsndfile reports a missing file as a generic "System error".
    if not os.path.exists(path):
        raise AudioError(f"{path}: file not found")


# Subtypes whose samples can be NaN or infinite (integer PCM cannot).
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
# sndfile.h: SFC_SET_ADD_PEAK_CHUNK (soundfile has no name for it).
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile.info with an error that names the file; a truncated WAV is an error."""
    _check_exists(path)
    try:
        meta = sf.info(str(path))
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from None
    check_complete(path, meta.format)
    return meta


def check_complete(path: str | os.PathLike, fmt: str) -> None:
    """A RIFF WAV whose ``data`` chunk announces more bytes than the file holds was cut off.

    libsndfile reads what is there and reports that many frames, so the file
    would pass as a shorter one. A size of 0 or 0xFFFFFFFF (a writer that
    never filled it in) says nothing and passes.
    """
    if fmt not in ("WAV", "WAVEX"):
        return
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
                return
            block = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return
                name, length, start = chunk[:4], int.from_bytes(chunk[4:], "little"), f.tell()
                if name == b"fmt ":
                    block = int.from_bytes(f.read(16)[12:14], "little")  # bytes per frame
                elif name == b"data":
                    held = size - start
                    if 0 < length < 0xFFFFFFFF and length > held and block:
                        raise AudioError(f"{path}: truncated: its header announces {length // block} frames, "
                                         f"the file holds {held // block}")
                    return
                f.seek(start + length + (length & 1))  # chunks are padded to an even size
    except OSError as exc:
        raise AudioError(f"{path}: not readable ({exc.strerror or exc})") from None


def check_finite(wav: np.ndarray, path) -> None:
    """NaN or infinite samples are an error naming the file (a separator or a loss would spread them)."""
    if not np.isfinite(wav).all():
        bad = int(wav.size - np.isfinite(wav).sum())
        raise AudioError(f"{path}: holds {bad} NaN or infinite sample(s)")


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
            file_rate, fmt, subtype = f.samplerate, f.format, f.subtype
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from None
    if start == 0 and frames < 0:
        check_complete(path, fmt)
    if subtype in FLOAT_SUBTYPES:
        check_finite(wav, path)
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


# File suffix -> libsndfile format; the encodings each can hold (the first is the default).
FORMATS = {".wav": ("WAV", ("PCM_16", "PCM_24", "FLOAT")), ".flac": ("FLAC", ("PCM_16", "PCM_24")),
           ".ogg": ("OGG", ("VORBIS",)), ".mp3": ("MP3", ("MPEG_LAYER_III",))}
# MP3 constant bitrates (kbps) by MPEG version, chosen by libsndfile from the sample rate:
# MPEG-1 from 32 kHz, MPEG-2 from 16 kHz, MPEG-2.5 below.
MP3_BITRATES = ((32000, (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)),
                (16000, (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)),
                (0, (8, 16, 24, 32, 40, 48, 56, 64)))
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def mp3_compression(path, samplerate: int, bitrate: int) -> float:
    """libsndfile's compression level that gives ``bitrate`` kbps, constant.

    libsndfile sets LAME's bitrate to ``int(top - level * (top - bottom))`` over
    the range of the MPEG version (32-320, 8-160 or 8-64 kbps) and LAME takes
    the nearest standard rate; level 1.0 is refused, hence the 0.999 cap.
    """
    if samplerate not in MP3_RATES:
        raise ValueError(f"{path}: MP3 holds {', '.join(map(str, MP3_RATES))} Hz, not {samplerate} Hz "
                         "(choose the output rate with --samplerate)")
    allowed = next(rates for floor, rates in MP3_BITRATES if samplerate >= floor)
    if bitrate not in allowed:
        raise ValueError(f"{path}: {bitrate} kbps is not an MP3 bitrate at {samplerate} Hz; one of {allowed}")
    top, bottom = allowed[-1], allowed[0]
    return min((top - bitrate) / (top - bottom), 0.999)


def write_audio(path: str | os.PathLike, wav, samplerate: int, *, float32: bool = False,
                subtype: str | None = None, bitrate: int = 320) -> None:
    """Write ``(channels, frames)`` atomically, the format from the suffix (.wav, .flac, .ogg, .mp3).

    ``subtype``: ``PCM_16`` (the default), ``PCM_24``, ``FLOAT`` (also ``float32=True``); FLAC holds
    PCM only, OGG and MP3 their own codecs (MP3 at ``bitrate`` kbps, constant). Everything but
    float is clipped to [-1, 1].
    """
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().float().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 2:
        raise ValueError(f"{path}: expected audio of shape (channels, frames), got {wav.shape}")
    path = Path(path)
    fmt, subtypes = FORMATS.get(path.suffix.lower(), FORMATS[".wav"])
    subtype = "FLOAT" if float32 else subtype
    if subtype is None or fmt in ("OGG", "MP3"):
        subtype = subtypes[0] if subtype in (None, "PCM_16") else subtype
    if subtype not in subtypes:
        raise ValueError(f"{path}: {fmt} cannot hold {subtype} samples (it holds {', '.join(subtypes)})")
    options = {}
    if fmt == "MP3":
        if "MP3" not in sf.available_formats():
            raise ValueError(f"{path}: this libsndfile ({sf.__libsndfile_version__}) writes no MP3; "
                             "soundfile's wheels (>= 0.12) bring one that does")
        options = {"compression_level": mp3_compression(path, samplerate, bitrate), "bitrate_mode": "CONSTANT"}
    if subtype != "FLOAT":
        wav = np.clip(wav, -1.0, 1.0)
    # Encoded in memory, then written as bytes: a full disk or a read-only folder is then an
    # OSError that says so (libsndfile reports only "System error").
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate, wav.shape[0], subtype=subtype, format=fmt, **options) as f:
        if subtype == "FLOAT" and fmt == "WAV":
            # No PEAK chunk: it records the time of writing, so equal samples would give other bytes.
            sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, sf._snd.SF_FALSE)
        f.write(wav.T)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
