"""Checkpoint round trips: our format, demucs packages both ways, state dicts, Lightning, refusals."""
import os
import pickle
from fractions import Fraction

import pytest
import torch
import yaml

from labelnoise.checkpoint import CheckpointError, export_demucs, load_model, model_config, save_model
from labelnoise.model import HTDemucs

SOURCES = ["drums", "bass", "other", "vocals"]
SMALL = dict(sources=SOURCES, channels=8, depth=2, nfft=512, t_layers=1, t_heads=2, bottom_channels=0,
             segment=1, samplerate=8000, dconv_comp=4)


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return HTDemucs(**{**SMALL, **overrides})


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def mix(seconds=1.0, rate=8000, seed=1):
    return torch.randn(1, 2, int(seconds * rate), generator=torch.Generator().manual_seed(seed))


def test_own_format_round_trip(tmp_path):
    model = small_model()
    path = tmp_path / "model.th"
    save_model(model, path, run_config={"stage": "step1"})
    loaded = load_model(path)
    assert isinstance(loaded, HTDemucs) and not loaded.training
    assert same_weights(model, loaded)
    assert model_config(loaded) == model_config(model)
    # weights_only loading works on our format without any allow-list.
    package = torch.load(path, weights_only=True)
    assert package["run_config"] == {"stage": "step1"}
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_own_format_keeps_fraction_segment(tmp_path):
    model = small_model(segment=Fraction(39, 5))
    save_model(model, tmp_path / "m.th")
    assert load_model(tmp_path / "m.th").segment == Fraction(39, 5)


def test_export_loads_in_demucs_and_separates_the_same(tmp_path):
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs as RefHTDemucs
    from demucs.pretrained import get_model

    model = small_model().eval()
    export_demucs(model, tmp_path, name="pretrain3", training_args={"loss": "l1_trunc"})
    theirs = get_model("pretrain3", repo=tmp_path)
    ref = theirs.models[0] if hasattr(theirs, "models") else theirs
    assert type(ref) is RefHTDemucs
    x = mix(1.5)
    with torch.no_grad():
        ours = apply_model(model, x, shifts=0, split=True, overlap=0.25, progress=False)
        out = apply_model(theirs, x, shifts=0, split=True, overlap=0.25, progress=False)
    assert (ours - out).abs().max() < 1e-4


def test_export_half_precision(tmp_path):
    model = small_model()
    path = export_demucs(model, tmp_path, name="half", half=True)
    package = torch.load(path, weights_only=False)
    assert all(v.dtype == torch.float16 for v in package["state"].values() if v.is_floating_point())
    loaded = load_model(path)
    for k, v in model.state_dict().items():
        assert torch.allclose(loaded.state_dict()[k], v.half().float())


def test_demucs_written_package_loads(tmp_path):
    """A package written by demucs itself (float16 state, Fraction segment) loads into our model."""
    from demucs.htdemucs import HTDemucs as RefHTDemucs
    from demucs.states import get_state

    torch.manual_seed(3)
    ref = RefHTDemucs(**{**SMALL, "segment": Fraction(39, 5)})
    args, kwargs = ref._init_args_kwargs
    package = {"klass": RefHTDemucs, "args": args, "kwargs": kwargs,
               "state": get_state(ref, None, half=True), "training_args": {"epochs": 3}}
    path = tmp_path / "164037a4.th"
    torch.save(package, path)
    ours = load_model(path)
    assert ours.segment == Fraction(39, 5)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v.half().float()), k


def test_bare_state_dict_needs_and_uses_config(tmp_path):
    model = small_model()
    path = tmp_path / "epoch=359-on_filtered.th"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="epoch=359-on_filtered.th.*model config"):
        load_model(path)
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({"model": SMALL}))
    assert same_weights(load_model(path, config=config), model)
    assert same_weights(load_model(path, config=dict(SMALL)), model)


def test_lightning_checkpoint(tmp_path):
    model = small_model()
    ckpt = {"epoch": 7, "global_step": 100, "pytorch-lightning_version": "2.1.0",
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "optimizer_states": [], "lr_schedulers": []}
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    assert same_weights(load_model(path, config=SMALL), model)


def test_config_that_does_not_fit_names_file_and_keys(tmp_path):
    path = tmp_path / "w.th"
    torch.save(small_model().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"w\.th: the weights do not fit.*(missing|unexpected|shape)"):
        load_model(path, config={**SMALL, "depth": 3})
    with pytest.raises(CheckpointError, match=r"does not take"):
        load_model(path, config={**SMALL, "not_a_keyword": 1})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_before_running(tmp_path, legacy):
    marker = tmp_path / "pwned"
    payload = {"klass": _Evil(marker), "args": [], "kwargs": {}, "state": {}}
    path = tmp_path / "evil.th"
    if legacy:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"evil\.th: refused to load.*(os|posix)\.system"):
        load_model(path)
    assert not marker.exists()


def test_corrupt_truncated_empty_missing_foreign(tmp_path):
    good = tmp_path / "good.th"
    save_model(small_model(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.th").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.th").write_bytes(os.urandom(4096))
    (tmp_path / "empty.th").write_bytes(b"")
    torch.save([1, 2, 3], tmp_path / "list.th")
    torch.save({"format": "someone-else/v9", "weights": 1}, tmp_path / "otherformat.th")
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "foreign.th")
    cases = {"truncated.th": "truncated, corrupt", "random.th": "corrupt", "empty.th": "empty file",
             "missing.th": "file not found", "list.th": "expected a dict, found a list",
             "otherformat.th": "unknown checkpoint format", "foreign.th": "not a model checkpoint"}
    for name, reason in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_model(tmp_path / name)
        message = str(err.value)
        assert message.startswith(str(tmp_path / name)) and reason in message, message
        assert "\n" not in message


def test_demucs_package_of_another_class_is_refused(tmp_path):
    from demucs.hdemucs import HDemucs

    package = {"klass": HDemucs, "args": [], "kwargs": {"sources": SOURCES}, "state": {}, "training_args": {}}
    torch.save(package, tmp_path / "hdemucs.th")
    with pytest.raises(CheckpointError, match="demucs.hdemucs.HDemucs; only demucs.htdemucs.HTDemucs"):
        load_model(tmp_path / "hdemucs.th")
