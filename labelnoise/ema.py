"""An exponential moving average of a model's weights (``optim.ema`` > 0), written beside the model as model_ema.th.

After every optimizer step each floating-point entry moves toward the weights by ``1 - decay``::

    ema = ema + (1 - decay) * (w - ema)      # decay 0.999: about the last 1000 steps

Integer buffers (counters) are copied. The average is kept in float32 whatever the weights' dtype.
"""
from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """The average of ``model``'s weights, starting from its current weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """Start again from the current weights (new weights were loaded: the old average is no base)."""
        self.weights = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.weights[k].lerp_(v.float(), 1 - self.decay)
            else:
                self.weights[k].copy_(v)

    def state_dict(self) -> dict:
        return {k: v.cpu() for k, v in self.weights.items()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.weights = {k: v.to(device) for k, v in state.items()}
