"""Hybrid Transformer Demucs (HTDemucs), written for this project.

Two U-Nets share a bottleneck: one over the complex spectrogram (real and
imaginary parts as channels, convolving over frequency), one over the
waveform. Their encoders run side by side, a cross-domain Transformer mixes
them at the bottom, and their decoders each produce all sources; the
spectrogram branch is inverted with an iSTFT and the two are summed.

The constructor takes the keywords of ``demucs.htdemucs.HTDemucs`` (demucs
4.x) with the same defaults, and ``state_dict()`` has the same keys and
shapes, so checkpoints move both ways. This module never imports demucs.

    from model import HTDemucs
    model = HTDemucs(["drums", "bass", "other", "vocals"])             # P1
    model = HTDemucs(sources, bottom_channels=512, dconv_mode=3,
                     t_dropout=0.02, t_sparse_attn_window=400)         # P2
    estimates = model(mix)  # (B, 2, T) -> (B, 4, 2, T)
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DecoderLayer, EncoderLayer, ScaledEmbedding, rescale_convs
from .spec import inverse_spectrogram, spectrogram
from .transformer import CrossTransformer


def _refuse(name: str, value, why: str) -> None:
    raise ValueError(f"HTDemucs option {name}={value!r} is not supported: {why}")


class HTDemucs(nn.Module):
    """Hybrid time/spectrogram Demucs with a cross-domain Transformer.

    Main options (the rest follow demucs 4.x and rarely change):
        sources: source names; the output has one waveform per source.
        audio_channels: channels of the mixture and of each source.
        channels, growth, depth: width of the first layer, its growth per
            layer, number of encoder (and decoder) layers.
        nfft: STFT size (hop nfft // 4).
        dconv_mode: DConv residual branch in the encoder (1), decoder (2), both (3).
        bottom_channels: if > 0, 1x1 convs map the Transformer width to this.
        t_layers, t_heads, t_hidden_scale, t_dropout: the Transformer.
        t_emb: time positions, "sin" (default), "cape" or "scaled".
        rescale: conv weights start at std ~ sqrt(default std * rescale).
        samplerate, segment: metadata; ``segment`` (seconds) becomes the
            length of the last training batch when ``use_train_segment``.
        use_train_segment: in eval mode, pad shorter inputs to the training
            length and crop the output back (the model saw only that length).

    Not supported (refused with a ValueError): cac=False, Wiener filtering
    (wiener_iters / end_iters), multi_freqs, sparse attention
    (t_sparse_self_attn / t_sparse_cross_attn, t_auto_sparsity). The sparse
    mask keywords (t_mask_type, t_sparse_attn_window ...) are accepted and
    stored, and as in demucs have no effect without sparse attention.
    """

    def __init__(
        self,
        sources,
        # Channels
        audio_channels=2,
        channels=48,
        channels_time=None,
        growth=2,
        # STFT
        nfft=4096,
        wiener_iters=0,
        end_iters=0,
        wiener_residual=False,
        cac=True,
        # Structure
        depth=4,
        rewrite=True,
        # Frequency branch
        multi_freqs=None,
        multi_freqs_depth=3,
        freq_emb=0.2,
        emb_scale=10,
        emb_smooth=True,
        # Convolutions
        kernel_size=8,
        time_stride=2,
        stride=4,
        context=1,
        context_enc=0,
        # Normalization
        norm_starts=4,
        norm_groups=4,
        # DConv residual branch
        dconv_mode=1,
        dconv_depth=2,
        dconv_comp=8,
        dconv_init=1e-3,
        # Before the Transformer
        bottom_channels=0,
        # Transformer
        t_layers=5,
        t_emb="sin",
        t_hidden_scale=4.0,
        t_heads=8,
        t_dropout=0.0,
        t_max_positions=10000,
        t_norm_in=True,
        t_norm_in_group=False,
        t_group_norm=False,
        t_norm_first=True,
        t_norm_out=True,
        t_max_period=10000.0,
        t_weight_decay=0.0,
        t_lr=None,
        t_layer_scale=True,
        t_gelu=True,
        t_weight_pos_embed=1.0,
        t_sin_random_shift=0,
        t_cape_mean_normalize=True,
        t_cape_augment=True,
        t_cape_glob_loc_scale=[5000.0, 1.0, 1.4],  # noqa: B006 (demucs' default, never mutated)
        t_sparse_self_attn=False,
        t_sparse_cross_attn=False,
        t_mask_type="diag",
        t_mask_random_seed=42,
        t_sparse_attn_window=500,
        t_global_window=100,
        t_sparsity=0.95,
        t_auto_sparsity=False,
        t_cross_first=False,
        # Weight init
        rescale=0.1,
        # Metadata
        samplerate=44100,
        segment=10,
        use_train_segment=True,
    ):
        super().__init__()
        # Every constructor keyword, so a checkpoint can rebuild this exact network.
        self.init_kwargs = {key: value for key, value in locals().items()
                            if key not in ("self", "__class__")}
        self.init_kwargs["sources"] = list(sources)
        if not cac:
            _refuse("cac", cac, "only complex-as-channels output is implemented")
        if wiener_iters or end_iters:
            _refuse("wiener_iters/end_iters", (wiener_iters, end_iters),
                    "Wiener filtering needs cac=False, which is not implemented")
        if multi_freqs:
            _refuse("multi_freqs", multi_freqs, "frequency-band splitting is not implemented")
        for name, value in (("t_sparse_self_attn", t_sparse_self_attn),
                            ("t_sparse_cross_attn", t_sparse_cross_attn),
                            ("t_auto_sparsity", t_auto_sparsity)):
            if value:
                _refuse(name, value, "sparse attention needs xformers; use dense attention")
        if nfft % 4:
            _refuse("nfft", nfft, "must be a multiple of 4 (hop = nfft // 4)")

        self.sources = list(sources)
        self.audio_channels = audio_channels
        self.samplerate = samplerate
        self.segment = segment
        self.use_train_segment = use_train_segment
        self.cac = cac
        self.wiener_residual = wiener_residual
        self.wiener_iters = wiener_iters
        self.end_iters = end_iters
        self.kernel_size = kernel_size
        self.context = context
        self.stride = stride
        self.depth = depth
        self.bottom_channels = bottom_channels
        self.channels = channels
        self.nfft = nfft
        self.hop_length = nfft // 4
        # Stored for reference only: without sparse attention they do nothing.
        self.t_mask = dict(type=t_mask_type, seed=t_mask_random_seed,
                           window=t_sparse_attn_window, global_window=t_global_window,
                           sparsity=t_sparsity)
        self.freq_emb = None
        self._compiled_branches = None  # see compile_network()

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()

        dconv_kw = {"depth": dconv_depth, "compress": dconv_comp, "init": dconv_init,
                    "gelu": True}
        chin = audio_channels                 # time branch input channels
        chin_z = 2 * audio_channels           # spectrogram branch: real + imag per channel
        chout = channels_time or channels
        chout_z = channels
        freqs = nfft // 2
        for index in range(depth):
            freq = freqs > 1
            ker, stri, pad = kernel_size, stride, True
            if not freq:
                # After the merge: plain time convolutions with their own stride.
                ker, stri = time_stride * 2, time_stride
            last_freq = freq and freqs <= kernel_size
            if last_freq:
                # One conv eats all remaining frequencies; both branches merge here.
                ker, pad = freqs, False
                chout_z = max(chout, chout_z)
                chout = chout_z
            kw = dict(kernel_size=ker, stride=stri, freq=freq, pad=pad,
                      norm=index >= norm_starts, rewrite=rewrite, norm_groups=norm_groups,
                      dconv_kw=dconv_kw)
            kw_time = dict(kw, freq=False, kernel_size=kernel_size, stride=stride, pad=True)

            self.encoder.append(EncoderLayer(chin_z, chout_z, dconv=dconv_mode & 1,
                                             context=context_enc, **kw))
            if freq:
                self.tencoder.append(EncoderLayer(chin, chout, dconv=dconv_mode & 1,
                                                  context=context_enc, empty=last_freq,
                                                  **kw_time))
            if index == 0:
                # The decoders' outermost layer outputs every source.
                chin = audio_channels * len(self.sources)
                chin_z = 2 * chin
            self.decoder.insert(0, DecoderLayer(chout_z, chin_z, dconv=dconv_mode & 2,
                                                last=index == 0, context=context, **kw))
            if freq:
                self.tdecoder.insert(0, DecoderLayer(chout, chin, dconv=dconv_mode & 2,
                                                     empty=last_freq, last=index == 0,
                                                     context=context, **kw_time))
            chin, chin_z = chout, chout_z
            chout, chout_z = int(growth * chout), int(growth * chout_z)
            if freq:
                freqs = 1 if freqs <= kernel_size else freqs // stride
            if index == 0 and freq_emb:
                # Learnt per-frequency offsets let the (shift-equivariant)
                # frequency convolutions know where they are.
                self.freq_emb = ScaledEmbedding(freqs, chin_z, smooth=emb_smooth,
                                                scale=emb_scale)
                self.freq_emb_scale = freq_emb

        if rescale:
            rescale_convs(self, rescale)

        dim = channels * growth ** (depth - 1)
        if bottom_channels:
            self.channel_upsampler = nn.Conv1d(dim, bottom_channels, 1)
            self.channel_downsampler = nn.Conv1d(bottom_channels, dim, 1)
            self.channel_upsampler_t = nn.Conv1d(dim, bottom_channels, 1)
            self.channel_downsampler_t = nn.Conv1d(bottom_channels, dim, 1)
            dim = bottom_channels

        self.crosstransformer = None
        if t_layers > 0:
            self.crosstransformer = CrossTransformer(
                dim, emb=t_emb, hidden_scale=t_hidden_scale, num_heads=t_heads,
                num_layers=t_layers, cross_first=t_cross_first, dropout=t_dropout,
                max_positions=t_max_positions, norm_in=t_norm_in,
                norm_in_group=t_norm_in_group, group_norm=t_group_norm,
                norm_first=t_norm_first, norm_out=t_norm_out, max_period=t_max_period,
                weight_decay=t_weight_decay, lr=t_lr, layer_scale=t_layer_scale,
                gelu=t_gelu, sin_random_shift=t_sin_random_shift,
                weight_pos_embed=t_weight_pos_embed,
                cape_mean_normalize=t_cape_mean_normalize, cape_augment=t_cape_augment,
                cape_glob_loc_scale=t_cape_glob_loc_scale)

    def compile_network(self, **options) -> None:
        """``torch.compile`` (with ``options``) everything between the STFT and the iSTFT, in place.

        Both U-Nets and the Transformer become one compiled graph; the STFT,
        the iSTFT and the complex views around them stay eager (Inductor does
        not generate complex kernels). Parameter names do not change, so
        checkpoints and DDP see the same module.
        """
        self._compiled_branches = torch.compile(HTDemucs._branches, **options)

    def valid_length(self, length: int) -> int:
        """The length the model wants in eval mode: the training length.

        ``demucs.apply.apply_model`` pads each chunk to this. Raises if the
        input is longer than the training length.
        """
        if not self.use_train_segment:
            return length
        training_length = int(self.segment * self.samplerate)
        if training_length < length:
            raise ValueError(f"Given length {length} is longer than "
                             f"training length {training_length}")
        return training_length

    def _bottleneck(self, x: torch.Tensor, xt: torch.Tensor):
        if self.bottom_channels:
            B, C, Fr, T = x.shape
            x = self.channel_upsampler(x.reshape(B, C, Fr * T)).view(B, -1, Fr, T)
            xt = self.channel_upsampler_t(xt)
        x, xt = self.crosstransformer(x, xt)
        if self.bottom_channels:
            B, C, Fr, T = x.shape
            x = self.channel_downsampler(x.reshape(B, C, Fr * T)).view(B, -1, Fr, T)
            xt = self.channel_downsampler_t(xt)
        return x, xt

    def _branches(self, x: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectrogram as channels ``x (B, 2C, F, T)`` and ``mix (B, C, L)`` -> per source
        ``(B, S, 2C, F, T)`` and ``(B, S, C, L)``: both U-Nets and the Transformer, no complex
        numbers (what :meth:`compile_network` compiles)."""
        B, _, Fq, T = x.shape
        length = mix.shape[-1]
        # Both branches see their input normalised per item.
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        meant = mix.mean(dim=(1, 2), keepdim=True)
        stdt = mix.std(dim=(1, 2), keepdim=True)
        xt = (mix - meant) / (1e-5 + stdt)

        saved, saved_t = [], []        # skip connections
        lengths, lengths_t = [], []    # lengths before each layer, to crop the padding back
        for idx, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = self.tencoder[idx]
                xt = tenc(xt)
                if tenc.empty:
                    # Same shape as the frequency branch now: merge into it.
                    inject = xt
                else:
                    saved_t.append(xt)
            x = encode(x, inject)
            if idx == 0 and self.freq_emb is not None:
                rows = torch.arange(x.shape[-2], device=x.device)
                emb = self.freq_emb(rows).t()[None, :, :, None]
                x = x + self.freq_emb_scale * emb
            saved.append(x)

        if self.crosstransformer is not None:
            x, xt = self._bottleneck(x, xt)

        offset = self.depth - len(self.tdecoder)
        for idx, decode in enumerate(self.decoder):
            x, pre = decode(x, saved.pop(), lengths.pop())
            if idx >= offset:
                tdec = self.tdecoder[idx - offset]
                if tdec.empty:
                    # Split: the time branch restarts from the frequency branch's
                    # input to its last transposed conv (one frequency row).
                    xt, _ = tdec(pre[:, :, 0], None, lengths_t.pop())
                else:
                    xt, _ = tdec(xt, saved_t.pop(), lengths_t.pop())

        S = len(self.sources)
        x = x.view(B, S, -1, Fq, T) * std[:, None] + mean[:, None]
        xt = xt.view(B, S, -1, length) * stdt[:, None] + meant[:, None]
        return x, xt

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix (B, audio_channels, T)`` -> ``(B, len(sources), audio_channels, T)``."""
        length = mix.shape[-1]
        crop = None
        if self.use_train_segment:
            if self.training:
                # Remember the training length: eval pads to it (see valid_length).
                self.segment = Fraction(length, self.samplerate)
            else:
                training_length = int(self.segment * self.samplerate)
                if length < training_length:
                    crop = length
                    mix = F.pad(mix, (0, training_length - length))
                    length = training_length
                # Longer inputs run at their own length (demucs 4.1.0 fails on them).

        z = spectrogram(mix, self.nfft)
        B, C, Fq, T = z.shape
        # Complex as channels: (B, C, F, T) complex -> (B, 2C, F, T), [re, im] per channel.
        x = torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, Fq, T)

        # The real-valued network between the STFT and the iSTFT; compiled by compile_network().
        branches = self._compiled_branches or HTDemucs._branches
        x, xt = branches(self, x, mix)
        S = len(self.sources)
        zout = torch.view_as_complex(
            x.float().view(B, S, -1, 2, Fq, T).permute(0, 1, 2, 4, 5, 3).contiguous())
        x = inverse_spectrogram(zout, length)
        out = xt + x
        if crop is not None:
            out = out[..., :crop]
        return out
