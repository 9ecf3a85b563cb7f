"""What the up-front check of `hw2/infer.py` costs: `tracks.open_tracks` plus the header pass of
`tracks.check_tracks`, then the part that compares the files with their headers (`tracks._damage_all`: the
truncation check, the last second of each .stem.mp4 decoded by ffprobe, float WAVs sampled), in wall seconds and
CPU seconds (this process and its ffprobe children; wall time depends on what else the machine runs, CPU time
much less).

    python bench/check.py --musdb-root /path/to/musdb18-7 --subset test        # the 7-second preview's 50 tracks
    python bench/check.py --loop 600                                           # stempeg's example looped to 10 min
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", default="", help="a MUSDB root (default: one looped track, see --loop)")
    p.add_argument("--subset", default="test")
    p.add_argument("--loop", type=float, default=600.0, help="seconds of the looped track without --musdb-root")
    args = p.parse_args()
    from hw2 import tracks

    with tempfile.TemporaryDirectory() as tmp:
        root = args.musdb_root
        if not root:
            import stempeg

            from bench.infer import make_root
            root = make_root(Path(stempeg.example_stem_path()), args.loop, Path(tmp))
        cpu, wall = cpu_seconds(), time.perf_counter()
        found = tracks.open_tracks(root, args.subset)
        damage_all, tracks._damage_all = tracks._damage_all, lambda ts, stems: [None] * len(ts)
        try:
            durations, problems, _ = tracks.check_tracks(found)
        finally:
            tracks._damage_all = damage_all
        header = time.perf_counter() - wall, cpu_seconds() - cpu
        cpu, wall = cpu_seconds(), time.perf_counter()
        damaged = [d for d in tracks._damage_all(found, tracks.STEMS) if d]
        content = time.perf_counter() - wall, cpu_seconds() - cpu
    where = args.musdb_root or f"stempeg's example track looped to {args.loop:g} s"
    print(f"{len(found)} tracks, {sum(durations):,.0f} s of audio ({where}, {args.subset})")
    print(f"open_tracks + header check: {header[0]:.2f} s wall, {header[1]:.2f} s CPU")
    print(f"files against their headers: {content[0]:.2f} s wall, {content[1]:.2f} s CPU")
    for line in problems + damaged:
        print(line)


if __name__ == "__main__":
    main()
