"""Interop with MSST and demucs: MSST htdemucs configs and state dicts, export to a demucs repo
that the demucs CLI separates with exactly as separate.py does, demucs-style bags."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import separate
from labelnoise.bag import Bag, BagError, load_bag
from labelnoise.checkpoint import CheckpointError, load_model, model_config, save_model
from labelnoise.export import export
from labelnoise.export import main as export_main
from labelnoise.model import HTDemucs

SOURCES = ["drums", "bass", "other", "vocals"]
RATE = 8000
SMALL = dict(channels=8, depth=2, nfft=512, t_layers=1, t_heads=2, bottom_channels=0, dconv_comp=4)


def msst_config(network: dict, **changes) -> dict:
    """An MSST config laid out as MSST's configs/config_musdb18_htdemucs.yaml: every section it has."""
    return {
        "audio": {"chunk_size": RATE, "min_mean_abs": 0.001, "hop_length": 1024},
        "training": {"batch_size": 8, "gradient_accumulation_steps": 1, "grad_clip": 0, "segment": 1,
                     "shift": 1, "samplerate": RATE, "channels": 2, "normalize": True,
                     "instruments": SOURCES, "target_instrument": None, "num_epochs": 1000, "lr": "9.0e-05",
                     "optimizer": "adam", "use_amp": True},
        "augmentations": {"enable": True, "loudness": True, "loudness_min": 0.5, "loudness_max": 1.5},
        "inference": {"num_overlap": 4},
        "model": "htdemucs",
        "htdemucs": {"num_subbands": 1, "wiener_iters": 0, "cac": True, "multi_freqs": [], "t_lr": None,
                     "t_sparse_self_attn": False, "dconv_init": "1e-3", **network, **changes},
    }


def write_yaml(path: Path, data: dict) -> Path:
    # Floats as MSST writes them (9.0e-05, 1e-3): unquoted scientific notation.
    text = yaml.safe_dump(data, sort_keys=False).replace("'9.0e-05'", "9.0e-05").replace("'1e-3'", "1e-3")
    path.write_text(text)
    return path


def test_msst_config_and_state_dict_give_the_same_network(tmp_path):
    torch.manual_seed(0)
    net = HTDemucs(sources=SOURCES, samplerate=RATE, segment=1, **SMALL).eval()
    ckpt = tmp_path / "model_htdemucs.ckpt"
    torch.save(net.state_dict(), ckpt)  # MSST saves the bare state dict
    config = write_yaml(tmp_path / "config_htdemucs.yaml", msst_config(SMALL))
    assert "dconv_init: 1e-3" in config.read_text()
    loaded = load_model(ckpt, config=config)
    assert list(loaded.sources) == SOURCES and loaded.samplerate == RATE and loaded.audio_channels == 2
    assert loaded.init_kwargs["dconv_init"] == pytest.approx(1e-3)
    x = torch.randn(1, 2, RATE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    # separate.py takes the pair as it is.
    song = tmp_path / "song.wav"
    sf.write(str(song), x[0].numpy().T, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    assert separate.main([str(ckpt), str(song), "-o", str(out), "--model-config", str(config), "--float32",
                          "--clip-mode", "none"]) == 0
    from labelnoise.inference import apply
    want = apply(net, x[0])
    got, _ = sf.read(str(out / "song" / "vocals.wav"), dtype="float32")
    assert np.abs(got.T - want[3].numpy()).max() < 1e-6


def test_msst_musdb18_config_maps_every_key(tmp_path):
    # The htdemucs section of MSST's config_musdb18_htdemucs.yaml (its values) and its training keys.
    section = dict(channels=48, channels_time=None, growth=2, nfft=4096, end_iters=0, wiener_residual=False,
                   depth=4, rewrite=True, multi_freqs_depth=3, freq_emb=0.2, emb_scale=10, emb_smooth=True,
                   kernel_size=8, stride=4, time_stride=2, context=1, context_enc=0, norm_starts=4,
                   norm_groups=4, dconv_mode=3, dconv_depth=2, dconv_comp=8, bottom_channels=512,
                   t_layers=5, t_hidden_scale=4.0, t_heads=8, t_dropout=0.0, t_layer_scale=True, t_gelu=True,
                   t_emb="sin", t_max_positions=10000, t_max_period=10000.0, t_weight_pos_embed=1.0,
                   t_cape_mean_normalize=True, t_cape_augment=True, t_cape_glob_loc_scale=[5000.0, 1.0, 1.4],
                   t_sin_random_shift=0, t_norm_in=True, t_norm_in_group=False, t_group_norm=False,
                   t_norm_first=True, t_norm_out=True, t_weight_decay=0.0, t_sparse_cross_attn=False,
                   t_mask_type="diag", t_mask_random_seed=42, t_sparse_attn_window=400, t_global_window=100,
                   t_sparsity=0.95, t_auto_sparsity=False, t_cross_first=False, rescale=0.1)
    config = msst_config(section)
    config["training"].update(samplerate=44100, segment=11)
    path = write_yaml(tmp_path / "config_musdb18_htdemucs.yaml", config)
    from labelnoise.checkpoint import _model_config_file
    kwargs = _model_config_file(str(path), Path("model.ckpt"))
    expected = {k: v for k, v in config["htdemucs"].items() if k != "num_subbands"}
    expected.update(arch="htdemucs", sources=SOURCES, samplerate=44100, audio_channels=2, segment=11,
                    dconv_init=1e-3)
    assert kwargs == expected
    kwargs.pop("arch")
    assert sum(p.numel() for p in HTDemucs(**kwargs).parameters()) > 26_000_000  # it builds


def test_msst_options_we_do_not_have_are_refused_by_name(tmp_path):
    torch.save(HTDemucs(sources=SOURCES, samplerate=RATE, segment=1, **SMALL).state_dict(), tmp_path / "m.ckpt")
    config = write_yaml(tmp_path / "sub.yaml", msst_config(SMALL, num_subbands=4))
    with pytest.raises(CheckpointError, match=r"sub.yaml: htdemucs.num_subbands = 4 is not supported"):
        load_model(tmp_path / "m.ckpt", config=config)
    other = msst_config(SMALL)
    other["model"] = "bs_roformer"
    other["bs_roformer"] = {"dim": 384}
    with pytest.raises(CheckpointError, match="an MSST config of model 'bs_roformer'; only htdemucs"):
        load_model(tmp_path / "m.ckpt", config=write_yaml(tmp_path / "bs.yaml", other))


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Our bag of two small HTDemucs (each source from one model, as the final system) and a song."""
    root = tmp_path_factory.mktemp("bag")
    for seed, name in ((0, "a.th"), (1, "b.th")):
        torch.manual_seed(seed)
        save_model(HTDemucs(sources=SOURCES, samplerate=RATE, segment=1, **SMALL), root / name)
    spec = {"models": ["a.th", "b.th"], "weights": [[1, 1, 0, 0], [0, 0, 1, 1]], "segment": 0.5,
            "choices": {"drums": "a"}}
    (root / "final.yaml").write_text(yaml.safe_dump(spec))
    song = root / "song.wav"
    rng = np.random.default_rng(2)
    sf.write(str(song), (0.3 * rng.standard_normal((3 * RATE, 2)) + 0.1).astype(np.float32), RATE, subtype="FLOAT")
    return root


def test_export_cli_writes_a_demucs_bag_we_read_back(tmp_path, bag):
    assert export_main([str(bag / "final.yaml"), "--out", str(tmp_path), "--name", "final"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.yaml", "final_0.th", "final_1.th"]
    spec = yaml.safe_load((tmp_path / "final.yaml").read_text())
    assert spec == {"models": ["final_0", "final_1"], "weights": [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
                    "segment": 0.5}
    back = load_bag(tmp_path / "final.yaml")  # signatures naming files beside the bag
    ours = load_bag(bag / "final.yaml")
    assert back.weights == ours.weights and back.segment == ours.segment
    for a, b in zip(back.models, ours.models):
        assert model_config(a) == model_config(b)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_demucs_signature_with_checksum(tmp_path, bag):
    export(load_bag(bag / "final.yaml"), tmp_path, "x")
    data = (tmp_path / "x_0.th").read_bytes()
    import hashlib
    good = tmp_path / f"sig-{hashlib.sha256(data).hexdigest()[:8]}.th"
    good.write_bytes(data)
    (tmp_path / "ok.yaml").write_text("models: [sig]\n")
    assert isinstance(load_bag(tmp_path / "ok.yaml"), Bag)
    good.rename(tmp_path / "sig-00000000.th")
    with pytest.raises(BagError, match="does not match the checksum 00000000"):
        load_bag(tmp_path / "ok.yaml")
    (tmp_path / "missing.yaml").write_text("models: [nothere]\n")
    with pytest.raises(BagError, match=r"nothere not found \(nor nothere.th, a demucs signature\)"):
        load_bag(tmp_path / "missing.yaml")


def test_export_refuses_masknet(tmp_path, caplog):
    from labelnoise.model import MaskNet
    save_model(MaskNet(sources=SOURCES, samplerate=RATE), tmp_path / "mask.th")
    assert export_main([str(tmp_path / "mask.th"), "--out", str(tmp_path / "r"), "--name", "m"]) == 2
    assert "only HTDemucs exports" in caplog.text


@pytest.mark.parametrize("what", ["model", "bag"])
def test_demucs_cli_separates_the_export_as_separate_py(tmp_path, bag, what):
    source = bag / ("a.th" if what == "model" else "final.yaml")
    repo = tmp_path / "repo"
    assert export_main([str(source), "--out", str(repo), "--name", "exp"]) == 0
    song = tmp_path / "song.wav"
    shutil.copy(bag / "song.wav", song)
    demucs_out = tmp_path / "demucs"
    # The demucs CLI with no network: a local repo; no random shifts; float output, no clip handling.
    run = subprocess.run([sys.executable, "-m", "demucs.separate", "--repo", str(repo), "-n", "exp", "-o",
                          str(demucs_out), "--shifts", "0", "--float32", "--clip-mode", "none", "-d", "cpu",
                          str(song)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    ours = tmp_path / "ours"
    assert separate.main([str(source), str(song), "-o", str(ours), "--standardize", "--float32",
                          "--clip-mode", "none", "-d", "cpu"]) == 0
    for stem in SOURCES:
        theirs, rate = sf.read(str(demucs_out / "exp" / "song" / f"{stem}.wav"), dtype="float32")
        mine, my_rate = sf.read(str(ours / "song" / f"{stem}.wav"), dtype="float32")
        assert rate == my_rate == RATE and theirs.shape == mine.shape
        assert np.abs(theirs - mine).max() < 1e-5, stem
