"""Our HTDemucs against demucs 4.1.0's: state dicts, initialisation, outputs.

demucs is a test-only dependency; the model itself never imports it.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from labelnoise import SOURCES
from labelnoise.model import HTDemucs
from labelnoise.model.spec import inverse_spectrogram, spectrogram
from labelnoise.model.transformer import sin_embedding, sin_embedding_2d

demucs_htdemucs = pytest.importorskip("demucs.htdemucs")
Reference = demucs_htdemucs.HTDemucs

P1 = {}
P2 = dict(bottom_channels=512, dconv_mode=3, t_dropout=0.02, t_sparse_attn_window=400)
# Few tokens at the bottom (8 frequency rows, 1/64 of the samples): fast on CPU.
SMALL = dict(channels=8, depth=3, nfft=1024, t_layers=2, t_heads=4)
# Small variants that exercise the other code paths of the reference.
VARIANTS = {
    "small": SMALL,
    "small_p2": dict(SMALL, bottom_channels=48, dconv_mode=3, t_layers=3),
    "depth2_norms": dict(channels=8, depth=2, nfft=512, t_layers=2, t_heads=2,
                         norm_starts=1, norm_groups=2, context_enc=1),
    "post_norm_relu": dict(SMALL, t_norm_first=False, t_gelu=False, t_cross_first=True,
                           t_layer_scale=False, t_layers=3),
    "group_norms": dict(SMALL, t_norm_in=False, t_norm_in_group=True, t_group_norm=True,
                        t_hidden_scale=2.0, rewrite=False, freq_emb=0),
    "cape": dict(SMALL, t_emb="cape"),
    "scaled": dict(SMALL, t_emb="scaled", t_max_positions=2000),
}
SR = 44100


def pair(config: dict, seed: int = 0, **extra):
    """(ours, reference) built from the same seed; the reference then gets our weights."""
    torch.manual_seed(seed)
    ours = HTDemucs(SOURCES, **config, **extra)
    torch.manual_seed(seed)
    reference = Reference(list(SOURCES), **config, **extra)
    reference.load_state_dict(ours.state_dict(), strict=True)
    return ours, reference


def run_both(ours, reference, mix):
    with torch.no_grad():
        return ours(mix), reference(mix)


@pytest.mark.parametrize("config, count", [(P1, 26_899_536), (P2, 41_984_456),
                                           (SMALL, None)], ids=["P1", "P2", "small"])
def test_state_dict_keys_shapes_and_counts(config, count):
    ours = HTDemucs(SOURCES, **config)
    reference = Reference(list(SOURCES), **config)
    ours_sd, ref_sd = ours.state_dict(), reference.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in reference.parameters())
    if count is not None:
        assert n_ours == count


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_state_dicts_match(name):
    ours = HTDemucs(SOURCES, **VARIANTS[name])
    reference = Reference(list(SOURCES), **VARIANTS[name])
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}


def test_weights_copy_both_ways():
    torch.manual_seed(1)
    ours = HTDemucs(SOURCES, **SMALL, segment=0.5).eval()
    torch.manual_seed(2)
    reference = Reference(list(SOURCES), **SMALL, segment=0.5).eval()
    mix = torch.randn(1, 2, 20_000)

    reference.load_state_dict(ours.state_dict(), strict=True)   # ours -> reference
    a, b = run_both(ours, reference, mix)
    assert (a - b).abs().max() < 1e-4

    torch.manual_seed(3)
    other = Reference(list(SOURCES), **SMALL, segment=0.5).eval()
    ours.load_state_dict(other.state_dict(), strict=True)       # reference -> ours
    a, b = run_both(ours, other, mix)
    assert (a - b).abs().max() < 1e-4
    assert not torch.allclose(a, run_both(ours, reference, mix)[1])  # weights really changed


@pytest.mark.parametrize("config", [P1, P2, VARIANTS["small_p2"]], ids=["P1", "P2", "small_p2"])
def test_same_seed_gives_same_initial_weights(config):
    """Modules are created in the reference's order with its init, so the
    same seed draws the same weights: training from scratch starts alike."""
    torch.manual_seed(123)
    ours = HTDemucs(SOURCES, **config).state_dict()
    torch.manual_seed(123)
    ref = Reference(list(SOURCES), **config).state_dict()
    different = [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert different == []


def test_initial_weight_statistics_match_across_seeds():
    """Independent of the RNG stream: per-tensor std of a fresh model (conv
    rescaling, layer scales, embeddings, attention) matches the reference's."""
    torch.manual_seed(10)
    ours = HTDemucs(SOURCES, **P2).state_dict()
    torch.manual_seed(20)
    ref = Reference(list(SOURCES), **P2).state_dict()
    small_log_ratios = []
    for key, ref_value in ref.items():
        mine = ours[key]
        if ref_value.numel() < 2 or ref_value.std() == 0:
            assert torch.equal(mine, ref_value), key  # constants: norms, zero biases, scales
            continue
        ratio = (mine.float().std() / ref_value.float().std()).item()
        if ref_value.numel() >= 1000:
            # The std of >= 1000 uniform draws is known to ~1.5 %: 5 % is 3 sigma.
            assert abs(ratio - 1) < 0.05, (key, ratio)
        else:
            small_log_ratios.append(math.log(ratio))
    # Small tensors (biases of narrow convs) are noisy one by one: check them together.
    assert abs(sum(small_log_ratios) / len(small_log_ratios)) < 0.1


@pytest.mark.parametrize("length", [44_100, 30_001, 1_234, 44_099])
def test_small_eval_outputs_match_when_padded_to_training_length(length):
    ours, reference = pair(SMALL, segment=1)
    ours.eval()
    reference.eval()
    mix = torch.randn(2, 2, length)
    a, b = run_both(ours, reference, mix)
    assert a.shape == (2, 4, 2, length)
    assert (a - b).abs().max() < 1e-4
    assert a.abs().max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("length", [300, 25_000, 70_000])
def test_small_eval_outputs_match_at_native_length(length):
    """use_train_segment=False: every length runs as is, including inputs
    shorter than the STFT padding (300 samples) and longer than a segment."""
    ours, reference = pair(SMALL, segment=1, use_train_segment=False)
    ours.eval()
    reference.eval()
    a, b = run_both(ours, reference, torch.randn(1, 2, length))
    assert a.shape == (1, 4, 2, length)
    assert (a - b).abs().max() < 1e-4


def test_longer_than_training_length_runs_at_its_own_length():
    """demucs 4.1.0 fails on eval inputs longer than its training length; ours
    then behaves as with use_train_segment=False."""
    ours, _ = pair(SMALL, segment=0.5)
    _, free = pair(SMALL, segment=0.5, use_train_segment=False)
    ours.eval()
    free.eval()
    mix = torch.randn(1, 2, 30_000)
    a, b = run_both(ours, free, mix)
    assert (a - b).abs().max() < 1e-4
    with pytest.raises(ValueError, match="longer than training length"):
        ours.valid_length(30_000)


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"small"}))
def test_variant_eval_outputs_match(name):
    ours, reference = pair(VARIANTS[name], segment=0.5)
    ours.eval()
    reference.eval()
    a, b = run_both(ours, reference, torch.randn(2, 2, 20_000))
    assert (a - b).abs().max() < 1e-4


@pytest.mark.parametrize("config, seconds", [(P1, 3), (P2, 2)], ids=["P1", "P2"])
def test_full_model_eval_outputs_match(config, seconds):
    ours, reference = pair(config, segment=seconds)
    ours.eval()
    reference.eval()
    mix = torch.randn(1, 2, int((seconds - 0.5) * SR))  # padded inside, cropped back
    a, b = run_both(ours, reference, mix)
    assert a.shape == (1, 4, 2, mix.shape[-1])
    assert (a - b).abs().max() < 1e-4


def test_train_mode_outputs_and_gradients_match():
    ours, reference = pair(VARIANTS["small_p2"], segment=10)
    ours.train()
    reference.train()
    mix = torch.randn(2, 2, 22_050)
    target = torch.randn(2, 4, 2, 22_050)
    a, b = ours(mix), reference(mix)
    assert (a - b).abs().max() < 1e-4
    (a - target).abs().mean().backward()
    (b - target).abs().mean().backward()
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        assert torch.allclose(p.grad, ref_params[name].grad, rtol=1e-3, atol=1e-6), name
    # Training records the segment length, as the reference does.
    assert ours.segment == reference.segment == Fraction(22_050, SR)


def test_demucs_apply_model_accepts_our_model():
    apply_model = pytest.importorskip("demucs.apply").apply_model
    ours, reference = pair(SMALL, segment=0.5)
    mix = torch.randn(1, 2, int(1.3 * SR))  # 4 overlapping chunks, the last one short
    a = apply_model(ours, mix, shifts=0, split=True, overlap=0.25, progress=False)
    b = apply_model(reference, mix, shifts=0, split=True, overlap=0.25, progress=False)
    assert a.shape == (1, 4, 2, mix.shape[-1])
    assert (a - b).abs().max() < 1e-4


def test_positional_embeddings_match_reference():
    transformer = pytest.importorskip("demucs.transformer")
    ours = sin_embedding(700, 48, shift=3)
    ref = transformer.create_sin_embedding(700, 48, shift=3).permute(1, 0, 2)
    assert torch.allclose(ours, ref, atol=1e-5)
    ours2d = sin_embedding_2d(48, 8, 90)
    ref2d = transformer.create_2d_sin_embedding(48, 8, 90)        # (1, C, F, T)
    ref2d = ref2d.permute(0, 3, 2, 1).reshape(1, 90 * 8, 48)       # time-major tokens
    assert torch.allclose(ours2d, ref2d, atol=1e-5)


def test_spectrogram_round_trip_and_float32_under_autocast():
    t = torch.arange(10_000) / SR
    # Tones well below Nyquist: dropping the Nyquist bin loses nothing.
    x = torch.stack([torch.sin(2 * math.pi * 440 * t), 0.5 * torch.cos(2 * math.pi * 3000 * t)])
    x = x[None].expand(2, 2, -1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        z = spectrogram(x, 1024)
        assert z.dtype == torch.complex64
        assert z.shape == (2, 2, 512, math.ceil(10_000 / 256))
        y = inverse_spectrogram(z, 10_000)
    assert y.dtype == torch.float32
    # Edge frames are dropped, so only the interior comes back exactly.
    assert (y - x)[..., 1024:-1024].abs().max() < 1e-4


@pytest.mark.parametrize("option, value", [
    ("cac", False), ("wiener_iters", 1), ("multi_freqs", [0.5]),
    ("t_sparse_self_attn", True), ("t_sparse_cross_attn", True), ("t_emb", "nope"),
])
def test_unsupported_options_are_refused_by_name(option, value):
    extra = {option: value}
    if option == "wiener_iters":
        extra["end_iters"] = value
    with pytest.raises(ValueError, match=option):
        HTDemucs(SOURCES, **SMALL, **extra)
