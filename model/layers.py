"""Convolutional building blocks of the HTDemucs U-Net.

One encoder layer and one decoder layer serve both branches: with
``freq=True`` they convolve over the frequency axis of a ``(B, C, F, T)``
spectrogram (kernel ``(k, 1)``, time untouched), with ``freq=False`` over the
time axis of a ``(B, C, T)`` waveform. Each carries a :class:`DConv` residual
branch (dilated convolutions over time) and a 1x1 "rewrite" convolution
followed by a GLU.

Module and parameter names follow demucs 4.x so that state dicts load both
ways; the sub-module indices inside a DConv layer are part of that contract.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def rescale_convs(module: nn.Module, reference: float) -> None:
    """Scale every conv's weight and bias so the weight std moves toward ``reference``.

    Each conv is divided by ``sqrt(std / reference)``, i.e. its std becomes the
    geometric mean of the default init and ``reference``. Demucs found this
    smaller init trains better; we keep it so training from scratch matches.
    """
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, _CONVS):
                factor = (sub.weight.std() / reference) ** 0.5
                sub.weight.div_(factor)
                if sub.bias is not None:
                    sub.bias.div_(factor)


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch, started near zero.

    ``channel_last=False`` scales ``(B, C, T)``, ``True`` scales ``(..., C)``.
    """

    def __init__(self, channels: int, init: float = 0.0, channel_last: bool = False):
        super().__init__()
        self.channel_last = channel_last
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_last:
            return x * self.scale
        return x * self.scale[:, None]


class ScaledEmbedding(nn.Module):
    """Embedding whose stored weight is ``1 / scale`` of the used one.

    Adam's step is scale-free, so dividing the stored weight by ``scale`` and
    multiplying the output by it acts as a ``scale`` times larger learning
    rate for this table. With ``smooth``, rows start as a normalised running
    sum of Gaussian rows, so neighbouring frequencies start out similar.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 scale: float = 10.0, smooth: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.scale = scale
        with torch.no_grad():
            weight = self.embedding.weight
            if smooth:
                # A sum of n unit Gaussians has std sqrt(n): divide it back out.
                counts = torch.arange(1, num_embeddings + 1, dtype=weight.dtype)
                weight.copy_(weight.cumsum(dim=0) / counts.sqrt()[:, None])
            weight.div_(scale)

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight * self.scale

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.embedding(index) * self.scale


class DConv(nn.Module):
    """Residual stack of dilated 1-D convolutions over time.

    Each of ``depth`` layers squeezes ``channels`` to ``channels / compress``
    with a kernel-3 conv (dilation ``2**d``), then expands back through a 1x1
    conv and a GLU, and adds the result scaled by a :class:`LayerScale`
    started at ``init`` (so the branch starts almost silent).
    """

    def __init__(self, channels: int, compress: float = 8, depth: int = 2,
                 init: float = 1e-3, gelu: bool = True, kernel: int = 3):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"DConv kernel must be odd, got {kernel}")
        hidden = int(channels / compress)
        dilate = depth > 0
        act = nn.GELU if gelu else nn.ReLU
        self.layers = nn.ModuleList()
        for d in range(abs(depth)):
            dilation = 2 ** d if dilate else 1
            # The positions 0..6 are the demucs state-dict layout: keep them.
            self.layers.append(nn.Sequential(
                nn.Conv1d(channels, hidden, kernel, dilation=dilation,
                          padding=dilation * (kernel // 2)),
                nn.GroupNorm(1, hidden),
                act(),
                nn.Conv1d(hidden, 2 * channels, 1),
                nn.GroupNorm(1, 2 * channels),
                nn.GLU(1),
                LayerScale(channels, init),
            ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def _norm(enabled: bool, groups: int, channels: int) -> nn.Module:
    return nn.GroupNorm(groups, channels) if enabled else nn.Identity()


def _dconv_over_time(dconv: DConv, y: torch.Tensor) -> torch.Tensor:
    """Run a DConv on ``(B, C, T)``, or on every frequency row of ``(B, C, F, T)``."""
    if y.dim() == 3:
        return dconv(y)
    B, C, Fr, T = y.shape
    rows = y.permute(0, 2, 1, 3).reshape(B * Fr, C, T)
    return dconv(rows).view(B, Fr, C, T).permute(0, 2, 1, 3)


class EncoderLayer(nn.Module):
    """Strided conv -> norm -> GELU -> DConv -> 1x1 rewrite -> norm -> GLU.

    ``empty=True`` keeps only the strided conv: the last time-branch layer
    before the two branches merge, whose output is injected into the
    frequency branch. ``pad=True`` pads by ``kernel_size // 4`` so the output
    length is the input length divided by the stride.
    """

    def __init__(self, chin: int, chout: int, kernel_size: int = 8, stride: int = 4,
                 norm_groups: int = 1, empty: bool = False, freq: bool = True,
                 dconv: bool = True, norm: bool = True, context: int = 0,
                 dconv_kw: dict | None = None, pad: bool = True, rewrite: bool = True):
        super().__init__()
        padding = kernel_size // 4 if pad else 0
        self.freq = freq
        self.kernel_size = kernel_size
        self.stride = stride
        self.empty = empty
        self.norm = norm
        self.pad = padding
        if freq:
            self.conv = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1), (padding, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, padding)
        if empty:
            return
        self.norm1 = _norm(norm, norm_groups, chout)
        self.rewrite = None
        if rewrite:
            conv = nn.Conv2d if freq else nn.Conv1d
            self.rewrite = conv(chout, 2 * chout, 1 + 2 * context, 1, context)
            self.norm2 = _norm(norm, norm_groups, 2 * chout)
        self.dconv = DConv(chout, **(dconv_kw or {})) if dconv else None

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        if not self.freq:
            if x.dim() == 4:
                # A time layer after the merge: fold the (single) frequency row in.
                x = x.reshape(x.shape[0], -1, x.shape[-1])
            rest = x.shape[-1] % self.stride
            if rest:
                x = F.pad(x, (0, self.stride - rest))
        y = self.conv(x)
        if self.empty:
            return y
        if inject is not None:
            if inject.shape[-1] != y.shape[-1]:
                raise ValueError(f"time branch length {inject.shape[-1]} does not match "
                                 f"frequency branch length {y.shape[-1]} at the merge")
            if inject.dim() == 3 and y.dim() == 4:
                inject = inject[:, :, None]
            y = y + inject
        y = F.gelu(self.norm1(y))
        if self.dconv is not None:
            y = _dconv_over_time(self.dconv, y)
        if self.rewrite is not None:
            return F.glu(self.norm2(self.rewrite(y)), dim=1)
        return y


class DecoderLayer(nn.Module):
    """Skip add -> 1x1 rewrite (with context) -> GLU -> DConv -> transposed conv.

    Returns ``(output, pre)`` where ``pre`` is the tensor just before the
    transposed conv: at the split, the time branch's first decoder takes it.
    ``last`` drops the final GELU (the network's output layer).
    """

    def __init__(self, chin: int, chout: int, last: bool = False, kernel_size: int = 8,
                 stride: int = 4, norm_groups: int = 1, empty: bool = False,
                 freq: bool = True, dconv: bool = True, norm: bool = True,
                 context: int = 1, dconv_kw: dict | None = None, pad: bool = True,
                 context_freq: bool = True, rewrite: bool = True):
        super().__init__()
        self.pad = kernel_size // 4 if pad else 0
        self.last = last
        self.freq = freq
        self.chin = chin
        self.empty = empty
        self.stride = stride
        self.kernel_size = kernel_size
        self.norm = norm
        self.context_freq = context_freq
        if freq:
            self.conv_tr = nn.ConvTranspose2d(chin, chout, (kernel_size, 1), (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
        self.norm2 = _norm(norm, norm_groups, chout)
        if empty:
            return
        self.rewrite = None
        if rewrite:
            if not freq:
                self.rewrite = nn.Conv1d(chin, 2 * chin, 1 + 2 * context, 1, context)
            elif context_freq:
                self.rewrite = nn.Conv2d(chin, 2 * chin, 1 + 2 * context, 1, context)
            else:
                self.rewrite = nn.Conv2d(chin, 2 * chin, (1, 1 + 2 * context), 1,
                                         (0, context))
            self.norm1 = _norm(norm, norm_groups, 2 * chin)
        self.dconv = DConv(chin, **(dconv_kw or {})) if dconv else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None,
                length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.freq and x.dim() == 3:
            x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
        if self.empty:
            y = x
        else:
            x = x + skip
            y = F.glu(self.norm1(self.rewrite(x)), dim=1) if self.rewrite is not None else x
            if self.dconv is not None:
                y = _dconv_over_time(self.dconv, y)
        z = self.norm2(self.conv_tr(y))
        if self.freq:
            if self.pad:
                z = z[..., self.pad:-self.pad, :]
        else:
            z = z[..., self.pad:self.pad + length]
            if z.shape[-1] != length:
                raise ValueError(f"decoder produced {z.shape[-1]} samples, expected {length}")
        if not self.last:
            z = F.gelu(z)
        return z, y
