"""separate.py's output options on a small model: formats, --two-stems, --filename, clip modes, --samplerate."""

import numpy as np
import pytest
import soundfile as sf
import torch

import separate
from labelnoise import SOURCES
from labelnoise.audio import MP3_BITRATES, write_audio
from labelnoise.checkpoint import load_model
from labelnoise.inference import apply
from labelnoise.stem_files import check_template, prevent_clip
from tests.test_separate_evaluate import RATE, model_file, tone, write  # noqa: F401 (model_file: a fixture)

MP3_KBPS = {3: MP3_BITRATES[0][1], 2: MP3_BITRATES[1][1], 0: MP3_BITRATES[2][1]}  # by the header's version bits


def mp3_bitrate(data: bytes) -> int:
    """The bitrate in the first MPEG audio frame header (after an ID3 tag), read by hand."""
    at = 0
    if data[:3] == b"ID3":
        at = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    while not (data[at] == 0xFF and data[at + 1] & 0xE0 == 0xE0):
        at += 1
    version = (data[at + 1] >> 3) & 3
    return (0, *MP3_KBPS[version])[data[at + 2] >> 4]


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "song.wav"
    write(path, tone(2, 9000, seed=1), RATE)
    return path


def expected(model_file, song_path):
    wav = sf.read(str(song_path), dtype="float32", always_2d=True)[0].T
    return apply(load_model(model_file), torch.from_numpy(wav)).numpy()


@pytest.mark.parametrize("flags, suffix, fmt, subtype, tol", [
    ([], "wav", "WAV", "PCM_16", 1e-4),
    (["--int24"], "wav", "WAV", "PCM_24", 1e-6),
    (["--float32"], "wav", "WAV", "FLOAT", 1e-7),
    (["--flac"], "flac", "FLAC", "PCM_16", 1e-4),
    (["--flac", "--int24"], "flac", "FLAC", "PCM_24", 1e-6),
])
def test_pcm_formats(tmp_path, model_file, song, flags, suffix, fmt, subtype, tol):
    out = tmp_path / "out"
    assert separate.main([str(model_file), str(song), "-o", str(out), "--clip-mode", "none", *flags]) == 0
    want = expected(model_file, song)
    for k, source in enumerate(SOURCES):
        path = out / "song" / f"{source}.{suffix}"
        meta = sf.info(str(path))
        assert (meta.format, meta.subtype, meta.samplerate, meta.frames) == (fmt, subtype, RATE, 9000)
        got = sf.read(str(path), dtype="float32", always_2d=True)[0].T
        assert np.abs(got - want[k]).max() < tol


@pytest.mark.parametrize("bitrate", [64, 32])
def test_mp3_at_its_bitrate(tmp_path, model_file, song, bitrate):
    out = tmp_path / "out"
    assert separate.main([str(model_file), str(song), "-o", str(out), "--mp3", "--mp3-bitrate",
                          str(bitrate), "--samplerate", "16000"]) == 0
    path = out / "song" / "vocals.mp3"
    assert sf.info(str(path)).format == "MP3"
    assert mp3_bitrate(path.read_bytes()) == bitrate
    # A lossy copy of the estimate: close in level, resampled to 16 kHz.
    got = sf.read(str(path), dtype="float32", always_2d=True)[0]
    assert sf.info(str(path)).samplerate == 16000
    assert 0.3 < np.sqrt(np.mean(got ** 2)) / np.sqrt(np.mean(expected(model_file, song)[3] ** 2)) < 3


def test_mp3_refuses_a_bitrate_the_rate_cannot_have(tmp_path):
    with pytest.raises(ValueError, match="320 kbps is not an MP3 bitrate at 16000 Hz"):
        write_audio(tmp_path / "x.mp3", np.zeros((2, 1600), np.float32), 16000, bitrate=320)
    with pytest.raises(ValueError, match="MP3 holds .* not 96000 Hz"):
        write_audio(tmp_path / "x.mp3", np.zeros((2, 1600), np.float32), 96000)
    with pytest.raises(ValueError, match="FLAC cannot hold FLOAT"):
        write_audio(tmp_path / "x.flac", np.zeros((2, 1600), np.float32), 8000, subtype="FLOAT")


@pytest.mark.parametrize("method, other", [("add", "no_vocals"), ("minus", "minus_vocals"), ("none", None)])
def test_two_stems(tmp_path, model_file, song, method, other):
    out = tmp_path / "out"
    assert separate.main([str(model_file), str(song), "-o", str(out), "--two-stems", "vocals", "--float32",
                          "--clip-mode", "none", "--other-method", method]) == 0
    want = expected(model_file, song)
    written = sorted(p.name for p in (out / "song").iterdir())
    assert written == sorted(["vocals.wav"] + ([f"{other}.wav"] if other else []))
    read = lambda name: sf.read(str(out / "song" / name), dtype="float32", always_2d=True)[0].T  # noqa: E731
    assert np.abs(read("vocals.wav") - want[3]).max() < 1e-7
    if method == "add":
        assert np.abs(read("no_vocals.wav") - want[:3].sum(axis=0)).max() < 1e-6
    if method == "minus":
        mix = sf.read(str(song), dtype="float32", always_2d=True)[0].T
        assert np.abs(read("minus_vocals.wav") - (mix - want[3])).max() < 1e-6


def test_two_stems_of_an_unknown_source(tmp_path, model_file, song, caplog):
    assert separate.main([str(model_file), str(song), "-o", str(tmp_path), "--two-stems", "piano"]) == 2
    assert "--two-stems piano: the model separates drums, bass, other, vocals" in caplog.text


def test_filename_template_and_collisions(tmp_path, model_file, song, caplog):
    other = tmp_path / "b" / "song.flac"
    write(other, tone(2, 4000, seed=5), RATE, subtype="PCM_16")
    out = tmp_path / "out"
    argv = [str(model_file), str(song), str(other), "-o", str(out), "--filename", "{track}.{trackext}-{stem}.{ext}"]
    assert separate.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"song.wav-{s}.wav" for s in SOURCES] + [f"song.flac-{s}.wav" for s in SOURCES])
    # Two inputs that would write the same files: the second is refused, the first still written.
    assert separate.main([str(model_file), str(song), str(other), "-o", str(tmp_path / "o2")]) == 1
    assert "would write" in caplog.text and "as " in caplog.text
    assert sorted(p.name for p in (tmp_path / "o2" / "song").iterdir()) == sorted(f"{s}.wav" for s in SOURCES)


@pytest.mark.parametrize("template, message", [("{track}.{ext}", "has no {stem}"),
                                               ("{track}/{name}.{ext}", "unknown key(s) ['name']")])
def test_bad_templates(template, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_template(template)


def test_clip_modes():
    loud = np.array([[0.5, -2.0, 1.5]], np.float32)
    assert np.allclose(prevent_clip(loud, "rescale"), loud / 2.02)
    quiet = np.array([[0.5, -0.2]], np.float32)
    assert np.array_equal(prevent_clip(quiet, "rescale"), quiet)  # below full scale: untouched
    assert np.allclose(prevent_clip(loud, "clamp"), [[0.5, -0.99, 0.99]])
    assert np.array_equal(prevent_clip(loud, "none"), loud)


def test_clip_mode_rescale_is_the_default(tmp_path, model_file):
    loud = tmp_path / "loud.wav"
    write(loud, 40 * tone(2, 6000, seed=7), RATE)  # the model passes most of it on: stems past full scale
    want = expected(model_file, loud)
    assert np.abs(want).max() > 1.2
    out = tmp_path / "out"
    assert separate.main([str(model_file), str(loud), "-o", str(out), "--int24"]) == 0
    for k, source in enumerate(SOURCES):
        got = sf.read(str(out / "loud" / f"{source}.wav"), dtype="float32", always_2d=True)[0].T
        assert np.abs(got - want[k] / max(1.01 * np.abs(want[k]).max(), 1)).max() < 1e-5


def test_output_rate_option(tmp_path, model_file, song):
    out = tmp_path / "out"
    assert separate.main([str(model_file), str(song), "-o", str(out), "--samplerate", "16000"]) == 0
    meta = sf.info(str(out / "song" / "bass.wav"))
    assert (meta.samplerate, meta.frames) == (16000, 18000)


def test_refused_combinations(capsys):
    for flags in (["--mp3", "--int24"], ["--flac", "--float32"], ["--flac", "--mp3"]):
        with pytest.raises(SystemExit) as stop:
            separate.parse_args(["m.th", "a.wav", "-o", "x", *flags])
        assert stop.value.code == 2
    assert "--int24 and --float32 are for WAV and FLAC" in capsys.readouterr().err
