"""The TA's command itself, measured: `python hw2/infer.py --musdb-root R --phase ... --samples 0` on one real track
looped to --duration seconds, under `/usr/bin/time -v`, with every process of its tree sampled.

bench/infer.py replays infer's steps in one process; this runs the command as the TA does, scoring worker
processes included (--jobs: default the command's own, the CPU count). The track is a real MUSDB18 `.stem.mp4`
looped by stream copy of all five stems (bench/infer.py's `make_root`; default: the excerpt that ships with
stempeg), so decoding, separation and scoring see a full-length real track.

Reported per run:
    wall s              the command's wall time, and as a ratio to the first checkout's (--baseline first)
    max RSS (time -v)   GNU time's "Maximum resident set size": the largest peak of any one process it waited for
    main / worker peak  each process's own peak (VmHWM from /proc, sampled every 0.1 s until it exits): the
                        command's process, and the largest scoring worker
    tree peak           the largest sum of the tree's resident sets at one sample; a page that several processes
                        map (torch's libraries in every scoring worker) counts once per process
    tree PSS peak       the largest sum of the tree's proportional set sizes (Pss in /proc/<pid>/smaps_rollup) at
                        one sample: a shared page counts once, split between the processes that map it, so this is
                        what the whole command holds of the machine's memory at once
    sum of peaks        the sum of every process's own peak: an upper bound of the tree peak

    python bench/ta_command.py --duration 600                            # mixture, then mixture + griffinlim
    python bench/ta_command.py --duration 600 --phases mixture           # the TA's command at its defaults
    python bench/ta_command.py --duration 600 --baseline /tmp/hw2-main   # the same on another checkout first
    python bench/ta_command.py --duration 120 --phases mixture --jobs 1 2

--baseline: another checkout of the repository (say `git worktree add /tmp/hw2-main main`); its hw2/infer.py runs
with this checkout's checkpoint, so the two differ only in code.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.infer import make_root, track_flags  # noqa: E402

GB = 1024  # MiB


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _status_kib(pid: int, field: str, file: str = "status") -> int | None:
    """A `field:  N kB` line of /proc/<pid>/<file> (status, smaps_rollup), in KiB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class TreeSampler(threading.Thread):
    """Every `interval` s: the processes under `root_pid`, each one's VmHWM (kept per pid: the last seen is its
    peak), and the sums of their VmRSS and of their Pss (each kept: its largest)."""

    def __init__(self, root_pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.hwm: dict[int, int] = {}
        self.cmd: dict[int, str] = {}
        self.tree_peak = self.tree_pss = 0
        self.exclude: set[int] = set()  # /usr/bin/time, once known: not the command's memory
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            pids, todo = [], [self.root_pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += _children(pid)
            total = pss = 0
            for pid in pids:
                if pid in self.exclude:
                    continue
                hwm, rss = _status_kib(pid, "VmHWM"), _status_kib(pid, "VmRSS")
                if hwm is not None:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
                    total += rss or 0
                    pss += _status_kib(pid, "Pss", "smaps_rollup") or 0
                    if pid not in self.cmd:
                        try:
                            self.cmd[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                        except OSError:
                            self.cmd[pid] = ""
            self.tree_peak = max(self.tree_peak, total)
            self.tree_pss = max(self.tree_pss, pss)
            time.sleep(self.interval)


def measure(checkout: Path, root: Path, phases: list[str], jobs: int | None, checkpoint: str, out: Path,
            samples: int = 2) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, str(checkout / "hw2" / "infer.py"), "--musdb-root", str(root),
           "--checkpoint", checkpoint, "--phase", *phases, "--samples", str(samples), "--out", str(out),
           *(["--jobs", str(jobs)] if jobs else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.exclude.add(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[2:])} failed: {(stderr.strip().splitlines() or ['no output'])[-1]}")
    max_rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    # /usr/bin/time itself is left out; the rest: the command, its scoring workers (spawned), and the small ones
    # (ffmpeg decoding, multiprocessing's resource tracker), which count in the tree only
    tree = dict(sampler.hwm)  # the sampler never records /usr/bin/time (excluded above)
    main = next((kib for pid, kib in tree.items() if "infer.py" in sampler.cmd[pid]), 0)
    workers = [kib for pid, kib in tree.items() if "spawn_main" in sampler.cmd[pid]]
    # the first method's row; the epoch column: 150, or 116+65+32
    sdr = re.search(rf"\| \S+ / {re.escape(phases[0])} \| [^|]+ \| (-?[\d.]+) \|", stdout)
    return {"wall": wall, "max_rss": max_rss / 1024, "main": main / 1024, "worker": max(workers, default=0) / 1024,
            "nb_workers": len(workers), "tree": sampler.tree_peak / 1024, "pss": sampler.tree_pss / 1024,
            "sum": sum(tree.values()) / 1024, "sdr": float(sdr.group(1)) if sdr else None,
            "jobs_line": next((line for line in stdout.splitlines() if line.startswith("--jobs")), "")}


def main(argv=None) -> int:
    import stempeg

    p = argparse.ArgumentParser(prog="python bench/ta_command.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    track_flags(p)
    p.add_argument("--phases", nargs="+", default=["mixture", "mixture griffinlim"],
                   help="one run per entry, each a --phase list (quoted)")
    p.add_argument("--jobs", type=int, nargs="+", default=[0], help="one run per value; 0: the command's default")
    p.add_argument("--samples", type=int, default=2, help="the command's --samples (its default: 2 tracks' WAVs)")
    p.add_argument("--baseline", default="", help="another checkout to measure first, for ratios")
    args = p.parse_args(argv)
    if shutil.which("ffmpeg") is None or not Path("/usr/bin/time").exists():
        print("error: needs ffmpeg and GNU time (/usr/bin/time): apt-get install ffmpeg time", file=sys.stderr)
        return 2
    source = Path(args.source or stempeg.example_stem_path())
    checkouts = [Path(args.baseline).resolve()] if args.baseline else []
    checkouts.append(REPO)
    print(f"bench/ta_command.py: {source.name} looped to {args.duration:.0f} s; {os.cpu_count()} CPUs; "
          f"checkpoint {args.checkpoint}; --samples {args.samples}\n")
    print("| checkout | --phase | --jobs | wall s | x baseline | max RSS (time -v) MiB | main peak MiB | "
          "worker peak MiB (n) | tree peak MiB | tree PSS peak MiB | sum of peaks MiB | vocals SDR |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {}
    with tempfile.TemporaryDirectory(prefix="hw2-bench-ta-") as tmp:
        root = make_root(source, args.duration, Path(tmp) / "musdb")
        for phases in args.phases:
            for jobs in args.jobs:
                for checkout in checkouts:
                    out = Path(tempfile.mkdtemp(dir=tmp))  # a fresh results folder: nothing reused
                    r = measure(checkout, root, phases.split(), jobs or None, args.checkpoint, out, args.samples)
                    key = (phases, jobs)
                    ratio = f"{r['wall'] / base[key]:.2f}" if key in base else "-"
                    base.setdefault(key, r["wall"])
                    name = "this" if checkout == REPO else checkout.name
                    print(f"| {name} | {phases} | {jobs or f'default ({os.cpu_count()})'} | {r['wall']:.0f} | "
                          f"{ratio} | {r['max_rss']:,.0f} | {r['main']:,.0f} | {r['worker']:,.0f} "
                          f"({r['nb_workers']}) | {r['tree']:,.0f} | {r['pss']:,.0f} | {r['sum']:,.0f} | "
                          f"{'-' if r['sdr'] is None else format(r['sdr'], '.2f')} |", flush=True)
                    if r["jobs_line"]:  # the command's own word on the --jobs it chose
                        print(f"  ({r['jobs_line'].strip()})")
    over = GB * 2
    print(f"\nthe target: the tree PSS peak (the whole command) at most {over:,} MiB (2 GB) with the default --jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
