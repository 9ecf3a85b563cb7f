"""Open-Unmix (Stöter et al., 2019) and the STFT it works in, all in torch so it runs on the model's device.

Shapes use Open-Unmix's names: a waveform is (nb_samples, nb_channels, nb_timesteps); a spectrogram is
(nb_samples, nb_channels, nb_bins, nb_frames).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

RATE = 44100


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved inside every checkpoint."""
    n_fft: int = 4096
    n_hop: int = 1024
    hidden_size: int = 512
    nb_layers: int = 3
    bandwidth: float = 16000.0  # Hz processed by the encoder and LSTM; input and output stay full band
    nb_channels: int = 2  # 1: spectral downmix to mono inside the model, mask applied to both channels
    unidirectional: bool = False
    rate: int = RATE

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class STFT(nn.Module):
    """Complex STFT and its inverse with a periodic Hann window, centred frames (torch.stft conventions)."""

    def __init__(self, n_fft: int = 4096, n_hop: int = 1024):
        super().__init__()
        self.n_fft, self.n_hop = n_fft, n_hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., nb_timesteps) real -> (..., nb_bins, nb_frames) complex."""
        shape = x.shape
        spec = torch.stft(x.reshape(-1, shape[-1]), self.n_fft, self.n_hop, window=self.window,
                          center=True, return_complex=True)
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(..., nb_bins, nb_frames) complex -> (..., length) real, exactly `length` samples."""
        shape = spec.shape
        x = torch.istft(spec.reshape(-1, *shape[-2:]), self.n_fft, self.n_hop, window=self.window,
                        center=True, length=length)
        return x.reshape(*shape[:-2], length)


def bandwidth_to_max_bin(rate: float, n_fft: int, bandwidth: float) -> int:
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth)[0])) + 1


class OpenUnmix(nn.Module):
    """Mixture magnitude in, target magnitude out: a ReLU mask times the mixture magnitude.

    encoder  bins below `bandwidth` -> (x + input_mean) * input_scale -> fc1 -> batch norm -> tanh
    core     `nb_layers` LSTM (bidirectional by default), its output concatenated with its input (skip)
    decoder  fc2 -> batch norm -> ReLU -> fc3 -> batch norm -> * output_scale + output_mean -> ReLU -> * mixture
    """

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.nb_output_bins = cfg.n_fft // 2 + 1
        self.nb_bins = min(bandwidth_to_max_bin(cfg.rate, cfg.n_fft, cfg.bandwidth), self.nb_output_bins)
        hidden, ch = cfg.hidden_size, cfg.nb_channels
        self.stft = STFT(cfg.n_fft, cfg.n_hop)
        self.fc1 = nn.Linear(self.nb_bins * ch, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        lstm_hidden = hidden if cfg.unidirectional else hidden // 2
        self.lstm = nn.LSTM(hidden, lstm_hidden, num_layers=cfg.nb_layers, bidirectional=not cfg.unidirectional,
                            batch_first=False, dropout=0.4 if cfg.nb_layers > 1 else 0.0)
        self.fc2 = nn.Linear(hidden * 2, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, self.nb_output_bins * ch, bias=False)
        self.bn3 = nn.BatchNorm1d(self.nb_output_bins * ch)
        # scalers: set from training-set statistics by `set_input_stats` before training
        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))
        self.output_scale = nn.Parameter(torch.ones(self.nb_output_bins))
        self.output_mean = nn.Parameter(torch.ones(self.nb_output_bins))

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Open-Unmix's scaler: the encoder sees (x - mean) / std of the training mixtures' magnitudes."""
        self.input_mean.copy_(-mean[: self.nb_bins])
        self.input_scale.copy_(1.0 / std[: self.nb_bins].clamp_min(1e-8))

    def magnitude(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nb_samples, nb_channels, nb_timesteps) -> (complex spectrogram, its magnitude), both
        (nb_samples, nb_channels, nb_bins, nb_frames)."""
        spec = self.stft(audio)
        return spec, spec.abs()

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """Mixture magnitude (nb_samples, nb_channels, nb_bins, nb_frames) -> target magnitude, same shape."""
        nb_samples, nb_channels, nb_bins, nb_frames = mag.shape
        mix = mag
        x = mag.mean(1, keepdim=True) if self.cfg.nb_channels == 1 and nb_channels > 1 else mag
        x = x.permute(3, 0, 1, 2)[..., : self.nb_bins]  # (nb_frames, nb_samples, ch, nb_bins)
        x = (x + self.input_mean) * self.input_scale
        x = self.fc1(x.reshape(-1, self.cfg.nb_channels * self.nb_bins))
        x = torch.tanh(self.bn1(x)).reshape(nb_frames, nb_samples, self.cfg.hidden_size)
        x = torch.cat([x, self.lstm(x)[0]], -1)
        x = torch.relu(self.bn2(self.fc2(x.reshape(-1, x.shape[-1]))))
        x = self.bn3(self.fc3(x)).reshape(nb_frames, nb_samples, self.cfg.nb_channels, self.nb_output_bins)
        x = torch.relu(x * self.output_scale + self.output_mean)
        return x.permute(1, 2, 3, 0) * mix  # a mono mask broadcasts over both mixture channels


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
