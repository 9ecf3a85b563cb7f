"""Iteration and mel-band sweeps of the phase methods, and the figures of the phase comparison.

    python -m hw2.phase --musdb-root PATH --subset train --split valid
    python -m hw2.phase --musdb-root PATH --phase-from checkpoints/complex/tfctdf-wave.pt   # a predicted phase

For every track, the shipped checkpoint's magnitudes get each iterative phase method (`hw2.separate`) once, at the
largest iteration count, keeping the estimates at the smaller counts on the way (one run per method gives the
whole curve): Griffin-Lim from a random phase and from the mixture phase, MISI with its refined and with its fixed
magnitudes (0 iterations of the fixed one is the mixture phase), and the mel inversion at several numbers of mel
bands. Each estimate is scored with museval's SDR (median over 1 s frames) and the spectral convergence SC
(`hw2.evaluate.magnitude_distances`); rows are medians over tracks. Writes `<out>/phase-sweep.md` (the table),
`<out>/phase-sweep.json` (committed: the report reads it) and the figures 06_phase_iterations and 06_phase_spectrograms (report/figures).

`--phase-from CKPT` asks instead whether a complex network's predicted phase (`hw2.model.TFCTDFNet`) is worth more
than the mixture's on another model's magnitudes: the checkpoint's magnitudes with the mixture phase, the same
magnitudes with the network's phase (each source the phase of the network's estimate of it; the mixture's above
the network's band), and the network alone with its own phase. Writes `<out>/phase-transfer.md` and `.json`.

Each track is one window (no blocks): meant for short tracks such as the 7-s preview's, which `Separator` also
runs as one window, so that the 32-iteration points are the numbers `hw2/infer.py` gives.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from hw2 import RATE, Hw2Error, OneLineParser, atomic_write_text, run_cli
from hw2.cache import open_cached
from hw2.checkpoint import load_checkpoint, model_from_checkpoint
from hw2.evaluate import magnitude_distances, median_of_medians, score_model, score_track, track_medians
from hw2.infer import _references, write_wav
from hw2.model import phase_ratio
from hw2.plots import plot_phase_spectrograms, save_figure
from hw2.score_plots import plot_iteration_sweep
from hw2.reconstruct import griffinlim, mel_filters, mel_inverse, misi
from hw2.separate import Separator, estimates
from hw2.tracks import TARGETS, describe_dataset, open_tracks, read_stem

ITERATIONS = (0, 2, 8, 32)
MEL_BANDS = (64, 128, 512)
MEL_ITERATIONS = (32,)
REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def track_sweep(sep, mixture: np.ndarray, key: str, iterations=ITERATIONS, mel_bands=MEL_BANDS,
                mel_iterations=MEL_ITERATIONS) -> dict:
    """{(label, iterations): {target: (nb_timesteps, nb_channels) float32}} for one track, mixture float
    (nb_timesteps, nb_channels). Random phases come from `sep`'s generators, as in `Separator.separate`."""

    audio = torch.from_numpy(np.ascontiguousarray(mixture.T, dtype=np.float32))
    length, stft = audio.shape[-1], sep.stft
    X = stft(audio)
    V, A, _, _ = estimates(sep.model, X)  # a blend's accompaniment network included; a complex model's magnitudes
    mags = torch.stack([V, A], 1)  # (nb_channels, 2, nb_bins, nb_frames)
    waves: dict = {}

    def put(label, n, j, ch, wave):
        waves.setdefault((label, n), np.zeros((2, length, X.shape[0]), np.float32))[j, :, ch] = wave.numpy()

    gens = {}
    for j, target in enumerate(TARGETS):
        for method in ("griffinlim", "griffinlim-mix", "mel"):
            gens[method, target] = sep._generator(f"{key}|{target}")
    for ch in range(X.shape[0]):
        snaps = dict.fromkeys(iterations)
        misi(mags[ch], X[ch], stft, length, max(iterations), snapshots=snaps)
        for n, (refined, fixed) in snaps.items():
            for j in range(2):
                put("misi", n, j, ch, refined[j])
                put("misi-fixed", n, j, ch, fixed[j])
        for j, target in enumerate(TARGETS):
            for method in ("griffinlim", "griffinlim-mix"):
                snaps = dict.fromkeys(iterations)
                griffinlim(mags[ch, j], stft, length, max(iterations), init=X[ch] if method == "griffinlim-mix"
                           else None, generator=gens[method, target], snapshots=snaps)
                for n, w in snaps.items():
                    put(method, n, j, ch, w)
    for n_mels in mel_bands:
        fb = mel_filters(sep.model.cfg.rate, stft.n_fft, n_mels)
        pinv = torch.linalg.pinv(fb.double()).float()
        for j, target in enumerate(TARGETS):
            gen = sep._generator(f"{key}|{target}")
            for ch in range(X.shape[0]):
                snaps = dict.fromkeys(mel_iterations)
                mel_inverse(mags[ch, j], stft, length, fb, max(mel_iterations), generator=gen, snapshots=snaps,
                            pinv=pinv)
                for n, w in snaps.items():
                    put(f"mel-{n_mels}", n, j, ch, w)
    return {k: dict(zip(TARGETS, v)) for k, v in waves.items()}


LABELS = {"griffinlim": "Griffin-Lim, random init", "griffinlim-mix": "Griffin-Lim, mixture init",
          "misi": "MISI, refined magnitudes", "misi-fixed": "MISI, fixed magnitudes"}


def run(args, log=print) -> list[dict]:

    torch.set_num_threads(max(1, args.threads))
    sep = Separator.from_checkpoint(args.checkpoint)
    tracks = open_tracks(Path(args.musdb_root), args.subset, args.split)[: args.max_tracks or None]
    if not tracks:
        raise Hw2Error(f"{args.musdb_root}: no tracks in {args.subset}/{args.split}; check --musdb-root")
    per_track: dict = {}
    for i, track in enumerate(tracks):
        mixture = read_stem(track, "mixture").astype(np.float32) / 32768
        if len(mixture) > sep.chunk_frames * sep.stft.n_hop:
            raise Hw2Error(f"{track.name}: longer than one separation block ({len(mixture) / RATE:.0f} s); the "
                           "sweep runs whole tracks in one window: use short tracks (the 7-s preview) or --max-tracks")
        refs, n = _references(track, len(mixture))
        for (label, iters), est in track_sweep(sep, mixture, track.name, args.iterations, args.mel_bands,
                                               args.mel_iterations).items():
            est = {t: a[:n] for t, a in est.items()}
            med = track_medians(score_track(track.name, refs, est))
            for t in TARGETS:
                med[t]["SC"] = magnitude_distances(refs[t], est[t], sep.stft.n_fft, sep.stft.n_hop)["SC"]
            per_track.setdefault((label, iters), []).append(med)
        log(f"{i + 1}/{len(tracks)} {track.name}")
    rows = [{"method": label, "iterations": iters, "scores": median_of_medians(meds), "nb_tracks": len(meds)}
            for (label, iters), meds in sorted(per_track.items())]
    command = "python -m hw2.phase " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    data = (f"{describe_dataset(args.musdb_root, tracks)} ({args.musdb_root}), {args.subset} subset, {args.split} "
            f"split, {len(tracks)} tracks")
    out = Path(args.out)
    (out / "phase").mkdir(parents=True, exist_ok=True)

    # beside the other results tables (results/*.json are committed; results/*/ are not): the report reads it
    atomic_write_text(out / "phase-sweep.json", json.dumps(
        {"title": "Phase methods against iterations and mel bands", "command": command, "rows": rows,
         "data": {"root": str(args.musdb_root), "subset": args.subset, "split": args.split,
                  "nb_tracks": len(tracks), "dataset": describe_dataset(args.musdb_root, tracks)}}, indent=2))
    lines = ["| method | iterations | vocals SDR | accompaniment SDR | vocals SC | accompaniment SC |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["scores"]
        lines.append(f"| {r['method']} | {r['iterations']} | {s['vocals']['SDR']:.2f} | "
                     f"{s['accompaniment']['SDR']:.2f} | {s['vocals']['SC']:.3f} | {s['accompaniment']['SC']:.3f} |")
    atomic_write_text(out / "phase-sweep.md", "# Phase methods against iterations and mel bands\n\n"
                      + "\n".join(lines) + f"\n\nData: {data}. SDR: museval BSSEval v4, median over 1 s frames, then "
                      f"over tracks (dB). SC: spectral convergence of the STFT magnitudes (n_fft {sep.stft.n_fft}, hop "
                      f"{sep.stft.n_hop}, the model's), "
                      "median over tracks, lower is better. misi-fixed at 0 iterations is the mixture phase; mel-N: "
                      f"N mel bands.\n\nCommand: `{command}`\n")

    curve = lambda label: [{"iterations": r["iterations"], **{t: r["scores"][t]["SDR"] for t in TARGETS}}  # noqa: E731
                           for r in rows if r["method"] == label]
    mixture_phase = next(r["scores"] for r in rows if r["method"] == "misi-fixed" and r["iterations"] == 0)
    fig = plot_iteration_sweep({LABELS[m]: curve(m) for m in LABELS},
                               baselines={"mixture phase": {t: mixture_phase[t]["SDR"] for t in TARGETS}})
    save_figure(fig, "06_phase_iterations", f"Data: {data}; shipped checkpoint. Median of medians SDR. "
                f"Command: {command}")

    # one excerpt per method: the first track, every method of hw2.separate at its defaults
    track = tracks[args.example]
    mixture = read_stem(track, "mixture").astype(np.float32) / 32768
    methods = ("mixture", "griffinlim", "griffinlim-mix", "wiener", "misi", "mel")
    est = sep.separate(mixture, methods, key=track.name)
    refs, _ = _references(track, len(mixture))
    fig = plot_phase_spectrograms({"true vocals": refs["vocals"], **{m: est[m]["vocals"] for m in methods}},
                                  start=1.0, dur=4.0, title=f"{track.name}: vocals by phase method")
    save_figure(fig, "06_phase_spectrograms", f"{track.name} ({describe_dataset(args.musdb_root, tracks)}, "
                f"{args.split} split), 1-5 s, "
                f"vocals; shipped checkpoint, each method at its defaults. Command: {command}")
    for m in methods:
        write_wav(out / "phase" / "samples" / track.name / f"{m}_vocals.wav", est[m]["vocals"])
    log((out / "phase-sweep.md").read_text())
    return rows


class PhaseFrom(torch.nn.Module):
    """`model`'s magnitudes with `donor`'s phase, as a complex model (`complex_output`) whose `network` method the
    `Separator` runs: vocals |V| Vd / |Vd|, accompaniment |A| Ad / |Ad|, where V, A are `model`'s estimates and
    Vd, Ad the complex `donor`'s (Ad = X - Vd; the mixture's phase where Vd is 0, above the donor's band)."""
    complex_output = True

    def __init__(self, model, donor):
        super().__init__()
        if not getattr(donor, "complex_output", False):
            raise Hw2Error("--phase-from takes a complex model's checkpoint (python -m hw2.train --arch tfctdf)")
        if (donor.cfg.n_fft, donor.cfg.n_hop) != (model.cfg.n_fft, model.cfg.n_hop):
            raise Hw2Error("--phase-from: the two checkpoints use different STFTs; train them with the same "
                           "--n-fft and --n-hop")
        self.model, self.donor, self.cfg, self.stft = model, donor, model.cfg, model.stft

    def targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture complex spectrogram (nb_samples, nb_channels, nb_bins, nb_frames) -> (vocals, accompaniment)
        complex spectrograms, same shape."""
        vd, ad = self.donor.targets(x)
        vd = torch.where(vd.abs() > 0, vd, x)  # above the band: the mixture's phase
        m = self.model
        v, a = m.targets(x) if getattr(m, "complex_output", False) else m.targets(x.abs())
        return phase_ratio(v.abs(), vd) * vd, phase_ratio(a.abs(), ad) * ad


@torch.no_grad()
def transfer(args, log=print) -> list[dict]:
    """Rows (mixture phase, the donor's phase, the donor alone) scored on the valid tracks; writes
    <out>/phase-transfer.md / .json."""
    torch.set_num_threads(max(1, args.threads))
    model, donor = (model_from_checkpoint(load_checkpoint(p), p)[0].eval() for p in (args.checkpoint, args.phase_from))
    tracks = open_cached(args.musdb_root, args.subset, args.split)[: args.max_tracks or None]
    if not tracks:
        raise Hw2Error(f"{args.musdb_root}: no tracks in {args.subset}/{args.split}; check --musdb-root")
    runs = {"mixture": (model, "mixture"), "network": (PhaseFrom(model, donor), "network"),
            "donor": (donor, "network")}
    rows = []
    for label, (net, method) in runs.items():
        rows.append({"phase": label, "scores": score_model(net, tracks, method=method)})
        log(f"{label}: vocals {rows[-1]['scores']['vocals']:.2f} dB, accompaniment "
            f"{rows[-1]['scores']['accompaniment']:.2f} dB")
    command = "python -m hw2.phase " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    dataset = describe_dataset(args.musdb_root, tracks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "phase-transfer.json", json.dumps(
        {"title": "A predicted phase on another model's magnitudes", "command": command, "rows": rows,
         "checkpoint": str(args.checkpoint), "phase_from": str(args.phase_from),
         "data": {"root": str(args.musdb_root), "subset": args.subset, "split": args.split,
                  "nb_tracks": len(tracks), "dataset": dataset}}, indent=2))
    words = {"mixture": f"`{args.checkpoint}`'s magnitudes, mixture phase",
             "network": f"`{args.checkpoint}`'s magnitudes, `{args.phase_from}`'s phase",
             "donor": f"`{args.phase_from}` alone, its own phase"}
    lines = ["| estimate | vocals SDR | accompaniment SDR |", "|---|---:|---:|"]
    lines += [f"| {words[r['phase']]} | {r['scores']['vocals']:.2f} | {r['scores']['accompaniment']:.2f} |"
              for r in rows]
    atomic_write_text(out / "phase-transfer.md", "# A predicted phase on another model's magnitudes\n\n"
                      + "\n".join(lines) + f"\n\nData: {dataset} ({args.musdb_root}), {args.subset} subset, "
                      f"{args.split} split, {len(tracks)} tracks. SDR: museval BSSEval v4, median over 1 s frames, "
                      f"then over tracks (dB). The network's phase for each source is that of its own estimate of "
                      f"it (the accompaniment: the mixture minus its vocals), the mixture's above its band."
                      f"\n\nCommand: `{command}`\n")
    return rows


def parser():
    p = OneLineParser(prog="python -m hw2.phase", description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", required=True)
    p.add_argument("--subset", default="train", choices=("train", "test"))
    p.add_argument("--split", default="valid", choices=("train", "valid"))
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "vocals.pt"))
    p.add_argument("--out", default="results")
    p.add_argument("--max-tracks", type=int, default=0, help="only the first N tracks (0: all)")
    p.add_argument("--phase-from", metavar="CKPT", help="a complex model: score its phase on --checkpoint's "
                   "magnitudes against the mixture phase (phase-transfer table), instead of the sweep")
    p.add_argument("--example", type=int, default=0, help="the track (index) of the spectrogram figure")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--iterations", type=int, nargs="+", default=list(ITERATIONS),
                   help="iteration counts of Griffin-Lim and MISI")
    p.add_argument("--mel-bands", type=int, nargs="+", default=list(MEL_BANDS), help="mel bands of the mel inversion")
    p.add_argument("--mel-iterations", type=int, nargs="+", default=list(MEL_ITERATIONS),
                   help="Griffin-Lim iterations after the mel inversion")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run_cli(lambda: transfer(args) if args.phase_from else run(args), "interrupted: no table was written")


if __name__ == "__main__":
    sys.exit(main())
