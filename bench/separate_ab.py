"""Side by side: separation time of this checkout against a baseline checkout of hw2, same track, same process
settings, runs interleaved so that machine load hits both alike.

    git clone -q . /tmp/hw2-base && git -C /tmp/hw2-base checkout -q 3d2f339   # before block-wise separation
    python bench/separate_ab.py --baseline /tmp/hw2-base --duration 60 --methods mixture griffinlim

Each run is its own process (one torch thread, a 1 s warm-up first) separating the first --duration seconds of a
MUSDB18 excerpt looped by stream copy (default: stempeg's example track). Prints the best of --repeats per
checkout and method, and the ratio this / baseline.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

CODE = r'''
import sys, time, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from hw2.separate import Separator
from hw2.tracks import open_tracks, read_stem
(track,) = open_tracks(sys.argv[3], "test")
m = read_stem(track, "mixture").astype("float32") / 32768
sep = Separator.from_checkpoint(sys.argv[4])
sep.separate(m[:44100], [sys.argv[2]])
t0 = time.perf_counter(); sep.separate(m, [sys.argv[2]]); print(time.perf_counter() - t0)
'''


def main() -> int:
    import stempeg
    from infer import make_root  # bench/infer.py

    p = argparse.ArgumentParser(prog="python bench/separate_ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="a checkout of the hw2 version to compare against")
    p.add_argument("--source", default="", help="a MUSDB18 .stem.mp4 (default: stempeg's example track)")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--methods", nargs="+", default=["mixture", "griffinlim"])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    ckpt = str(REPO / "checkpoints" / "vocals.pt")
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="hw2-ab-") as tmp:
        root = make_root(Path(args.source or stempeg.example_stem_path()), args.duration, Path(tmp))
        for _ in range(args.repeats):
            for method in args.methods:
                for name, repo in (("baseline", args.baseline), ("this", str(REPO))):
                    r = subprocess.run([sys.executable, "-c", CODE, repo, method, str(root), ckpt], text=True,
                                       capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                    if r.returncode != 0:
                        print(f"error: {name} / {method} failed: {r.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                        return 1
                    res.setdefault((method, name), []).append(float(r.stdout.split()[-1]))
    print(f"| method | baseline s | this s | this / baseline |  ({args.duration:g} s track, 1 thread, best of "
          f"{args.repeats})\n|---|---:|---:|---:|")
    for method in args.methods:
        a, b = min(res[method, "baseline"]), min(res[method, "this"])
        print(f"| {method} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
