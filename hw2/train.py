"""Train a separator on MUSDB: its model, batches, loss and validation, driven by the one loop (`hw2.loop`).

    python -m hw2.train --musdb-root PATH --out runs/vocals [--epochs 150 --hidden-size 512 ...]
    python -m hw2.train --preset tiny --musdb-root PATH --out runs/tiny   # named settings: tiny, cpu, t4, 1080ti
    python -m hw2.train --help            # every TrainConfig field is a flag

The config is `hw2.config.TrainConfig`. A run folder holds `config.json`, `history.json`, `last.pt` (everything
needed to resume), `best.pt` (lowest validation loss, or highest validation SDR with `--select-by sdr`) and
`epochNNN.pt` at each milestone. Running the same command again resumes from `last.pt` exactly where it stopped: model, optimizer, scheduler, AMP scaler,
RNGs and the sampler's (epoch, step), so a Colab disconnect costs at most the work since the last save (every
epoch). `--max-minutes` and Ctrl-C both stop after the step in progress and save that same mid-epoch state; a
Ctrl-C before the run had a state to save (decoding, the statistics pass) says that nothing was saved.
"""
from __future__ import annotations

import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hw2 import Hw2Error, loop, run_cli
from hw2.cache import CachedTrack, load_cached, variant_names
from hw2.checkpoint import CHECKPOINT_FORMAT, MAX_PARAMS, resolve_device
from hw2.config import AMP, PRESETS, RESUMABLE, TrainConfig, config_from_dict, config_parser, upgrade
from hw2.evaluate import score_model
from hw2.model import SpectrogramModel, build_model, count_parameters
from hw2.sampling import ExcerptSampler
from hw2.tracks import SOURCES, blocks, open_tracks, read_stem


def precision(amp: str, device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """(autocast dtype or None for float32, gradient scaler) of a run. float16 (CUDA) underflows small gradients
    without loss scaling, so it gets an enabled GradScaler; bfloat16 (CPU) has float32's exponent range and needs
    none. The CPU path exists so that CI runs the mixed-precision code (it is not faster on most CPUs)."""
    device = torch.device(device)
    amp = upgrade({"amp": amp})["amp"]
    if amp not in AMP:
        raise Hw2Error(f"unknown --amp {amp!r}: use one of {', '.join(AMP)}")
    dtype = None
    if device.type == "cuda" and amp != "off":
        dtype = torch.float16
    elif device.type == "cpu" and amp == "on":
        dtype = torch.bfloat16
    return dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@torch.no_grad()
def input_statistics(model: SpectrogramModel, mixtures, device, chunk_dur: float = 30.0):
    """Mean and std per bin of the (channel-averaged) mixture magnitude over the full training tracks, as
    Open-Unmix's scaler computes them. mixtures: an iterable of float32 (nb_channels, nb_samples) arrays, the
    training tracks' real mixtures (decoded once for a new run: the training cache holds only the sources)."""
    total = torch.zeros(model.nb_output_bins, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for mixture in mixtures:
        for (mix,) in _chunks([mixture], model.cfg.rate, chunk_dur, model.cfg.n_fft):
            mag = model.magnitude(mix.to(device))[1].mean(1)[0].double().cpu()  # (nb_bins, nb_frames)
            total += mag.sum(1)
            total_sq += (mag ** 2).sum(1)
            count += mag.shape[1]
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(0).sqrt()
    std = torch.maximum(std, 1e-4 * std.max())
    return mean.float(), std.float()


def _chunks(signals: list, rate: int, chunk_dur: float, n_fft: int):
    """Aligned full-track float arrays (nb_channels, nb_timesteps) cut into chunks of `chunk_dur` seconds (0: one
    chunk), a short tail joined to the chunk before: per chunk, a tuple of tensors (1, nb_channels, chunk_timesteps)."""
    for _, a, b, _ in blocks(signals[0].shape[-1], int(chunk_dur * rate), min_size=n_fft):
        yield tuple(torch.from_numpy(s[None, :, a:b]) for s in signals)


def spectral_loss(model: SpectrogramModel, mix: torch.Tensor, tgt: torch.Tensor, loss: str = "mse",
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """The training loss of a batch of waveforms (nb_samples, nb_channels, nb_timesteps), the model under autocast
    to `dtype` unless None; the STFT and the loss stay float32.

    mse      a magnitude model: MSE between the estimated and true target magnitudes (Open-Unmix); a complex model
             (`complex_output`): MSE between the estimated and true complex spectrograms, over real and
             imaginary parts (MDX-Net)
    wave-l1  a complex model: L1 between the estimate's waveform (its inverse STFT) and the true target's
    """
    with torch.no_grad():
        X, Y = model.stft(mix), model.stft(tgt)
    with torch.autocast(mix.device.type, dtype=dtype, enabled=dtype is not None):
        est = model(X if model.complex_output else X.abs())
    if not model.complex_output:
        if loss != "mse":
            raise Hw2Error(f"--loss {loss} needs a complex model (--arch tfctdf); magnitude models train with mse")
        return torch.nn.functional.mse_loss(est.float(), Y.abs())
    if loss == "wave-l1":
        return torch.nn.functional.l1_loss(model.stft.inverse(est, tgt.shape[-1]), tgt)
    return torch.nn.functional.mse_loss(torch.view_as_real(est), torch.view_as_real(Y))


@torch.no_grad()
def validation_loss(model: SpectrogramModel, tracks: list[CachedTrack], target: str, device, chunk_dur: float,
                    loss: str = "mse") -> float:
    """The training loss (`spectral_loss`) over full valid tracks (real mixtures), in chunks, each weighted by its
    STFT frames (so a magnitude model's is the MSE over every bin of every frame)."""
    model.eval()
    total, count = 0.0, 0
    for track in tracks:
        for mix, tgt in _chunks([track.stem("mixture"), track.target(target)], track.rate, chunk_dur,
                                model.cfg.n_fft):
            frames = mix.shape[-1] // model.cfg.n_hop + 1
            total += spectral_loss(model, mix.to(device), tgt.to(device), loss).item() * frames
            count += frames
    model.train()
    return total / max(count, 1)


def validation_sdr(model: SpectrogramModel, tracks: list[CachedTrack], device, chunk_dur: float) -> float | None:
    """Median over the valid tracks of the median over 1-s frames of the vocals SDR, as infer.py scores a
    checkpoint (mixture phase, hw2.bsseval); None when no track can be scored (a silent estimate everywhere)."""
    try:
        return score_model(model, tracks, device, chunk_dur)["vocals"]
    finally:
        model.train()


def make_sampler(cfg: TrainConfig, tracks: list[CachedTrack]) -> ExcerptSampler:
    """The training excerpts a config describes."""
    gain = None if cfg.gain_low == cfg.gain_high == 1.0 else (cfg.gain_low, cfg.gain_high)
    return ExcerptSampler(tracks, cfg.seq_dur, (cfg.target,), cfg.sampler, cfg.batch_size, cfg.samples_per_track,
                          cfg.hop_dur or None, cfg.mixing, gain, cfg.swap, cfg.seed, cfg.offsets,
                          variant_names(cfg.pitch_shift, cfg.time_stretch), cfg.sign_flip)


def train_step(model: SpectrogramModel, optimizer, scaler, mix: torch.Tensor, tgt: torch.Tensor, device,
               dtype: torch.dtype | None = None, loss: str = "mse") -> torch.Tensor:
    """One optimisation step on a batch of waveforms (nb_samples, nb_channels, nb_timesteps) with `spectral_loss`
    (`precision` gives dtype and scaler). Returns the loss."""
    mix, tgt = mix.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
    value = spectral_loss(model, mix, tgt, loss, dtype)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(value).backward()
    scaler.step(optimizer)
    scaler.update()
    return value


# -------------------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run in `cfg.out`. Returns a summary: run folder, epochs done, best epoch and loss,
    and why it stopped ("done", "early-stopped" or "time-limit")."""
    t_start = loop.clock()
    if not cfg.musdb_root:
        raise Hw2Error("no --musdb-root given: pass the MUSDB18 folder (or make one with `python -m hw2.synth`)")
    for name in ("epochs", "batch_size", "samples_per_track", "nb_layers", "hidden_size", "n_fft", "n_hop"):
        least = 0 if name == "nb_layers" and cfg.arch == "openunmix" else 1  # 0 layers: no LSTM
        if getattr(cfg, name) < least:
            raise Hw2Error(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(cfg, name)}")
    if not 0 < cfg.gain_low <= cfg.gain_high:
        raise Hw2Error(f"gain range [{cfg.gain_low}, {cfg.gain_high}] is empty: need 0 < --gain-low <= --gain-high")
    if not (0 <= cfg.time_stretch < 1 and 0 <= cfg.pitch_shift <= 12):
        raise Hw2Error(f"--time-stretch {cfg.time_stretch} / --pitch-shift {cfg.pitch_shift}: use 0 <= x < 1 "
                       "(a fraction of the duration) and 0 <= semitones <= 12")
    if cfg.sdr_every < 0 or cfg.select_by == "sdr" and cfg.sdr_every == 0:
        raise Hw2Error("--select-by sdr needs --sdr-every N, N >= 1 (epochs between two valid SDRs)")
    if cfg.sdr_every and cfg.target != "vocals":
        raise Hw2Error("--sdr-every scores vocals / accompaniment separations: it needs --target vocals")
    for name in ("lr", "weight_decay", "lr_decay_gamma", "seq_dur", "bandwidth"):
        v = getattr(cfg, name)
        if not math.isfinite(v) or v < 0 or (v == 0 and name not in ("weight_decay",)):
            raise Hw2Error(f"--{name.replace('_', '-')} must be a positive number, got {v}")
    if cfg.loss != "mse" and cfg.arch != "tfctdf":
        raise Hw2Error(f"--loss {cfg.loss} needs a complex model (--arch tfctdf); magnitude models train with mse")
    if cfg.arch == "tfctdf" and cfg.nb_channels != 2:
        raise Hw2Error("--arch tfctdf is a stereo model: drop --nb-channels 1")
    if cfg.n_hop > cfg.n_fft:
        raise Hw2Error(f"--n-hop {cfg.n_hop} exceeds --n-fft {cfg.n_fft}: the STFT could not be inverted; "
                       "use a hop of at most the window (Open-Unmix: 4096 / 1024)")
    ckpt, finished = loop.open_run(cfg, CHECKPOINT_FORMAT, "Open-Unmix", "python -m hw2.train", config_from_dict, RESUMABLE, log)
    if finished:
        return finished
    return loop.fit(partial(_job, cfg, ckpt is None, log), Path(cfg.out), ckpt, t_start, log)


def _job(cfg: TrainConfig, new: bool, log: Callable[[str], None]) -> loop.Job:
    """The run `cfg` describes, ready for the loop: its model (with a new run's input statistics), data,
    optimiser, schedule and validation."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_config()).to(device)
    nb_params = count_parameters(model)
    if nb_params >= MAX_PARAMS:  # the assignment's rule, checked before any decoding
        raise Hw2Error(f"this model has {nb_params:,} parameters; the assignment allows under {MAX_PARAMS:,}: "
                       "lower --hidden-size or --nb-layers")

    train_files = open_tracks(cfg.musdb_root, "train", "train")
    train_tracks = load_cached(train_files, cfg.cache_dir, not cfg.quiet, SOURCES,
                               variants=variant_names(cfg.pitch_shift, cfg.time_stretch))
    valid_tracks = load_cached(open_tracks(cfg.musdb_root, "train", "valid"), cfg.cache_dir, not cfg.quiet)
    sampler = make_sampler(cfg, train_tracks)
    dtype, scaler = precision(cfg.amp, device)
    log(f"{cfg.arch}: {nb_params:,} parameters (under the 10M limit); "
        f"{len(train_tracks)} train / {len(valid_tracks)} valid tracks; {sampler.nb_batches(0)} batches an epoch; "
        f"device {device}{f', {dtype} autocast' if dtype else ''}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.lr_decay_gamma,
                                                           patience=cfg.lr_decay_patience, cooldown=10)
    if new:
        mixtures = (read_stem(t, "mixture").T.astype(np.float32) * np.float32(1 / 32768) for t in train_files)
        mean, std = input_statistics(model, mixtures, device)
        model.set_input_stats(mean.to(device), std.to(device))

    def batches(epoch: int, step: int):
        return torch.utils.data.DataLoader(sampler.epoch(epoch, step), batch_size=None, num_workers=cfg.nb_workers,
                                           pin_memory=device.type == "cuda", persistent_workers=False,
                                           worker_init_fn=loop.ignore_sigint,
                                           # its own generator: a loader draws its base seed when iterated, and
                                           # from the global RNG that would shift dropout after a mid-epoch resume
                                           generator=torch.Generator().manual_seed(cfg.seed))

    def step(batch) -> tuple[float, int]:
        mix, tgt = batch
        return train_step(model, optimizer, scaler, mix, tgt, device, dtype, cfg.loss).item(), len(mix)

    def validate(epoch: int) -> dict:
        scores = {"valid_loss": validation_loss(model, valid_tracks, cfg.target, device, cfg.valid_chunk_dur,
                                               cfg.loss)}
        if cfg.sdr_every:
            scores["valid_sdr"] = validation_sdr(model, valid_tracks, device, cfg.valid_chunk_dur) \
                if (epoch + 1) % cfg.sdr_every == 0 else None
        return scores

    return loop.Job(cfg, CHECKPOINT_FORMAT, model, optimizer, batches, sampler.nb_batches, step, validate,
                    stateful={"scheduler": scheduler, "scaler": scaler}, on_valid=scheduler.step,
                    info={"nb_params": nb_params, "device": str(device)})


# ---------------------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    p = config_parser(TrainConfig, "python -m hw2.train", __doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="named settings (hw2.config.PRESETS): tiny (try every command in minutes), cpu, t4, 1080ti; "
                        "flags given beside it override its values")
    preset = p.parse_known_args(argv)[0].preset
    if preset:  # the preset's values become the defaults, so that flags given explicitly still win
        p.set_defaults(**{k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[preset].items()})
    args = p.parse_args(argv)
    del args.preset
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()})
    return run_cli(lambda: print(json.dumps(train(cfg))))  # train()'s Ctrl-C carries its own line


if __name__ == "__main__":
    sys.exit(main())
