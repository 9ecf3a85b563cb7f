"""The report's figures, each drawn at the size of its place on the slide so that its text prints at 12 pt or
more, one message per figure, from the committed results files:

    python -m hw2.figures                                    # every figure whose results file is here
    python -m hw2.figures --listening results/phase/samples  # + the listening slide's spectrograms, from the WAVs
                                                             # `python hw2/infer.py ... --name phase` wrote

Each figure is saved with its physical size (PNG pHYs), which the report keeps: a figure is never scaled down on
its slide. The notebooks' exploratory figures are in `hw2.plots` and `hw2.score_plots`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from hw2 import Hw2Error, OneLineParser, atomic_write, run_cli
from hw2.listening import magnitude
from hw2.findings import variant_name
from hw2.stats import best_index

ROOT = Path(__file__).resolve().parents[1]
CM = 1 / 2.54
DPI = 150
# slot sizes (cm) on the 33.9 x 19.1 cm slide; report.typ prints each at this size
SLOTS = {"r_loss": (15.5, 6.8), "r_iterations": (16.0, 6.6), "r_augment": (18.5, 10.5), "r_listening": (20.0, 12.6)}
STYLE = {"font.size": 13, "axes.titlesize": 13, "axes.labelsize": 13, "xtick.labelsize": 12,
         "ytick.labelsize": 12, "legend.fontsize": 12, "font.family": "DejaVu Sans"}
NAVY, ORANGE, GREY = "#1F3A5F", "#E07A2D", "0.55"


def _figure(name: str) -> Figure:
    w, h = SLOTS[name]
    return Figure(figsize=(w * CM, h * CM), layout="constrained")


def _sdr(row: dict, target: str = "vocals"):
    v = (row.get("scores") or {}).get(target, {}).get("SDR")
    return np.nan if v is None else float(v)


def loss_figure(history: list[dict]) -> Figure:
    """Train and valid loss per epoch, the best epoch marked: when the shipped checkpoint was taken."""
    fig = _figure("r_loss")
    ax = fig.subplots()
    ep = np.array([r["epoch"] for r in history])
    valid = np.array([r["valid_loss"] for r in history])
    ax.plot(ep, [r["train_loss"] for r in history], color=GREY, label="train (augmented excerpts)")
    ax.plot(ep, valid, color=NAVY, label="valid split")
    best = best_index(history)
    ax.plot(ep[best], valid[best], "*", ms=14, color=ORANGE, label=f"best: epoch {ep[best]}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(round(v, 6))[0] in "25" else ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return fig


def iteration_axis(ax, counts) -> None:
    """An x axis of iteration counts, ticked at `counts`: linear up to the smallest positive count and
    logarithmic above, so that 0 (the starting phase alone) stays on the axis beside hundreds of iterations."""
    positive = [c for c in counts if c > 0]
    if positive:
        ax.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()


def iterations_figure(sweep: dict) -> Figure:
    """Vocals SDR against iterations for Griffin-Lim (random and mixture init) and MISI: more iterations, lower
    SDR; the mixture phase (0 iterations of the mixture-initialised methods) as a dashed line."""
    curves = {}
    for r in sorted(sweep["rows"], key=lambda r: r["iterations"]):
        curves.setdefault(r["method"], []).append((r["iterations"], _sdr(r)))
    fig = _figure("r_iterations")
    ax = fig.subplots()
    labels = {"griffinlim": ("Griffin-Lim, random init", ORANGE, "o"),
              "griffinlim-mix": ("Griffin-Lim, mixture init", NAVY, "s"), "misi": ("MISI, mixture init", GREY, "^")}
    counts = sorted({it for m in labels for it, _ in curves.get(m, [])})
    for m, (label, color, marker) in labels.items():
        if m in curves:
            x, y = zip(*curves[m])
            ax.plot(x, y, marker=marker, ms=7, color=color, label=label)
    if curves.get("griffinlim-mix") and curves["griffinlim-mix"][0][0] == 0:
        ax.axhline(curves["griffinlim-mix"][0][1], color=NAVY, ls=":", lw=1.2, label="mixture phase")
    iteration_axis(ax, counts)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("iterations")
    ax.set_ylabel("vocals SDR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center")
    return fig


def augment_figure(table: dict, base: str = "all-on") -> Figure:
    """Each augmentation variant's vocals SDR minus the default's at the same seed: bars the mean over seeds,
    dots the single seeds."""
    groups: dict = {}
    for r in table["rows"]:
        if (r.get("base") or r["variant"]) != base and (r.get("delta") or {}).get("vocals") is not None:
            groups.setdefault(variant_name(r), []).append(r["delta"]["vocals"])  # bars named in words
    names = sorted(groups, key=lambda n: np.mean(groups[n]))
    fig = _figure("r_augment")
    ax = fig.subplots()
    y = np.arange(len(names))
    means = [float(np.mean(groups[n])) for n in names]
    ax.barh(y, means, color=[ORANGE if m < 0 else NAVY for m in means], height=0.7)
    for i, n in enumerate(names):
        if len(groups[n]) > 1:
            ax.scatter(groups[n], [i] * len(groups[n]), color="black", s=16, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names)
    ax.set_xlabel("vocals SDR minus the reference recipe's (dB)")
    ax.grid(axis="x", alpha=0.3)
    return fig


LISTEN = (("true_vocals", "true vocals"), ("vocals-mixture_vocals", "mixture phase"),
          ("vocals-griffinlim_vocals", "Griffin-Lim, random"), ("vocals-misi_vocals", "MISI"),
          ("vocals-mel_vocals", "mel inversion"), ("vocals-vocoder_vocals", "vocoder"))


def listening_figure(track: Path, start: float = 1.0, dur: float = 4.0) -> Figure:
    """Spectrograms of one sample track's vocals, true and per phase method, 0-5 kHz, all in dB from the true
    vocals' peak: the same WAVs as the listening page."""
    import soundfile as sf


    clips = []
    for stem, label in LISTEN:
        f = track / f"{stem}.wav"
        if f.is_file():
            audio, rate = sf.read(f, dtype="float32", always_2d=True)
            clips.append((label, audio[int(start * rate): int((start + dur) * rate)], rate))
    if not clips:
        raise Hw2Error(f"{track}: none of {', '.join(s + '.wav' for s, _ in LISTEN)}; run the phase table's "
                       "command with --samples 1 or more")
    mags = [(label, magnitude(a), rate) for label, a, rate in clips]
    ref = mags[0][1].max()
    fig = _figure("r_listening")
    axes = fig.subplots(2, 3, sharex=True, sharey=True).ravel()
    for ax, (label, mag, rate) in zip(axes, mags):
        top = int(5000 / (rate / 2) * (mag.shape[0] - 1))
        db = 20 * np.log10(np.maximum(mag[:top], 1e-10) / ref)
        ax.imshow(db, origin="lower", aspect="auto", vmin=-70, vmax=0, cmap="magma",
                  extent=(start, start + dur, 0, 5))
        ax.set_title(label)
    for ax in axes[len(mags):]:
        ax.axis("off")
    for ax in axes[3:]:
        ax.set_xlabel("time (s)")
    for ax in axes[::3]:
        ax.set_ylabel("kHz")
    return fig


def save(fig: Figure, name: str, folder: Path, note: str | None = None) -> Path:
    """`<folder>/<name>.png` at DPI (its physical size recorded), and the note the report prints beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=DPI, facecolor="white")
    if note:
        with atomic_write(path.with_suffix(".txt")) as tmp:
            tmp.write_text(note + "\n", encoding="utf-8")
    return path


def build(root: Path, listening: Path | None = None, folder: Path | None = None, log=print) -> list[Path]:
    """Draw every report figure whose source file is under `root` into `folder` (default report/figures)."""
    folder = folder or root / "report" / "figures"

    def load(rel):
        p = root / rel
        if not p.is_file():
            log(f"skipped: no {rel}")
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            raise Hw2Error(f"{p}: not JSON; re-run the command that wrote it") from None

    jobs = [("r_loss", "checkpoints/history.json", loss_figure),
            ("r_iterations", "results/phase-sweep.json", iterations_figure),
            ("r_augment", "results/augment.json", augment_figure)]
    out = []
    with rc_context(STYLE):
        for name, rel, draw in jobs:
            data = load(rel)
            if data is not None:
                out.append(save(draw(data), name, folder))
        if listening is not None:
            tracks = sorted(d for d in Path(listening).iterdir() if d.is_dir()) if Path(listening).is_dir() else []
            if not tracks:
                raise Hw2Error(f"{listening}: no sample tracks; run the phase table's command (see the report's "
                               "Reproduce slide) with --samples 1")
            out.append(save(listening_figure(tracks[0]), "r_listening", folder, note=tracks[0].name))
    for p in out:
        log(f"wrote {p}")
    return out


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m hw2.figures", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listening", metavar="SAMPLES", help="a samples folder of hw2/infer.py (its first track)")
    p.add_argument("--root", default=str(ROOT), help="folder holding results/ and checkpoints/")
    args = p.parse_args(argv)
    return run_cli(lambda: build(Path(args.root).resolve(), Path(args.listening) if args.listening else None))


if __name__ == "__main__":
    sys.exit(main())
