"""The TA's command: separate MUSDB tracks with a trained checkpoint, print the museval SDR, write listening WAVs.

    python hw2/infer.py --musdb-root PATH                       # the test set, shipped checkpoint, mixture phase
    python hw2/infer.py --musdb-root PATH --phase mixture griffinlim --samples 3
    python hw2/infer.py --musdb-root PATH --subset train --split valid --references
    python hw2/infer.py                                         # no MUSDB at hand: stempeg's bundled MUSDB track

Prints the SDR table (median over 1-second frames, then over tracks) and writes, under --out:
`<name>.json` and `<name>.md` (the table), `<name>/<row>/<subset>/<track>.json` (museval's per-track scores) and
`<name>/samples/<track>/*.wav` (mixture, true stems and estimates per checkpoint and method) with
`<name>/samples/index.html`, a page that plays them from the folder (`hw2.listening`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # run as `python hw2/infer.py`: import hw2 as a package, not this folder's modules as top-level ones
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from hw2 import Hw2Error, OneLineParser, atomic_write, run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "vocals.pt"
DEFAULT_VOCODER = REPO / "checkpoints" / "vocoder.pt"


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
    p.add_argument("--scorer", default="hw2", choices=("hw2", "museval"),
                   help="BSSEval v4: hw2 (museval's numbers, bounded memory) or museval itself (if installed)")
    p.add_argument("--jobs", type=int, default=None,
                   help="scoring worker processes (default: the machine's CPU count; numbers identical to 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--vocoder", default=str(DEFAULT_VOCODER),
                   help="vocoder checkpoint of the vocoder phase method (python -m hw2.vocoder)")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    p.add_argument("--misi-iters", type=int, default=8, help="MISI iterations (--phase misi)")
    p.add_argument("--misi-fixed", action="store_true",
                   help="MISI returns the given magnitudes, not those refined to add up to the mixture")
    p.add_argument("--n-mels", type=int, default=128, help="mel bands (--phase mel)")
    p.add_argument("--mel-iters", type=int, default=32, help="Griffin-Lim iterations after the mel inversion")
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
    """Check every track, then per track: decode, separate one method at a time, score; tracks already scored
    by an earlier run of the same command (same checkpoint file, method and settings) are reused.

    Memory on a long track (a 10-minute track has n = 26.5 M samples): the int16 mixture (4n bytes, 0.1 GB) and one
    method's float32 estimates (16n, 0.42 GB), plus either one separation block (`Separator`, about 0.3 GB
    whatever the track's length) or, while scoring, the float32 references vocals and accompaniment (16n, 0.42 GB)
    and the scorer's own arrays; everything else is freed method by method and track by track.
    """
    from tqdm.auto import tqdm

    from hw2 import listening, remove_stale_temporaries
    from hw2.data import bad_tracks_message, check_tracks, describe_dataset, detect_format, open_tracks, read_stem
    from hw2.evaluate import Evaluation, markdown_table, row_slug, write_results
    from hw2.separate import Separator, references
    from hw2.train import resolve_device

    if args.jobs is None:
        args.jobs = os.cpu_count() or 1
    if args.jobs < 1 or args.n_mels < 1 or min(args.samples, args.gl_iters, args.max_tracks, args.misi_iters,
                                                args.mel_iters) < 0:
        raise Hw2Error("--jobs and --n-mels must be at least 1; --samples, --gl-iters, --misi-iters, --mel-iters "
                       "and --max-tracks at least 0")
    if args.scorer == "museval" and importlib.util.find_spec("museval") is None:
        raise Hw2Error("--scorer museval needs museval, which the TA's requirements leave out: pip install museval "
                       "(or keep the default --scorer hw2, which gives museval's numbers)")
    device = resolve_device(args.device)
    separators = [Separator.from_checkpoint(c, device, gl_iters=args.gl_iters, misi_iters=args.misi_iters,
                                            misi_refine=not args.misi_fixed, n_mels=args.n_mels,
                                            mel_iters=args.mel_iters) for c in args.checkpoint]
    if "vocoder" in args.phase:
        for sep in separators:
            sep.load_vocoder(args.vocoder)
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
        log("no --musdb-root: running on the MUSDB18 track bundled with stempeg (7 s, not the test set); "
            "pass --musdb-root PATH for the 50 test tracks")
    tracks = open_tracks(root, subset, split)
    if args.max_tracks:
        tracks = tracks[: args.max_tracks]
    durations, problems = check_tracks(tracks)  # before any work: a bad track 48 must not cost 47 tracks' time
    if problems:
        raise Hw2Error(bad_tracks_message(problems))
    for sep in separators:
        log(f"{sep.name}: epoch {sep.epoch}, {sum(p.numel() for p in sep.model.parameters()):,} parameters")

    identities = [_identity(c, sep) for c, sep in zip(args.checkpoint, separators)]
    ref_names = REFERENCE_ROWS + (("oracle-vocoder",) if "vocoder" in args.phase else ())
    evaluation = Evaluation(out, name, subset, args.jobs, {"scorer": args.scorer})
    rows_asked = [_row(sep, m, c) for sep, c in zip(separators, args.checkpoint) for m in args.phase] + \
        [_reference_row(m) for m in (ref_names if args.references else ())]
    for row in rows_asked:  # the table's rows in the order asked, whichever were scored by an earlier run
        evaluation.register(row)
    for folder in {out, *(evaluation.path(row, "x").parent for row in rows_asked)}:
        if folder.is_dir():
            remove_stale_temporaries(folder)  # left by a run killed while writing
    samples = out / name / "samples"
    bar = tqdm(total=round(sum(durations)), unit="s", desc="audio separated + scored", dynamic_ncols=True)
    resumed, done = 0, 0.0
    for i, (track, seconds) in enumerate(zip(tracks, durations)):
        step = round(done + seconds) - round(done)  # whole seconds on the bar, the total exact
        done += seconds
        bar.set_postfix_str(track.name[:40])
        todo = [(sep, ident, _row(sep, m, c), m) for sep, ident, c in zip(separators, identities, args.checkpoint)
                for m in args.phase]
        todo = [(sep, ident, row, m) for sep, ident, row, m in todo
                if not evaluation.resume(row, track.name, _method_identity({**ident, **sep.settings(m)}, m))]
        ref_rows = [_reference_row(m) for m in (ref_names if args.references else ())]
        ref_rows = [row for row in ref_rows if not evaluation.resume(row, track.name,
                                                                     _method_identity(identities[0], row["method"]))]
        if not todo and not ref_rows:
            resumed += 1
            bar.update(step)
            continue
        mixture = read_stem(track, "mixture")
        if i < args.samples:
            write_wav(samples / track.name / "mixture.wav", mixture.astype(np.float32) / 32768)
            for target, audio in _references(track, len(mixture))[0].items():  # the listening page's true stems
                write_wav(samples / track.name / f"true_{target}.wav", audio)
        # one method at a time, and the references decoded for its scoring only: the peak is the larger of
        # separation and scoring, not their sum
        for sep, ident, row, method in todo:
            est = sep.separate(mixture, [method], key=track.name)[method]
            refs, n = _references(track, len(mixture))
            evaluation.add(row, track.name, refs, {t: a[:n] for t, a in est.items()},
                           _method_identity({**ident, **sep.settings(method)}, method))
            del refs
            if i < args.samples:
                for target, audio in est.items():
                    write_wav(samples / track.name / f"{row_slug(row)}_{target}.wav", audio)
            del est
        if ref_rows:
            refs, n = _references(track, len(mixture))
            mix = mixture[:n].astype(np.float32) / 32768
            for method, est in references(mix, refs["vocals"], refs["accompaniment"],
                                          rows=[r["method"] for r in ref_rows], vocoder=separators[0].vocoder).items():
                evaluation.add(_reference_row(method), track.name, refs, est, _method_identity(identities[0], method))
            del mix, est, refs
        del mixture
        bar.update(step)
    bar.close()
    if resumed:
        log(f"{resumed} of {len(tracks)} tracks already scored by an earlier run of this command: reused")
    rows = evaluation.finish()
    if args.samples and tracks:
        listening.write_page(samples, rows, evaluation.path, title=f"Listening samples: {name}")
    data = {"root": str(args.musdb_root or "stempeg's example track"), "subset": subset, "split": split,
            "nb_tracks": len(tracks), "format": "wav" if detect_format(root) else "stem",
            "dataset": describe_dataset(root, tracks)}
    command = "python hw2/infer.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith("infer.py") else getattr(args, "command", "hw2.infer.run")
    title = "" if args.musdb_root else "museval SDR on stempeg's example track (one 7 s MUSDB18 excerpt, not the test set)"
    json_path, md_path = write_results(out, name, rows, data, command, title=title)
    log("\n" + markdown_table(rows) + "\n")
    if args.musdb_root:
        log(f"SDR in dB: median over 1 s frames per track, then median over {len(tracks)} tracks "
            f"({subset}{'/' + split if split else ''}).")
    else:
        log("SDR in dB on stempeg's example track (one 7 s MUSDB18 excerpt, not the test set): median over its "
            f"1 s frames. With {_display(DEFAULT_CHECKPOINT)} expect vocals {EXAMPLE_VOCALS_SDR:+.2f} dB with the "
            "mixture phase (README).")
    log(f"tables: {json_path}  {md_path}")
    log(f"per-track museval JSON: {out / name}/<row>/{subset}/")
    if args.samples and tracks:
        log(f"listening WAVs: {samples}/<track>/; open {samples}/index.html in a browser to play them")
    return rows


# vocals SDR of the shipped checkpoint on stempeg's example track, mixture phase: `python hw2/infer.py`
# (tests/test_infer.py checks it still holds)
EXAMPLE_VOCALS_SDR = -0.72
REFERENCE_ROWS = ("mix-as-estimate", "oracle-irm")


def _references(track, length: int) -> tuple[dict, int]:
    """({"vocals", "accompaniment": float32 (n, 2)}, n): the true targets, n the common length of them and the
    `length`-sample mixture (AAC streams may differ by a few samples; `check_tracks` has refused more than 1 s).

    One stem at a time, straight to int16 (never musdb's float64 copies), converted and added into the float32
    targets in blocks, so that at most one int16 stem lives beside them.
    """
    from hw2.data import BLOCK, blocks, read_stem

    refs, n = {}, length
    for target, stems in (("vocals", ("vocals",)), ("accompaniment", ("drums", "bass", "other"))):
        for stem in stems:
            pcm = read_stem(track, stem)
            n = min(n, len(pcm))
            ref = refs.setdefault(target, np.zeros(pcm.shape, np.float32))
            for _, lo, hi, _ in blocks(n, BLOCK):
                ref[lo:hi] += pcm[lo:hi] * np.float32(1 / 32768)
            del pcm
    return {t: r[:n] for t, r in refs.items()}, n


def _row(sep, method: str, checkpoint: str) -> dict:
    return {"label": f"{sep.name} / {method}", "checkpoint": _display(checkpoint), "epoch": sep.epoch,
            "method": method, "name": sep.name}


def _reference_row(method: str) -> dict:
    return {"label": f"reference / {method}", "checkpoint": None, "epoch": None, "method": method}


def _identity(path, sep) -> dict:
    """What a row's scores depend on besides the method: the checkpoint's bytes and the separation settings."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    out = {"checkpoint_sha1": h.hexdigest(), "gl_iters": sep.gl_iters, "seed": sep.seed,
           "blocks": [sep.chunk_frames, sep.context_frames, sep.wiener_win]}
    if sep.vocoder is not None:  # the vocoder method's rows are reused only if made with the same vocoder
        out["vocoder"] = hashlib.sha1(repr(sep.vocoder.cfg).encode() + b"".join(
            v.cpu().numpy().tobytes() for v in sep.vocoder.state_dict().values())).hexdigest()
    return out


def _method_identity(ident: dict, method: str) -> dict:
    """What one row's scores depend on: a reference row only on its method (and the oracle vocoder on the
    vocoder), a method on the separation `ident` (and the vocoder method on the vocoder)."""
    if method in REFERENCE_ROWS or method == "oracle-vocoder":
        ident = {"vocoder": ident.get("vocoder")} if method == "oracle-vocoder" else {}
    return {**{k: v for k, v in ident.items() if k != "vocoder" or "vocoder" in method}, "method": method}


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
