"""The trainer's parts on their own: a step's statistics and the average of the weights (no training)."""
import pytest
import torch
from torch import nn

from labelnoise.ema import WeightAverage
from labelnoise.losses import LossOutput
from labelnoise.report_stats import noisy_share
from labelnoise.step_stats import StepStats


def _output(loss, per_source, keep):
    keep = torch.tensor(keep)
    return LossOutput(torch.tensor(loss), torch.tensor(per_source), keep.float().mean(0), keep)


def test_step_stats_sum_micro_batches_and_count_noisy_entries():
    noisy = torch.tensor([[False, True], [True, False]])
    stats = StepStats(["a", "b"], labelled=True)
    stats.add(_output(2.0, [1.0, 3.0], [[True, True], [False, True]]), finite=True, noisy=noisy)
    stats.add(_output(float("nan"), [float("nan"), 1.0], [[True, True], [True, True]]), finite=False, noisy=noisy)
    assert stats.raised("bad") and not stats.raised("stop")
    stats.flag("stop", True)
    assert stats.raised("stop")
    out = stats.summary()
    assert out["loss"] == 2.0  # over the finite micro-batch only
    assert out["loss_per_source"] == {"a": 0.5, "b": 2.0}  # the NaN counts as 0, the mean is over both
    assert out["kept"] == {"a": 0.75, "b": 1.0}
    # Dropped: one entry (item 1, source a), noisy. Kept: 7, of them (0, b) once and both noisy ones once more.
    assert out["noisy_entries"] == {"noisy_dropped": 1, "dropped": 1, "noisy_kept": 3, "kept": 7}
    assert "noisy_share" not in out and noisy_share(out) == {"dropped": 1.0, "kept": pytest.approx(3 / 7)}
    # An epoch adds its steps up.
    both = stats + stats
    assert both.summary()["noisy_entries"] == {"noisy_dropped": 2, "dropped": 2, "noisy_kept": 6, "kept": 14}
    assert noisy_share(StepStats(["a", "b"], labelled=False).summary()) is None


def test_weight_average_moves_by_one_minus_decay_and_resets():
    model = nn.Linear(2, 1)
    nn.init.zeros_(model.weight)
    average = WeightAverage(model, decay=0.75)
    with torch.no_grad():
        model.weight.fill_(4.0)
    average.update(model)
    assert torch.equal(average.weights["weight"], torch.full((1, 2), 1.0))  # 0 + 0.25 x (4 - 0)
    saved = average.state_dict()
    average.reset(model)
    assert torch.equal(average.weights["weight"], torch.full((1, 2), 4.0))
    average.load_state_dict(saved, torch.device("cpu"))
    assert torch.equal(average.weights["weight"], torch.full((1, 2), 1.0))
