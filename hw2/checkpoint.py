"""Checkpoints and the machine they run on: writing one atomically, reading and checking one, rebuilding its model.

Everything that trains or loads a model comes here, and nothing here reaches above the model and its config, so
the TA's inference path reads a checkpoint without loading the training code.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hw2 import Hw2Error, atomic_write
from hw2.config import TrainConfig, config_from_dict
from hw2.model import SpectrogramModel, blend_from_entry, build_model, load_weights

CHECKPOINT_FORMAT = "hw2-openunmix-v1"
MAX_PARAMS = 10_000_000  # the assignment's limit


def atomic_torch_save(obj, path: Path) -> None:
    """A crash or a kill while saving leaves the previous file intact."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path, map_location="cpu", fmt: str = CHECKPOINT_FORMAT, kind: str = "Open-Unmix",
                    flag: str = "--checkpoint", writer: str = "python -m hw2.train",
                    example: str = "for example checkpoints/vocals.pt") -> dict:
    """Read and check an hw2 checkpoint of format `fmt` (the separator's, or the vocoder's with its own words);
    every failure is one `Hw2Error` line naming the file and the fix."""
    path = Path(path)
    what = f"{'' if kind == 'Open-Unmix' else kind + ' '}checkpoint"
    if path.is_dir():  # a run folder, most likely: name the checkpoints it holds
        inside = sorted(p.name for p in path.glob("*.pt"))
        pick = next((n for n in ("best.pt", "vocals.pt", "last.pt") if n in inside), inside[0] if inside else "")
        raise Hw2Error(f"{path}: a folder, not a {what} file; pass {flag} " + (
            f"one of the .pt files in it ({', '.join(inside[:6])}{', ...' if len(inside) > 6 else ''}), for "
            f"example {path / pick}" if inside else f"the .pt file written by `{writer}` ({example}); this folder "
            "holds none"))
    if not path.is_file():
        raise Hw2Error(f"{path}: no such {what}; pass {flag} the .pt file written by `{writer}` ({example})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:  # unreadable (permissions): said below as not a readable checkpoint
            head = b""
        # torch.save writes a zip archive (an old torch, a pickle): a file that starts otherwise and is not named
        # like a checkpoint is another file passed by mistake, which no `git checkout` makes a checkpoint
        if head[:2] != b"PK" and head[:1] != b"\x80" and path.suffix not in (".pt", ".pth", ".ckpt"):
            raise Hw2Error(f"{path}: not a {what} (torch.save writes a zip archive, this is some other file); "
                           f"pass {flag} the .pt file written by `{writer}` ({example})") from None
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


def check_writable(run: Path, what: str = "the run folder") -> None:
    """Refuse an output folder (a run's, results') that cannot be written before any work, without creating it (a
    failed command leaves nothing): probe its nearest existing folder with a temporary file."""
    folder = Path(run).absolute()
    while not folder.exists():
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "a file is in the way")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise Hw2Error(f"{run}: cannot write {what} here ({folder}: {e.strerror}); pass --out a writable "
                       "folder") from None
