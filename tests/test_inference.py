"""Overlap-add inference against demucs 4.1.0, bags, shifts, plain mode and edge cases."""
import random

import pytest
import torch
from torch import nn

import demucs.apply as demucs_apply
from demucs.htdemucs import HTDemucs as DemucsHTDemucs
from labelnoise import SOURCES
from labelnoise.bag import Bag, BagError, load_bag, load_model_or_bag
from labelnoise.inference import apply

SMALL = dict(channels=8, depth=2, nfft=512, t_layers=1, t_heads=2, dconv_comp=4,
             segment=0.5, samplerate=8000)


def demucs_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return DemucsHTDemucs(list(SOURCES), **{**SMALL, **overrides}).eval()


def our_copy(reference, **config):
    """Our HTDemucs built with ``config``, holding the weights of a demucs one."""
    from labelnoise.model.htdemucs import HTDemucs
    model = HTDemucs(list(SOURCES), **config)
    model.load_state_dict(reference.state_dict())
    return model.eval()


def noise(batch, length, seed=1):
    return torch.randn(batch, 2, length, generator=torch.Generator().manual_seed(seed))


class FixedOffsets:
    """Stands in for ``random``: hands out a given list of shift offsets."""

    def __init__(self, offsets):
        self.offsets = list(offsets)

    def randint(self, low, high):
        value = self.offsets.pop(0)
        assert low <= value <= high
        return value


class Gain(nn.Module):
    """A separator whose source k is the input times gains[k]: easy to predict."""

    def __init__(self, gains, samplerate=8000, segment=0.5):
        super().__init__()
        self.register_buffer("gains", torch.tensor(gains, dtype=torch.float32))
        self.sources = list(SOURCES)
        self.samplerate = samplerate
        self.audio_channels = 2
        self.segment = segment
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return x[:, None] * self.gains[None, :, None, None]


# A segment is 4000 samples; lengths cover: shorter than a segment, exactly one,
# one more, and several with a ragged end.
@pytest.mark.parametrize("length", [37, 4000, 4001, 14_999])
@pytest.mark.parametrize("batch", [1, 2])
def test_equals_demucs_apply_model(length, batch):
    model = demucs_model()
    mix = noise(batch, length)
    expected = demucs_apply.apply_model(model, mix, shifts=0, overlap=0.25)
    ours = apply(model, mix, batch_size=3)
    assert ours.shape == expected.shape == (batch, 4, 2, length)
    assert torch.allclose(ours, expected, atol=1e-4, rtol=0)


def test_our_model_equals_demucs_apply_model():
    reference = demucs_model()
    mix = noise(1, 10_000)
    expected = demucs_apply.apply_model(reference, mix, shifts=0)
    ours = apply(our_copy(reference, **SMALL), mix)
    assert (ours - expected).abs().max() < 1e-4


@pytest.mark.parametrize("segment,overlap", [(0.3, 0.25), (0.5, 0.5), (0.35, 0.1)])
def test_explicit_segment_and_overlap_equal_demucs(segment, overlap):
    model = demucs_model()
    mix = noise(1, 10_500)
    expected = demucs_apply.apply_model(model, mix, shifts=0, overlap=overlap, segment=segment)
    ours = apply(model, mix, overlap=overlap, segment=segment)
    assert (ours - expected).abs().max() < 1e-4


def test_p1_equals_demucs_apply_model():
    # The full P1 network (26.9 M parameters); a 2 s segment keeps it quick on CPU.
    torch.manual_seed(0)
    reference = DemucsHTDemucs(list(SOURCES), samplerate=44100, segment=2).eval()
    mix = noise(1, int(3.5 * 44100)) * 0.1
    expected = demucs_apply.apply_model(reference, mix, shifts=0)
    assert (apply(reference, mix, batch_size=2) - expected).abs().max() < 1e-4
    assert (apply(our_copy(reference, samplerate=44100, segment=2), mix) - expected).abs().max() < 1e-4


def test_shifts_equal_demucs_with_the_same_offsets(monkeypatch):
    model = demucs_model()
    mix = noise(1, 6500)
    offsets = [0, 4000, 1234]
    monkeypatch.setattr(demucs_apply, "random", FixedOffsets(offsets))
    expected = demucs_apply.apply_model(model, mix, shifts=3)
    ours = apply(model, mix, shifts=3, rng=FixedOffsets(offsets))
    assert (ours - expected).abs().max() < 1e-4


def test_shifts_are_deterministic_under_a_seed():
    model = demucs_model()
    mix = noise(1, 6000)
    a = apply(model, mix, shifts=2, rng=random.Random(5))
    b = apply(model, mix, shifts=2, rng=random.Random(5))
    assert torch.equal(a, b)
    random.seed(7)
    c = apply(model, mix, shifts=2)
    random.seed(7)
    d = apply(model, mix, shifts=2)
    assert torch.equal(c, d)
    # The shifted average is a different estimate from the unshifted one.
    assert (a - apply(model, mix)).abs().max() > 1e-4


def test_bag_selects_each_source_from_its_model():
    gains = [[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]
    models = [Gain(g) for g in gains]
    mix = noise(1, 5000)
    # Drums and other from model 0, bass and vocals from model 1.
    bag = Bag(models, [[1, 0, 1, 0], [0, 1, 0, 1]])
    out = apply(bag, mix)[0]
    for k, chosen in enumerate([0, 1, 0, 1]):
        assert torch.allclose(out[k], gains[chosen][k] * mix[0], atol=1e-5)


def test_bag_weights_average_per_source():
    models = [Gain([1.0] * 4), Gain([3.0] * 4)]
    mix = noise(1, 3000)
    out = apply(Bag(models, [[1, 1, 3, 0.5], [1, 3, 1, 0.5]]), mix)[0]
    expected_gain = [(1 + 3) / 2, (1 + 9) / 4, (3 + 3) / 4, 2.0]
    for k, gain in enumerate(expected_gain):
        assert torch.allclose(out[k], gain * mix[0], atol=1e-5)


def test_bag_equals_demucs_bag_of_models(monkeypatch):
    models = [demucs_model(seed=0), demucs_model(seed=1)]
    weights = [[1, 0, 0.5, 1], [0, 1, 0.5, 1]]
    mix = noise(1, 5500)
    monkeypatch.setattr(demucs_apply, "random", FixedOffsets([5, 600]))
    expected = demucs_apply.apply_model(demucs_apply.BagOfModels(models, weights), mix, shifts=1)
    ours = apply(Bag(models, weights), mix, shifts=1, rng=FixedOffsets([5, 600]))
    assert (ours - expected).abs().max() < 1e-4


def test_bag_refuses_mismatched_models():
    with pytest.raises(BagError, match="b.th: samplerate"):
        Bag([Gain([1] * 4), Gain([1] * 4, samplerate=16000)], names=["a.th", "b.th"])
    other = Gain([1] * 4)
    other.sources = ["a", "b", "c", "d"]
    with pytest.raises(BagError, match="sources"):
        Bag([Gain([1] * 4), other])
    with pytest.raises(BagError, match="zero total weight"):
        Bag([Gain([1] * 4), Gain([1] * 4)], [[1, 1, 1, 0], [1, 1, 1, 0]])
    with pytest.raises(BagError, match="3 values for 4 sources"):
        Bag([Gain([1] * 4)], [[1, 1, 1]])


def test_load_bag_yaml(tmp_path):
    (tmp_path / "m").mkdir()
    for name in ("a.th", "b.th"):
        (tmp_path / "m" / name).write_bytes(b"")
    path = tmp_path / "bag.yaml"
    path.write_text("models: [m/a.th, m/b.th]\nweights: [[1, 0, 1, 0], [0, 1, 0, 1]]\nsegment: 0.25\n")
    loaded = []

    def loader(p):
        loaded.append(p.name)
        return Gain([1.0] * 4 if p.name == "a.th" else [2.0] * 4)

    bag = load_model_or_bag(path, loader=loader)
    assert isinstance(bag, Bag) and loaded == ["a.th", "b.th"]
    assert bag.weights == [[1, 0, 1, 0], [0, 1, 0, 1]] and bag.segment == 0.25
    out = apply(bag, noise(1, 1000))
    assert bag.models[0].seen[0][-1] == 2000  # the bag's segment: 0.25 s at 8 kHz
    assert torch.allclose(out[0, 1], 2 * noise(1, 1000)[0], atol=1e-5)

    path.write_text("models: [m/a.th]\nweight: [[1, 1, 1, 1]]\n")
    with pytest.raises(BagError, match="unknown key"):
        load_bag(path, loader=loader)
    path.write_text("models: [m/missing.th]\n")
    with pytest.raises(BagError, match="missing.th not found"):
        load_bag(path, loader=loader)


def test_load_bag_with_real_checkpoints(tmp_path):
    checkpoint = pytest.importorskip("labelnoise.checkpoint")
    from labelnoise.model.htdemucs import HTDemucs
    if not hasattr(HTDemucs(list(SOURCES), **SMALL), "init_kwargs"):
        pytest.skip("model.htdemucs.HTDemucs does not record init_kwargs yet (save_model needs it)")
    for i, name in enumerate(("x.th", "y.th")):
        torch.manual_seed(i)
        checkpoint.save_model(HTDemucs(list(SOURCES), **SMALL), tmp_path / name)
    (tmp_path / "bag.yaml").write_text("models: [x.th, y.th]\nweights: [[1, 1, 0, 0], [0, 0, 1, 1]]\n")
    bag = load_bag(tmp_path / "bag.yaml")
    assert bag.names[1].endswith("y.th")
    mix = noise(1, 4500)
    out = apply(bag, mix)
    single = [apply(m, mix) for m in bag.models]
    assert torch.allclose(out[:, :2], single[0][:, :2], atol=1e-5)
    assert torch.allclose(out[:, 2:], single[1][:, 2:], atol=1e-5)


def test_plain_mode_normalises_and_uses_back_to_back_chunks():
    model = Gain([1.0, 0.5, 0.25, 0.0])
    mix = noise(1, 9000) * 0.3 + 0.05
    out = apply(model, mix, mode="plain", segment=0.25, batch_size=2)
    # Chunks of 2000 samples, the last one zero-padded: 5 forwards of full length.
    assert [s[-1] for s in model.seen] == [2000, 2000, 2000]
    assert sum(s[0] for s in model.seen) == 5
    mono = mix[0].mean(0)
    mean, std = mono.mean(), mono.std()
    for k, gain in enumerate([1.0, 0.5, 0.25, 0.0]):
        expected = (mix[0] - mean) / std * gain * std + mean
        assert torch.allclose(out[0, k], expected, atol=1e-5)


def test_plain_mode_matches_a_chunk_by_chunk_reference():
    model = demucs_model()
    mix = noise(1, 17_000)
    out = apply(model, mix, mode="plain", segment=0.375)
    mono = mix.mean(1)
    mean, std = mono.mean(), mono.std()
    x = torch.nn.functional.pad((mix - mean) / std, (0, 6 * 3000 - 17_000))
    with torch.no_grad():
        pieces = [model(x[..., i:i + 3000]) for i in range(0, 18_000, 3000)]
    expected = torch.cat(pieces, -1)[..., :17_000] * std + mean
    assert (out - expected).abs().max() < 1e-4


def test_any_length_batch_size_and_device():
    model = demucs_model()
    model.train()
    for length in (1, 50, 3999):
        mix = noise(1, length)[0]  # unbatched (C, T)
        out = apply(model, mix)
        assert out.shape == (4, 2, length) and out.device == mix.device
        assert torch.isfinite(out).all()
    assert model.training  # restored after running in eval mode
    mix = noise(1, 12_000)
    assert (apply(model, mix, batch_size=1) - apply(model, mix, batch_size=8)).abs().max() < 1e-5


def test_bf16_autocast_runs():
    model = demucs_model()
    mix = noise(1, 4500)
    full = apply(model, mix)
    half = apply(model, mix, precision="bf16")
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    # bf16 keeps ~3 significant digits: close, not equal.
    assert (half - full).norm() / full.norm() < 0.1


def test_bad_arguments_are_refused():
    model = demucs_model()
    with pytest.raises(ValueError, match="longer than the model's segment"):
        apply(model, noise(1, 100), segment=2.0)
    with pytest.raises(ValueError, match="channels"):
        apply(model, torch.zeros(1, 3, 100))
    with pytest.raises(ValueError, match="plain mode has no shifts"):
        apply(model, noise(1, 100), mode="plain", shifts=1)
    with pytest.raises(ValueError, match="precision"):
        apply(model, noise(1, 100), precision="fp16")
    with pytest.raises(ValueError, match="empty"):
        apply(model, torch.zeros(2, 0))
