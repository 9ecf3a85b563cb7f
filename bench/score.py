"""Benchmark of scoring: hw2.bsseval against museval.evaluate itself, side by side on the same generated tracks.

For each --duration, each scorer runs in its own Python process on the same track (hw2.synth.make_stems, a
20 s piece tiled, on the 16-bit grid as MUSDB's stems; estimates: 0.9 vocals + 0.1 accompaniment + noise, and the
mixture minus that), BSSEval v4 with 1 s frames for vocals and accompaniment, as `hw2.evaluate.score_track` calls
it. Printed per track and scorer: wall and CPU seconds, the peak resident set while scoring (VmHWM, reset just
before) and the resident set before (interpreter, inputs: float32 references and estimates); then the largest
absolute difference per metric over all frames (NaN frames must coincide) and the speed ratio.

    python bench/score.py                        # 60 s and 240 s, one thread
    python bench/score.py --duration 600 --scorers hw2             # the peak-memory track, hw2 alone
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.memory import peak_mb, reset_peak, status_mb  # noqa: E402

RATE = 44100
PIECE_DUR = 20.0
METRICS = ("SDR", "ISR", "SIR", "SAR")


def track(duration: float):
    """references, estimates: float32 (2, nb_samples, 2) (vocals, accompaniment), filled a piece at a time."""
    import numpy as np

    from hw2.synth import make_stems

    stems = make_stems(seed=0, duration=min(duration, PIECE_DUR))
    piece = stems.shape[1]
    n = int(round(duration * RATE))
    refs, ests = np.empty((2, n, 2), np.float32), np.empty((2, n, 2), np.float32)
    rng = np.random.default_rng(1)
    # references on the 16-bit grid, as MUSDB's stems are decoded (see hw2.bsseval on float32-exact panning)
    q16 = lambda x: np.round(x * 32768) / 32768  # noqa: E731
    vocals, accompaniment = q16(stems[4]), q16(stems[1] + stems[2] + stems[3])
    for s in range(0, n, piece):
        e = min(n, s + piece)
        v, a = vocals[:e - s], accompaniment[:e - s]
        refs[0, s:e], refs[1, s:e] = v, a
        ests[0, s:e] = 0.9 * v + 0.1 * a + 1e-3 * rng.standard_normal(v.shape, np.float32)
        ests[1, s:e] = v + a - ests[0, s:e]
    return refs, ests


def worker(spec: dict) -> dict:
    import numpy as np

    refs, ests = track(spec["duration"])
    if spec["scorer"] == "museval":
        import museval

        score = lambda r, e: museval.evaluate(r, e, win=RATE, hop=RATE)  # noqa: E731
    else:
        import torch

        from hw2 import bsseval

        torch.set_num_threads(spec["threads"] or torch.get_num_threads())
        score = lambda r, e: bsseval.evaluate(r, e, win=RATE, hop=RATE, device=spec["device"])  # noqa: E731
    score(refs[:, :2 * RATE], ests[:, :2 * RATE])  # first-call costs out of the timing
    before = status_mb("VmRSS")
    reset = reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    out = score(refs, ests)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_mb()
    np.save(spec["save"], np.stack(out))
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "before_mb": before, "peak_mb": peak,
            "peak_is_scoring_only": reset, "inputs_mb": (refs.nbytes + ests.nbytes) / 2**20}


def measure(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: {spec['scorer']} on {spec['duration']:g} s failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/score.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, nargs="+", default=[60.0, 240.0], help="track lengths in seconds")
    p.add_argument("--scorers", nargs="+", default=["museval", "hw2"], choices=("museval", "hw2"))
    p.add_argument("--device", default="cpu", help="torch device of the hw2 scorer (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1, help="threads of every scorer (0: the libraries' defaults)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.threads:  # children inherit it: BLAS, FFT and torch read it at start
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import numpy as np

    cpu = platform.processor() or platform.machine()
    print(f"bench/score.py: BSSEval v4, vocals + accompaniment, 1 s frames; hw2 device {args.device}, "
          f"{args.threads or 'default'} thread(s), {os.cpu_count()} CPUs ({cpu}); "
          f"generated tracks (a {PIECE_DUR:g} s piece tiled), float32 inputs\n")
    print("| track s | scorer | wall s | CPU s | peak RSS MiB | RSS before MiB (inputs) | added by scoring MiB | "
          "speed-up (CPU s) | " +
          " | ".join(f"max abs diff {m} dB" for m in METRICS) + " | NaN frames |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(METRICS) + "---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for duration in args.duration:
            res = {}
            for scorer in args.scorers:
                print(f"measuring: {scorer}, {duration:g} s ...", file=sys.stderr, flush=True)
                save = str(Path(tmp) / f"{scorer}.npy")
                res[scorer] = measure({"scorer": scorer, "duration": duration, "device": args.device,
                                       "threads": args.threads, "save": save})
                res[scorer]["values"] = np.load(save)
            for scorer, r in res.items():
                cells = ["-"] * (len(METRICS) + 2)
                if scorer == "hw2" and "museval" in res:
                    a, b = r["values"], res["museval"]["values"]
                    nan_same = bool((np.isnan(a) == np.isnan(b)).all())
                    both = ~np.isnan(a) & ~np.isnan(b)
                    cells = [f"{res['museval']['cpu_seconds'] / r['cpu_seconds']:.1f}x"]
                    cells += [f"{np.abs(a[m] - b[m])[both[m]].max(initial=0):.2e}" for m in range(len(METRICS))]
                    cells += [f"{int(np.isnan(a[0]).sum())} ({'same' if nan_same else 'DIFFERENT'})"]
                elif scorer == "museval":
                    cells = ["1.0x"] + ["-"] * len(METRICS) + [str(int(np.isnan(r["values"][0]).sum()))]
                print(f"| {duration:g} | {scorer} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                      f"{r['peak_mb']:,.0f} | {r['before_mb']:,.0f} ({r['inputs_mb']:,.0f}) | "
                      f"{r['peak_mb'] - r['before_mb']:,.0f} | " + " | ".join(cells) + " |", flush=True)
    print("\nSpeed-up: museval's CPU seconds over hw2's (CPU time: the machine may be shared; wall time beside it). "
          "Peak RSS: the scoring process's peak resident set while scoring (reset just before); it includes what was "
          "resident before the call (interpreter, libraries and the float32 inputs, whose size is in brackets).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
