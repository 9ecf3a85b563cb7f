"""Benchmark of the TA's whole run on one full-length track: decode, separate and score, as real-time factors,
with the peak memory of one job.

The track is a real MUSDB18 `.stem.mp4` looped to --duration seconds by stream copy (all five stems, nothing
re-encoded; default: the MUSDB18 excerpt that ships with stempeg), in a MUSDB root of its own. One worker process
then runs `hw2/infer.py`'s own steps in order, as the TA's command does for each track:

    decode mixture         `tracks.read_stem`: the mixture straight to int16
    separate / <method>    `Separator.separate` for that method alone (infer.py's order: one method at a time)
    decode references      `infer._references`: vocals and accompaniment to float32, one int16 stem at a time
    score / <method>       `evaluate.score_track` on the estimates (museval BSSEval v4, 1 s frames)

Peak RSS is the process's peak resident set so far (getrusage), measured after each step: the last row is the
peak of the whole per-track path with one job. --no-score leaves scoring out (decoding plus separation alone).

    python bench/infer.py                                       # 600 s, mixture and griffinlim, scoring included
    python bench/infer.py --duration 600 --no-score             # the memory of decoding + separation
    python bench/infer.py --source PATH.stem.mp4 --duration 300 --methods mixture --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.memory import peak_mb  # noqa: E402

DEFAULT_CHECKPOINT = REPO / "checkpoints" / "vocals.pt"
TEST_AUDIO_S = 12_600  # MUSDB18's 50 test tracks: about 3.5 hours


def make_root(source: Path, duration: float, folder: Path) -> Path:
    """A MUSDB root with one test track: `source` looped to `duration` seconds (stream copy of the 5 stems)."""
    dst = folder / "test" / f"Looped - {duration:g} s.stem.mp4"
    dst.parent.mkdir(parents=True, exist_ok=True)
    reps = 1 + int(duration // 5)  # MUSDB18 excerpts are at least 5 s
    maps = [a for i in range(5) for a in ("-map", f"0:{i}")]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(reps), "-i", str(source), *maps,
                    "-t", f"{duration:g}", "-c", "copy", str(dst)], check=True)
    return folder


def track_flags(p: argparse.ArgumentParser) -> None:
    """--source, --duration and --checkpoint: the looped track and the model, as bench/ta_command.py takes them too."""
    p.add_argument("--source", default="", help="a MUSDB18 .stem.mp4 to loop (default: stempeg's example track)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of the looped track")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))


def worker(spec: dict) -> dict:
    """The TA's per-track path in this process, step by step: rows of (step, wall seconds, peak MiB)."""
    import torch

    from hw2.evaluate import score_track, track_medians
    from hw2.infer import _references
    from hw2.checkpoint import resolve_device
    from hw2.separate import Separator
    from hw2.tracks import check_tracks, open_tracks, read_stem

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    sep = Separator.from_checkpoint(spec["checkpoint"], resolve_device(spec["device"]), gl_iters=spec["gl_iters"])
    (track,) = open_tracks(spec["root"], "test")
    (seconds,), problems, _ = check_tracks([track])
    assert not problems, problems
    rows = [("start (interpreter, torch, model)", 0.0, peak_mb())]
    t0 = time.perf_counter()
    mixture = read_stem(track, "mixture")
    rows.append(("decode mixture (int16)", time.perf_counter() - t0, peak_mb()))
    sdr = {}
    for method in spec["methods"]:  # as infer.run does per track
        t0 = time.perf_counter()
        est = sep.separate(mixture, [method], key=track.name)[method]
        rows.append((f"separate / {method}", time.perf_counter() - t0, peak_mb()))
        if spec["score"]:
            t0 = time.perf_counter()
            refs, n = _references(track, len(mixture))
            rows.append(("decode references (float32)", time.perf_counter() - t0, peak_mb()))
            t0 = time.perf_counter()
            scores = score_track(track.name, refs, {t: a[:n] for t, a in est.items()})
            rows.append((f"score / {method}", time.perf_counter() - t0, peak_mb()))
            sdr[method] = track_medians(scores)["vocals"]["SDR"]
            del refs
        del est
    return {"rows": rows, "seconds": seconds, "nb_samples": len(mixture), "sdr": sdr,
            "torch_threads": torch.get_num_threads(), "device": str(sep.device)}


def main(argv=None) -> int:
    import stempeg

    p = argparse.ArgumentParser(prog="python bench/infer.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    track_flags(p)
    p.add_argument("--methods", nargs="+", default=["mixture", "griffinlim"], help="phase methods, in order")
    p.add_argument("--gl-iters", type=int, default=32)
    p.add_argument("--no-score", action="store_true", help="decoding and separation only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if shutil.which("ffmpeg") is None:
        print("error: ffmpeg not found on PATH: install it", file=sys.stderr)
        return 2

    source = Path(args.source or stempeg.example_stem_path())
    with tempfile.TemporaryDirectory(prefix="hw2-bench-infer-") as tmp:
        root = make_root(source, args.duration, Path(tmp))
        spec = {"root": str(root), "checkpoint": args.checkpoint, "device": args.device, "threads": args.threads,
                "gl_iters": args.gl_iters, "methods": args.methods, "score": not args.no_score}
        env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                           capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"error: the measurement failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}",
              file=sys.stderr)
        return 1
    res = json.loads(r.stdout.strip().splitlines()[-1])
    dur = res["seconds"]
    print(f"\nbench/infer.py: {args.checkpoint}; {source.name} looped to {dur:.0f} s ({res['nb_samples']:,} samples); "
          f"device {res['device']}, {res['torch_threads']} torch threads, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}); one job\n")
    print("| step | wall s | real-time factor | peak RSS so far, MiB |")
    print("|---|---:|---:|---:|")
    for step, sec, peak in res["rows"]:
        print(f"| {step} | {sec:.1f} | {sec / dur:.3f} | {peak:,.0f} |")
    total = sum(sec for _, sec, _ in res["rows"])
    print(f"\nwhole path: {total:.0f} s for {dur:.0f} s of audio, real-time factor {total / dur:.3f}; at that rate "
          f"the 50 MUSDB18 test tracks ({TEST_AUDIO_S / 3600:.1f} h of audio) take {total / dur * TEST_AUDIO_S / 3600:.1f} h "
          "with one job." + (" Vocals SDR of the looped track: " + ", ".join(f"{m} {v:.2f} dB" for m, v in
                                                                            res["sdr"].items()) if res["sdr"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
