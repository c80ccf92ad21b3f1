"""Loss truncation: the REFERENCE.md formula, ties, weights, relative ranking, global and running scopes;
the config hands its keys over as keywords, and the running window goes through state_dict()."""
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labelnoise.config import load_config
from labelnoise.losses import CONFIG_KEYS, ReconstructionLoss, entry_losses, reconstruction_loss

ROOT = Path(__file__).resolve().parents[1]


def batch(b=4, s=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sources = torch.randn(b, s, 2, 64, generator=g)
    estimate = sources + torch.randn(b, s, 2, 64, generator=g) * torch.rand(b, s, 1, 1, generator=g) * 3
    return estimate, sources


def reference_formula(estimate, sources, c, weights):
    """The seed's lines, written out: quantile over the batch, masked_fill, mean(0), weighted mean."""
    l = torch.nn.functional.l1_loss(estimate, sources, reduction="none").mean(dim=(2, 3))
    l = l.masked_fill(l > l.quantile(c, dim=0), 0).mean(0)
    w = torch.tensor(weights)
    return (l * w).sum() / w.sum()


@pytest.mark.parametrize("c, dropped", [(0.7, 1), (0.5, 2), (0.3, 3)])
def test_truncation_matches_reference_and_drops_exactly(c, dropped):
    estimate, sources = batch()
    weights = [1.0, 0.5, 2.0, 1.0]
    out = ReconstructionLoss("l1_trunc", c, weights)(estimate, sources)
    assert torch.allclose(out.loss, reference_formula(estimate, sources, c, weights), atol=1e-7)
    assert (out.keep.sum(0) == 4 - dropped).all()
    assert torch.allclose(out.kept, torch.full((4,), (4 - dropped) / 4))
    # the dropped entries are the largest ones of each source
    l = entry_losses(estimate, sources)
    for s in range(4):
        assert set(l[:, s].argsort()[: 4 - dropped].tolist()) == set(out.keep[:, s].nonzero().flatten().tolist())


def test_ties_are_kept():
    sources = torch.zeros(4, 1, 1, 8)
    estimate = torch.tensor([1.0, 1.0, 1.0, 3.0]).view(4, 1, 1, 1).expand(4, 1, 1, 8).clone()
    out = ReconstructionLoss("l1_trunc", 0.5)(estimate, sources)
    # quantile 0.5 of [1, 1, 1, 3] is 1: the three tied entries stay, the 3 goes.
    assert out.keep.flatten().tolist() == [True, True, True, False]
    assert out.loss.item() == pytest.approx(3 / 4)  # the mean still divides by B = 4
    assert out.loss.item() == pytest.approx(reference_formula(estimate, sources, 0.5, [1.0]).item())


def test_plain_l1_and_mse_have_no_mask():
    estimate, sources = batch()
    loss, kept = reconstruction_loss(estimate, sources, loss="l1")
    assert torch.allclose(loss, (estimate - sources).abs().mean())
    assert (kept == 1).all()
    loss, _ = reconstruction_loss(estimate, sources, loss="mse")
    assert torch.allclose(loss, (estimate - sources).square().mean())


def test_weights_select_sources():
    estimate, sources = batch()
    out = ReconstructionLoss("l1", weights=[0, 0, 0, 1])(estimate, sources)
    assert torch.allclose(out.loss, (estimate - sources)[:, 3].abs().mean())


def test_relative_ranking_drops_the_poor_fit_not_the_loud_item():
    sources = torch.ones(4, 1, 1, 16)
    sources[0] *= 10.0  # a loud, well-fitted item: large absolute error, small relative error
    estimate = sources.clone()
    estimate[0] += 1.0          # 10 % error on the loud item
    estimate[1:] += 0.3         # 30 % error on the quiet ones...
    estimate[3] += 0.5          # ...and 80 % on the badly labelled one
    absolute = ReconstructionLoss("l1_trunc", 0.7, trunc_by="absolute")(estimate, sources)
    relative = ReconstructionLoss("l1_trunc", 0.7, trunc_by="relative")(estimate, sources)
    assert absolute.keep.flatten().tolist() == [False, True, True, True]
    assert relative.keep.flatten().tolist() == [True, True, True, False]


def test_running_scope_uses_past_scores():
    loss = ReconstructionLoss("l1_trunc", 0.5, trunc_scope="running", trunc_window=8)
    small = torch.zeros(4, 1, 1, 4)
    loss(small + 0.1, small)  # a window of low losses
    out = loss(small + torch.tensor([0.2, 0.3, 0.4, 0.5]).view(4, 1, 1, 1), small)
    # the median of a window holding four 0.1s and these four lies at 0.15: every new entry is dropped
    assert out.keep.sum().item() == 0
    fresh = ReconstructionLoss("l1_trunc", 0.5)(small + torch.tensor([0.2, 0.3, 0.4, 0.5]).view(4, 1, 1, 1), small)
    assert fresh.keep.sum().item() == 2


def test_the_running_window_travels_through_state_dict():
    small = torch.zeros(4, 1, 1, 4)
    rising = small + torch.tensor([0.2, 0.3, 0.4, 0.5]).view(4, 1, 1, 1)
    loss = ReconstructionLoss("l1_trunc", 0.5, trunc_scope="running", trunc_window=8)
    loss(small + 0.1, small)
    resumed = ReconstructionLoss("l1_trunc", 0.5, trunc_scope="running", trunc_window=8)
    resumed.load_state_dict(loss.state_dict())
    assert resumed(rising, small).keep.sum().item() == 0  # as the uninterrupted loss: the window came along
    assert ReconstructionLoss("l1_trunc", 0.5).state_dict() == {"history": None}


def test_config_keys_are_the_keywords():
    optim = load_config(ROOT / "configs" / "tiny" / "step1.yaml", ["optim.trunc_scope=running", "optim.trunc_window=8",
                                                                   "optim.trunc_by=relative", "optim.loss=mse_trunc",
                                                                   "optim.trunc_ratio=0.5"])["optim"]
    assert set(CONFIG_KEYS) <= set(optim)
    loss = ReconstructionLoss.from_config(optim)
    assert (loss.kind, loss.truncate, loss.trunc_ratio, loss.scope, loss.trunc_by, loss.window) == (
        "mse", True, 0.5, "running", "relative", 8)
    assert loss.weights.tolist() == [float(w) for w in optim["weights"]]


@pytest.mark.parametrize("make", [lambda e, s: entry_losses(e, s, "huber"),
                                  lambda e, s: ReconstructionLoss("huber_trunc")(e, s)])
def test_an_unknown_loss_kind_is_an_error(make):
    estimate, sources = batch()
    with pytest.raises(ValueError, match="is not one of"):
        make(estimate, sources)


def _global_worker(rank, world, init_file, estimate, sources, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    half = estimate.shape[0] // world
    sl = slice(rank * half, (rank + 1) * half)
    estimate = estimate[sl].clone().requires_grad_()
    out = ReconstructionLoss("l1_trunc", 0.5, trunc_scope="global")(estimate, sources[sl])
    out.loss.backward()
    # numpy arrays travel by value: tensors would be shared memory the exiting worker may tear down first.
    queue.put((rank, out.keep.numpy(), estimate.grad.numpy()))
    dist.destroy_process_group()


def test_global_scope_with_two_ranks_equals_one_process(tmp_path):
    estimate, sources = batch(b=8, seed=5)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_global_worker, args=(r, 2, tmp_path / "store", estimate, sources, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (k, g)) for r, k, g in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    results = {rank: (torch.from_numpy(k), torch.from_numpy(g)) for rank, (k, g) in results.items()}
    keep = torch.cat([results[0][0], results[1][0]])
    single_estimate = estimate.clone().requires_grad_()
    single = ReconstructionLoss("l1_trunc", 0.5)(single_estimate, sources)
    single.loss.backward()
    assert torch.equal(keep, single.keep)
    # DDP averages the ranks' gradients: each rank's share, halved, is the single process' gradient.
    assert torch.allclose(results[0][1] / 2, single_estimate.grad[:4], atol=1e-8)
    assert torch.allclose(results[1][1] / 2, single_estimate.grad[4:], atol=1e-8)


def test_a_nan_entry_is_not_hidden_by_truncation():
    estimate, sources = batch()
    estimate[2, 1] = float("nan")
    out = ReconstructionLoss("l1_trunc", 0.5)(estimate, sources)
    assert torch.isnan(out.loss)
