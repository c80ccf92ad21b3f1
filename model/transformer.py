"""Cross-domain Transformer at the bottom of HTDemucs.

Two parallel stacks, one over the spectrogram tokens (``(T1, F)`` flattened,
time-major) and one over the waveform tokens (``T2``). Even layers are
self-attention within each branch, odd layers cross-attention from each
branch to the other (``cross_first`` swaps that). Tokens are batch-first
``(B, N, C)`` throughout; attention goes through
``F.scaled_dot_product_attention`` so CUDA picks a fused kernel.

Parameter names follow demucs 4.x (``self_attn.in_proj_weight``,
``gamma_1.scale``, ``norm_out`` ...) so state dicts load both ways.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerScale

EMBEDDINGS = ("sin", "cape", "scaled")


def sin_embedding(length: int, dim: int, *, shift: int = 0, device=None,
                  max_period: float = 10000.0) -> torch.Tensor:
    """1-D sinusoidal positions ``(1, length, dim)``: cosines then sines.

    Frequencies run from 1 down to ``1 / max_period`` over ``dim // 2``
    channels (the last channel reaches exactly ``max_period``).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dimension, got {dim}")
    half = dim // 2
    pos = torch.arange(shift, shift + length, device=device, dtype=torch.float32)[:, None]
    period = max_period ** (torch.arange(half, device=device, dtype=torch.float32) / (half - 1))
    phase = pos / period
    return torch.cat([phase.cos(), phase.sin()], dim=-1)[None]


def cape_embedding(length: int, dim: int, batch: int, *, device=None,
                   max_period: float = 10000.0, mean_normalize: bool = True,
                   augment: bool = False, max_global_shift: float = 0.0,
                   max_local_shift: float = 0.0, max_scale: float = 1.0) -> torch.Tensor:
    """CAPE positions (arXiv 2106.03143) ``(batch, length, dim)``.

    Positions are centred, and in training randomly shifted (globally and per
    token) and scaled per item, so the model cannot rely on absolute time.
    Draws use torch's generator (demucs used numpy's).
    """
    half = dim // 2
    pos = torch.arange(length, device=device, dtype=torch.float32)[None, :, None]
    pos = pos.expand(batch, length, 1)
    if mean_normalize:
        pos = pos - pos.mean(dim=1, keepdim=True)
    if augment:
        def uniform(*shape, bound):
            return (torch.rand(*shape, 1, device=device) * 2 - 1) * bound
        delta = uniform(batch, 1, bound=max_global_shift)
        local = uniform(batch, length, bound=max_local_shift)
        log_scale = uniform(batch, 1, bound=math.log(max_scale))
        pos = (pos + delta + local) * log_scale.exp()
    period = max_period ** (torch.arange(half, device=device, dtype=torch.float32) / (half - 1))
    phase = pos / period
    return torch.cat([phase.cos(), phase.sin()], dim=-1)


def sin_embedding_2d(dim: int, freqs: int, frames: int, *, device=None,
                     max_period: float = 10000.0) -> torch.Tensor:
    """2-D sinusoidal positions for spectrogram tokens, ``(1, frames * freqs, dim)``.

    Token order is time-major (``t * freqs + f``). The first half of the
    channels encodes the frame, the second half the frequency row; within a
    half, even channels are sines and odd ones cosines.
    """
    if dim % 4:
        raise ValueError(f"2-D sinusoidal embedding needs a dimension divisible by 4, got {dim}")
    half = dim // 2
    inv = torch.exp(torch.arange(0.0, half, 2, device=device) * -(math.log(max_period) / half))
    t = torch.arange(frames, device=device, dtype=torch.float32)[:, None] * inv  # (T1, half/2)
    f = torch.arange(freqs, device=device, dtype=torch.float32)[:, None] * inv   # (F, half/2)
    # Interleave sin/cos: (..., half/2, 2) -> (..., half).
    t = torch.stack([t.sin(), t.cos()], dim=-1).flatten(-2)
    f = torch.stack([f.sin(), f.cos()], dim=-1).flatten(-2)
    emb = torch.cat([t[:, None, :].expand(frames, freqs, half),
                     f[None, :, :].expand(frames, freqs, half)], dim=-1)
    return emb.reshape(1, frames * freqs, dim)


class TokenGroupNorm(nn.GroupNorm):
    """GroupNorm over all tokens and channels of ``(B, N, C)`` inputs.

    With one group this is a layer norm over the ``(N, C)`` plane plus a
    per-channel affine, computed without transposing the tokens.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 1:
            y = F.layer_norm(x, x.shape[1:], eps=self.eps)
            return torch.addcmul(self.bias, y, self.weight) if self.affine else y
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _token_norm(group_norm: int, dim: int) -> nn.Module:
    if group_norm:
        return TokenGroupNorm(int(group_norm), dim)
    return nn.LayerNorm(dim)


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout.

    ``in_proj_weight`` stacks the query, key and value projections; the
    initialisation (Xavier on the stack, zero biases, default Linear on the
    output) follows torch's so a fresh model trains alike.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        return x.view(B, N, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """``query (B, N, C)`` attends to ``memory (B, M, C)`` (itself when None)."""
        B, N, C = query.shape
        if memory is None:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(query, self.in_proj_weight[:C], self.in_proj_bias[:C])
            k, v = F.linear(memory, self.in_proj_weight[C:], self.in_proj_bias[C:]).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v),
            dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.out_proj(out)


class _AttentionLayer(nn.Module):
    """What self- and cross-attention layers share: feed-forward, norms, scales.

    Sub-modules are created in the order of torch's encoder layer (attention,
    feed-forward, norms, then the extras demucs adds) so that, seed for seed,
    a fresh model draws the same initial weights as the reference.
    """

    def _build(self, dim: int, hidden: int, dropout: float, gelu: bool, group_norm: int,
               norm_first: bool, norm_out: bool, layer_scale: bool, norms: int) -> None:
        self.linear1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm_first = norm_first
        self.activation = F.gelu if gelu else F.relu
        for i in range(1, norms + 1):
            setattr(self, f"norm{i}", _token_norm(group_norm, dim))
        self.norm_out = TokenGroupNorm(1, dim) if norm_first and norm_out else None
        if layer_scale:
            self.gamma_1 = LayerScale(dim, 1e-4, channel_last=True)
            self.gamma_2 = LayerScale(dim, 1e-4, channel_last=True)
        else:
            self.gamma_1 = nn.Identity()
            self.gamma_2 = nn.Identity()
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.norm_out is None else self.norm_out(x)


class SelfAttentionLayer(_AttentionLayer):
    """Transformer encoder layer (pre-norm by default) with layer scale and an
    optional whole-sequence GroupNorm on the output."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0,
                 gelu: bool = True, group_norm: int = 0, norm_first: bool = True,
                 norm_out: bool = True, layer_scale: bool = True):
        super().__init__()
        self.self_attn = Attention(dim, heads, dropout)
        self._build(dim, hidden, dropout, gelu, group_norm, norm_first, norm_out,
                    layer_scale, norms=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.gamma_1(self.dropout1(self.self_attn(self.norm1(x))))
            x = x + self.gamma_2(self._ff(self.norm2(x)))
            return self._out(x)
        x = self.norm1(x + self.gamma_1(self.dropout1(self.self_attn(x))))
        return self.norm2(x + self.gamma_2(self._ff(x)))


class CrossAttentionLayer(_AttentionLayer):
    """Like :class:`SelfAttentionLayer` but the queries attend to the other branch."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0,
                 gelu: bool = True, group_norm: int = 0, norm_first: bool = True,
                 norm_out: bool = True, layer_scale: bool = True):
        super().__init__()
        self.cross_attn = Attention(dim, heads, dropout)
        self._build(dim, hidden, dropout, gelu, group_norm, norm_first, norm_out,
                    layer_scale, norms=3)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = q + self.gamma_1(self.dropout1(self.cross_attn(self.norm1(q), self.norm2(k))))
            x = x + self.gamma_2(self._ff(self.norm3(x)))
            return self._out(x)
        # Post-norm: demucs applies norm2 after the feed-forward here; norm3 is unused.
        x = self.norm1(q + self.gamma_1(self.dropout1(self.cross_attn(q, k))))
        return self.norm2(x + self.gamma_2(self._ff(x)))


class _BoostedEmbedding(nn.Module):
    """Learnt positions (``t_emb='scaled'``): stored ``scale / boost`` of the
    used values, which acts as a ``boost`` times larger learning rate."""

    def __init__(self, num_embeddings: int, dim: int, scale: float = 1.0, boost: float = 3.0):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, dim)
        with torch.no_grad():
            self.embedding.weight.mul_(scale / boost)
        self.boost = boost

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.embedding(index) * self.boost


class CrossTransformer(nn.Module):
    """The two-branch transformer: ``(x (B, C, F, T1), xt (B, C, T2))`` in and out."""

    def __init__(self, dim: int, emb: str = "sin", hidden_scale: float = 4.0,
                 num_heads: int = 8, num_layers: int = 6, cross_first: bool = False,
                 dropout: float = 0.0, max_positions: int = 1000, norm_in: bool = True,
                 norm_in_group: bool = False, group_norm: int = False,
                 norm_first: bool = False, norm_out: bool = False,
                 max_period: float = 10000.0, weight_decay: float = 0.0,
                 lr: float | None = None, layer_scale: bool = False, gelu: bool = True,
                 sin_random_shift: int = 0, weight_pos_embed: float = 1.0,
                 cape_mean_normalize: bool = True, cape_augment: bool = True,
                 cape_glob_loc_scale: tuple = (5000.0, 1.0, 1.4)):
        super().__init__()
        if emb not in EMBEDDINGS:
            raise ValueError(f"t_emb={emb!r} is not supported; choose one of {EMBEDDINGS}")
        if dim % num_heads:
            raise ValueError(f"transformer dimension {dim} is not divisible by t_heads={num_heads}")
        self.num_layers = num_layers
        # Layers with idx % 2 == classic_parity are self-attention, the others cross.
        self.classic_parity = 1 if cross_first else 0
        self.emb = emb
        self.max_period = max_period
        self.weight_decay = weight_decay
        self.lr = lr
        self.weight_pos_embed = weight_pos_embed
        self.sin_random_shift = sin_random_shift
        self.cape_mean_normalize = cape_mean_normalize
        self.cape_augment = cape_augment
        self.cape_glob_loc_scale = list(cape_glob_loc_scale)
        if emb == "scaled":
            self.position_embeddings = _BoostedEmbedding(max_positions, dim, scale=0.2)
        if norm_in:
            self.norm_in = nn.LayerNorm(dim)
            self.norm_in_t = nn.LayerNorm(dim)
        elif norm_in_group:
            self.norm_in = TokenGroupNorm(int(norm_in_group), dim)
            self.norm_in_t = TokenGroupNorm(int(norm_in_group), dim)
        else:
            self.norm_in = nn.Identity()
            self.norm_in_t = nn.Identity()

        kw = dict(dim=dim, heads=num_heads, hidden=int(dim * hidden_scale), dropout=dropout,
                  gelu=gelu, group_norm=group_norm, norm_first=norm_first,
                  norm_out=norm_out, layer_scale=layer_scale)
        self.layers = nn.ModuleList()    # spectrogram branch
        self.layers_t = nn.ModuleList()  # waveform branch
        for idx in range(num_layers):
            klass = SelfAttentionLayer if idx % 2 == self.classic_parity else CrossAttentionLayer
            self.layers.append(klass(**kw))
            self.layers_t.append(klass(**kw))

    def _time_positions(self, length: int, batch: int, dim: int, device) -> torch.Tensor:
        if self.emb == "sin":
            # A random offset is a training augmentation only.
            shift = 0
            if self.training and self.sin_random_shift:
                shift = int(torch.randint(self.sin_random_shift + 1, ()).item())
            return sin_embedding(length, dim, shift=shift, device=device,
                                 max_period=self.max_period)
        if self.emb == "cape":
            g, l, s = self.cape_glob_loc_scale
            return cape_embedding(length, dim, batch, device=device, max_period=self.max_period,
                                  mean_normalize=self.cape_mean_normalize,
                                  augment=self.training and self.cape_augment,
                                  max_global_shift=g, max_local_shift=l, max_scale=s)
        return self.position_embeddings(torch.arange(length, device=device))[None]

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, Fr, T1 = x.shape
        # (B, C, F, T1) -> (B, T1 * F, C), time-major tokens.
        x = x.permute(0, 3, 2, 1).reshape(B, T1 * Fr, C)
        pos = sin_embedding_2d(C, Fr, T1, device=x.device, max_period=self.max_period)
        x = self.norm_in(x) + self.weight_pos_embed * pos

        T2 = xt.shape[-1]
        xt = xt.transpose(1, 2)
        pos_t = self._time_positions(T2, B, C, xt.device)
        xt = self.norm_in_t(xt) + self.weight_pos_embed * pos_t

        for idx in range(self.num_layers):
            if idx % 2 == self.classic_parity:
                x = self.layers[idx](x)
                xt = self.layers_t[idx](xt)
            else:
                x, xt = self.layers[idx](x, xt), self.layers_t[idx](xt, x)

        x = x.view(B, T1, Fr, C).permute(0, 3, 2, 1)
        return x, xt.transpose(1, 2)

    def make_optim_group(self) -> dict:
        """An optimizer parameter group with the transformer's own decay and lr."""
        group = {"params": list(self.parameters()), "weight_decay": self.weight_decay}
        if self.lr is not None:
            group["lr"] = self.lr
        return group

