"""Benchmark of the TA's inference path: how long separating and scoring one track takes, and how much memory.

Measures, on a generated track (hw2.synth.make_stems, a 20 s piece tiled to the length asked for):

    separate / <method>   wall seconds of `Separator.separate` for each phase method (default: mixture and
                          griffinlim with 32 iterations) on a --duration track, as a real-time factor
                          (processing seconds / audio seconds; below 1 is faster than real time)
    museval               wall seconds of `hw2.evaluate.score_track` (BSSEval v4, vocals + accompaniment, 1 s
                          frames) on that track's mixture-phase estimates: the scoring cost per track in infer.py
    peak memory           peak resident set (VmHWM) while separating a --long-duration track with the mixture
                          method, and the resident set just before (process, model, track): skip with --skip-long

Each measurement runs in its own Python process, so one measurement's memory or warm caches never leak into
another's; each process warms the model up on 1 s of audio before timing. The checkpoint's model is used as is
(an untrained model of the same config is exactly as fast).

    python bench/separate.py                                  # checkpoints/vocals.pt, else a fresh default model
    python bench/separate.py --checkpoint runs/vocals/best.pt --duration 60 --skip-long
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.memory import peak_mb, reset_peak, status_mb  # noqa: E402

DEFAULT_CHECKPOINT = REPO / "checkpoints" / "vocals.pt"
RATE = 44100
PIECE_DUR = 20.0  # seconds generated; longer tracks tile it (generating 600 s directly needs gigabytes)


# ------------------------------------------------------------------------------------------------------ worker
def _track(duration: float):
    """(mixture, vocals, accompaniment) float32 (nb_timesteps, 2) of `duration` seconds."""
    import numpy as np

    from hw2.synth import make_stems

    stems = make_stems(seed=0, duration=min(duration, PIECE_DUR))
    n = int(round(duration * RATE))
    reps = -(-n // stems.shape[1])
    tile = lambda a: np.ascontiguousarray(np.tile(a, (reps, 1))[:n])  # noqa: E731
    vocals, accompaniment = stems[4], stems[1] + stems[2] + stems[3]
    return tile(stems[0]), tile(vocals), tile(accompaniment)


def _separator(spec: dict):
    import torch

    from hw2.model import ModelConfig, OpenUnmix
    from hw2.separate import Separator
    from hw2.checkpoint import resolve_device

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    if spec["checkpoint"]:
        return Separator.from_checkpoint(spec["checkpoint"], device, gl_iters=spec["gl_iters"])
    torch.manual_seed(0)
    return Separator(OpenUnmix(ModelConfig()), device, gl_iters=spec["gl_iters"], name="untrained default")


def worker(spec: dict) -> dict:
    """One measurement, in this process: {"seconds", "peak_mb", "before_mb", ...} as JSON on stdout."""
    import torch

    sep = _separator(spec)
    mixture, vocals, accompaniment = _track(spec["duration"])
    sep.separate(mixture[:RATE], [spec["method"]], key="warm-up")  # first-call costs out of the timing
    result = {"torch_threads": torch.get_num_threads(), "device": str(sep.device)}
    before = status_mb("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    est = sep.separate(mixture, [spec["method"]], key="bench")[spec["method"]]
    result.update(seconds=time.perf_counter() - t0, before_mb=before, peak_mb=peak_mb(),
                  peak_is_separation_only=reset)
    if spec.get("museval"):
        from hw2.evaluate import score_track, track_medians

        score_track("warm-up", {"vocals": vocals[:RATE], "accompaniment": accompaniment[:RATE]},
                    {k: v[:RATE] for k, v in est.items()})
        t0 = time.perf_counter()
        scores = score_track("bench", {"vocals": vocals, "accompaniment": accompaniment}, est)
        result["museval_seconds"] = time.perf_counter() - t0
        result["vocals_sdr"] = track_medians(scores)["vocals"]["SDR"]
    return result


# ------------------------------------------------------------------------------------------------------ driver
def measure(spec: dict, threads_env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **threads_env})
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: measurement {spec['method']} on {spec['duration']:g} s failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def describe_model(checkpoint: str) -> tuple[str, int]:
    from hw2.model import ModelConfig, OpenUnmix

    if checkpoint:
        from hw2.checkpoint import load_checkpoint, model_from_checkpoint

        model, _ = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
        name = checkpoint
    else:
        model, name = OpenUnmix(ModelConfig()), "untrained default-config Open-Unmix (no checkpoints/vocals.pt)"
    return name, sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/separate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="",
                   help="checkpoint to time (default: checkpoints/vocals.pt if it exists, else an untrained "
                        "default-config Open-Unmix)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of the timed track")
    p.add_argument("--methods", nargs="+", default=["mixture", "griffinlim"], help="phase methods to time")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    p.add_argument("--long-duration", type=float, default=600.0, help="seconds of the peak-memory track")
    p.add_argument("--skip-long", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--malloc-baseline", action="store_true",
                   help="also time each method with glibc's allocator defaults (HW2_MALLOC_TUNING=0), side by side")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    checkpoint = args.checkpoint or (str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else "")
    try:
        name, nb_params = describe_model(checkpoint)
    except Exception as e:  # Hw2Error from a bad checkpoint: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    base = {"checkpoint": checkpoint, "device": args.device, "threads": args.threads, "gl_iters": args.gl_iters}

    rows, info = [], {}
    for method in args.methods:
        label = f"separate, {method}" + (f" ({args.gl_iters} iterations)" if method.startswith("griffinlim") else "")
        print(f"measuring: {label}, {args.duration:g} s ...", file=sys.stderr, flush=True)
        r = measure({**base, "method": method, "duration": args.duration, "museval": method == "mixture"}, threads_env)
        info = r
        rows.append((label, args.duration, r["seconds"], r["peak_mb"]))
        if args.malloc_baseline:
            print(f"measuring: {label}, {args.duration:g} s, glibc allocator defaults ...", file=sys.stderr, flush=True)
            b = measure({**base, "method": method, "duration": args.duration, "museval": False},
                        {**threads_env, "HW2_MALLOC_TUNING": "0"})
            rows.append((f"{label}, glibc allocator defaults (baseline): {b['seconds'] / r['seconds']:.2f}x slower",
                         args.duration, b["seconds"], b["peak_mb"]))
        if "museval_seconds" in r:
            museval_row = ("museval score_track (vocals + accompaniment)", args.duration, r["museval_seconds"], None)
    if "mixture" in args.methods:
        rows.append(museval_row)
    long = None
    if not args.skip_long:
        print(f"measuring: peak memory, mixture, {args.long_duration:g} s ...", file=sys.stderr, flush=True)
        long = measure({**base, "method": "mixture", "duration": args.long_duration}, threads_env)
        info = long
        rows.append(("separate, mixture (peak-memory track)", args.long_duration, long["seconds"], long["peak_mb"]))

    cpu = platform.processor() or platform.machine()
    print(f"\nbench/separate.py: {name}, {nb_params:,} parameters; device {info.get('device')}, "
          f"{info.get('torch_threads')} torch threads, {os.cpu_count()} CPUs ({cpu}); generated track "
          f"(a {PIECE_DUR:g} s piece tiled)\n")
    print("| measurement | audio s | wall s | real-time factor | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for label, dur, sec, peak in rows:
        print(f"| {label} | {dur:g} | {sec:.1f} | {sec / dur:.3f} | {'-' if peak is None else f'{peak:,.0f}'} |")
    print("\nreal-time factor = processing seconds / audio seconds (below 1: faster than real time). Peak RSS: "
          "the process's peak resident set during the separation" +
          (" (reset just before it)" if info.get("peak_is_separation_only") else " (whole process)") + ".")
    if long:
        print(f"{args.long_duration:g} s track, mixture method: {long['before_mb']:,.0f} MiB resident before "
              f"separating (interpreter, model, track), {long['peak_mb']:,.0f} MiB peak while separating.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
