"""Figures of scores: SDR per row of a results table, SDR against Griffin-Lim iterations, and the model and
augmentation grids of `python -m hw2.experiments` with the notes saved beside those two.

Built like `hw2.plots` (a `Figure` without pyplot, saved with `hw2.plots.save_figure`); the rows are those of
`results/*.json`, `hw2.infer.run` and `hw2.evaluate.Evaluation.finish`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hw2.figures import iteration_axis
from hw2.plots import STEM_COLORS, new_figure

TARGET_NAMES = ("vocals", "accompaniment")


def plot_sdr_table(rows: Sequence[Mapping], metric: str = "SDR", title: str | None = None) -> Figure:
    """Grouped horizontal bars: one group per table row (top to bottom in table order), one bar per target
    (vocals, accompaniment), each labelled with its value in dB. rows: as `hw2.infer.run` and
    `hw2.evaluate.Evaluation.finish` return them, dicts with "label" and "scores" {target: {metric: dB or None}}
    (median of medians); reference rows (method mix-as-estimate / oracle-irm, or a label starting with
    "reference") are hatched. A missing score (None: no frame could be scored) is left out and marked n/a."""
    rows = list(rows)
    fig = new_figure(9, 0.55 * max(len(rows), 1) + 1.7)
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
    return Patch(color=color)


def plot_iteration_sweep(sweeps: Mapping[str, Sequence[Mapping]], baselines: Mapping[str, Mapping] | None = None,
                         title: str | None = None) -> Figure:
    """SDR against the number of Griffin-Lim iterations: one panel per target (vocals, accompaniment), one line
    per sweep. sweeps: label -> the list `hw2.evaluate.iteration_sweep` returns, [{"iterations": n, "vocals": dB,
    "accompaniment": dB}, ...] (e.g. {"random init": ..., "mixture init": ...}); baselines: optional label ->
    {target: dB}, drawn as dashed horizontal lines (e.g. the mixture phase). The iteration axis is linear up to
    the smallest positive count and logarithmic above, so 0 (the initial phase alone) stays on the axis."""
    fig = new_figure(10, 3.6)
    axes = fig.subplots(1, len(TARGET_NAMES), sharey=True)
    counts = sorted({int(p["iterations"]) for s in sweeps.values() for p in s})
    for ax, target in zip(axes, TARGET_NAMES):
        for k, (label, sweep) in enumerate(sweeps.items()):
            pts = sorted(sweep, key=lambda p: p["iterations"])
            x = [p["iterations"] for p in pts]
            v = [np.nan if p[target] is None else p[target] for p in pts]
            ax.plot(x, v, marker="o", ms=5, color=f"C{k}", ls=("-", "--", "-.", ":")[k % 4], label=label)
        for k, (label, values) in enumerate((baselines or {}).items()):
            if values.get(target) is not None:
                ax.axhline(values[target], color=f"C{len(sweeps) + k}", lw=1, ls=":", label=label)
        iteration_axis(ax, counts)
        ax.axhline(0, color="black", lw=0.8)  # the score of a silent estimate (BSSEval v4 images)
        ax.set_xlabel("Griffin-Lim iterations")
        ax.set_title(target, color=STEM_COLORS[target])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SDR (dB), median over 1 s frames")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_models(table: dict) -> Figure:
    """The model comparison (`results/models.json` of `python -m hw2.experiments`): valid vocals SDR against
    parameters and against training time, one labelled point per variant."""
    fig = new_figure(11, 4.2)
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
            f"{data.get('dataset', table.get('musdb_root'))}, valid split ({data.get('nb_tracks')} tracks), "
            f"{phases_used(table)}; from results/{table['grid']}.json: {table['command']}")


def phases_used(table: dict) -> str:
    """The phase a grid's rows were scored with, in words: the mixture's, and a complex network's own where one is."""
    own = [r["variant"] for r in table["rows"] if r.get("method") == "network"]
    return "mixture phase" + (f" ({', '.join(own)}: the network's own phase)" if own else "")


def plot_augment(table: dict) -> Figure:
    """The augmentation ablation (`results/augment.json`): each variant's valid SDR minus the default's (`all-on`)
    at the same seed, vocals and accompaniment; bars are the means over the seeds run, dots the single seeds."""
    groups: dict[str, list[dict]] = {}
    for r in table["rows"]:
        if r.get("base", r["variant"]) != "all-on":
            groups.setdefault(r.get("base", r["variant"]), []).append(r)
    names = list(groups)[::-1]  # the grid's order, top down
    fig = new_figure(9, 0.45 * len(names) + 1.4)
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
            f"({data.get('nb_tracks')} tracks), {phases_used(table)}; from results/{table['grid']}.json: "
            f"{table['command']}")
