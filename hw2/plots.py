"""Figures for the notebooks and the report, and the small numbers behind them.

Every `plot_*` function takes data and returns a `matplotlib.figure.Figure` built without pyplot (no global
state, nothing shown twice in a notebook, nothing leaked in a loop); `save_figure(fig, name)` writes it to
`report/figures/<name>.png` (or `$HW2_FIGURES/<name>.png`). The numeric helpers are pure functions of cached
tracks (`hw2.cache.CachedTrack`: int16 audio of shape (nb_stems=5, nb_channels=2, nb_samples)) or of epoch plans
(`hw2.sampling.plan_epoch`: a list of int64 (batch, 2) arrays of (track, start)).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hw2 import RATE, atomic_write
from hw2.sampling import STRATEGIES, plan_epoch
from hw2.tracks import SOURCES, STEMS

STEM_COLORS = {"mixture": "0.35", "drums": "tab:orange", "bass": "tab:green", "other": "tab:purple",
               "vocals": "tab:blue", "accompaniment": "tab:brown"}
SPLIT_COLORS = {"train": "tab:blue", "valid": "tab:orange", "test": "tab:green"}
DPI = 120
FLOOR_DB = -80.0  # silence is reported as this level rather than -inf


# ----------------------------------------------------------------------------------------------------- saving
def figures_dir() -> Path:
    """`$HW2_FIGURES`, else `report/figures` of the repository that holds this package."""
    env = os.environ.get("HW2_FIGURES")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "report" / "figures"


def save_figure(fig: Figure, name: str, note: str | None = None, dpi: int = DPI) -> Path:
    """Write `fig` as `<figures_dir>/<name>.png` (the folder is created) and return the path. `note` (say, which
    data the figure shows) goes beside it as `<name>.txt`, which the report prints under the figure; without a
    note, an old `<name>.txt` is removed so that it cannot describe the wrong data."""
    folder = figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name if name.endswith(".png") else f"{name}.png")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor="white")
    side = path.with_suffix(".txt")
    if note:
        with atomic_write(side) as tmp:
            tmp.write_text(note.strip() + "\n", encoding="utf-8")
    else:
        side.unlink(missing_ok=True)
    return path


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# ---------------------------------------------------------------------------------------------------- numbers
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
    import pandas as pd

    rows = {(name, b): {"excerpts (track@start s)": "  ".join(f"{t}@{s / rate:.1f}" for t, s in batch)}
            for name, epochs in plans.items() for b, batch in enumerate(epochs[epoch][:nb_batches])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["strategy", "batch"])


def _coverage(pairs: np.ndarray, lengths: np.ndarray, excerpt_len: int) -> float:
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
            "coverage": _coverage(pairs, lengths, excerpt_len)}


def strategy_stats(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], lengths: Sequence[int],
                   excerpt_len: int):
    """One row per strategy (`plans`: strategy -> its per-epoch plans, as `plan_epochs` returns), as a pandas
    DataFrame: batches and excerpts per epoch, mean distinct tracks and repeats per batch, min / max excerpts
    per track in an epoch, mean coverage of one epoch, coverage of all epochs together, and the fraction of
    epoch 2's excerpts already seen in epoch 1."""
    import pandas as pd

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
            f"coverage {len(epochs)} epochs": _coverage(np.concatenate([np.concatenate(p) for p in epochs]),
                                                         np.asarray(lengths), excerpt_len),
            "epoch 2 seen in epoch 1": again,
        }
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def describe_batch(sampler, epoch: int = 0, step: int = 0, names: bool = False):
    """The random choices behind one batch of an `hw2.sampling.ExcerptSampler`, as a pandas DataFrame: one row per
    excerpt, one column per source, each cell `track@start s x gain` (plus `LR` when its channels are swapped).
    names: label tracks by name instead of index."""
    import pandas as pd

    d = sampler.draw(epoch, step)
    label = (lambda t: sampler.tracks[t].name) if names else str
    cells = [[f"{label(d['tracks'][i, j])}@{d['starts'][i, j] / RATE:.2f}s x{d['gains'][i, j]:.2f}"
              + (" LR" if d["swaps"][i, j] else "") for j in range(len(SOURCES))]
             for i in range(len(d["tracks"]))]
    return pd.DataFrame(cells, columns=list(SOURCES)).rename_axis("excerpt")


def load_history(run) -> list[dict]:
    """A run's history: `run` is a run folder, its history.json, or the list itself."""
    if isinstance(run, (list, tuple)):
        return list(run)
    path = Path(run)
    path = path / "history.json" if path.is_dir() else path
    return json.loads(path.read_text())


def history_table(run):
    """A run's history.json as a pandas DataFrame indexed by epoch (train_loss, valid_loss, lr, seconds, best)."""
    import pandas as pd

    return pd.DataFrame(load_history(run)).set_index("epoch")


# ---------------------------------------------------------------------------------------------------- figures
def plot_durations(durations: Mapping[str, Sequence[float]]) -> Figure:
    """Tracks and minutes per split (bars) and the distribution of track durations (histogram).
    durations: split -> (nb_tracks,) seconds, e.g. {"train": track_durations(train_tracks), ...}."""
    fig = _figure(10, 3.4)
    ax_n, ax_h = fig.subplots(1, 2, width_ratios=(1, 2))
    names = list(durations)
    colors = [SPLIT_COLORS.get(n, f"C{i}") for i, n in enumerate(names)]
    counts = [len(durations[n]) for n in names]
    minutes = [float(np.sum(durations[n])) / 60 for n in names]
    bars = ax_n.bar(names, counts, color=colors)
    for bar, c, m in zip(bars, counts, minutes):
        ax_n.annotate(f"{c} tracks\n{m:.1f} min", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)
    ax_n.set_ylabel("tracks")
    ax_n.set_ylim(0, max(counts + [1]) * 1.35)
    ax_n.set_title("tracks per split")
    all_d = np.concatenate([np.asarray(durations[n], float) for n in names]) if names else np.zeros(1)
    lo, hi = float(all_d.min()), float(all_d.max())
    bins = np.linspace(lo - 0.5, hi + 0.5, 2) if hi - lo < 1e-6 else np.linspace(lo, hi, 21)
    ax_h.hist([np.asarray(durations[n], float) for n in names], bins=bins, color=colors, label=names,
              stacked=True)
    ax_h.set_xlabel("track duration (s)")
    ax_h.set_ylabel("tracks")
    ax_h.set_title("track durations")
    ax_h.legend()
    return fig


def plot_loudness(loudness, stems: Sequence[str] = STEMS) -> Figure:
    """Box plot (with one dot per track) of the RMS level per stem. loudness: (nb_tracks, nb_stems) dB, as
    `stem_loudness` returns."""
    loudness = np.asarray(loudness, float)
    fig = _figure(7, 3.6)
    ax = fig.subplots()
    box = ax.boxplot([loudness[:, k] for k in range(len(stems))], patch_artist=True, showfliers=False,
                     medianprops={"color": "black"})
    ax.set_xticks(range(1, len(stems) + 1), stems)
    rng = np.random.default_rng(0)
    for k, (patch, stem) in enumerate(zip(box["boxes"], stems)):
        patch.set(facecolor=STEM_COLORS.get(stem, f"C{k}"), alpha=0.45)
        ax.scatter(k + 1 + rng.uniform(-0.15, 0.15, len(loudness)), loudness[:, k], s=8,
                   color=STEM_COLORS.get(stem, f"C{k}"), zorder=3)
    ax.set_ylabel("RMS level (dB re full scale)")
    ax.set_title(f"loudness per stem over {len(loudness)} tracks")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_vocal_activity(activity, threshold_db: float = -40.0, frame_dur: float = 1.0) -> Figure:
    """Histogram of the per-track fraction of frames with vocals, and the fractions sorted per track.
    activity: (nb_tracks,) in [0, 1], as `vocal_activity` returns."""
    activity = np.asarray(activity, float)
    fig = _figure(10, 3.4)
    ax_h, ax_s = fig.subplots(1, 2)
    ax_h.hist(activity, bins=np.linspace(0, 1, 11), color=STEM_COLORS["vocals"], edgecolor="white")
    ax_h.set_xlabel(f"fraction of {frame_dur:g}-s frames with vocals above {threshold_db:g} dB")
    ax_h.set_ylabel("tracks")
    ax_h.set_title("vocal activity per track")
    ax_s.bar(np.arange(len(activity)), np.sort(activity)[::-1], width=1.0, color=STEM_COLORS["vocals"])
    ax_s.axhline(np.mean(activity), color="black", lw=1, ls="--", label=f"mean {np.mean(activity):.2f}")
    ax_s.set_xlabel("track (sorted)")
    ax_s.set_ylabel("fraction of frames")
    ax_s.set_ylim(0, 1.02)
    ax_s.set_title(f"{np.mean(activity == 0):.0%} of tracks without vocals, {np.mean(activity == 1):.0%} "
                   "with vocals throughout", fontsize=9)
    ax_s.legend(loc="lower left")
    return fig


def _stft_mag(audio, n_fft: int, n_hop: int) -> np.ndarray:
    """(n_fft // 2 + 1, nb_frames) STFT magnitude of the channel mean of float audio (nb_channels, nb_samples)
    or (nb_samples,)."""
    import torch

    from hw2.model import STFT

    x = torch.as_tensor(np.atleast_2d(np.asarray(audio, np.float32)).mean(0))
    return STFT(n_fft, n_hop)(x).abs().numpy()


def spectrogram_db(audio, n_fft: int = 2048, n_hop: int = 512, ref: float | None = None) -> np.ndarray:
    """(n_fft // 2 + 1, nb_frames) log magnitude in dB of the channel mean of float audio (nb_channels,
    nb_samples) or (nb_samples,); 0 dB = magnitude `ref` (default: this spectrogram's maximum), floor -120 dB."""
    mag = _stft_mag(audio, n_fft, n_hop)
    ref = float(mag.max()) if ref is None else ref
    return np.maximum(20 * np.log10(np.maximum(mag, 1e-12) / max(ref, 1e-12)), -120.0)


def _spectrogram_panels(clips: Mapping[str, np.ndarray], rate: int, start: float, n_fft: int, n_hop: int,
                        fmin: float, fmax: float, range_db: float, ref: float, ref_label: str) -> Figure:
    """Stacked log-frequency spectrogram panels, one per clip (float (nb_channels, nb_samples)), all in dB
    relative to magnitude `ref`. The linear bins are resampled onto a log grid and drawn as an image (much faster
    than a mesh)."""
    labels = list(clips)
    log_f = np.linspace(np.log10(fmin), np.log10(fmax), 256)
    bins = np.clip(np.round(10 ** log_f * n_fft / rate).astype(int), 0, n_fft // 2)
    fig = _figure(10, 1.75 * len(labels) + 0.65)
    axes = np.atleast_1d(fig.subplots(len(labels), 1, sharex=True, sharey=True))
    image = None
    for ax, label in zip(axes, labels):
        spec = spectrogram_db(clips[label], n_fft, n_hop, ref=ref)[bins]
        t1 = start + spec.shape[1] * n_hop / rate
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=-range_db, vmax=0,
                          extent=(start, t1, log_f[0], log_f[-1]), interpolation="nearest")
        ax.set_ylabel("Hz")
        ax.set_title(label, loc="left", fontsize=9, pad=2)
    ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if fmin <= f <= fmax]
    axes[0].set_yticks(np.log10(ticks), [f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label=f"dB re {ref_label} peak", shrink=0.6)
    return fig


def plot_spectrograms(track, start: float = 0.0, dur: float | None = None, stems: Sequence[str] = STEMS,
                      n_fft: int = 2048, n_hop: int = 512, fmin: float = 30.0, range_db: float = 80.0) -> Figure:
    """One log-frequency spectrogram panel per stem of a cached track, from `start` for `dur` seconds (None: to
    the end), all in dB relative to the mixture's loudest bin so that the stems compare."""
    a = int(start * track.rate)
    b = track.nb_samples if dur is None else min(track.nb_samples, a + int(dur * track.rate))
    audio = {s: track.stem(s)[:, a:b] for s in stems}
    ref_stem = "mixture" if "mixture" in audio else stems[0]
    ref = float(_stft_mag(audio[ref_stem], n_fft, n_hop).max())
    fig = _spectrogram_panels(audio, track.rate, start, n_fft, n_hop, fmin, track.rate / 2, range_db, ref, ref_stem)
    fig.suptitle(getattr(track, "name", ""))
    return fig


def plot_coverage(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], lengths: Sequence[int], excerpt_len: int,
                  rate: int = RATE, max_tracks: int = 16) -> Figure:
    """Which excerpts each strategy visits: one panel per strategy, one row per track (the first
    `max_tracks`), each excerpt a segment from its start to its end, coloured by epoch (rows of one track are
    offset a little per epoch). plans: strategy -> per-epoch plans, as `plan_epochs` returns."""
    import matplotlib

    names = list(plans)
    nb_epochs = max(len(p) for p in plans.values())
    nb_tracks = min(max_tracks, len(lengths))
    cmap = matplotlib.colormaps["viridis"]
    colors = [cmap(e / max(nb_epochs - 1, 1) * 0.85) for e in range(nb_epochs)]
    fig = _figure(3.0 * len(names) + 0.5, 0.25 * nb_tracks + 1.6)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True, sharex=True))
    for ax, name in zip(axes, names):
        for e, plan in enumerate(plans[name]):
            pairs = np.concatenate(plan)
            pairs = pairs[pairs[:, 0] < nb_tracks]
            y = pairs[:, 0] + (e - (nb_epochs - 1) / 2) * (0.7 / max(nb_epochs, 1))
            x0 = pairs[:, 1] / rate
            segs = np.stack([np.stack([x0, y], 1), np.stack([x0 + excerpt_len / rate, y], 1)], 1)
            ax.add_collection(LineCollection(segs, colors=[colors[e]], linewidths=2, alpha=0.6))
            ax.plot(x0, y, "|", color=colors[e], ms=5)
        ax.set_title(name)
        ax.set_xlabel("time in track (s)")
        ax.set_xlim(0, max(lengths[:nb_tracks]) / rate)
        ax.set_ylim(nb_tracks - 0.5, -0.5)
    axes[0].set_ylabel("track")
    axes[0].set_yticks(range(nb_tracks))
    handles = [matplotlib.lines.Line2D([], [], color=c, lw=3) for c in colors]
    fig.legend(handles, [f"epoch {e + 1}" for e in range(nb_epochs)], loc="outside lower center",
               ncols=nb_epochs)
    return fig


def plot_batch_order(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], epoch: int = 0,
                     max_batches: int = 40) -> Figure:
    """The order of one epoch: one panel per strategy, a dot per excerpt at (batch index, track), so a column is
    a batch (its distinct tracks, its repeats stacked as larger dots). plans: as `plan_epochs` returns."""
    names = list(plans)
    fig = _figure(3.0 * len(names) + 0.5, 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for k, (ax, name) in enumerate(zip(axes, names)):
        plan = plans[name][epoch][:max_batches]
        for b, batch in enumerate(plan):
            tracks, counts = np.unique(batch[:, 0], return_counts=True)
            ax.scatter(np.full(len(tracks), b), tracks, s=12 * counts, color=f"C{k}",
                       edgecolors="black" if (counts > 1).any() else "none", linewidths=0.5)
        ax.set_title(name)
        ax.set_xlabel(f"batch of epoch {epoch + 1}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("track (dot size: excerpts in the batch)")
    axes[0].invert_yaxis()
    return fig


def plot_strategy_stats(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], lengths: Sequence[int],
                        excerpt_len: int) -> Figure:
    """Per strategy: distinct tracks per batch, excerpts per track per epoch (box plots over all batches /
    tracks of all epochs) and the fraction of the audio covered after 1, 2, ... epochs."""
    names = list(plans)
    stats = {n: [plan_stats(p, lengths, excerpt_len) for p in plans[n]] for n in names}
    fig = _figure(12, 3.6)
    ax_t, ax_e, ax_c = fig.subplots(1, 3)
    ax_t.boxplot([np.concatenate([s["tracks_per_batch"] for s in stats[n]]) for n in names], showmeans=True)
    ax_t.set_xticks(range(1, len(names) + 1), names, rotation=20)
    ax_t.set_ylabel("distinct tracks in a batch")
    ax_t.set_title("tracks per batch (triangle: mean)")
    ax_e.boxplot([np.concatenate([s["excerpts_per_track"] for s in stats[n]]) for n in names], showmeans=True)
    ax_e.set_xticks(range(1, len(names) + 1), names, rotation=20)
    ax_e.set_ylabel("excerpts of a track in an epoch")
    ax_e.set_title("how often each track is drawn")
    lengths = np.asarray(lengths)
    for k, n in enumerate(names):
        cum = [_coverage(np.concatenate([np.concatenate(p) for p in plans[n][: e + 1]]), lengths, excerpt_len)
               for e in range(len(plans[n]))]
        ax_c.plot(np.arange(1, len(cum) + 1), cum, marker="o", ms=max(3, 9 - 1.5 * k), label=n, color=f"C{k}",
                  ls=("-", "--", "-.", ":")[k % 4])  # styles keep equal curves visible
    ax_c.set_xlabel("epochs")
    ax_c.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_c.set_ylabel("fraction of the audio seen")
    ax_c.set_ylim(0, 1.05)
    ax_c.set_title("coverage")
    ax_c.legend(fontsize=8)
    return fig


def _envelope(x: np.ndarray, nb_points: int = 800) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, min, max) of `x` (nb_samples,) in `nb_points` blocks: a waveform drawn cheaply."""
    block = max(1, len(x) // nb_points)
    n = len(x) // block * block
    blocks = x[:n].reshape(-1, block)
    return np.arange(len(blocks)) * block, blocks.min(1), blocks.max(1)


def plot_batch(batches: Mapping[str, tuple], rate: int = RATE, nb_examples: int = 4,
               target_name: str = "vocals") -> Figure:
    """Waveforms of the first `nb_examples` excerpts of batches built differently (columns), e.g. without and
    with augmentation: the mixture in grey and the target in colour, left channel above, right below.
    batches: name -> (mixture, target), float (nb_samples, nb_channels, nb_timesteps) arrays or tensors."""
    names = list(batches)
    fig = _figure(4.2 * len(names), 1.5 * nb_examples + 0.6)
    axes = np.atleast_2d(fig.subplots(nb_examples, len(names), sharex=True, sharey=True, squeeze=False))
    color = STEM_COLORS.get(target_name, "tab:blue")
    for c, name in enumerate(names):
        mix, tgt = (np.asarray(x) for x in batches[name])
        for r in range(nb_examples):
            ax = axes[r, c]
            if r >= len(mix):
                ax.set_axis_off()
                continue
            for ch, offset in ((0, 1.0), (1, -1.0)):
                for sig, col, lab in ((mix[r, ch], "0.6", "mixture"), (tgt[r, ch], color, target_name)):
                    pos, lo, hi = _envelope(sig)
                    ax.fill_between(pos / rate, offset + lo, offset + hi, color=col, lw=0,
                                    label=lab if ch == 0 else None)
            ax.set_yticks([1, -1], ["L", "R"])
            if r == 0:
                ax.set_title(name)
        axes[-1, c].set_xlabel("time in excerpt (s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    return fig


def plot_history(history, title: str | None = None) -> Figure:
    """Training curves of a run: train / valid loss per epoch (best epoch marked), learning rate, seconds per
    epoch. history: a run folder, its history.json or the list of per-epoch dicts (`hw2.train` writes them)."""
    if title is None and not isinstance(history, (list, tuple)):
        p = Path(history)
        title = (p if p.is_dir() else p.parent).name
    h = load_history(history)
    fig = _figure(12, 3.5)
    ax_l, ax_r, ax_s = fig.subplots(1, 3)
    if not h:
        ax_l.set_title("no epoch finished yet")
        return fig
    ep = np.array([r["epoch"] for r in h])
    train = np.array([r["train_loss"] for r in h])
    valid = np.array([r["valid_loss"] for r in h])
    best = int(np.argmin(valid))
    ax_l.plot(ep, train, label="train (augmented excerpts)")
    ax_l.plot(ep, valid, label="valid (full tracks)")
    ax_l.plot(ep[best], valid[best], "*", ms=12, color="tab:red", label=f"best: epoch {ep[best]}")
    ax_l.axvline(ep[best], color="tab:red", lw=0.8, ls=":")
    ax_l.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax_l.yaxis.set_major_formatter(plain)
    ax_l.yaxis.set_minor_formatter(plain)
    ax_l.tick_params(axis="y", which="minor", labelsize=7)
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("MSE of magnitudes")
    ax_l.legend(fontsize=8)
    ax_l.set_title("loss")
    ax_r.step(ep, [r["lr"] for r in h], where="post")
    ax_r.set_yscale("log")
    ax_r.set_xlabel("epoch")
    ax_r.set_title("learning rate")
    sec = np.array([r["seconds"] for r in h])
    ax_s.bar(ep, sec, width=0.8, color="0.5")
    ax_s.axhline(np.median(sec), color="black", ls="--", lw=1, label=f"median {np.median(sec):.1f} s")
    ax_s.set_xlabel("epoch")
    ax_s.set_ylabel("seconds")
    ax_s.set_title(f"time per epoch (total {sec.sum() / 60:.1f} min)")
    ax_s.legend(fontsize=8)
    for ax in (ax_l, ax_r, ax_s):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def history_note(run) -> str:
    """The note saved beside a run's training-curves figure, from the run's own files: its folder, data (the
    `config.json` beside `history.json`), epochs, best epoch and time per epoch."""
    from hw2 import Hw2Error
    from hw2.tracks import describe_dataset

    path = Path(run)
    folder = path if path.is_dir() else path.parent
    h = load_history(path)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    root = cfg.get("musdb_root")
    try:
        data = f"{describe_dataset(root)} ({root})" if root else "data not recorded (no config.json)"
    except Hw2Error:
        data = f"{root} (not on this machine)"
    if not h:
        return f"Data: {folder}/history.json, no epoch finished yet; {data}."
    best = min(h, key=lambda r: r["valid_loss"])
    sec = np.array([r["seconds"] for r in h])
    return (f"Data: {folder}/history.json of `python -m hw2.train` on {data}: {len(h)} epochs, best epoch "
            f"{best['epoch']} (valid loss {best['valid_loss']:.3f}); median {np.median(sec):.1f} s per epoch, "
            f"{sec.sum() / 60:.1f} min in all.")


def save_history_figure(run, name: str = "03_training_curves") -> Path:
    """`plot_history(run)` saved as `<name>.png` with `history_note(run)` beside it."""
    return save_figure(plot_history(run), name, note=history_note(run))


def plot_models(table: dict) -> Figure:
    """The model comparison (`results/models.json` of `python -m hw2.experiments`): valid vocals SDR against
    parameters and against training time, one labelled point per variant."""
    fig = _figure(11, 4.2)
    rows = [r for r in table["rows"] if r["scores"]["vocals"]["SDR"] is not None]
    for ax, key, label in zip(fig.subplots(1, 2), ("params", "train_minutes"),
                              ("trainable parameters (millions)", "training time (minutes, CPU shared with other jobs)")):
        for r in rows:
            x = r[key] / 1e6 if key == "params" else r[key]
            ax.scatter(x, r["scores"]["vocals"]["SDR"], color="#1F3A5F")
            ax.annotate(r["variant"], (x, r["scores"]["vocals"]["SDR"]), fontsize=8, xytext=(4, 3),
                        textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("vocals SDR (dB), valid split")
        ax.grid(alpha=0.3)
    return fig


def models_note(table: dict) -> str:
    data = table.get("data", {})
    return (f"{len(table['rows'])} variants trained from scratch at one budget ({table['budget']}), scored on "
            f"{data.get('dataset', table.get('musdb_root'))}, valid split ({data.get('nb_tracks')} tracks), mixture "
            f"phase; from results/{table['grid']}.json: {table['command']}")


def plot_augment(table: dict) -> Figure:
    """The augmentation ablation (`results/augment.json`): each variant's valid SDR minus the default's (`all-on`)
    at the same seed, vocals and accompaniment; bars are the means over the seeds run, dots the single seeds."""
    groups: dict[str, list[dict]] = {}
    for r in table["rows"]:
        if r.get("base", r["variant"]) != "all-on":
            groups.setdefault(r.get("base", r["variant"]), []).append(r)
    names = list(groups)[::-1]  # the grid's order, top down
    fig = _figure(9, 0.45 * len(names) + 1.4)
    ax = fig.subplots()
    y = np.arange(len(names))
    for k, (target, color) in enumerate((("vocals", "#1F3A5F"), ("accompaniment", "#D08C2E"))):
        off = (0.5 - k) * 0.38
        for i, name in enumerate(names):
            d = [r["delta"][target] for r in groups[name] if r.get("delta", {}).get(target) is not None]
            if d:
                ax.barh(y[i] + off, np.mean(d), height=0.36, color=color, label=target if i == 0 else None)
                if len(d) > 1:
                    ax.scatter(d, [y[i] + off] * len(d), color="black", s=10, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names)
    ax.set_xlabel("valid SDR minus the default's (dB; dots: single seeds where several were run)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def augment_note(table: dict) -> str:
    data = table.get("data", {})
    seeds = sorted({r["config"]["seed"] for r in table["rows"]})
    return (f"Difference to the default (all-on: random gain, swap, track mixing, random offsets) of each "
            f"augmentation variant, trained from scratch at one budget ({table['budget']}), seeds "
            f"{', '.join(map(str, seeds))}, scored on {data.get('dataset', table.get('musdb_root'))}, valid split "
            f"({data.get('nb_tracks')} tracks), mixture phase; from results/{table['grid']}.json: {table['command']}")


# ---------------------------------------------------------------------------------------------------- listening
def audio_player(audio, rate: int = RATE, start: float = 0.0, dur: float | None = None, mono: bool = False,
                 normalize: bool = True):
    """An `IPython.display.Audio` of `audio`: float (nb_channels, nb_samples), (nb_samples, nb_channels) or
    (nb_samples,), a numpy array or a tensor; `start` / `dur` in seconds cut an excerpt; mono downmixes."""
    from IPython.display import Audio

    x = np.asarray(audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float32)
    x = np.atleast_2d(x)
    if x.shape[0] > x.shape[1]:
        x = x.T  # (nb_samples, nb_channels) -> (nb_channels, nb_samples)
    a = int(start * rate)
    x = x[:, a:] if dur is None else x[:, a:a + int(dur * rate)]
    if mono or x.shape[0] > 2:
        x = x.mean(0, keepdims=True)
    if not normalize:
        x = np.clip(x, -1, 1)
    return Audio(x[0] if x.shape[0] == 1 else x, rate=rate, normalize=normalize)


def _players_html(rows: Sequence[tuple[str, Sequence[tuple[str, object]]]]) -> str:
    """HTML of labelled players: rows of (row label, [(player label, IPython Audio), ...])."""
    out = []
    for head, players in rows:
        cells = "".join(f"<div style='margin:0 8px 6px 0'><div><b>{label}</b></div>{audio._repr_html_()}</div>"
                        for label, audio in players)
        title = f"<div style='width:100%'><i>{head}</i></div>" if head else ""
        out.append(f"<div style='display:flex;flex-wrap:wrap;align-items:flex-end'>{title}{cells}</div>")
    return "".join(out)


def stem_players(track, start: float = 0.0, dur: float | None = 5.0, stems: Sequence[str] = STEMS):
    """An `IPython.display.HTML` with one labelled player per stem of a cached track, for [start, start + dur)."""
    from IPython.display import HTML

    players = [(s, audio_player(track.stem(s), track.rate, start, dur)) for s in stems]
    return HTML(_players_html([("", players)]))


def batch_players(batches: Mapping[str, tuple], example: int = 0, rate: int = RATE, target_name: str = "vocals"):
    """An `IPython.display.HTML` with players for the mixture and the target of one excerpt of each batch.
    batches: name -> (mixture, target), as for `plot_batch`."""
    from IPython.display import HTML

    return HTML(_players_html([(name, [("mixture", audio_player(mix[example], rate)),
                                       (target_name, audio_player(tgt[example], rate))])
                               for name, (mix, tgt) in batches.items()]))


def figure_png(fig: Figure, dpi: int = 80):
    """An `IPython.display.Image` of a figure (PNG bytes), for places that need a display object."""
    import io

    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return Image(data=buf.getvalue(), format="png")


def track_picker(tracks: Sequence, start: float = 0.0, dur: float = 5.0, stems: Sequence[str] = STEMS):
    """A dropdown of cached tracks that shows, for the chosen one, a player per stem and the stem spectrograms
    of the excerpt [start, start + dur). Returns the widget (leave it last in a cell). The first track is shown
    at once; the output is set directly on the widget (no output capture), so it also runs headless."""
    import ipywidgets as widgets

    dropdown = widgets.Dropdown(options=[(t.name, i) for i, t in enumerate(tracks)], value=0,
                                description="track", layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def show(change=None):
        track = tracks[dropdown.value]
        out.outputs = ()
        out.append_display_data(stem_players(track, start, dur, stems))
        out.append_display_data(figure_png(plot_spectrograms(track, start, dur, stems)))

    dropdown.observe(show, names="value")
    show()
    return widgets.VBox([dropdown, out])


# ------------------------------------------------------------------------------------------- phase (notebook 04)
TARGET_NAMES = ("vocals", "accompaniment")


def plot_sdr_table(rows: Sequence[Mapping], metric: str = "SDR", title: str | None = None) -> Figure:
    """Grouped horizontal bars: one group per table row (top to bottom in table order), one bar per target
    (vocals, accompaniment), each labelled with its value in dB. rows: as `hw2.infer.run` and
    `hw2.evaluate.Evaluation.finish` return them, dicts with "label" and "scores" {target: {metric: dB or None}}
    (median of medians); reference rows (method mix-as-estimate / oracle-irm, or a label starting with
    "reference") are hatched. A missing score (None: no frame could be scored) is left out and marked n/a."""
    rows = list(rows)
    fig = _figure(9, 0.55 * max(len(rows), 1) + 1.7)
    ax = fig.subplots()
    height = 0.38
    values = np.array([[np.nan if r["scores"][t][metric] is None else r["scores"][t][metric]
                        for t in TARGET_NAMES] for r in rows], dtype=float).reshape(len(rows), len(TARGET_NAMES))
    finite = values[np.isfinite(values)]
    lo, hi = (min(0.0, float(finite.min())), max(0.0, float(finite.max()))) if finite.size else (0.0, 1.0)
    pad = 0.12 * (hi - lo or 1.0)
    y = np.arange(len(rows))
    for k, target in enumerate(TARGET_NAMES):
        pos = y + (k - 0.5) * height
        for i, (r, v) in enumerate(zip(rows, values[:, k])):
            ref = r.get("method") in ("mix-as-estimate", "oracle-irm") or str(r["label"]).startswith("reference")
            if not np.isfinite(v):
                ax.annotate("n/a", (0, pos[i]), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
                continue
            ax.barh(pos[i], v, height, color=STEM_COLORS[target], alpha=0.5 if ref else 0.9,
                    hatch="//" if ref else None, edgecolor="white" if ref else None,
                    label=target if i == 0 else None)
            ax.annotate(f"{v:.2f}", (v, pos[i]), xytext=(3 if v >= 0 else -3, 0), textcoords="offset points",
                        ha="left" if v >= 0 else "right", va="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(f"{metric} (dB), median over frames, then over tracks")
    ax.grid(axis="x", alpha=0.3)
    fig.legend([_patch(STEM_COLORS[t]) for t in TARGET_NAMES], TARGET_NAMES, loc="outside lower center", ncols=2)
    n = {r.get("nb_tracks") for r in rows} - {None}
    ax.set_title(title if title is not None else f"{metric} per phase method"
                 + (f" ({n.pop()} tracks)" if len(n) == 1 else "") + "; hatched: references from the true stems")
    return fig


def _patch(color):
    """A legend handle: a filled square of `color`."""
    from matplotlib.patches import Patch

    return Patch(color=color)


def plot_iteration_sweep(sweeps: Mapping[str, Sequence[Mapping]], baselines: Mapping[str, Mapping] | None = None,
                         title: str | None = None) -> Figure:
    """SDR against the number of Griffin-Lim iterations: one panel per target (vocals, accompaniment), one line
    per sweep. sweeps: label -> the list `hw2.evaluate.iteration_sweep` returns, [{"iterations": n, "vocals": dB,
    "accompaniment": dB}, ...] (e.g. {"random init": ..., "mixture init": ...}); baselines: optional label ->
    {target: dB}, drawn as dashed horizontal lines (e.g. the mixture phase). The iteration axis is linear up to
    the smallest positive count and logarithmic above, so 0 (the initial phase alone) stays on the axis."""
    fig = _figure(10, 3.6)
    axes = fig.subplots(1, len(TARGET_NAMES), sharey=True)
    counts = sorted({int(p["iterations"]) for s in sweeps.values() for p in s})
    positive = [c for c in counts if c > 0]
    for ax, target in zip(axes, TARGET_NAMES):
        for k, (label, sweep) in enumerate(sweeps.items()):
            pts = sorted(sweep, key=lambda p: p["iterations"])
            x = [p["iterations"] for p in pts]
            v = [np.nan if p[target] is None else p[target] for p in pts]
            ax.plot(x, v, marker="o", ms=5, color=f"C{k}", ls=("-", "--", "-.", ":")[k % 4], label=label)
        for k, (label, values) in enumerate((baselines or {}).items()):
            if values.get(target) is not None:
                ax.axhline(values[target], color=f"C{len(sweeps) + k}", lw=1, ls=":", label=label)
        if positive:
            ax.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.axhline(0, color="black", lw=0.8)  # the score of a silent estimate (BSSEval v4 images)
        ax.set_xlabel("Griffin-Lim iterations")
        ax.set_title(target, color=STEM_COLORS[target])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SDR (dB), median over 1 s frames")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_phase_spectrograms(audios: Mapping[str, np.ndarray], rate: int = RATE, start: float = 0.0,
                            dur: float | None = None, n_fft: int = 2048, n_hop: int = 512, fmin: float = 100.0,
                            fmax: float | None = 5000.0, range_db: float = 70.0, title: str | None = None) -> Figure:
    """One log-frequency spectrogram panel per waveform, stacked, all in dB relative to the loudest bin of the
    first (say, the true vocals), so that the panels compare. audios: label -> float (nb_timesteps, nb_channels)
    (musdb's layout, as `hw2.separate.Separator.separate` returns; channels are averaged) or (nb_timesteps,);
    `start` / `dur` in seconds cut the excerpt shown (a few seconds show the detail), `fmin` / `fmax` the
    frequency range (default: the voice's; fmax None: Nyquist).
    The magnitudes are those of the waveforms themselves, so what a phase method does to the sound (smearing,
    lost harmonics, noise between partials) shows up here."""
    labels = list(audios)
    a = int(start * rate)
    clips = {}
    for label in labels:
        x = np.asarray(audios[label], np.float32)
        x = x[:, None] if x.ndim == 1 else x
        b = x.shape[0] if dur is None else min(x.shape[0], a + int(dur * rate))
        clips[label] = x[a:b].T  # (nb_channels, nb_samples), as spectrogram_db takes it
    ref = float(_stft_mag(clips[labels[0]], n_fft, n_hop).max()) if labels else 1.0
    top = rate / 2 if fmax is None else min(fmax, rate / 2)
    fig = _spectrogram_panels(clips, rate, start, n_fft, n_hop, fmin, top, range_db, ref, labels[0])
    if title:
        fig.suptitle(title)
    return fig


def audio_players(rows: Mapping[str, Mapping[str, np.ndarray]], rate: int = RATE, start: float = 0.0,
                  dur: float | None = None):
    """An `IPython.display.HTML` of labelled players, one line per row: rows is row label -> {player label:
    audio}, audio as `audio_player` takes it (e.g. (nb_timesteps, nb_channels)); `start` / `dur` in seconds."""
    from IPython.display import HTML

    return HTML(_players_html([(head, [(label, audio_player(x, rate, start, dur)) for label, x in players.items()])
                               for head, players in rows.items()]))


def wav_players(folder, start: float = 0.0, dur: float | None = None, max_tracks: int | None = None):
    """An `IPython.display.HTML` with a player per WAV file under `folder`, one line per sub-folder (a track):
    what `hw2/infer.py` writes to `<out>/<name>/samples/<track>/`. The mixture comes first, then the files in
    name order; `max_tracks` limits the lines."""
    import soundfile as sf
    from IPython.display import HTML

    folder = Path(folder)
    dirs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    rows = []
    for d in dirs[:max_tracks]:
        files = sorted(d.glob("*.wav"), key=lambda p: (p.stem != "mixture", p.stem))
        players = []
        for f in files:
            audio, rate = sf.read(f, dtype="float32", always_2d=True)  # (nb_timesteps, nb_channels)
            players.append((f.stem, audio_player(audio, rate, start, dur)))
        rows.append((d.name, players))
    if not rows:
        return HTML(f"<i>no listening samples in {folder}</i>")
    return HTML(_players_html(rows))
