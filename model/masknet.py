"""MaskNet: a small spectrogram-mask separator that learns in minutes on a CPU.

The mixture's STFT magnitude (log-compressed, normalised per item) goes
frame by frame through a linear layer, a bidirectional LSTM over time and a
linear head that predicts one mask per source, channel and frequency bin.
The masks (a softmax over the sources, so the estimates add up to the
mixture) multiply the complex mixture STFT, and an inverse STFT gives the
waveforms. 1.5 M parameters at the defaults (16 kHz, nfft 1024; the demo
adds the conv front end at nfft 2048, its first layer strided: 2.9 M); it is
the demo's network, where HTDemucs would learn too slowly on a laptop CPU:
on 2 cores a training step of 16 x 1 s items takes ~0.2 s at the defaults
and with the demo's front end, and the defaults with plain L1 on clean
sine-backend data reached 6.2 dB SDR after 90 steps (7.5 dB after 540 at a
third of the lr).

    from model import MaskNet
    model = MaskNet(["drums", "bass", "other", "vocals"])   # 16 kHz stereo
    estimates = model(mix)  # (B, 2, T) -> (B, 4, 2, T), any T
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import istft, stft

MASKS = ("softmax", "sigmoid")


class MaskNet(nn.Module):
    """Per-source spectrogram masks from a BLSTM over STFT frames.

    Options:
        sources: source names; the output has one waveform per source.
        audio_channels: channels of the mixture and of each source.
        samplerate: the rate the network is trained at (metadata).
        segment: seconds per chunk when a whole track is separated
            (``labelnoise.inference`` cuts tracks into chunks this long).
        nfft: STFT size; hop ``nfft // 4``. Inputs of any length are padded
            internally and the output cropped back.
        hidden: width of the frame features and of the LSTM output (the two
            directions together).
        layers: BLSTM layers.
        mask: ``softmax`` over sources (the estimates sum to the mixture) or
            ``sigmoid`` (each mask in [0, 1] on its own).
        conv: channels of a small 2D convolution front end over (frequency, time)
            before the frame features (0: none). It sees local patterns the
            frame-wise layer cannot: a harmonic's neighbours, an onset's attack.
        conv_stride: frequency stride of the front end's first layer (1 or 2). At 2 the
            second layer and the frame features see a quarter of the bins: on the sampled
            renders at nfft 2048 a step 1.3x faster at the same SDR (docs/BENCHMARKS.md).
    """

    def __init__(self, sources, audio_channels=2, samplerate=16000, segment=4.0, nfft=1024,
                 hidden=192, layers=2, mask="softmax", conv=0, conv_stride=1):
        super().__init__()
        self.init_kwargs = {key: value for key, value in locals().items()
                            if key not in ("self", "__class__")}
        self.init_kwargs["sources"] = list(sources)
        if mask not in MASKS:
            raise ValueError(f"MaskNet mask={mask!r}: expected one of {MASKS}")
        if nfft % 4 or nfft < 16:
            raise ValueError(f"MaskNet nfft={nfft}: expected a multiple of 4, at least 16")
        if hidden % 2:
            raise ValueError(f"MaskNet hidden={hidden}: must be even (two LSTM directions)")
        if conv_stride not in (1, 2):
            raise ValueError(f"MaskNet conv_stride={conv_stride}: expected 1 or 2")
        self.sources = list(sources)
        self.audio_channels = audio_channels
        self.samplerate = samplerate
        self.segment = segment
        self.nfft = nfft
        self.hop = nfft // 4
        self.mask = mask
        bins = nfft // 2 + 1
        self.bins = bins

        self.conv = conv
        if conv:
            # Two 3x3 layers, the second strided by 2 in frequency (the first by conv_stride), `conv` maps each.
            self.front = nn.Sequential(nn.Conv2d(audio_channels, conv, 3, stride=(conv_stride, 1), padding=1),
                                       nn.GELU(),
                                       nn.Conv2d(conv, conv, 3, stride=(2, 1), padding=1), nn.GELU())
            first = (bins - 1) // conv_stride + 1
            features = conv * ((first - 1) // 2 + 1)
        else:
            features = audio_channels * bins
        self.encode = nn.Sequential(nn.Linear(features, hidden), nn.LayerNorm(hidden), nn.Tanh())
        self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=layers, bidirectional=True, batch_first=True)
        # The head sees the frame features next to the LSTM's context (a skip connection).
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                  nn.Linear(hidden, len(self.sources) * audio_channels * bins))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix (B, audio_channels, T)`` -> ``(B, len(sources), audio_channels, T)``."""
        B, C, length = mix.shape
        # torch.stft's reflect padding needs more than nfft // 2 samples; whole hops keep frames aligned.
        padded = max(length, self.nfft)
        padded += -padded % self.hop
        x = F.pad(mix, (0, padded - length))
        with torch.autocast(device_type=mix.device.type, enabled=False):
            z = stft(x.float(), self.nfft, self.hop)              # (B, C, bins, frames) complex
        frames = z.shape[-1]

        # Log magnitude, standardised per item: the masks then do not depend on the mixture's level.
        feats = torch.log(z.abs() + 1e-5)
        mean = feats.mean(dim=(1, 2, 3), keepdim=True)
        std = feats.std(dim=(1, 2, 3), keepdim=True)
        feats = (feats - mean) / (std + 1e-5)
        if self.conv:
            feats = self.front(feats)                                 # (B, conv, bins / 2, frames)
        feats = feats.permute(0, 3, 1, 2).reshape(B, frames, -1)

        h = self.encode(feats)
        context, _ = self.lstm(h)
        logits = self.head(torch.cat([h, context], dim=-1))
        logits = logits.view(B, frames, len(self.sources), C, self.bins).permute(0, 2, 3, 4, 1)
        masks = logits.float().softmax(dim=1) if self.mask == "softmax" else logits.float().sigmoid()

        with torch.autocast(device_type=mix.device.type, enabled=False):
            out = istft(masks * z[:, None], self.hop, padded)
        return out[..., :length]
