"""The training data path at full MUSDB18 scale, on a generated corpus: cache build, cache size, loader throughput
with a warm, a cold and a memory-limited page cache, bytes read per excerpt, validation time per epoch.

Builds a MUSDB18-HQ-layout root (`--train` + `--valid` tracks of `--minutes` in train/, the valid ones named as
musdb's validation tracks so that musdb's split applies; default 86 + 14 of 4 minutes, as full MUSDB18's train
folder), then measures, each in its own process:

  cache build   decoding the root into the cache (train: four sources; valid: all five stems): seconds per hour
                of audio and peak resident memory; the same for `--stem-tracks` .stem.mp4 (AAC) tracks, which is
                what MUSDB18 costs; peak memory decoding one `--long-minutes` track
  cache size    bytes per second of train audio and in all
  loader        excerpts/s of `--seconds` excerpts (batches of 16, incoherent random track mixing, gain, swap) and
                bytes read from disk per excerpt served (/proc/self/io read_bytes) against the bytes an excerpt
                holds (4 sources x int16 stereo), beside the disk's own rate for such reads: warm (tracks that fit `--warm-gb`, read once first), cold (every
                cache file dropped from the page cache first) with and without prefetching, and a whole epoch held
                to half the cache's size in memory (a cgroup v1 memory limit; needs root)
  validation    hw2.train.validation_loss with the default model on the valid tracks (CPU, `--threads`)

The audio of `--unique` generated tracks is reused, circularly shifted per track (generating is slow: about a
minute of CPU per 4-minute track), so every file differs; the corpus is deleted afterwards unless `--keep`.

    python bench/scale.py [--out /tmp/hw2-scale --train 86 --valid 14 --minutes 4 --keep]
    python bench/scale.py --train 8 --valid 2 --minutes 1 --long-minutes 2 --stem-tracks 1   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.memory import peak_mb  # noqa: E402
from hw2 import RATE, Hw2Error, OneLineParser, run_cli  # noqa: E402
from hw2.cache import BYTES_PER_SECOND, CACHE_VERSION  # noqa: E402
from hw2.tracks import SOURCES, STEMS  # noqa: E402

BATCH = 16
MADE = ("musdb", "cache", "musdb-stem", "cache-stem", "musdb-long", "cache-long")  # what --out receives


# ------------------------------------------------------------------------------------------------------ corpus
def valid_names(nb: int) -> list[str]:
    import musdb
    import yaml

    names = yaml.safe_load((Path(musdb.__file__).parent / "configs" / "mus.yaml").read_text())["validation_tracks"]
    if nb > len(names):
        raise Hw2Error(f"--valid {nb}: musdb's validation split has {len(names)} tracks")
    return names[:nb]


def make_corpus(root: Path, fmt: str, names: list[str], minutes: float, unique: int, seed: int = 0) -> float:
    """Write `names` under root/train (skipping tracks already there); returns the seconds it took."""
    from hw2.synth import make_stems, write_track

    t = time.perf_counter()
    todo = [n for n in names if not ((root / "train" / n / "vocals.wav").exists()
                                     or (root / "train" / f"{n}.stem.mp4").exists())]
    bases = {}
    rng = np.random.default_rng(seed)
    for i, name in enumerate(todo):
        k = i % unique
        if k not in bases:
            bases[k] = make_stems(seed * 100 + k, minutes * 60)
        write_track(np.roll(bases[k], int(rng.integers(0, bases[k].shape[1])), axis=1), root / "train", name, fmt)
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------- measured in children
def child(argv: list[str]) -> dict:
    """Run one measurement in a fresh interpreter (its peak memory and read bytes are its own)."""
    r = subprocess.run([sys.executable, __file__, "_child", *map(str, argv)], capture_output=True, text=True)
    if r.returncode != 0:
        raise Hw2Error(f"measurement {argv[0]} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def child_in_cgroup(argv: list[str], limit: int) -> dict | None:
    """`child` inside a new cgroup v1 memory cgroup limited to `limit` bytes (page cache included); None when
    cgroups cannot be made here."""
    cg = Path(f"/sys/fs/cgroup/memory/hw2-scale-{os.getpid()}")
    try:
        cg.mkdir()
        (cg / "memory.limit_in_bytes").write_text(str(limit))
    except OSError:
        return None
    try:
        r = subprocess.run([sys.executable, __file__, "_child", *map(str, argv)], capture_output=True, text=True,
                           preexec_fn=lambda: (cg / "cgroup.procs").write_text(str(os.getpid())))
        if r.returncode != 0:
            raise Hw2Error(f"measurement {argv[0]} held to {limit / 1e9:.2f} GB failed (exit {r.returncode}): "
                           f"{(r.stderr.strip().splitlines() or ['killed for memory?'])[-1]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["cgroup_peak"] = int((cg / "memory.max_usage_in_bytes").read_text())
        return out
    finally:
        cg.rmdir()


def _read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def _drop(files) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:  # dirty pages (a cache written moments ago) are not dropped: write them first
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cache_files(cache: Path, tracks) -> list[Path]:
    return [Path(t.stems[s].filename) for t in tracks for s in t.stems]


def run_child(kind: str, *args) -> None:
    from hw2.cache import load_cached, open_cached
    from hw2.tracks import open_tracks

    if kind == "build":  # root cache jobs with_valid: train split (4 sources), valid split (5 stems)
        root, cache, jobs = args[0], args[1], int(args[2])
        t = time.perf_counter()
        train = load_cached(open_tracks(root, "train", "train"), cache, False, SOURCES, jobs)
        valid = load_cached(open_tracks(root, "train", "valid"), cache, False, STEMS, jobs) if args[3] == "1" else []
        seconds = time.perf_counter() - t
        audio = sum(tr.nb_samples for tr in train + valid) / RATE
        print(json.dumps({"seconds": seconds, "audio_s": audio, "maxrss": int(peak_mb() * 2**20),
                          "train_audio_s": sum(tr.nb_samples for tr in train) / RATE}))
    elif kind == "loader":  # root cache mode prefetch batches warm_gb step_ms
        import torch

        from hw2.sampling import ExcerptSampler
        root, cache, mode, prefetch, batches = args[0], args[1], args[2], int(args[3]), int(args[4])
        warm_gb, step = float(args[5]), float(args[6]) / 1000
        tracks = open_cached(root, "train", "train", cache, False, SOURCES)
        if mode == "warm":  # the tracks that fit warm_gb, read once
            keep, size = [], 0
            for tr in tracks:
                size += tr.nb_samples * 4 * len(SOURCES)
                if size > warm_gb * 1e9 and keep:
                    break
                keep.append(tr)
            tracks = keep
            for f in cache_files(cache, tracks):
                with open(f, "rb") as fh:
                    while fh.read(1 << 24):
                        pass
        else:
            _drop(cache_files(cache, tracks))
        sampler = ExcerptSampler(tracks, 6.0, ("vocals",), "balanced", BATCH, 64, mixing="incoherent",
                                 gain=(0.25, 1.25), swap=True, seed=0)
        n_batches = sampler.nb_batches(0) if batches <= 0 else min(batches, sampler.nb_batches(0))
        eb = sampler.epoch(0)
        eb.prefetch = prefetch
        before, t, n = _read_bytes(), time.perf_counter(), 0
        waited = 0.0
        for i in range(n_batches):
            w = time.perf_counter()
            mix, tgt = eb[i]
            waited += time.perf_counter() - w
            n += len(mix)
            time.sleep(step)  # a training step's stand-in: the GPU computes while the loader may read ahead
        seconds = time.perf_counter() - t
        print(json.dumps({"excerpts": n, "seconds": seconds, "waited": waited, "read_bytes": _read_bytes() - before,
                          "excerpt_bytes": sampler.excerpt_len * 4 * len(SOURCES), "tracks": len(tracks),
                          "torch_threads": torch.get_num_threads(), "maxrss": int(peak_mb() * 2**20)}))
    elif kind == "disk":  # cache: 1 MB random reads of the cold train cache files, 1 and 8 in flight
        import random
        from concurrent.futures import ThreadPoolExecutor
        files = [p for p in Path(args[0]).rglob("*.npy") if p.stem in SOURCES]
        _drop(files)
        rng = random.Random(0)
        size = int(6.0 * RATE) * 4
        reqs = [(f, rng.randrange(0, f.stat().st_size - size)) for f in rng.choices(files, k=1200)]

        def read(r):
            fd = os.open(r[0], os.O_RDONLY)
            try:
                os.pread(fd, size, r[1])
            finally:
                os.close(fd)
        res = {}
        for threads, part in ((1, reqs[:600]), (8, reqs[600:])):
            t = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(read, part))
            res[threads] = len(part) * size / (time.perf_counter() - t)
        print(json.dumps(res))
    elif kind == "valid":  # root cache threads nb_tracks
        import torch

        from hw2.model import OpenUnmix
        from hw2.config import TrainConfig
        from hw2.train import validation_loss
        torch.set_num_threads(int(args[2]))
        every = open_cached(args[0], "train", "valid", args[1], False, STEMS)
        tracks = every[: int(args[3]) or None]
        model = OpenUnmix(TrainConfig().model_config())
        t = time.perf_counter()
        validation_loss(model, tracks, "vocals", torch.device("cpu"), TrainConfig().valid_chunk_dur)
        print(json.dumps({"seconds": time.perf_counter() - t, "tracks": len(tracks), "all_tracks": len(every),
                          "audio_s": sum(tr.nb_samples for tr in tracks) / RATE,
                          "all_audio_s": sum(tr.nb_samples for tr in every) / RATE, "maxrss": int(peak_mb() * 2**20)}))


def dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -------------------------------------------------------------------------------------------------------- main
def bench(a) -> None:
    out = Path(a.out)
    root, cache = out / "musdb", out / "cache"
    t0 = time.perf_counter()
    train_names = [f"Scale {i:03d} - Train" for i in range(a.train)]
    names = train_names + valid_names(a.valid)
    gen = make_corpus(root, "wav", names, a.minutes, a.unique)
    (root / "test").mkdir(exist_ok=True)
    print(f"corpus: {len(names)} tracks of {a.minutes:g} min at {root} ({dir_size(root) / 1e9:.1f} GB, "
          f"written in {gen:.0f} s)", flush=True)
    rows = []

    def row(name, value, note=""):
        rows.append((name, value, note))
        print(f"{name:<58}{value:>18}  {note}", flush=True)

    # ---- cache build and size
    shutil.rmtree(cache, ignore_errors=True)
    b = child(["build", root, cache, 2, 1])
    train_s = b["train_audio_s"]
    row("cache build, MUSDB18-HQ wav (2 threads)", f"{b['seconds'] / b['audio_s'] * 3600:.0f} s/h audio",
        f"{b['audio_s'] / 3600:.2f} h in {b['seconds']:.0f} s, peak RSS {b['maxrss'] / 2**20:.0f} MiB")
    entries = list((cache / f"v{CACHE_VERSION}").iterdir())
    train_bytes = sum(dir_size(e) for e in entries if not (e / "mixture.npy").exists())
    all_bytes = dir_size(cache)
    row("cache size, train (4 sources)", f"{train_bytes / train_s / 1e6:.4f} MB/s",
        f"{train_bytes / 1e9:.2f} GB for {train_s / 3600:.2f} h; four int16 stereo sources are "
        f"{4 * BYTES_PER_SECOND / 1e6:.4f} MB/s")
    row("cache size, train + valid (valid: 5 stems)", f"{all_bytes / 1e9:.2f} GB", "")

    if a.stem_tracks:
        stem_root = out / "musdb-stem"
        make_corpus(stem_root, "stem", [f"Stem {i} - Train" for i in range(a.stem_tracks)], a.minutes, 1, 1)
        sb = child(["build", stem_root, out / "cache-stem", 2, 0])
        row("cache build, MUSDB18 .stem.mp4 (AAC, 2 threads)", f"{sb['seconds'] / sb['audio_s'] * 3600:.0f} s/h audio",
            f"{a.stem_tracks} tracks, {sb['audio_s']:.0f} s in {sb['seconds']:.1f} s, "
            f"peak RSS {sb['maxrss'] / 2**20:.0f} MiB")
    if a.long_minutes:
        long_root = out / "musdb-long"
        make_corpus(long_root, "wav", ["Long - Train"], a.long_minutes, 1, 2)
        lb = child(["build", long_root, out / "cache-long", 1, 0])
        row(f"peak RSS decoding one {a.long_minutes:g}-min track (4 sources)", f"{lb['maxrss'] / 2**20:.0f} MiB",
            "the whole process, Python and numpy included")

    # ---- loader
    excerpt_mb = 6.0 * RATE * 4 * len(SOURCES) / 1e6

    def loader_row(name, r, extra=""):
        rate = r["excerpts"] / r["seconds"]
        row(name, f"{rate:.0f} excerpts/s", f"{r['read_bytes'] / r['excerpts'] / 1e6:.2f} MB read per excerpt "
            f"({r['read_bytes'] / r['excerpts'] / r['excerpt_bytes']:.2f}x the {excerpt_mb:.2f} MB it holds), "
            f"{r['excerpts']} excerpts, {r['tracks']} tracks{extra}")

    d = child(["disk", cache / f"v{CACHE_VERSION}"])
    row("disk: 1.06 MB random reads of the cold cache", f"{d['1'] / 1e6:.0f} MB/s",
        f"one at a time ({d['1'] / excerpt_mb / 1e6:.0f} excerpts/s of reading); {d['8'] / 1e6:.0f} MB/s with eight "
        f"in flight ({d['8'] / excerpt_mb / 1e6:.0f} excerpts/s)")
    warm = child(["loader", root, cache, "warm", 4, a.batches, a.warm_gb, 0])
    loader_row("loader warm, prefetch 4 batches", warm, f" (fit in {a.warm_gb:g} GB)")
    cold = child(["loader", root, cache, "cold", 4, a.batches, 0, 0])
    loader_row("loader cold page cache, prefetch 4 batches", cold)
    sync = child(["loader", root, cache, "cold", 0, a.batches, 0, 0])
    loader_row("loader cold page cache, no prefetch (baseline)", sync)
    step_ms = BATCH / a.step_rate * 1000
    for prefetch in (4, 0):
        r = child(["loader", root, cache, "cold", prefetch, a.batches, 0, step_ms])
        row(f"cold, a {step_ms:.0f} ms step after each batch, {'prefetch 4' if prefetch else 'no prefetch'}",
            f"{r['excerpts'] / r['seconds']:.0f} excerpts/s",
            f"the step waited on the loader {r['waited'] / r['excerpts'] * BATCH * 1000:.0f} ms per batch "
            f"(a step at {a.step_rate:g} excerpts/s that never waits: {a.step_rate:g} excerpts/s)")
    limit = train_bytes // 2
    lim = None if limit < 1.5e9 else \
        child_in_cgroup(["loader", root, cache, "cold", 4, 0 if a.epoch else a.batches, 0, 0], limit)
    if limit < 1.5e9:
        row("loader memory-limited", "skipped", "the cache is too small to hold the loader to half of it")
    elif lim is None:
        row("loader memory-limited", "skipped", "no cgroup v1 memory controller writable here (needs root)")
    else:
        loader_row(f"loader held to {limit / 1e9:.1f} GB (cache {train_bytes / 1e9:.1f} GB), "
                   f"{'a whole epoch' if a.epoch else 'prefetch 4'}", lim,
                   f"; cgroup peak {lim['cgroup_peak'] / 1e9:.2f} GB")

    # ---- validation
    if a.valid_tracks >= 0:
        v = child(["valid", root, cache, a.threads, a.valid_tracks])
        per = v["seconds"] / v["audio_s"]
        row(f"validation, default model, CPU {a.threads} threads", f"{per * v['all_audio_s']:.0f} s/epoch",
            f"{v['all_tracks']} tracks, {v['all_audio_s'] / 60:.1f} min of audio; {per:.3f} s per audio second "
            f"measured on {v['tracks']} ({v['seconds']:.0f} s)")
    print(f"\n{a.train} + {a.valid} generated tracks of {a.minutes:g} min; total {time.perf_counter() - t0:.0f} s")
    print(json.dumps({name: f"{value} {note}".strip() for name, value, note in rows}))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        run_child(*argv[1:])
        return 0
    p = OneLineParser(prog="python bench/scale.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "hw2-scale"),
                   help="folder for the generated corpus and its cache (deleted afterwards unless --keep)")
    p.add_argument("--train", type=int, default=86, help="train-split tracks")
    p.add_argument("--valid", type=int, default=14, help="valid-split tracks (at most musdb's 14)")
    p.add_argument("--minutes", type=float, default=4.0, help="length of each track")
    p.add_argument("--unique", type=int, default=4, help="distinct generated tracks the corpus is shifted from")
    p.add_argument("--stem-tracks", type=int, default=2, help=".stem.mp4 tracks for the AAC decode time (0: skip)")
    p.add_argument("--long-minutes", type=float, default=10.0, help="track for the decode peak memory (0: skip)")
    p.add_argument("--batches", type=int, default=40, help="batches of 16 per loader measurement")
    p.add_argument("--epoch", action=argparse.BooleanOptionalAction, default=True,
                   help="the memory-limited loader run reads a whole epoch (train tracks x 64 excerpts)")
    p.add_argument("--step-rate", type=float, default=92.0,
                   help="excerpts/s of the simulated training step (92: an epoch of 86 x 64 in 60 s, the T4 target)")
    p.add_argument("--warm-gb", type=float, default=4.0, help="cache GB the warm loader run reads first")
    p.add_argument("--valid-tracks", type=int, default=0, help="valid tracks to time (0: all, -1: skip)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for validation")
    p.add_argument("--keep", action="store_true", help="keep the corpus and cache (reruns reuse the corpus)")
    a = p.parse_args(argv)

    def go():
        if a.train < 1 or a.valid < 1 or a.minutes <= 0.2 or a.unique < 1:
            raise Hw2Error("--train, --valid and --unique must be at least 1 and --minutes above 0.2")
        out = Path(a.out)
        if out.is_dir() and any(p.name not in MADE for p in out.iterdir()):
            raise Hw2Error(f"{out}: holds files this benchmark did not write; pass a new or empty --out")
        try:
            bench(a)
        finally:
            if not a.keep:  # only what the benchmark made
                for name in MADE:
                    shutil.rmtree(out / name, ignore_errors=True)
                if out.is_dir() and not any(out.iterdir()):
                    out.rmdir()
    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
