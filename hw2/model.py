"""Open-Unmix (Stöter et al., 2019), a spectrogram U-Net, a blend of several of them (Uhlich et al., 2017), and the
STFT they work in, all in torch so it runs on the model's device.

Shapes use Open-Unmix's names: a waveform is (nb_samples, nb_channels, nb_timesteps); a spectrogram is
(nb_samples, nb_channels, nb_bins, nb_frames).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from hw2 import RATE, Hw2Error


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
    skip: bool = True  # concatenate the LSTM's input to its output before the decoder
    mask: bool = True  # the output is a mask times the mixture; False: the network outputs the magnitude itself
    arch: str = "openunmix"  # or "unet": Jansson et al. (2017), see UNet; "tfctdf": complex output, see TFCTDFNet
    tfc_layers: int = 3  # tfctdf: 3x3 convolutions per TFC block
    tdf_bottleneck: int = 8  # tfctdf: the TDF's frequency bottleneck (bins / this); 0: one full-size layer
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


class SpectrogramModel(nn.Module):
    """What every hw2 model shares: the STFT, the magnitude, and Open-Unmix's input scaler over the bins below
    `bandwidth`. Subclasses map a mixture magnitude to a target magnitude of the same shape, or, with
    `complex_output`, a mixture complex spectrogram to the target's complex spectrogram (`TFCTDFNet`)."""

    complex_output = False  # True: forward() takes and returns complex spectrograms, not magnitudes

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.nb_output_bins = cfg.n_fft // 2 + 1
        self.nb_bins = min(bandwidth_to_max_bin(cfg.rate, cfg.n_fft, cfg.bandwidth), self.nb_output_bins)
        self.stft = STFT(cfg.n_fft, cfg.n_hop)
        # scalers: set from training-set statistics by `set_input_stats` before training
        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Open-Unmix's scaler: the encoder sees (x - mean) / std of the training mixtures' magnitudes."""
        self.input_mean.copy_(-mean[: self.nb_bins])
        self.input_scale.copy_(1.0 / std[: self.nb_bins].clamp_min(1e-8))

    def targets(self, mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture magnitude (nb_samples, nb_channels, nb_bins, nb_frames) -> (vocals, accompaniment) magnitudes of
        the same shape. A vocals model leaves the accompaniment as what is left of the mixture, max(|X| - V, 0);
        `hw2.blend.Blend` overrides this with a network's own accompaniment estimate."""
        vocals = self(mag)
        return vocals, torch.relu(mag - vocals)

    def magnitude(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nb_samples, nb_channels, nb_timesteps) -> (complex spectrogram, its magnitude), both
        (nb_samples, nb_channels, nb_bins, nb_frames)."""
        spec = self.stft(audio)
        return spec, spec.abs()


class OpenUnmix(SpectrogramModel):
    """Mixture magnitude in, target magnitude out: a ReLU mask times the mixture magnitude.

    encoder  bins below `bandwidth` -> (x + input_mean) * input_scale -> fc1 -> batch norm -> tanh
    core     `nb_layers` LSTM (bidirectional by default), its output concatenated with its input (skip)
    decoder  fc2 -> batch norm -> ReLU -> fc3 -> batch norm -> * output_scale + output_mean -> ReLU -> * mixture

    The structure variants of the model comparison: `nb_layers=0` drops the LSTM (the fully connected path
    alone), `skip=False` feeds the decoder the LSTM output only, `mask=False` outputs the magnitude directly.
    """

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__(cfg)
        hidden, ch = cfg.hidden_size, cfg.nb_channels
        self.fc1 = nn.Linear(self.nb_bins * ch, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = None
        if cfg.nb_layers > 0:
            lstm_hidden = hidden if cfg.unidirectional else hidden // 2
            self.lstm = nn.LSTM(hidden, lstm_hidden, num_layers=cfg.nb_layers, bidirectional=not cfg.unidirectional,
                                batch_first=False, dropout=0.4 if cfg.nb_layers > 1 else 0.0)
        self.fc2 = nn.Linear(hidden * (2 if cfg.skip and self.lstm else 1), hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, self.nb_output_bins * ch, bias=False)
        self.bn3 = nn.BatchNorm1d(self.nb_output_bins * ch)
        self.output_scale = nn.Parameter(torch.ones(self.nb_output_bins))
        self.output_mean = nn.Parameter(torch.ones(self.nb_output_bins))

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """Mixture magnitude (nb_samples, nb_channels, nb_bins, nb_frames) -> target magnitude, same shape."""
        nb_samples, nb_channels, nb_bins, nb_frames = mag.shape
        mix = mag
        x = mag.mean(1, keepdim=True) if self.cfg.nb_channels == 1 and nb_channels > 1 else mag
        x = x.permute(3, 0, 1, 2)[..., : self.nb_bins]  # (nb_frames, nb_samples, ch, nb_bins)
        x = (x + self.input_mean) * self.input_scale
        x = self.fc1(x.reshape(-1, self.cfg.nb_channels * self.nb_bins))
        x = torch.tanh(self.bn1(x)).reshape(nb_frames, nb_samples, self.cfg.hidden_size)
        if self.lstm is not None:
            h = self.lstm(x)[0]
            x = torch.cat([x, h], -1) if self.cfg.skip else h
        x = torch.relu(self.bn2(self.fc2(x.reshape(-1, x.shape[-1]))))
        x = self.bn3(self.fc3(x)).reshape(nb_frames, nb_samples, self.cfg.nb_channels, self.nb_output_bins)
        x = torch.relu(x * self.output_scale + self.output_mean).permute(1, 2, 3, 0)
        if self.cfg.nb_channels == 1 and nb_channels > 1:
            x = x.expand(-1, nb_channels, -1, -1)  # a mono output serves both mixture channels
        return x * mix if self.cfg.mask else x


class UNet(SpectrogramModel):
    """Spectrogram U-Net (Jansson et al., "Singing voice separation with deep U-Net convolutional networks",
    ISMIR 2017), our own code: a sigmoid mask times the mixture magnitude.

    encoder  `depth` 5x5 convolutions of stride 2, channels hidden_size // 8 doubling each layer, batch norm,
             leaky ReLU 0.2, on the scaled magnitude (channels = audio channels) of the bins below `bandwidth`
    decoder  5x5 transposed convolutions of stride 2 with skip connections, batch norm, ReLU, dropout 0.5 in
             the first three; the last layer gives the mask. Bins above `bandwidth` keep the mask of the top bin.
    Frequency and time are padded to a multiple of 2**depth and cropped back.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.depth = max(1, cfg.nb_layers)
        ch = [cfg.nb_channels] + [max(1, cfg.hidden_size // 8) * 2 ** i for i in range(self.depth)]
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(ch[i], ch[i + 1], 5, 2, 2), nn.BatchNorm2d(ch[i + 1]),
                                                nn.LeakyReLU(0.2)) for i in range(self.depth))
        self.up = nn.ModuleList()
        for i in reversed(range(self.depth)):
            c_in = ch[i + 1] * (1 if i == self.depth - 1 else 2)
            last = i == 0
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c_in, ch[i] if last else ch[i], 5, 2, 2, output_padding=1),
                                         *([] if last else [nn.BatchNorm2d(ch[i]), nn.ReLU(),
                                                            nn.Dropout(0.5 if i >= self.depth - 3 else 0.0)])))

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """Mixture magnitude (nb_samples, nb_channels, nb_bins, nb_frames) -> target magnitude, same shape."""
        nb_samples, nb_channels, nb_bins, nb_frames = mag.shape
        x = mag.mean(1, keepdim=True) if self.cfg.nb_channels == 1 and nb_channels > 1 else mag
        x = (x[:, :, : self.nb_bins].transpose(2, 3) + self.input_mean) * self.input_scale
        x = x.transpose(2, 3)  # (nb_samples, ch, nb_bins, nb_frames), scaled
        m = 2 ** self.depth
        pad_f, pad_t = -self.nb_bins % m, -nb_frames % m
        x = nn.functional.pad(x, (0, pad_t, 0, pad_f))
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()
        for layer in self.up:
            x = layer(x)
            if skips:
                x = torch.cat([x, skips.pop()], 1)
        mask = torch.sigmoid(x[:, :, : self.nb_bins, :nb_frames])
        if self.nb_bins < nb_bins:
            mask = torch.cat([mask, mask[:, :, -1:].expand(-1, -1, nb_bins - self.nb_bins, -1)], 2)
        return mask * mag


class TFCTDF(nn.Module):
    """One TFC-TDF block (Choi et al., ISMIR 2020; Kim et al., MDX 2021), on (nb_samples, channels, nb_frames, f):
    TFC, `nb_convs` 3x3 convolutions over time and frequency (batch norm, ReLU), then TDF, a fully connected layer
    across the f bins of each frame and channel (f -> f / bottleneck -> f, batch norm, ReLU), added back."""

    def __init__(self, channels: int, f: int, nb_convs: int, bottleneck: int):
        super().__init__()
        self.tfc = nn.Sequential(*(nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                                 nn.BatchNorm2d(channels), nn.ReLU()) for _ in range(nb_convs)))
        hidden = f // bottleneck if bottleneck > 0 else f
        layers = [nn.Linear(f, hidden, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
        if bottleneck > 0:
            layers += [nn.Linear(hidden, f, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
        self.tdf = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tfc(x)
        return x + self.tdf(x)


def tfctdf_bins(cfg: ModelConfig) -> int:
    """The band a TFC-TDF U-Net sees: the bins below `bandwidth`, cut to a multiple of 2**nb_layers so that every
    level halves it exactly."""
    m = 2 ** max(1, cfg.nb_layers)
    return max(m, min(bandwidth_to_max_bin(cfg.rate, cfg.n_fft, cfg.bandwidth), cfg.n_fft // 2 + 1) // m * m)


class TFCTDFNet(SpectrogramModel):
    """A TFC-TDF U-Net that estimates the target's complex spectrogram: the phase is predicted, not copied. Our own
    code after KUIELab's TFC-TDF-U-Net v2 (Kim et al., "KUIELab-MDX-Net", MDX workshop 2021) and DTTNet (Chen et
    al., ICASSP 2024): real and imaginary parts in, real and imaginary parts out, no mask.

    input    the mixture's bins below `bandwidth`, cut to a multiple of 2**nb_layers (the band the network sees),
             real and imaginary parts of each audio channel as 2 * nb_channels image channels, each bin scaled by
             the training mixtures' magnitude std (Open-Unmix's scaler, without the mean: a complex value has none)
    encoder  a 1x1 convolution to `hidden_size` channels, then `nb_layers` levels of a TFC-TDF block and a 2x2
             convolution of stride 2 (frequency and time halved, `hidden_size` channels more each level)
    decoder  a TFC-TDF block at the bottom; per level a 2x2 transposed convolution, multiplied by the encoder's
             output of that level (MDX-Net's multiplicative skip), a TFC-TDF block; a 1x1 convolution back to
             2 * nb_channels, plus `input_skip` times the scaled input (a learned fraction of the mixture's
             spectrogram, as Wave-U-Net feeds its output layer the mixture), times the bin's std
    output   the target's complex spectrogram, zero above the band. Time is padded to a multiple of 2**nb_layers
             and cropped back.
    Why the input skip: the network learns a complex correction of 0.5 X (where a mask model starts), not the
    whole spectrogram from zero. Without it, 40 steps of the CPU preset on the preview left a held-out batch at
    the loss of an all-zero estimate (3.21 against 3.25; 2.35 with it), and 50 steps at a 0.00 dB valid SDR.
    `targets` gives the accompaniment as the mixture minus the vocals, complex: the two add up to the mixture.
    """

    complex_output = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.depth = max(1, cfg.nb_layers)
        self.nb_bins = tfctdf_bins(cfg)
        del self.input_mean  # a complex input is scaled, not centred
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))
        g, nb_ch = max(1, cfg.hidden_size), cfg.nb_channels
        block = lambda c, f: TFCTDF(c, f, cfg.tfc_layers, cfg.tdf_bottleneck)  # noqa: E731
        self.first = nn.Sequential(nn.Conv2d(2 * nb_ch, g, 1, bias=False), nn.BatchNorm2d(g), nn.ReLU())
        self.enc, self.down, self.up, self.dec = (nn.ModuleList() for _ in range(4))
        c, f = g, self.nb_bins
        for _ in range(self.depth):
            self.enc.append(block(c, f))
            self.down.append(nn.Sequential(nn.Conv2d(c, c + g, 2, 2, bias=False), nn.BatchNorm2d(c + g), nn.ReLU()))
            c, f = c + g, f // 2
        self.mid = block(c, f)
        for _ in range(self.depth):
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c, c - g, 2, 2, bias=False), nn.BatchNorm2d(c - g),
                                         nn.ReLU()))
            c, f = c - g, f * 2
            self.dec.append(block(c, f))
        self.last = nn.Conv2d(g, 2 * nb_ch, 1)
        self.input_skip = nn.Parameter(torch.tensor(0.5))

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_scale.copy_(1.0 / std[: self.nb_bins].clamp_min(1e-8))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Mixture complex spectrogram (nb_samples, nb_channels, nb_bins, nb_frames) -> target complex spectrogram,
        same shape."""
        nb_samples, nb_channels, nb_bins, nb_frames = spec.shape
        x = torch.view_as_real(spec[:, :, : self.nb_bins]) * self.input_scale[:, None, None]
        x = x.permute(0, 1, 4, 3, 2).reshape(nb_samples, 2 * nb_channels, nb_frames, self.nb_bins)  # (.., T, F)
        x = self.body(nn.functional.pad(x, (0, 0, 0, -nb_frames % 2 ** self.depth)))[:, :, :nb_frames]
        x = x.reshape(nb_samples, nb_channels, 2, nb_frames, self.nb_bins).permute(0, 1, 4, 3, 2)
        out = torch.view_as_complex((x.float() / self.input_scale.float()[:, None, None]).contiguous())
        return nn.functional.pad(out, (0, 0, 0, nb_bins - self.nb_bins))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net and the input skip: (nb_samples, 2 * nb_channels, nb_frames, band bins) scaled real and
        imaginary parts in, the target's out, same shape (nb_frames a multiple of 2**nb_layers)."""
        x0, x = x, self.first(x)
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.mid(x)
        for up, dec in zip(self.up, self.dec):
            x = dec(up(x) * skips.pop())
        return self.last(x) + self.input_skip * x0

    def targets(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture complex spectrogram -> (vocals, accompaniment) complex spectrograms, the accompaniment the
        mixture minus the vocals; each (nb_samples, nb_channels, nb_bins, nb_frames)."""
        vocals = self(spec)
        return vocals, spec - vocals


ARCHITECTURES = {"openunmix": OpenUnmix, "unet": UNet, "tfctdf": TFCTDFNet}


def build_model(cfg: ModelConfig) -> SpectrogramModel:
    """The network a config describes (`cfg.arch`)."""
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {cfg.arch!r}: use one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[cfg.arch](cfg)


def describe(cfg: ModelConfig) -> str:
    """One line naming the network a config builds, for model cards and reports."""
    common = f"bandwidth {cfg.bandwidth:g} Hz, {'stereo' if cfg.nb_channels == 2 else 'mono'}, STFT {cfg.n_fft}/{cfg.n_hop}"
    if cfg.arch == "tfctdf":
        g, depth, bins = max(1, cfg.hidden_size), max(1, cfg.nb_layers), tfctdf_bins(cfg)
        return (f"TFC-TDF U-Net after MDX-Net (Kim et al., 2021), complex output, {depth} levels, {g}-{g * (depth + 1)} "
                f"channels, {cfg.tfc_layers} convolutions per block, TDF bottleneck {cfg.tdf_bottleneck}, "
                f"{bins} bins ({bins * cfg.rate / cfg.n_fft / 1000:.1f} kHz), "
                f"{'stereo' if cfg.nb_channels == 2 else 'mono'}, STFT {cfg.n_fft}/{cfg.n_hop}")
    if cfg.arch == "unet":
        base = max(1, cfg.hidden_size // 8)
        return (f"spectrogram U-Net (Jansson et al., ISMIR 2017), {max(1, cfg.nb_layers)} levels, "
                f"{base}-{base * 2 ** (max(1, cfg.nb_layers) - 1)} channels, sigmoid mask, {common}")
    lstm = (f"{cfg.nb_layers} {'uni' if cfg.unidirectional else 'bi'}directional LSTM layers" if cfg.nb_layers
            else "no LSTM")
    return (f"Open-Unmix, hidden {cfg.hidden_size}, {lstm}{'' if cfg.skip else ', no skip'}"
            f"{'' if cfg.mask else ', no mask'}, {common}")


def load_weights(model: nn.Module, state: dict, path, what: str = "the model its config describes") -> nn.Module:
    """`model` with the saved `state` loaded, in eval mode; weights that do not fit its shapes are one `Hw2Error`
    line naming the file (a checkpoint changed by hand, or one of another model)."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise Hw2Error(f"{path}: its weights do not fit {what}; the file was changed by hand or comes from another "
                       "model") from None
    return model.eval()


def parameters_of(cfg: ModelConfig) -> int:
    """Parameters of the network `cfg` builds (a blend member's, a shipped config's), without loading weights."""
    return sum(p.numel() for p in build_model(cfg).parameters())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------------- blend
def phase_ratio(magnitude: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The real ratio r = magnitude / |x| (0 where x is 0), so that r * x is `magnitude` with the phase of the
    complex spectrogram x. Computed in place in `magnitude` (the caller's own): a separation block's complex
    tensors are 57.5 MiB each, and r * x, or estimate.addcmul_(r, x), needs no complex temporary where
    magnitude * x / |x| needed three."""
    return magnitude.div_(x.abs().clamp_min_(1e-12))


def pair_share(weights) -> float:
    """w as `hw2.blend --weights` takes it: the first member's weight, or, of three members, its share of the first
    two (the third's weight t scales both: ((1 - t) w, (1 - t)(1 - w), t))."""
    return weights[0] / max(weights[0] + weights[1], 1e-12) if len(weights) == 3 else weights[0]


class Blend(nn.Module):
    """Members' magnitudes in, one estimate out; the interface of a `SpectrogramModel` (`cfg`, `stft`, `forward`,
    `targets`), so the `Separator` and every phase method run it unchanged.

    members        vocals models sharing one STFT and sample rate, weighted by `weights` (summing to 1)
    accompaniment  an optional accompaniment model, blended with the residual by `accompaniment_weight`
    swap           average each network over the mixture and its left/right swapped copy

    With a complex member (`TFCTDFNet`) the blend is complex too (`complex_output`): it takes the mixture's complex
    spectrogram X, each magnitude member's estimate gets the mixture's phase, |V_i| X / |X|, the complex member
    keeps its own, and the vocals are their weighted complex sum; the accompaniment is X minus the vocals, blended
    with the accompaniment network's magnitude on the mixture's phase. With magnitude members alone, this is the
    magnitude blend on the mixture's phase, so the `mixture` method of either gives the same audio.
    """

    def __init__(self, members: list[SpectrogramModel], weights, accompaniment: SpectrogramModel | None = None,
                 accompaniment_weight: float = 0.0, swap: bool = False):
        super().__init__()
        nets = members + ([accompaniment] if accompaniment is not None else [])
        stfts = {(m.cfg.n_fft, m.cfg.n_hop, m.cfg.rate) for m in nets}
        if len(stfts) > 1:
            raise Hw2Error(f"blend members use different STFTs {sorted(stfts)}: blend only models trained with the "
                           "same --n-fft and --n-hop")
        if len(weights) != len(members) or abs(sum(weights) - 1) > 1e-6 or min(weights) < 0:
            raise Hw2Error(f"blend weights {list(weights)} must be one per member, non-negative, summing to 1")
        self.members = nn.ModuleList(members)
        self.accompaniment = accompaniment
        self.weights = [round(float(w), 6) for w in weights]  # 1 - 0.7 prints as 0.30000000000000004
        self.accompaniment_weight = float(accompaniment_weight)
        self.swap = swap
        self.cfg: ModelConfig = members[0].cfg
        self.stft = members[0].stft
        self.complex_output = any(getattr(m, "complex_output", False) for m in members)

    def _run(self, net: nn.Module, mag: torch.Tensor) -> torch.Tensor:
        out = net(mag)
        if self.swap and mag.shape[1] == 2:
            out = 0.5 * (out + net(mag.flip(1)).flip(1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture magnitude (nb_samples, nb_channels, nb_bins, nb_frames) -> vocals magnitude, same shape; a
        complex blend: complex spectrogram in, complex out."""
        if not self.complex_output:
            return sum(w * self._run(m, x) for w, m in zip(self.weights, self.members) if w > 0)
        # Memory, per separation block: the magnitude members' weighted sum takes the mixture's phase once, added
        # into the complex sum in place (no complex tensor per member: a 10-minute track's separation peaked
        # 2,669 MiB with one per member, 1,623 so, with `estimates(keep_complex=False)`), and the complex members
        # run first, before the magnitude and its sum are held
        mag = magnitude = estimate = None
        pairs = sorted(zip(self.weights, self.members), key=lambda p: not getattr(p[1], "complex_output", False))
        for w, m in pairs:
            if w <= 0:
                continue
            if getattr(m, "complex_output", False):
                out = self._run(m, x).mul_(w)
                estimate = out if estimate is None else estimate.add_(out)
            else:
                mag = x.abs() if mag is None else mag
                out = self._run(m, mag).mul_(w)
                magnitude = out if magnitude is None else magnitude.add_(out)
            del out
        del mag
        if magnitude is not None:
            ratio = phase_ratio(magnitude, x)
            estimate = ratio * x if estimate is None else estimate.addcmul_(ratio, x)
        return estimate

    def targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vocals, accompaniment) magnitudes, each (nb_samples, nb_channels, nb_bins, nb_frames); a complex blend:
        from the complex spectrogram, complex estimates that add up to the mixture when u = 0."""
        vocals = self(x)
        u = self.accompaniment_weight
        if self.accompaniment is None or u == 0:
            return vocals, x - vocals if self.complex_output else torch.relu(x - vocals)
        acc = self._run(self.accompaniment, x.abs() if self.complex_output else x)
        if not self.complex_output:
            return vocals, u * acc + (1 - u) * torch.relu(x - vocals)
        # (1 - u)(X - V) + u |A| X / |X| = X ((1 - u) + u |A| / |X|) - (1 - u) V, built in place: one complex
        # temporary where the direct form held three (a separation block's complex tensor is 57.5 MiB)
        factor = phase_ratio(acc.mul_(u), x).add_(1 - u)
        return vocals, factor.mul(x).sub_(vocals, alpha=1 - u)

    def checkpoint_entry(self, entries: list[dict], accompaniment_entry: dict | None) -> dict:
        """The "blend" entry of a checkpoint: the members' saved {config, model, epoch} and the weights."""
        return {"members": entries, "weights": self.weights, "accompaniment": accompaniment_entry,
                "accompaniment_weight": self.accompaniment_weight, "swap": self.swap}


def _member(entry: dict, path) -> SpectrogramModel:
    return load_weights(build_model(ModelConfig.from_dict(entry["config"])), entry["model"], path,
                        "the blend member its config describes")


def blend_from_entry(entry: dict, path="checkpoint") -> Blend:
    """The `Blend` a checkpoint's "blend" entry describes."""
    acc = entry.get("accompaniment")
    return Blend([_member(m, path) for m in entry["members"]], entry["weights"],
                 _member(acc, path) if acc else None, entry.get("accompaniment_weight", 0.0),
                 entry.get("swap", False))


def blend_epoch(entry: dict):
    """The epoch column of a blend's rows: the members' epochs joined by '+' (one number when they agree)."""
    epochs = [m.get("epoch") for m in entry["members"]] + \
        ([entry["accompaniment"].get("epoch")] if entry.get("accompaniment") else [])
    return epochs[0] if len(set(epochs)) == 1 else "+".join(str(e) for e in epochs)
