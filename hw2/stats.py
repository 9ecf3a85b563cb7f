"""The numbers behind the notebooks' figures and tables: levels and vocal activity of cached tracks, facts of
sampling plans, the random choices behind a batch, and a training run's history.

The functions are pure functions of cached tracks (`hw2.cache.CachedTrack`: int16 audio of shape (nb_stems=5,
nb_channels=2, nb_samples)), of epoch plans (`hw2.sampling.plan_epoch`: a list of int64 (batch, 2) arrays of (track,
start)) or of a run folder; the tables are pandas DataFrames, which a notebook shows as they are.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from hw2 import RATE
from hw2.sampling import STRATEGIES, plan_epoch
from hw2.tracks import SOURCES, STEMS

FLOOR_DB = -80.0  # silence is reported as this level rather than -inf


def track_durations(tracks: Sequence) -> np.ndarray:
    """(nb_tracks,) float seconds of cached tracks."""
    return np.array([t.nb_samples / t.rate for t in tracks], dtype=float)


def rms_db(x, axis=None, floor_db: float = FLOOR_DB) -> np.ndarray:
    """20 log10 of the RMS of float audio in [-1, 1] (0 dB = full-scale square wave, so a full-scale sine is
    -3.01 dB), over `axis` (None: everything), floored at `floor_db`."""
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(np.square(x), axis=axis))
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), floor_db)


def frame_rms_db(audio, rate: int = RATE, frame_dur: float = 1.0, floor_db: float = FLOOR_DB) -> np.ndarray:
    """(nb_frames,) RMS level in dB of consecutive non-overlapping frames of `frame_dur` seconds, both channels
    together. audio: float (nb_channels, nb_samples) or (nb_samples,). A last partial frame is dropped, unless
    the signal is shorter than one frame (then it is the only frame)."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    n = max(1, int(round(frame_dur * rate)))
    nb_frames = audio.shape[-1] // n
    if nb_frames == 0:
        return rms_db(audio, floor_db=floor_db)[None]
    frames = audio[:, : nb_frames * n].reshape(audio.shape[0], nb_frames, n)
    return rms_db(frames, axis=(0, 2), floor_db=floor_db)


def stem_loudness(tracks: Sequence, stems: Sequence[str] = STEMS, floor_db: float = FLOOR_DB) -> np.ndarray:
    """(nb_tracks, nb_stems) RMS level in dB of each stem over each whole track (see `rms_db`)."""
    return np.array([[rms_db(t.stem(s), floor_db=floor_db) for s in stems] for t in tracks], dtype=float)


def vocal_activity(tracks: Sequence, threshold_db: float = -40.0, frame_dur: float = 1.0,
                   stem: str = "vocals") -> np.ndarray:
    """(nb_tracks,) fraction of `frame_dur`-second frames of each track whose `stem` level exceeds
    `threshold_db` (see `frame_rms_db`)."""
    return np.array([np.mean(frame_rms_db(t.stem(stem), t.rate, frame_dur) > threshold_db) for t in tracks])


def plan_epochs(strategy: str, lengths: Sequence[int], excerpt_len: int, nb_epochs: int = 3,
                **kw) -> list[list[np.ndarray]]:
    """`hw2.sampling.plan_epoch` for epochs 0 .. nb_epochs-1: one plan (a list of (batch, 2) arrays) per epoch.
    kw: batch_size (required), samples_per_track, hop, seed."""
    return [plan_epoch(strategy, lengths, excerpt_len, epoch=e, **kw) for e in range(nb_epochs)]


def strategy_plans(sampler, nb_epochs: int = 3, strategies: Sequence[str] = STRATEGIES) -> dict:
    """{strategy: `plan_epochs` of it} with the excerpt length, batch size, samples per track, hop and seed of an
    `hw2.sampling.ExcerptSampler` (its own strategy is ignored)."""
    return {s: plan_epochs(s, sampler.lengths, sampler.excerpt_len, nb_epochs, batch_size=sampler.batch_size,
                           samples_per_track=sampler.samples_per_track, hop=sampler.hop, seed=sampler.seed)
            for s in strategies}


def plan_table(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], epoch: int = 0, nb_batches: int = 3,
               rate: int = RATE):
    """The first `nb_batches` batches of one epoch of each strategy as text, `track@start` per excerpt: a pandas
    DataFrame indexed by (strategy, batch)."""
    rows = {(name, b): {"excerpts (track@start s)": "  ".join(f"{t}@{s / rate:.1f}" for t, s in batch)}
            for name, epochs in plans.items() for b, batch in enumerate(epochs[epoch][:nb_batches])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["strategy", "batch"])


def coverage(pairs: np.ndarray, lengths: np.ndarray, excerpt_len: int) -> float:
    """Fraction of all samples of all tracks that lie inside at least one excerpt of `pairs` (n, 2)."""
    covered = 0
    for t in np.unique(pairs[:, 0]):
        starts = np.sort(pairs[pairs[:, 0] == t, 1])
        ends = starts + excerpt_len
        # union of the intervals [start, end): a new run starts where a start lies past every earlier end
        run_end = np.maximum.accumulate(ends)
        new = np.r_[True, starts[1:] > run_end[:-1]]
        idx = np.flatnonzero(new)
        covered += int(np.sum(run_end[np.r_[idx[1:] - 1, len(starts) - 1]] - starts[idx]))
    return covered / float(np.sum(lengths))


def plan_stats(plan: Sequence[np.ndarray], lengths: Sequence[int], excerpt_len: int) -> dict:
    """Facts of one epoch plan.

    Returns: nb_batches, nb_excerpts (ints); tracks_per_batch, repeats_per_batch ((nb_batches,) ints: distinct
    tracks in a batch, and excerpts of a batch whose track is already in it); excerpts_per_track ((nb_tracks,)
    ints); coverage (float: fraction of all audio inside at least one excerpt).
    """
    lengths = np.asarray(lengths)
    pairs = np.concatenate(plan) if len(plan) else np.zeros((0, 2), np.int64)
    distinct = np.array([len(np.unique(b[:, 0])) for b in plan], dtype=int)
    return {"nb_batches": len(plan), "nb_excerpts": len(pairs), "tracks_per_batch": distinct,
            "repeats_per_batch": np.array([len(b) for b in plan], dtype=int) - distinct,
            "excerpts_per_track": np.bincount(pairs[:, 0], minlength=len(lengths)),
            "coverage": coverage(pairs, lengths, excerpt_len)}


def strategy_stats(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], lengths: Sequence[int],
                   excerpt_len: int):
    """One row per strategy (`plans`: strategy -> its per-epoch plans, as `plan_epochs` returns), as a pandas
    DataFrame: batches and excerpts per epoch, mean distinct tracks and repeats per batch, min / max excerpts
    per track in an epoch, mean coverage of one epoch, coverage of all epochs together, and the fraction of
    epoch 2's excerpts already seen in epoch 1."""
    rows = {}
    for name, epochs in plans.items():
        stats = [plan_stats(p, lengths, excerpt_len) for p in epochs]
        per_track = np.stack([s["excerpts_per_track"] for s in stats])
        seen = {tuple(x) for x in np.concatenate(epochs[0])} if len(epochs) > 1 else set()
        again = (np.mean([tuple(x) in seen for x in np.concatenate(epochs[1])]) if len(epochs) > 1 else np.nan)
        rows[name] = {
            "batches/epoch": np.mean([s["nb_batches"] for s in stats]),
            "excerpts/epoch": np.mean([s["nb_excerpts"] for s in stats]),
            "tracks/batch": np.mean(np.concatenate([s["tracks_per_batch"] for s in stats])),
            "repeats/batch": np.mean(np.concatenate([s["repeats_per_batch"] for s in stats])),
            "min excerpts/track": int(per_track.min()), "max excerpts/track": int(per_track.max()),
            "coverage/epoch": np.mean([s["coverage"] for s in stats]),
            f"coverage {len(epochs)} epochs": coverage(np.concatenate([np.concatenate(p) for p in epochs]),
                                                        np.asarray(lengths), excerpt_len),
            "epoch 2 seen in epoch 1": again,
        }
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def describe_batch(sampler, epoch: int = 0, step: int = 0, names: bool = False):
    """The random choices behind one batch of an `hw2.sampling.ExcerptSampler`, as a pandas DataFrame: one row per
    excerpt, one column per source, each cell `track@start s x gain` (plus `LR` when its channels are swapped).
    names: label tracks by name instead of index."""
    d = sampler.draw(epoch, step)
    label = (lambda t: sampler.tracks[t].name) if names else str
    cells = [[f"{label(d['tracks'][i, j])}@{d['starts'][i, j] / RATE:.2f}s x{d['gains'][i, j]:.2f}"
              + (" LR" if d["swaps"][i, j] else "") for j in range(len(SOURCES))]
             for i in range(len(d["tracks"]))]
    return pd.DataFrame(cells, columns=list(SOURCES)).rename_axis("excerpt")


def load_history(run) -> list[dict]:
    """A run's history (one dict per epoch, as `hw2.train` writes it): `run` is a run folder, its history.json,
    or the list itself. The one reader of history.json: the figures, the tables and the model cards use it."""
    if isinstance(run, (list, tuple)):
        return list(run)
    path = Path(run)
    path = path / "history.json" if path.is_dir() else path
    return json.loads(path.read_text())


def load_run_config(run) -> dict:
    """The config.json of a run folder (`run`: the folder or a file in it: history.json, best.pt), {} where there
    is none or `run` is a history list. The one reader of a run's config.json beside `load_history`."""
    if isinstance(run, (list, tuple)):
        return {}
    path = Path(run)
    try:
        return json.loads(((path if path.is_dir() else path.parent) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def best_index(history: list[dict]) -> int:
    """Index of the epoch a run kept as best.pt: the last one `hw2.train` marked best (by valid loss, or by valid
    SDR with --select-by sdr), else the lowest valid loss (a history from before the mark)."""
    kept = [i for i, r in enumerate(history) if r.get("best")]
    return kept[-1] if kept else min(range(len(history)), key=lambda i: history[i]["valid_loss"])


def loss_name(config: dict) -> str:
    """The training loss of a run's config.json in words, for an axis label."""
    if config.get("loss") == "wave-l1":
        return "L1 of waveforms"
    return "MSE of complex spectra" if config.get("arch") == "tfctdf" else "MSE of magnitudes"


def history_table(run):
    """A run's history.json as a pandas DataFrame indexed by epoch (train_loss, valid_loss, lr, seconds, best)."""
    return pd.DataFrame(load_history(run)).set_index("epoch")
