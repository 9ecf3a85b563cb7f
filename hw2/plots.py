"""Figures of the data, the sampling plans and a training run for the notebooks, and the one way to save a figure.

Every `plot_*` function takes data and returns a `matplotlib.figure.Figure` built without pyplot (no global
state, nothing shown twice in a notebook, nothing leaked in a loop); `save_figure(fig, name)` writes it to
`report/figures/<name>.png` (or `$HW2_FIGURES/<name>.png`; a smoke run's to a scratch folder). The numbers they
draw come from `hw2.stats`; the figures of scores are in `hw2.score_plots`, the notebooks' audio players in
`hw2.players`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hw2 import RATE, Hw2Error, atomic_write
from hw2.model import STFT
from hw2.stats import best_index, coverage, load_history, load_run_config, loss_name, plan_stats
from hw2.tracks import STEMS, describe_dataset

STEM_COLORS = {"mixture": "0.35", "drums": "tab:orange", "bass": "tab:green", "other": "tab:purple",
               "vocals": "tab:blue", "accompaniment": "tab:brown"}
SPLIT_COLORS = {"train": "tab:blue", "valid": "tab:orange", "test": "tab:green"}
DPI = 120


# ----------------------------------------------------------------------------------------------------- saving
SMOKE_FIGURES = Path(tempfile.gettempdir()) / "hw2-smoke-figures"
REPO = Path(__file__).resolve().parents[1]


def figures_dir(smoke: bool = False) -> Path:
    """`$HW2_FIGURES`; else, for a smoke run (`smoke`: a notebook's SMOKE), `SMOKE_FIGURES` in the temporary
    folder, since figures of a few tracks and tiny settings must not replace the report's, drawn from full runs on
    real data; else `report/figures` of the repository that holds this package."""
    env = os.environ.get("HW2_FIGURES")
    if env:
        return Path(env).expanduser()
    return SMOKE_FIGURES if smoke else REPO / "report" / "figures"


def save_figure(fig: Figure, name: str, note: str | None = None, dpi: int = DPI, smoke: bool = False) -> Path:
    """Write `fig` as `<figures_dir(smoke)>/<name>.png` (the folder is created) and return the path. `note` (say,
    which data the figure shows) goes beside it as `<name>.txt`, which the report prints under the figure; without
    a note, an old `<name>.txt` is removed so that it cannot describe the wrong data."""
    folder = figures_dir(smoke)
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


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of `width` x `height` inches whose axes lay themselves out (every figure here starts so)."""
    return Figure(figsize=(width, height), layout="constrained")


# ---------------------------------------------------------------------------------------------------- figures
def plot_durations(durations: Mapping[str, Sequence[float]]) -> Figure:
    """Tracks and minutes per split (bars) and the distribution of track durations (histogram).
    durations: split -> (nb_tracks,) seconds, e.g. {"train": track_durations(train_tracks), ...}."""
    fig = new_figure(10, 3.4)
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
    fig = new_figure(7, 3.6)
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
    fig = new_figure(10, 3.4)
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
    fig = new_figure(10, 1.75 * len(labels) + 0.65)
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
    names = list(plans)
    nb_epochs = max(len(p) for p in plans.values())
    nb_tracks = min(max_tracks, len(lengths))
    cmap = colormaps["viridis"]
    colors = [cmap(e / max(nb_epochs - 1, 1) * 0.85) for e in range(nb_epochs)]
    fig = new_figure(3.0 * len(names) + 0.5, 0.25 * nb_tracks + 1.6)
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
    handles = [Line2D([], [], color=c, lw=3) for c in colors]
    fig.legend(handles, [f"epoch {e + 1}" for e in range(nb_epochs)], loc="outside lower center",
               ncols=nb_epochs)
    return fig


def plot_batch_order(plans: Mapping[str, Sequence[Sequence[np.ndarray]]], epoch: int = 0,
                     max_batches: int = 40) -> Figure:
    """The order of one epoch: one panel per strategy, a dot per excerpt at (batch index, track), so a column is
    a batch (its distinct tracks, its repeats stacked as larger dots). plans: as `plan_epochs` returns."""
    names = list(plans)
    fig = new_figure(3.0 * len(names) + 0.5, 3.4)
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
    fig = new_figure(12, 3.6)
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
        cum = [coverage(np.concatenate([np.concatenate(p) for p in plans[n][: e + 1]]), lengths, excerpt_len)
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
    fig = new_figure(4.2 * len(names), 1.5 * nb_examples + 0.6)
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
    """Training curves of a run: train / valid loss per epoch (the epoch kept as best.pt marked), the valid SDR
    where the run measured it (--sdr-every), learning rate, seconds per epoch. history: a run folder, its
    history.json or the list of per-epoch dicts (`hw2.train` writes them); the loss's name comes from the
    config.json beside it."""
    if title is None and not isinstance(history, (list, tuple)):
        p = Path(history)
        title = (p if p.is_dir() else p.parent).name
    cfg = load_run_config(history)
    h = load_history(history)
    sdr = [(r["epoch"], r["valid_sdr"]) for r in h if r.get("valid_sdr") is not None]
    fig = new_figure(15 if sdr else 12, 3.5)
    axes = fig.subplots(1, 4 if sdr else 3)
    ax_l, ax_r, ax_s = axes[0], axes[-2], axes[-1]
    if not h:
        ax_l.set_title("no epoch finished yet")
        return fig
    ep = np.array([r["epoch"] for r in h])
    train = np.array([r["train_loss"] for r in h])
    valid = np.array([r["valid_loss"] for r in h])
    best = best_index(h)
    ax_l.plot(ep, train, label="train (augmented excerpts)")
    ax_l.plot(ep, valid, label="valid (full tracks)")
    ax_l.plot(ep[best], valid[best], "*", ms=12, color="tab:red", label=f"best.pt: epoch {ep[best]}")
    ax_l.axvline(ep[best], color="tab:red", lw=0.8, ls=":")
    ax_l.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax_l.yaxis.set_major_formatter(plain)
    # minor ticks labelled at 2 and 5 only (a loss spanning one decade would print every one, overlapping)
    ax_l.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax_l.tick_params(axis="y", which="minor", labelsize=7)
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel(loss_name(cfg))
    ax_l.legend(fontsize=8)
    ax_l.set_title("loss")
    if sdr:
        ax_d = axes[1]
        x, y = zip(*sdr)
        ax_d.plot(x, y, marker="o", ms=4, color="tab:purple")
        ax_d.axvline(ep[best], color="tab:red", lw=0.8, ls=":")
        ax_d.set_xlabel("epoch")
        ax_d.set_ylabel("vocals SDR (dB)")
        phase = "own phase" if cfg.get("arch") == "tfctdf" else "mixture phase"
        ax_d.set_title(f"valid SDR ({phase})")
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
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def history_note(run) -> str:
    """The note saved beside a run's training-curves figure, from the run's own files: its folder, data (the
    `config.json` beside `history.json`), epochs, the epoch kept as best and time per epoch."""
    path = Path(run)
    folder = (path if path.is_dir() else path.parent).resolve()
    folder = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder  # a note names no machine's path
    h = load_history(path)
    cfg = load_run_config(path)
    root = cfg.get("musdb_root")
    try:
        data = f"{describe_dataset(root)} ({root})" if root else "data not recorded (no config.json)"
    except Hw2Error:
        data = f"{root} (not on this machine)"
    if not h:
        return f"Data: {folder}/history.json, no epoch finished yet; {data}."
    best = h[best_index(h)]
    how = (f"valid vocals SDR {best['valid_sdr']:.2f} dB" if best.get("valid_sdr") is not None
           and cfg.get("select_by") == "sdr" else f"valid loss {best['valid_loss']:.3f}")
    sec = np.array([r["seconds"] for r in h])
    return (f"Data: {folder}/history.json of `python -m hw2.train` on {data}, valid split: {len(h)} epochs, best "
            f"epoch {best['epoch']} ({how}); median {np.median(sec):.1f} s per epoch, {sec.sum() / 60:.1f} min in "
            "all.")


def save_history_figure(run, name: str = "03_training_curves") -> Path:
    """`plot_history(run)` saved as `<name>.png` with `history_note(run)` beside it."""
    return save_figure(plot_history(run), name, note=history_note(run))


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
