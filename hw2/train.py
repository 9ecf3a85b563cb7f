"""Train Open-Unmix on MUSDB: one config object, a run folder, milestone checkpoints, exact resume.

    python -m hw2.train --musdb-root PATH --out runs/vocals [--epochs 150 --hidden-size 512 ...]
    python -m hw2.train --preset tiny --musdb-root PATH --out runs/tiny   # named settings: tiny, cpu, t4, 1080ti
    python -m hw2.train --help            # every TrainConfig field is a flag

A run folder holds `config.json`, `history.json`, `last.pt` (everything needed to resume), `best.pt` (lowest
validation loss, or highest validation SDR with `--select-by sdr`) and `epochNNN.pt` at each milestone. Running
the same command again resumes from `last.pt` exactly where it stopped: model, optimizer, scheduler, AMP scaler,
RNGs and the sampler's (epoch, step), so a Colab disconnect costs at most the work since the last save (every
epoch). `--max-minutes` and Ctrl-C both stop after the step in progress and save that same mid-epoch state; a
Ctrl-C before the run had a state to save (decoding, the statistics pass) says that nothing was saved.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hw2 import Hw2Error, OneLineParser, __version__, atomic_write, remove_stale_temporaries, run_cli
from hw2.blend import blend_from_entry
from hw2.cache import CachedTrack, load_cached, variant_names
from hw2.model import (ARCHITECTURES, ModelConfig, SpectrogramModel, build_model, count_parameters,
                       load_weights)
from hw2.sampling import MIXING, OFFSETS, STRATEGIES, ExcerptSampler
from hw2.tracks import SOURCES, TARGET_SOURCES, blocks, open_tracks, read_stem

CHECKPOINT_FORMAT = "hw2-openunmix-v1"
MAX_PARAMS = 10_000_000  # the assignment's limit
AMP = ("auto", "on", "off")  # auto: float16 on CUDA, float32 on the CPU; on: also bfloat16 on the CPU


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every field is a command-line flag (`seq_dur` -> `--seq-dur`); the whole object is saved in each checkpoint."""
    musdb_root: str = _f("", "MUSDB18 or MUSDB18-HQ root (holds train/ and test/)")
    out: str = _f("runs/vocals", "run folder: config, history and checkpoints")
    cache_dir: str = _f("", "decoded cache folder (default $HW2_CACHE or ~/.cache/hw2)")
    target: str = _f("vocals", "source the model estimates", choices=tuple(TARGET_SOURCES))
    epochs: int = _f(150, "last epoch to train")
    milestones: tuple = _f((25, 50, 150), "epochs whose weights are kept as epochNNN.pt")
    # data: Open-Unmix's defaults
    seq_dur: float = _f(6.0, "excerpt length in seconds")
    batch_size: int = _f(16, "excerpts per batch")
    samples_per_track: int = _f(64, "excerpts per track per epoch (balanced and random sampling)")
    sampler: str = _f("balanced", "excerpt sampling strategy", choices=STRATEGIES)
    hop_dur: float = _f(0.0, "excerpt grid hop in seconds for exhaustive / roundrobin (0: the excerpt length)")
    # coherent, not Open-Unmix's random track mixing: it won the augmentation ablation at three seeds out of three
    # (results/augment.md, the 7-s preview's valid split, 25 epochs); the shipped model was trained incoherent
    mixing: str = _f("coherent", "coherent: an excerpt's sources from one track and offset; incoherent: each "
                     "source from a random track and offset (Open-Unmix's random track mixing)", choices=MIXING)
    gain_low: float = _f(0.25, "lowest random source gain (gain augmentation)")
    gain_high: float = _f(1.25, "highest random source gain (gain_low = gain_high = 1 disables it)")
    swap: bool = _f(True, "random left/right swap per source")
    offsets: str = _f("random", "random: excerpts at random offsets; fixed: every excerpt at its track's start",
                      choices=OFFSETS)
    pitch_shift: float = _f(0.0, "semitones: sources also read from copies shifted by -x and +x, made once in the "
                                 "cache (librosa, dev install); 0: off")
    time_stretch: float = _f(0.0, "sources also read from copies stretched to 1-x and 1+x times the duration, made "
                                  "once in the cache (librosa, dev install); 0: off")
    sign_flip: bool = _f(False, "random sign flip per source (Demucs)")
    # optimisation
    lr: float = _f(1e-3, "Adam learning rate")
    weight_decay: float = _f(1e-5, "Adam weight decay")
    lr_decay_patience: int = _f(80, "epochs without improvement before the learning rate is cut")
    lr_decay_gamma: float = _f(0.3, "factor the learning rate is cut by")
    patience: int = _f(140, "early stopping: epochs without validation improvement")
    valid_chunk_dur: float = _f(30.0, "validation runs on full valid tracks in chunks of this many seconds")
    sdr_every: int = _f(0, "every N epochs, the valid tracks' median vocals SDR (BSSEval v4, mixture phase) "
                           "in history.json; 0: never")
    select_by: str = _f("loss", "best.pt: lowest valid loss, or highest valid SDR (needs --sdr-every)",
                        choices=("loss", "sdr"))
    # model
    n_fft: int = _f(4096, "STFT window")
    n_hop: int = _f(1024, "STFT hop")
    hidden_size: int = _f(512, "hidden width")
    nb_layers: int = _f(3, "LSTM layers")
    bandwidth: float = _f(16000.0, "Hz processed by the encoder and LSTM")
    nb_channels: int = _f(2, "1: mono model (spectral downmix), 2: stereo", choices=(1, 2))
    unidirectional: bool = _f(False, "unidirectional LSTM (causal)")
    skip: bool = _f(True, "skip connection around the LSTM")
    mask: bool = _f(True, "output a mask times the mixture (--no-mask: the magnitude itself)")
    arch: str = _f("openunmix", "network: openunmix, or unet (nb_layers: its depth)", choices=tuple(ARCHITECTURES))
    # run
    seed: int = _f(42, "seed of the weights and of every batch")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    amp: str = _f("auto", "mixed precision: auto (float16 + GradScaler on CUDA, off on the CPU), on (also "
                  "bfloat16 on the CPU), off (float32)", choices=AMP)
    nb_workers: int = _f(0, "DataLoader worker processes building batches")
    max_minutes: float = _f(0.0, "stop cleanly (and resumably) after this many minutes; 0: no limit")
    quiet: bool = _f(False, "no progress bars")

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(asdict(self))


# Named settings (`--preset`, notebook 03, bench/train_step.py, the tests): only what differs from the defaults
# above, which are Open-Unmix's; flags given beside a preset override its values.
PRESETS = {
    # seconds an epoch on a CPU, on generated tracks: to try every command end to end, not to separate well
    "tiny": dict(epochs=2, milestones=(), seq_dur=1.0, batch_size=4, samples_per_track=2, n_fft=1024, n_hop=512,
                 hidden_size=16, nb_layers=1, nb_workers=0),
    # a model a laptop CPU trains in hours, not weeks: a quarter of the width, two LSTM layers, shorter excerpts
    "cpu": dict(epochs=30, milestones=(10, 20, 30), seq_dur=4.0, batch_size=8, samples_per_track=16, n_fft=2048,
                n_hop=512, hidden_size=128, nb_layers=2, amp="off", nb_workers=0),
    # Colab's T4 (tensor cores): float16 autocast, Colab's 2 CPU cores building batches
    "t4": dict(amp="auto", nb_workers=2),
    # a GTX 1080 Ti (Pascal: slow float16, no tensor cores): float32, a workstation's cores building batches
    "1080ti": dict(amp="off", nb_workers=4),
}


def preset_config(name: str, **fields) -> TrainConfig:
    """The TrainConfig of preset `name`, `fields` overriding it (musdb_root, out, epochs...)."""
    if name not in PRESETS:
        raise Hw2Error(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **fields})


# fields added after runs were made: their values for those runs (the loader did neither then)
ADDED_LATER = {"offsets": "random", "pitch_shift": 0.0, "time_stretch": 0.0, "sign_flip": False}

# fields that may change between a run and its resumption without changing what is trained
RESUMABLE = {"musdb_root", "out", "cache_dir", "epochs", "milestones", "device", "nb_workers", "max_minutes", "quiet",
             "sdr_every"}


# ------------------------------------------------------------------------------------------------- checkpoints
def atomic_torch_save(obj, path: Path) -> None:
    """A crash or a kill while saving leaves the previous file intact."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


# the training loops' clock: a test replaces it to step past a time limit without waiting for one
clock = time.monotonic


def time_limit_reached(deadline: float, max_minutes: float, epoch: int, step: int,
                       save_progress: Callable[[], None], last: Path, log: Callable[[str], None]) -> bool:
    """After every step, the last of an epoch included (the resume then starts with that epoch's validation), so
    that a run stops within one step of its limit: past `deadline`, save what a resume needs (`save_progress`) and
    say so. Both training loops share it."""
    if clock() <= deadline:
        return False
    save_progress()
    log(f"time limit of {max_minutes:g} min reached in epoch {epoch + 1} at step {step}; saved {last}: "
        "run the same command to resume")
    return True


class InterruptGate:
    """Ctrl-C during a training loop, made to mean what the time limit means: the run stops with a state it really
    passed through, which the loop then saves. A SIGINT that arrives inside `held()` (a step, the end-of-epoch
    bookkeeping) waits until that block ends and is raised there, between two steps; elsewhere (loading a batch,
    validation) it interrupts at once, also between two steps. A second Ctrl-C inside a held block interrupts at
    once and marks the state `torn`: then nothing may be saved. Outside the main thread (no signal handlers
    there) a Ctrl-C is Python's own KeyboardInterrupt."""

    def __init__(self):
        self.inside = self.pending = self.torn = False

    def _on_sigint(self, signum, frame):
        if self.inside and not self.pending:
            self.pending = True
            return
        self.torn = self.inside
        raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextmanager
    def held(self):
        self.inside = True
        try:
            yield
        finally:
            self.inside = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the training process: a worker that died of it would fail the next batch
    the loop asks for, instead of the loop stopping and saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted_message(run: Path, saved: dict | None, kept: dict | None) -> str:
    """The line a Ctrl-C leaves: what was saved (`saved`: the state just written to last.pt), what was kept (`kept`:
    the state in last.pt from its latest save, when a second Ctrl-C in the middle of a step left nothing to save),
    or that nothing was."""
    last = run / "last.pt"
    if saved is not None:
        return (f"interrupted in epoch {saved['epoch'] + 1} at step {saved['step']}; saved {last}: run the same "
                "command to resume")
    if kept is not None:
        return (f"interrupted with nothing new to save; {last} holds epoch {kept['epoch'] + 1}, step {kept['step']} "
                "from its latest save: run the same command to resume from there")
    return ("interrupted before training started: nothing was saved (decoded tracks stay in the cache); the same "
            "command starts the run over")


def load_checkpoint(path, map_location="cpu", fmt: str = CHECKPOINT_FORMAT, kind: str = "Open-Unmix",
                    flag: str = "--checkpoint", writer: str = "python -m hw2.train",
                    example: str = "for example checkpoints/vocals.pt") -> dict:
    """Read and check an hw2 checkpoint of format `fmt` (the separator's, or the vocoder's with its own words);
    every failure is one `Hw2Error` line naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise Hw2Error(f"{path}: no such {'' if kind == 'Open-Unmix' else kind + ' '}checkpoint; pass {flag} the "
                       f".pt file written by `{writer}` ({example})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        raise Hw2Error(f"{path}: not a readable checkpoint (corrupt or truncated); train again or restore it "
                       "with `git checkout -- <file>`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt or "config" not in ckpt:
        raise Hw2Error(f"{path}: not an hw2 {kind} checkpoint; pass {flag} a file written by `{writer}`")
    return ckpt


def model_from_checkpoint(ckpt: dict, path="checkpoint") -> tuple[SpectrogramModel, TrainConfig]:
    """Rebuild the model from the config saved in the checkpoint and load its weights."""
    cfg = config_from_dict(ckpt["config"])
    if "blend" in ckpt:  # several networks as one model (`python -m hw2.blend`); the config is the first's
        return blend_from_entry(ckpt["blend"], path), cfg
    return load_weights(build_model(cfg.model_config()), ckpt["model"], path).train(), cfg


def config_from_dict(d: dict) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(d) - names
    if unknown:
        raise Hw2Error(f"config has unknown fields {sorted(unknown)}: it was written by another version of hw2")
    d = _upgrade(d)
    if "milestones" in d:
        d["milestones"] = tuple(d["milestones"])
    return TrainConfig(**d)


def _upgrade(d: dict) -> dict:
    """A config dict with older spellings replaced: `amp` was a bool (true: float16 on CUDA only). Augmentation
    fields added later take their defaults (the behaviour runs had before them), so older runs still resume."""
    d = {**ADDED_LATER, **d}
    if isinstance(d.get("amp"), bool):
        d["amp"] = "auto" if d["amp"] else "off"
    return d


def _write_json(obj, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


# ----------------------------------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise Hw2Error(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Hw2Error(f"device {name!r} asked for, but this torch sees no CUDA GPU: use --device cpu "
                       "(or, on Colab, Runtime > Change runtime type > T4 GPU)")
    return device


def precision(amp: str, device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """(autocast dtype or None for float32, gradient scaler) of a run. float16 (CUDA) underflows small gradients
    without loss scaling, so it gets an enabled GradScaler; bfloat16 (CPU) has float32's exponent range and needs
    none. The CPU path exists so that CI runs the mixed-precision code (it is not faster on most CPUs)."""
    device = torch.device(device)
    amp = _upgrade({"amp": amp})["amp"]
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


@torch.no_grad()
def validation_loss(model: SpectrogramModel, tracks: list[CachedTrack], target: str, device, chunk_dur: float) -> float:
    """MSE between estimated and true target magnitudes over full valid tracks (real mixtures), in chunks."""
    model.eval()
    total, count = 0.0, 0
    for track in tracks:
        for mix, tgt in _chunks([track.stem("mixture"), track.target(target)], track.rate, chunk_dur,
                                model.cfg.n_fft):
            _, mag = model.magnitude(mix.to(device))
            est = model(mag)
            ref = model.magnitude(tgt.to(device))[1]
            total += torch.nn.functional.mse_loss(est, ref, reduction="sum").item()
            count += ref.numel()
    model.train()
    return total / max(count, 1)


def validation_sdr(model: SpectrogramModel, tracks: list[CachedTrack], device, chunk_dur: float) -> float | None:
    """Median over the valid tracks of the median over 1-s frames of the vocals SDR, as infer.py scores a
    checkpoint (mixture phase, hw2.bsseval); None when no track can be scored (a silent estimate everywhere)."""
    from hw2.evaluate import score_model

    try:
        return score_model(model, tracks, device, chunk_dur)["vocals"]
    finally:
        model.train()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_sampler(cfg: TrainConfig, tracks: list[CachedTrack]) -> ExcerptSampler:
    """The training excerpts a config describes."""
    gain = None if cfg.gain_low == cfg.gain_high == 1.0 else (cfg.gain_low, cfg.gain_high)
    return ExcerptSampler(tracks, cfg.seq_dur, (cfg.target,), cfg.sampler, cfg.batch_size, cfg.samples_per_track,
                          cfg.hop_dur or None, cfg.mixing, gain, cfg.swap, cfg.seed, cfg.offsets,
                          variant_names(cfg.pitch_shift, cfg.time_stretch), cfg.sign_flip)


def train_step(model: SpectrogramModel, optimizer, scaler, mix: torch.Tensor, tgt: torch.Tensor, device,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimisation step on a batch of waveforms (nb_samples, nb_channels, nb_timesteps): MSE between the
    estimated and true target magnitudes, the model under autocast to `dtype` unless None (`precision` gives
    dtype and scaler). The STFT and the loss stay float32. Returns the loss."""
    mix, tgt = mix.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
    with torch.no_grad():
        x, y = model.magnitude(mix)[1], model.magnitude(tgt)[1]
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
        est = model(x)
    loss = torch.nn.functional.mse_loss(est.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


# -------------------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run in `cfg.out`. Returns a summary: run folder, epochs done, best epoch and loss,
    and why it stopped ("done", "early-stopped" or "time-limit")."""
    t_start = clock()
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
    if cfg.n_hop > cfg.n_fft:
        raise Hw2Error(f"--n-hop {cfg.n_hop} exceeds --n-fft {cfg.n_fft}: the STFT could not be inverted; "
                       "use a hop of at most the window (Open-Unmix: 4096 / 1024)")
    run = Path(cfg.out)
    _check_writable(run)  # before decoding and the statistics pass, not after
    if run.is_dir():
        remove_stale_temporaries(run)  # left by a kill during a save
    ckpt = _check_run_folder(run, cfg)
    if ckpt is not None and _finished(ckpt["state"], cfg):
        done = ckpt["state"]
        stop = "done" if done["epoch"] >= cfg.epochs else "early-stopped"
        log(f"{run}: finished ({'' if stop == 'done' else 'early-stopped after '}{done['epoch']} epochs, best epoch "
            f"{done['best_epoch']}); nothing to train: pass a larger --epochs to train further")
        return _summary(run, done, stop)
    gate, resumable = InterruptGate(), {}
    with gate.installed():
        try:
            return _train(cfg, run, ckpt, t_start, gate, resumable, log)
        except KeyboardInterrupt:
            saved = None
            if "save" in resumable and not gate.torn:
                with gate.held():
                    resumable["save"]()
                saved = resumable["state"]
            kept = resumable.get("on_disk", ckpt and ckpt["state"])
            raise KeyboardInterrupt(interrupted_message(run, saved, kept)) from None


def _finished(state: dict, cfg: TrainConfig) -> bool:
    return state["epoch"] >= cfg.epochs or state["bad_epochs"] > cfg.patience


def _train(cfg: TrainConfig, run: Path, ckpt: dict | None, t_start: float, gate: InterruptGate, resumable: dict,
           log: Callable[[str], None]) -> dict:
    """train()'s work once its settings and run folder are checked. Fills `resumable` with the state and its saver
    ("state", "save") as soon as the run has a state that can be resumed, for train() to save on Ctrl-C, and with
    the (epoch, step) of each last.pt it writes ("on_disk")."""
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

    state = {"epoch": 0, "step": 0, "loss_sum": 0.0, "loss_count": 0, "best_loss": math.inf, "best_epoch": 0,
             "bad_epochs": 0, "history": [], "seconds": 0.0, "best_sdr": -math.inf}
    if ckpt is None:
        mixtures = (read_stem(t, "mixture").T.astype(np.float32) * np.float32(1 / 32768) for t in train_files)
        mean, std = input_statistics(model, mixtures, device)
        model.set_input_stats(mean.to(device), std.to(device))
        run.mkdir(parents=True, exist_ok=True)
        _write_json(asdict(cfg), run / "config.json")
    else:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        state.update(ckpt["state"])
        _set_rng_state(ckpt["rng"])
        log(f"resuming {run} at epoch {state['epoch'] + 1}, step {state['step']}")

    def save(path: Path, full: bool) -> None:
        obj = {"format": CHECKPOINT_FORMAT, "hw2_version": __version__, "config": asdict(cfg),
               "model": model.state_dict(), "nb_params": nb_params, "epoch": state["epoch"],
               "valid_loss": state["history"][-1]["valid_loss"] if state["history"] else None,
               "device": str(device)}
        if full:
            obj.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                       scaler=scaler.state_dict(), state=dict(state), rng=_rng_state())
        atomic_torch_save(obj, path)
        if full:
            resumable["on_disk"] = {"epoch": state["epoch"], "step": state["step"]}

    def save_progress() -> None:
        """last.pt at the sampler's position, this epoch's seconds so far counted: what a resume needs."""
        state["seconds"] += clock() - t_epoch
        save(run / "last.pt", full=True)

    t_epoch = clock()
    resumable.update(state=state, save=save_progress)
    deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
    stop = "done"
    from tqdm.auto import tqdm
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]  # 0-based index of the epoch in progress
        t_epoch = clock()
        batches = sampler.epoch(epoch, state["step"])
        loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=cfg.nb_workers,
                                             pin_memory=device.type == "cuda",
                                             persistent_workers=False, worker_init_fn=_ignore_sigint,
                                             # its own generator: a loader draws its base seed when iterated, and
                                             # from the global RNG that would shift dropout after a mid-epoch resume
                                             generator=torch.Generator().manual_seed(cfg.seed))
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=cfg.quiet,
                   initial=state["step"], total=sampler.nb_batches(epoch))
        for mix, tgt in bar:
            with gate.held():  # a step is taken whole: a Ctrl-C during it takes effect at its end
                loss = train_step(model, optimizer, scaler, mix, tgt, device, dtype)
                state["step"] += 1
                state["loss_sum"] += loss.item() * len(mix)
                state["loss_count"] += len(mix)
            bar.set_postfix(loss=f"{state['loss_sum'] / state['loss_count']:.4g}")
            if time_limit_reached(deadline, cfg.max_minutes, epoch, state["step"], save_progress, run / "last.pt",
                                  log):
                return _summary(run, state, "time-limit")
        bar.close()

        # validation changes nothing a resume needs: stopped in it, the run resumes with this epoch's validation
        valid = validation_loss(model, valid_tracks, cfg.target, device, cfg.valid_chunk_dur)
        sdr = validation_sdr(model, valid_tracks, device, cfg.valid_chunk_dur) \
            if cfg.sdr_every and (epoch + 1) % cfg.sdr_every == 0 else None
        with gate.held():  # the epoch's bookkeeping and saves land together
            seconds = state["seconds"] + clock() - t_epoch
            t_epoch = clock()
            _end_epoch(cfg, state, scheduler, optimizer, valid, sdr, seconds, save)
        train_loss = state["history"][-1]["train_loss"]
        keep = state["history"][-1]["best"]
        log(f"epoch {epoch + 1}: train {train_loss:.5g}  valid {valid:.5g}"
            f"{'' if sdr is None else f'  SDR {sdr:.2f} dB'}{'  *best' if keep else ''}  "
            f"lr {optimizer.param_groups[0]['lr']:.3g}  {seconds:.1f}s")
        if state["bad_epochs"] > cfg.patience:
            stop = "early-stopped"
            log(f"early stopping: no validation improvement for {state['bad_epochs']} epochs")
            break
        if clock() > deadline and state["epoch"] < cfg.epochs:
            log(f"time limit of {cfg.max_minutes:g} min reached after epoch {epoch + 1}; run the same command "
                "to resume")
            return _summary(run, state, "time-limit")
    return _summary(run, state, stop)


def _end_epoch(cfg: TrainConfig, state: dict, scheduler, optimizer, valid: float, sdr: float | None,
               seconds: float, save: Callable[[Path, bool], None]) -> None:
    """An epoch's end: the learning-rate schedule, its history row, the best / milestone / last checkpoints and
    history.json, in this order (last.pt last: a kill before it resumes the epoch's validation)."""
    run = Path(cfg.out)
    epoch = state["epoch"]
    scheduler.step(valid)
    train_loss = state["loss_sum"] / max(state["loss_count"], 1)
    improved = valid < state["best_loss"]
    keep = improved if cfg.select_by == "loss" else sdr is not None and sdr > state["best_sdr"]
    state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid,
                             "lr": optimizer.param_groups[0]["lr"], "seconds": seconds, "best": keep,
                             **({"valid_sdr": sdr} if cfg.sdr_every else {})})
    state.update(epoch=epoch + 1, step=0, loss_sum=0.0, loss_count=0, seconds=0.0)
    if improved:
        state.update(best_loss=valid, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    if keep:
        state.update(best_epoch=epoch + 1, best_sdr=sdr if sdr is not None else state["best_sdr"])
        save(run / "best.pt", False)
    if epoch + 1 in cfg.milestones:
        save(run / f"epoch{epoch + 1:03d}.pt", False)
    save(run / "last.pt", True)
    _write_json(state["history"], run / "history.json")


def _summary(run: Path, state: dict, stop: str) -> dict:
    return {"run": str(run), "epochs_done": state["epoch"], "best_epoch": state["best_epoch"],
            "best_valid_loss": state["best_loss"], "stopped": stop}


def _check_run_folder(run: Path, cfg: TrainConfig) -> dict | None:
    """None for a new run; the `last.pt` checkpoint to resume from for an existing one with the same config."""
    saved = run / "config.json"
    if not saved.exists():
        if run.exists() and any(run.glob("*.pt")):
            raise Hw2Error(f"{run}: holds checkpoints but no config.json; choose a new --out")
        return None
    try:
        old = _upgrade(json.loads(saved.read_text()))
    except (ValueError, TypeError):
        raise Hw2Error(f"{saved}: unreadable; remove the run folder or choose a new --out") from None
    new = asdict(cfg)
    diff = [k for k in new if k not in RESUMABLE and _norm(old.get(k)) != _norm(new[k])]
    if diff:
        k = diff[0]
        raise Hw2Error(f"{run}: holds a run with a different config ({k}: {old.get(k)!r} there, {new[k]!r} now); "
                       "use the same flags to resume it, or a new --out")
    if not (run / "last.pt").exists():
        kept = sorted(p.name for p in run.glob("*.pt"))
        if kept:
            raise Hw2Error(f"{run}: holds {', '.join(kept)} but no last.pt to resume from (killed before its "
                           "first full save?); starting over would overwrite them: move them away, or use a new --out")
        return None
    ckpt = load_checkpoint(run / "last.pt")
    if "state" not in ckpt:
        raise Hw2Error(f"{run / 'last.pt'}: not a resumable checkpoint; choose a new --out")
    return ckpt


def _check_writable(run: Path) -> None:
    """Refuse a run folder that cannot be written before any work, without creating it (a failed run leaves
    nothing): probe its nearest existing folder with a temporary file."""
    folder = run.absolute()
    while not folder.exists():
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "a file is in the way")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise Hw2Error(f"{run}: cannot write the run folder here ({folder}: {e.strerror}); pass --out a writable "
                       "folder") from None


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


# ---------------------------------------------------------------------------------------------------------- CLI
def config_parser(prog="python -m hw2.train") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw = {"default": f.default, "help": f.metadata["help"]}
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif f.type in ("tuple", tuple):
            p.add_argument(flag, type=int, nargs="*", **kw)
        else:
            typ = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            p.add_argument(flag, type=typ, choices=f.metadata.get("choices"), **kw)
    return p


def main(argv=None) -> int:
    p = config_parser()
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="named settings (hw2.train.PRESETS): tiny (try every command in minutes), cpu, t4, 1080ti; "
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
