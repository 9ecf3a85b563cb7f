"""A vocoder trained from scratch: a magnitude spectrogram in the separation model's STFT -> a waveform.

    python -m hw2.vocoder --musdb-root PATH --out runs/vocoder [--max-minutes 30 --dim 96 ...]
    python -m hw2.vocoder --help            # every VocoderConfig field is a flag

Vocos-style (Siuzdak, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders for
high-quality audio synthesis", 2023): a 1-D ConvNeXt stack over STFT frames, and a head that gives every bin of
every frame a phase; the inverse STFT turns (magnitude, phase) into audio. Unlike Vocos, the magnitude is not
predicted: the output spectrogram is the input magnitude with the predicted phase, so the vocoder only has to
find a phase, and its frames are exactly the separation model's (same n_fft, hop, Hann window, centring:
`hw2.model.STFT`). It never sees a mixture: a pure vocoder, magnitude in, waveform out, one channel at a time.

Trained on excerpts of the vocals and accompaniment (drums + bass + other) stems of musdb's train split only,
with a multi-resolution STFT loss (spectral convergence + log-magnitude L1, Yamamoto et al. 2020) and no
adversarial term. A run folder holds `config.json`, `history.json`, `last.pt` (resumable: run the same command
again) and `best.pt` (lowest loss on the valid split's stems). Shapes: a waveform is (..., nb_timesteps); a
magnitude (..., nb_bins, nb_frames).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from hw2 import RATE, Hw2Error, loop, run_cli
from hw2.cache import open_cached
from hw2.checkpoint import load_checkpoint, resolve_device
from hw2.config import config_parser, flag
from hw2.model import STFT, count_parameters, load_weights
from hw2.sampling import ExcerptSampler
from hw2.tracks import SOURCES

CHECKPOINT_FORMAT = "hw2-vocoder-v1"


@dataclass
class VocoderConfig:
    """Every field is a command-line flag (`seq_dur` -> `--seq-dur`); the whole object is saved in each checkpoint."""
    musdb_root: str = flag("", "MUSDB18 or MUSDB18-HQ root (its train folder: musdb's train split trains, valid "
                               "validates)")
    out: str = flag("runs/vocoder", "run folder: config, history and checkpoints")
    cache_dir: str = flag("", "decoded cache folder (default $HW2_CACHE or ~/.cache/hw2)")
    # the separation model's STFT: a vocoder only serves a separator with the same settings
    n_fft: int = flag(4096, "STFT window (the separator's)")
    n_hop: int = flag(1024, "STFT hop (the separator's)")
    rate: int = flag(RATE, "sample rate")
    # network
    dim: int = flag(96, "ConvNeXt channels")
    nb_layers: int = flag(6, "ConvNeXt blocks")
    kernel: int = flag(7, "frames seen by each depthwise convolution; the stack sees nb_layers * (kernel - 1) + 1")
    # off by default: the shipped checkpoints/vocoder.pt was trained without it
    time_invariant: bool = flag(False, "predict the phase relative to each bin's own advance per frame "
                                       "(`Vocoder.phase`)")
    # data: excerpts of the train split's stems, each channel and target a training signal
    seq_dur: float = flag(2.0, "excerpt length in seconds")
    batch_size: int = flag(4, "excerpts per batch (each gives 2 targets x 2 channels signals)")
    samples_per_track: int = flag(8, "excerpts per train track per epoch")
    gain_low: float = flag(0.25, "lowest random source gain")
    gain_high: float = flag(1.25, "highest random source gain")
    # optimisation
    lr: float = flag(5e-4, "AdamW learning rate")
    loss_ffts: tuple = flag((512, 1024, 2048, 4096), "resolutions of the multi-resolution STFT loss (hop n_fft / 4)")
    epochs: int = flag(1000, "last epoch to train")
    max_minutes: float = flag(0.0, "stop cleanly (and resumably) after this many minutes; 0: no limit")
    seed: int = flag(42, "seed of the weights and of every batch")
    device: str = flag("auto", "auto, cpu, cuda or cuda:N")
    quiet: bool = flag(False, "no progress bars")

    @classmethod
    def from_dict(cls, d: dict) -> "VocoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise Hw2Error(f"vocoder config has unknown fields {sorted(unknown)}: written by another version of hw2")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        d.setdefault("time_invariant", False)  # written before the field existed (checkpoints/vocoder.pt)
        return cls(**d)


# fields that may change between a run and its resumption without changing what is trained
RESUMABLE = {"musdb_root", "out", "cache_dir", "epochs", "max_minutes", "device", "quiet"}


# ------------------------------------------------------------------------------------------------------ model
class ConvNeXtBlock(nn.Module):
    """Depthwise convolution over frames, layer norm, pointwise MLP (x3), layer scale, residual (Vocos's block)."""

    def __init__(self, dim: int, kernel: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, 3 * dim), nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(nb_signals, dim, nb_frames) -> same."""
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.pw2(nn.functional.gelu(self.pw1(h))) * self.gamma
        return x + h.transpose(1, 2)


class Vocoder(nn.Module):
    """Magnitude in, waveform out, in the separation model's STFT.

    log magnitude (2049 bins) -> linear embedding -> layer norm -> `nb_layers` ConvNeXt blocks -> layer norm
    -> linear head: one phase per bin and frame -> inverse STFT of |S| * exp(i phase).
    """

    def __init__(self, cfg: VocoderConfig = VocoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.stft = STFT(cfg.n_fft, cfg.n_hop)
        self.nb_bins = cfg.n_fft // 2 + 1
        self.embed = nn.Conv1d(self.nb_bins, cfg.dim, 1)
        self.norm_in, self.norm_out = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.kernel, 1 / cfg.nb_layers) for _ in range(cfg.nb_layers))
        self.head = nn.Linear(cfg.dim, self.nb_bins)

    def phase(self, mag: torch.Tensor) -> torch.Tensor:
        """Magnitude (..., nb_bins, nb_frames) -> phase in radians, same shape (not wrapped: only its cosine and
        sine are used, as in Vocos).

        With `time_invariant`, the head predicts the phase minus 2 pi k hop t / n_fft (bin k, frame t): a steady
        sinusoid's STFT phase turns by that much every frame (k pi / 2 with hop n_fft / 4), a pattern of period 4
        frames that convolutions over frames, blind to the frame index, cannot produce; relative to it, a steady
        sinusoid has a constant phase, which they can."""
        shape = mag.shape
        x = torch.log(mag.reshape(-1, *shape[-2:]).clamp_min(1e-5))
        x = self.norm_in(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        phase = self.head(self.norm_out(x.transpose(1, 2))).transpose(1, 2)
        if self.cfg.time_invariant:  # in integers modulo n_fft: exact at any frame index
            k = torch.arange(shape[-2], device=mag.device)[:, None]
            t = torch.arange(shape[-1], device=mag.device)[None]
            phase = phase + (k * self.cfg.n_hop * t % self.cfg.n_fft).to(phase.dtype) * (2 * math.pi / self.cfg.n_fft)
        return phase.reshape(shape)

    def forward(self, mag: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Magnitude (..., nb_bins, nb_frames) -> waveform (..., length); length defaults to
        (nb_frames - 1) * n_hop, the length a centred STFT of nb_frames frames comes from."""
        length = length if length is not None else (mag.shape[-1] - 1) * self.cfg.n_hop
        return self.stft.inverse(torch.polar(mag, self.phase(mag)), length)


def mrstft_loss(est: torch.Tensor, ref: torch.Tensor, ffts=(512, 1024, 2048, 4096), eps: float = 1e-5) -> torch.Tensor:
    """Multi-resolution STFT loss between waveforms (nb_signals, nb_timesteps): per resolution (Hann window of n_fft,
    hop n_fft / 4), spectral convergence || |R| - |E| ||_F / || |R| ||_F over the whole batch (a silent signal
    among them does not divide by zero) plus the mean L1 distance of the log magnitudes; averaged over resolutions."""
    total = 0.0
    for n_fft in ffts:
        window = torch.hann_window(n_fft, device=est.device)
        spec = lambda x: torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs()  # noqa: E731
        E, R = spec(est), spec(ref)
        sc = (R - E).norm() / R.norm().clamp_min(eps)
        total = total + sc + (torch.log(E + eps) - torch.log(R + eps)).abs().mean()
    return total / len(ffts)


# ------------------------------------------------------------------------------------------------- checkpoints
def load_vocoder(path, n_fft: int | None = None, n_hop: int | None = None, rate: int | None = None,
                 map_location="cpu") -> Vocoder:
    """The vocoder a checkpoint holds, in eval mode. With n_fft / n_hop / rate (the separator's), a vocoder trained
    with other STFT settings is refused: its frames would not line up with the separator's."""
    ckpt = load_checkpoint(path, map_location, fmt=CHECKPOINT_FORMAT, kind="vocoder", flag="--vocoder",
                           writer="python -m hw2.vocoder", example="checkpoints/vocoder.pt ships with the repository")
    cfg = VocoderConfig.from_dict(ckpt["config"])
    want = {"n_fft": n_fft, "n_hop": n_hop, "rate": rate}
    diff = [f"{k} {getattr(cfg, k)} there, {v} in the separator" for k, v in want.items()
            if v is not None and getattr(cfg, k) != v]
    if diff:
        raise Hw2Error(f"{path}: a vocoder for other STFT settings ({'; '.join(diff)}); train one with the "
                       f"separator's settings: python -m hw2.vocoder --n-fft {n_fft or cfg.n_fft} "
                       f"--n-hop {n_hop or cfg.n_hop} ...")
    return load_weights(Vocoder(cfg), ckpt["model"], path, "the vocoder its config describes")


# ----------------------------------------------------------------------------------------------------- training
def _signals(x: torch.Tensor) -> torch.Tensor:
    """(nb_samples, nb_targets, nb_channels, nb_timesteps) -> (nb_signals, nb_timesteps): every channel of every
    target is one signal for a mono vocoder."""
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def validation_loss(model: Vocoder, tracks, device) -> float:
    """Multi-resolution STFT loss of the vocoded true vocals and accompaniment of full valid tracks, per track
    (both targets, both channels in one batch), averaged over tracks."""
    model.eval()
    losses = []
    for track in tracks:
        ref = torch.from_numpy(_stack_targets(track)).reshape(-1, track.nb_samples).to(device)
        est = model(model.stft(ref).abs(), ref.shape[-1])
        losses.append(mrstft_loss(est, ref, model.cfg.loss_ffts).item())
    model.train()
    return sum(losses) / max(len(losses), 1)


def _stack_targets(track) -> np.ndarray:
    """float32 (2 targets, nb_channels, nb_samples): the true vocals and accompaniment of a cached track."""
    return np.stack([track.target("vocals"), track.target("accompaniment")])


def train(cfg: VocoderConfig, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the vocoder run in `cfg.out`. Returns a summary: run folder, epochs done, best epoch and
    valid loss, and why it stopped ("done" or "time-limit")."""
    t_start = loop.clock()
    if not cfg.musdb_root:
        raise Hw2Error("no --musdb-root given: pass the MUSDB18 folder (or make one with `python -m hw2.synth`)")
    for name in ("dim", "nb_layers", "kernel", "batch_size", "samples_per_track", "epochs"):
        if getattr(cfg, name) < 1:
            raise Hw2Error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0 and cfg.seq_dur > 0 and 0 < cfg.gain_low <= cfg.gain_high):
        raise Hw2Error("--lr and --seq-dur must be positive and 0 < --gain-low <= --gain-high")
    if cfg.n_hop > cfg.n_fft or not cfg.loss_ffts:
        raise Hw2Error("--n-hop must not exceed --n-fft, and --loss-ffts needs at least one resolution")
    ckpt, finished = loop.open_run(cfg, CHECKPOINT_FORMAT, "vocoder", "python -m hw2.vocoder", VocoderConfig.from_dict, RESUMABLE, log)
    if finished:
        return finished
    return loop.fit(partial(_job, cfg, log), Path(cfg.out), ckpt, t_start, log)


def _job(cfg: VocoderConfig, log: Callable[[str], None]) -> loop.Job:
    """The vocoder run `cfg` describes, ready for the loop."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = Vocoder(cfg).to(device)
    nb_params = count_parameters(model)
    # only the stems: the vocoder never sees a mixture; musdb's valid split only validates, test is never read
    train_tracks = open_cached(cfg.musdb_root, "train", "train", cfg.cache_dir, not cfg.quiet, SOURCES)
    valid_tracks = open_cached(cfg.musdb_root, "train", "valid", cfg.cache_dir, not cfg.quiet, SOURCES)
    sampler = ExcerptSampler(train_tracks, cfg.seq_dur, ("vocals", "accompaniment"), "balanced", cfg.batch_size,
                             cfg.samples_per_track, mixing="coherent", gain=(cfg.gain_low, cfg.gain_high),
                             swap=False, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.9))  # Vocos's optimiser
    log(f"vocoder: {nb_params:,} parameters; {len(train_tracks)} train / {len(valid_tracks)} valid tracks; "
        f"{sampler.nb_batches(0)} batches an epoch; device {device}")

    def step(batch) -> tuple[float, int]:
        ref = _signals(batch[1]).to(device)
        with torch.no_grad():
            mag = model.stft(ref).abs()
        loss = mrstft_loss(model(mag, ref.shape[-1]), ref, cfg.loss_ffts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item(), 1

    return loop.Job(cfg, CHECKPOINT_FORMAT, model, optimizer, sampler.epoch, sampler.nb_batches, step,
                    lambda epoch: {"valid_loss": validation_loss(model, valid_tracks, device)},
                    info={"nb_params": nb_params, "device": str(device)})


# ---------------------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    args = config_parser(VocoderConfig, "python -m hw2.vocoder", __doc__.split("\n\n")[0]).parse_args(argv)
    cfg = VocoderConfig.from_dict(vars(args))
    return run_cli(lambda: print(json.dumps(train(cfg))))  # train()'s Ctrl-C carries its own line


if __name__ == "__main__":
    sys.exit(main())
