"""The TA's command: separate MUSDB tracks with a trained checkpoint, print the museval SDR, write listening WAVs.

    python hw2/infer.py --musdb-root PATH                       # the test set, shipped checkpoint, mixture phase
    python hw2/infer.py --musdb-root PATH --phase mixture griffinlim --samples 3
    python hw2/infer.py --musdb-root PATH --subset train --split valid --references
    python hw2/infer.py                                         # no MUSDB at hand: stempeg's bundled MUSDB track

Prints the SDR table (median over 1-second frames, then over tracks) and writes, under --out:
`<name>.json` and `<name>.md` (the table), `<name>/<row>/<subset>/<track>.json` (museval's per-track scores) and
`<name>/samples/<track>/*.wav` (mixture and estimates per checkpoint and method).
"""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # run as `python hw2/infer.py`: import hw2 as a package, not this folder's modules as top-level ones
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402

from hw2 import Hw2Error, OneLineParser, atomic_write, run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "vocals.pt"


def parser() -> argparse.ArgumentParser:
    from hw2.separate import METHODS

    p = OneLineParser(prog="python hw2/infer.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--musdb-root", default="", help="MUSDB18 or MUSDB18-HQ root; empty: stempeg's example track")
    p.add_argument("--subset", default="test", choices=("train", "test"))
    p.add_argument("--split", default=None, choices=("train", "valid"),
                   help="musdb's split of the train subset (valid: the 14 validation tracks)")
    p.add_argument("--checkpoint", nargs="+", default=[str(DEFAULT_CHECKPOINT)],
                   help="one or more checkpoints: one table row per checkpoint and method")
    p.add_argument("--phase", nargs="+", default=["mixture"], choices=METHODS, help="phase methods")
    p.add_argument("--references", action="store_true",
                   help="add the mix-as-estimate and oracle ideal-ratio-mask rows (from the true stems)")
    p.add_argument("--out", default="results", help="results folder")
    p.add_argument("--name", default="", help="results name (default: the subset and split, e.g. test)")
    p.add_argument("--samples", type=int, default=2, help="tracks to write listening WAVs for")
    p.add_argument("--jobs", type=int, default=1, help="scoring worker processes")
    p.add_argument("--scorer", default="hw2", choices=("hw2", "museval"),
                   help="BSSEval v4: hw2 (museval's numbers, bounded memory) or museval itself (if installed)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    p.add_argument("--max-tracks", type=int, default=0, help="only the first N tracks (0: all)")
    return p


def example_root() -> Path:
    """A MUSDB root in the temporary folder holding the one MUSDB18 track that ships inside the stempeg package
    (a link to it), made once and reused by later runs."""
    import stempeg

    src = Path(stempeg.example_stem_path())
    root = Path(tempfile.gettempdir()) / "hw2-example-musdb"
    link = root / "test" / src.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.unlink(missing_ok=True)  # a dangling link from another stempeg install
        os.symlink(src, link)
    return root


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise Hw2Error(f"{folder}: cannot write results here ({e.strerror}); pass --out a writable folder") from None


def write_wav(path: Path, audio, rate: int = 44100) -> None:
    import soundfile as sf

    with atomic_write(path) as tmp:
        sf.write(tmp, audio.clip(-1, 1), rate, subtype="PCM_16")


def run(args, log=print) -> list[dict]:
    from tqdm.auto import tqdm

    from hw2.data import CachedTrack, decode, describe_dataset, detect_format, open_tracks
    from hw2.evaluate import Evaluation, markdown_table, row_slug, write_results
    from hw2.separate import Separator, references
    from hw2.train import resolve_device

    if args.jobs < 1 or args.samples < 0 or args.gl_iters < 0 or args.max_tracks < 0:
        raise Hw2Error("--jobs must be at least 1; --samples, --gl-iters and --max-tracks at least 0")
    device = resolve_device(args.device)
    separators = [Separator.from_checkpoint(c, device, gl_iters=args.gl_iters) for c in args.checkpoint]
    for sep, row_name in zip(separators, _row_names(args.checkpoint)):
        sep.name = row_name  # distinct, or two checkpoints named best.pt would merge into one row
    out = Path(args.out)
    check_writable(out)
    if args.musdb_root:
        root, subset, split = Path(args.musdb_root), args.subset, args.split
        name = args.name or subset + (f"-{split}" if split else "")
    else:
        root, subset, split = example_root(), "test", None
        name = args.name or "example"
        log("no --musdb-root: running on the MUSDB18 track bundled with stempeg (7 s); "
            "pass --musdb-root PATH for the test set")
    tracks = open_tracks(root, subset, split)
    if args.max_tracks:
        tracks = tracks[: args.max_tracks]
    for sep in separators:
        log(f"{sep.name}: epoch {sep.epoch}, {sum(p.numel() for p in sep.model.parameters()):,} parameters")

    evaluation = Evaluation(out, name, subset, args.jobs, args.scorer)
    samples = out / name / "samples"
    bar = tqdm(tracks, desc="separating + museval", unit="track")
    for i, track in enumerate(bar):
        bar.set_postfix_str(track.name[:40])
        cached = CachedTrack(track.name, decode(track))
        mixture = cached.stem("mixture").T
        refs = {"vocals": cached.target("vocals").T, "accompaniment": cached.target("accompaniment").T}
        if i < args.samples:
            write_wav(samples / track.name / "mixture.wav", mixture)
        for sep in separators:
            estimates = sep.separate(mixture, args.phase, key=track.name)
            for method, est in estimates.items():
                row = {"label": f"{sep.name} / {method}", "checkpoint": _display(args.checkpoint[separators.index(sep)]),
                       "epoch": sep.epoch, "method": method, "name": sep.name}
                evaluation.add(row, track.name, refs, est)
                if i < args.samples:
                    for target, audio in est.items():
                        write_wav(samples / track.name / f"{row_slug(row)}_{target}.wav", audio)
        if args.references:
            for method, est in references(mixture, refs["vocals"], refs["accompaniment"]).items():
                row = {"label": f"reference / {method}", "checkpoint": None, "epoch": None, "method": method}
                evaluation.add(row, track.name, refs, est)
        del cached, mixture, refs
    rows = evaluation.finish()
    data = {"root": str(args.musdb_root or "stempeg example track"), "subset": subset, "split": split,
            "nb_tracks": len(tracks), "format": "wav" if detect_format(root) else "stem",
            "dataset": describe_dataset(root, tracks)}
    command = "python hw2/infer.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith("infer.py") else getattr(args, "command", "hw2.infer.run")
    json_path, md_path = write_results(out, name, rows, data, command)
    log("\n" + markdown_table(rows) + "\n")
    log(f"SDR in dB: median over 1 s frames per track, then median over {len(tracks)} tracks "
        f"({subset}{'/' + split if split else ''}).")
    log(f"tables: {json_path}  {md_path}")
    log(f"per-track museval JSON: {out / name}/<row>/{subset}/")
    if args.samples and tracks:
        log(f"listening WAVs: {samples}/<track>/")
    return rows


def _row_names(paths) -> list[str]:
    """A distinct row name per checkpoint: its file stem; with its folder where stems repeat (runs/a/best.pt and
    runs/b/best.pt -> a-best, b-best); numbered where even those repeat (one file passed twice)."""
    stems = [Path(p).stem for p in paths]
    names = [s if stems.count(s) == 1 else f"{Path(p).resolve().parent.name}-{s}" for p, s in zip(paths, stems)]
    return [n if names.count(n) == 1 else f"{n}-{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def _display(path: str) -> str:
    """A checkpoint path as it should appear in tables: relative to the repository when inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run_cli(lambda: run(args), "interrupted: no results table was written")


if __name__ == "__main__":
    sys.exit(main())
