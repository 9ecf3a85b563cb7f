"""The separator's run config: every field a command-line flag, the whole object saved in each checkpoint.

`TrainConfig` describes a training run and, through `model_config()`, the network it trains; `PRESETS` are named
settings (`--preset`); `config_from_dict` reads a saved config, older ones included; `config_parser` turns any
config dataclass into its command line (the separator's and the vocoder's).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields

from hw2 import Hw2Error, OneLineParser
from hw2.model import ARCHITECTURES, ModelConfig
from hw2.sampling import MIXING, OFFSETS, STRATEGIES
from hw2.tracks import TARGET_SOURCES

AMP = ("auto", "on", "off")
LOSSES = ("mse", "wave-l1")  # auto: float16 on CUDA, float32 on the CPU; on: also bfloat16 on the CPU


def flag(default, help: str, **kw):
    """A config field that is also a command-line flag (`seq_dur` -> `--seq-dur`) with this help and argparse
    settings (`choices`)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every field is a command-line flag (`seq_dur` -> `--seq-dur`); the whole object is saved in each checkpoint."""
    musdb_root: str = flag("", "MUSDB18 or MUSDB18-HQ root (holds train/ and test/)")
    out: str = flag("runs/vocals", "run folder: config, history and checkpoints")
    cache_dir: str = flag("", "decoded cache folder (default $HW2_CACHE or ~/.cache/hw2)")
    target: str = flag("vocals", "source the model estimates", choices=tuple(TARGET_SOURCES))
    epochs: int = flag(150, "last epoch to train")
    milestones: tuple = flag((25, 50, 150), "epochs whose weights are kept as epochNNN.pt")
    # data: Open-Unmix's defaults
    seq_dur: float = flag(6.0, "excerpt length in seconds")
    batch_size: int = flag(16, "excerpts per batch")
    samples_per_track: int = flag(64, "excerpts per track per epoch (balanced and random sampling)")
    sampler: str = flag("balanced", "excerpt sampling strategy", choices=STRATEGIES)
    hop_dur: float = flag(0.0, "excerpt grid hop in seconds for exhaustive / roundrobin (0: the excerpt length)")
    # coherent, not Open-Unmix's random track mixing: the augmentation ablation favours it (results/augment.md)
    mixing: str = flag("coherent", "coherent: an excerpt's sources from one track and offset; incoherent: each "
                     "source from a random track and offset (Open-Unmix's random track mixing)", choices=MIXING)
    gain_low: float = flag(0.25, "lowest random source gain (gain augmentation)")
    gain_high: float = flag(1.25, "highest random source gain (gain_low = gain_high = 1 disables it)")
    swap: bool = flag(True, "random left/right swap per source")
    offsets: str = flag("random", "random: excerpts at random offsets; fixed: every excerpt at its track's start",
                      choices=OFFSETS)
    pitch_shift: float = flag(0.0, "semitones: sources also read from copies shifted by -x and +x, made once in the "
                                 "cache (librosa, dev install); 0: off")
    time_stretch: float = flag(0.0, "sources also read from copies stretched to 1-x and 1+x times the duration, made "
                                  "once in the cache (librosa, dev install); 0: off")
    sign_flip: bool = flag(False, "random sign flip per source (Demucs)")
    # optimisation
    lr: float = flag(1e-3, "Adam learning rate")
    weight_decay: float = flag(1e-5, "Adam weight decay")
    lr_decay_patience: int = flag(80, "epochs without improvement before the learning rate is cut")
    lr_decay_gamma: float = flag(0.3, "factor the learning rate is cut by")
    patience: int = flag(140, "early stopping: epochs without validation improvement")
    valid_chunk_dur: float = flag(30.0, "validation runs on full valid tracks in chunks of this many seconds")
    sdr_every: int = flag(0, "every N epochs, the valid tracks' median vocals SDR (BSSEval v4, mixture phase) "
                           "in history.json; 0: never")
    select_by: str = flag("loss", "best.pt: lowest valid loss, or highest valid SDR (needs --sdr-every)",
                        choices=("loss", "sdr"))
    # model
    n_fft: int = flag(4096, "STFT window")
    n_hop: int = flag(1024, "STFT hop")
    hidden_size: int = flag(512, "hidden width")
    nb_layers: int = flag(3, "LSTM layers")
    bandwidth: float = flag(16000.0, "Hz processed by the encoder and LSTM")
    nb_channels: int = flag(2, "1: mono model (spectral downmix), 2: stereo", choices=(1, 2))
    unidirectional: bool = flag(False, "unidirectional LSTM (causal)")
    skip: bool = flag(True, "skip connection around the LSTM")
    mask: bool = flag(True, "output a mask times the mixture (--no-mask: the magnitude itself)")
    arch: str = flag("openunmix", "network: openunmix, unet (nb_layers: its depth), or tfctdf (complex output; "
                     "hidden_size: its channel step, nb_layers: its depth)", choices=tuple(ARCHITECTURES))
    tfc_layers: int = flag(3, "tfctdf: 3x3 convolutions per TFC block")
    tdf_bottleneck: int = flag(8, "tfctdf: the TDF layer's frequency bottleneck factor (0: one full-size layer)")
    loss: str = flag("mse", "mse: on magnitudes (complex models: on real and imaginary parts); wave-l1 (complex "
                     "models): L1 on the waveform of the estimate", choices=LOSSES)
    # run
    seed: int = flag(42, "seed of the weights and of every batch")
    device: str = flag("auto", "auto, cpu, cuda or cuda:N")
    amp: str = flag("auto", "mixed precision: auto (float16 + GradScaler on CUDA, off on the CPU), on (also "
                  "bfloat16 on the CPU), off (float32)", choices=AMP)
    nb_workers: int = flag(0, "DataLoader worker processes building batches")
    max_minutes: float = flag(0.0, "stop cleanly (and resumably) after this many minutes; 0: no limit")
    quiet: bool = flag(False, "no progress bars")

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
    # the study's spectrogram U-Net (the shipped blend's second member): 6 levels, 8-256 channels, the study's budget,
    # best epoch by valid SDR
    "unet": dict(arch="unet", hidden_size=64, nb_layers=6, seq_dur=4.0, samples_per_track=2, lr_decay_patience=20,
                 patience=150, sdr_every=5, select_by="sdr", milestones=(25, 50, 75, 100, 125, 150)),
    # complex output (issue 29): MDX-Net's vocals model on our STFT: 2048 bins (all but Nyquist at n_fft 4096),
    # channels 32 more per level, 5 levels, 3 convolutions per block, TDF bottleneck 8; for a student's GPU. Both
    # complex presets train with the L1 loss on the waveform: at 25 epochs it beat the papers' complex MSE by 2.2 dB
    # of valid vocals SDR (results/models.md)
    "tfctdf": dict(arch="tfctdf", hidden_size=32, nb_layers=5, bandwidth=22050.0, tfc_layers=3, tdf_bottleneck=8,
                   loss="wave-l1", sdr_every=5, select_by="sdr"),
    # the same family sized for one CPU core, its 150 epochs of the study's budget (4-s excerpts, 2 per track) at most
    # twice the U-Net's: a quarter of the bins (512, up to 5.5 kHz), a quarter of the channel step (8), 4 levels,
    # 2 convolutions per block, TDF bottleneck 4 (bench/train_step.py: 1.6x the U-Net's step on one core)
    "tfctdf-cpu": dict(arch="tfctdf", hidden_size=8, nb_layers=4, bandwidth=5600.0, tfc_layers=2, tdf_bottleneck=4,
                       loss="wave-l1", seq_dur=4.0, samples_per_track=2, lr_decay_patience=20, patience=150,
                       sdr_every=5, select_by="sdr", milestones=(25, 50, 75, 100, 125, 150)),
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
ADDED_LATER = {"offsets": "random", "pitch_shift": 0.0, "time_stretch": 0.0, "sign_flip": False, "loss": "mse"}

# fields that may change between a run and its resumption without changing what is trained
RESUMABLE = {"musdb_root", "out", "cache_dir", "epochs", "milestones", "device", "nb_workers", "max_minutes", "quiet",
             "sdr_every"}


def config_from_dict(d: dict) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(d) - names
    if unknown:
        raise Hw2Error(f"config has unknown fields {sorted(unknown)}: it was written by another version of hw2")
    d = upgrade(d)
    if "milestones" in d:
        d["milestones"] = tuple(d["milestones"])
    return TrainConfig(**d)


def upgrade(d: dict) -> dict:
    """A config dict with older spellings replaced: `amp` was a bool (true: float16 on CUDA only). Augmentation
    fields added later take their defaults (the behaviour runs had before them), so older runs still resume."""
    d = {**ADDED_LATER, **d}
    if isinstance(d.get("amp"), bool):
        d["amp"] = "auto" if d["amp"] else "off"
    return d


def config_parser(cls, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per field of the config dataclass `cls` (help and choices from `flag`); a tuple
    field takes several integers."""
    p = OneLineParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(cls):
        name = "--" + f.name.replace("_", "-")
        kw = {"default": f.default, "help": f.metadata.get("help", " ")}
        typ = f.type if isinstance(f.type, str) else f.type.__name__
        if typ == "bool":
            p.add_argument(name, action=argparse.BooleanOptionalAction, **kw)
        elif typ == "tuple":
            p.add_argument(name, type=int, nargs="*", **kw)
        else:
            p.add_argument(name, type={"int": int, "float": float, "str": str}[typ], choices=f.metadata.get("choices"),
                           **kw)
    return p
