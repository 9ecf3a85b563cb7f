"""Training-excerpt throughput: hw2's cached loader against decoding every excerpt through musdb.

Measures excerpts per second of building training examples (mixture, vocals) of `--seconds` stereo audio with
incoherent random track mixing and the gain (0.25-1.25) + left/right swap augmentations, on the same train-split
tracks, in one run:

  (a) ours:  hw2.sampling.ExcerptSampler reading the int16 decoded cache (one read per source excerpt, the next
             batches prefetched in two threads), balanced sampling; in process, and through a torch DataLoader
             with `--workers` worker processes;
  (b) naive: Open-Unmix's MUSDBDataset (random_track_mix=True): for each source pick a random track, set
             track.chunk_start / chunk_duration and read track.sources[source].audio, which decodes the file
             through stempeg/ffmpeg every time, then augment and sum.

    python bench/loader.py --musdb-root PATH [--seconds 6 --batches 20 --naive-excerpts 24 --cache-dir DIR]
    python bench/loader.py --musdb-root PATH --augment   # each augmentation on, against the default side by side

With `--augment`, (a) in process is timed again with each of the loader's optional augmentations on (fixed
offsets, cached pitch / stretch variants, sign flip), in turns (`--rounds`, medians), as ratios against the
default; the variants are made in the cache first (once), and their preparation (librosa, one thread) is timed
on `--prep-tracks` tracks and given per hour of audio, with their disk size.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import warnings

import torch

from hw2 import RATE, Hw2Error
from hw2.cache import BYTES_PER_SECOND, load_cached, make_variant, variant_names
from hw2.sampling import ExcerptSampler
from hw2.tracks import SOURCES, open_tracks

# name -> ExcerptSampler options on top of the default (the rows of the augment grid that change the loader)
AUGMENTATIONS = {"default": {}, "fixed offsets": {"offsets": "fixed"},
                 "pitch +-1 semitone": {"variants": variant_names(1.0, 0.0)},
                 "stretch 0.9 / 1.1": {"variants": variant_names(0.0, 0.1)},
                 "pitch + stretch": {"variants": variant_names(1.0, 0.1)}, "sign flip": {"sign_flip": True}}


def ours(cached, seconds: float, batch_size: int, batches: int, workers: int, seed: int, **options):
    """(excerpts, seconds) in process, and through a DataLoader (None when workers == 0)."""
    sampler = ExcerptSampler(cached, seconds, ("vocals",), "balanced", batch_size, samples_per_track=64,
                             mixing="incoherent", gain=(0.25, 1.25), swap=True, seed=seed, **options)
    batches = min(batches, sampler.nb_batches(0) - 1)
    batches_0 = sampler.epoch(0)
    batches_0[0]  # warm-up
    t = time.perf_counter()
    n = 0
    for step in range(1, batches + 1):
        mix, tgt = batches_0[step]
        n += len(mix)
    in_process = (n, time.perf_counter() - t)
    if workers <= 0:
        return in_process, None
    loader = torch.utils.data.DataLoader(sampler.epoch(1), batch_size=None, num_workers=workers)
    it = iter(loader)
    next(it)  # workers started and warm: time the steady state
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        mix, tgt = next(it)
        n += len(mix)
    with_workers = (n, time.perf_counter() - t)
    del it
    return in_process, with_workers


def augmentations(cached, a) -> list[tuple[str, float, float]]:
    """(name, median excerpts/s, ratio to the default) of the in-process loader with each augmentation on, timed
    in turns so that a change of machine load hits them all alike."""
    rates = {name: [] for name in AUGMENTATIONS}
    names = list(AUGMENTATIONS)
    for k in range(a.rounds + 1):  # the first turn warms the page cache and is not counted
        for name in names[k % len(names):] + names[:k % len(names)]:  # each turn starts elsewhere
            (n, t), _ = ours(cached, a.seconds, a.batch_size, a.batches, 0, a.seed, **AUGMENTATIONS[name])
            if k:
                rates[name].append(n / t)
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    return [(k, v, v / med["default"]) for k, v in med.items()]


def preparation(cached, nb_tracks: int) -> list[tuple[str, float, float, float]]:
    """(variant, wall seconds and CPU seconds per hour of audio for the four sources, GB per hour) of making
    each pitch / stretch variant, timed on the first `nb_tracks` tracks. CPU time is what an idle core would
    take (with OMP_NUM_THREADS=1), whatever else the machine runs."""
    rows = []
    tracks = cached[:nb_tracks]
    hours = sum(t.nb_samples for t in tracks) / RATE / 3600
    for name in variant_names(1.0, 0.1):
        t0, c0, size = time.perf_counter(), time.process_time(), 0
        for t in tracks:
            for s in SOURCES:
                size += make_variant(t.stems[s], name).nbytes
        rows.append((name, (time.perf_counter() - t0) / hours, (time.process_time() - c0) / hours, size / hours / 1e9))
    return rows


def _augment(audio: torch.Tensor) -> torch.Tensor:
    """Open-Unmix's source augmentations: random gain in [0.25, 1.25], then a random channel swap."""
    audio = audio * (0.25 + torch.rand(1) * (1.25 - 0.25))
    if audio.shape[0] == 2 and torch.tensor(1.0).uniform_() < 0.5:
        audio = torch.flip(audio, [0])
    return audio


def naive(tracks, seconds: float, excerpts: int, seed: int):
    """(excerpts, seconds) decoding each source of each excerpt through musdb, as Open-Unmix's MUSDBDataset."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    t = time.perf_counter()
    for _ in range(excerpts):
        sources = []
        for source in SOURCES:
            track = rng.choice(tracks)
            track.chunk_duration = seconds
            track.chunk_start = rng.uniform(0, track.duration - seconds)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                audio = torch.as_tensor(track.sources[source].audio.T, dtype=torch.float32)
            sources.append(_augment(audio))
        stems = torch.stack(sources)
        x, y = stems.sum(0), stems[SOURCES.index("vocals")]  # noqa: F841 (the training pair)
    elapsed = time.perf_counter() - t
    for track in tracks:  # leave the tracks as musdb made them
        track.chunk_start, track.chunk_duration = 0, None
    return excerpts, elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/loader.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", required=True, help="MUSDB18 or MUSDB18-HQ root")
    p.add_argument("--cache-dir", default=None, help="decoded cache (default $HW2_CACHE or ~/.cache/hw2)")
    p.add_argument("--seconds", type=float, default=6.0, help="excerpt length")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=20, help="batches timed for our loader")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the second measure (0: skip)")
    p.add_argument("--naive-excerpts", type=int, default=24, help="excerpts timed for the naive loader (slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="time each optional augmentation against the default")
    p.add_argument("--rounds", type=int, default=5, help="--augment: turns of timing each augmentation")
    p.add_argument("--prep-tracks", type=int, default=8, help="--augment: tracks whose variants are timed")
    a = p.parse_args(argv)
    try:
        if a.seconds <= 0 or a.batches < 1 or a.naive_excerpts < 1 or a.batch_size < 1:
            raise Hw2Error("--seconds, --batch-size, --batches and --naive-excerpts must be positive")
        tracks = open_tracks(a.musdb_root, "train", "train")
        short = [t.name for t in tracks if t.duration < a.seconds]
        if short:
            raise Hw2Error(f"{len(short)} tracks (e.g. {short[0]!r}) are shorter than {a.seconds:g} s; "
                           "lower --seconds")
        if a.augment:
            cached = load_cached(tracks, a.cache_dir, stems=SOURCES, variants=variant_names(1.0, 0.1))
            return report_augment(a, tracks, cached)
        cached = load_cached(tracks, a.cache_dir, stems=SOURCES)
        (n_in, t_in), dl = ours(cached, a.seconds, a.batch_size, a.batches, a.workers, a.seed)
        n_nv, t_nv = naive(tracks, a.seconds, a.naive_excerpts, a.seed)
    except Hw2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    fmt = "MUSDB18-HQ wav" if tracks[0].is_wav else "MUSDB18 .stem.mp4"
    rows = [("ours: ExcerptSampler, in process", n_in, t_in)]
    if dl:
        rows.append((f"ours: ExcerptSampler, DataLoader {a.workers} workers", *dl))
    rows.append(("naive: musdb decode per excerpt", n_nv, t_nv))
    naive_rate = n_nv / t_nv
    print(f"\n{len(tracks)} train tracks ({fmt}) from {a.musdb_root}; {a.seconds:g} s stereo excerpts, "
          f"incoherent mixing, gain + swap; torch threads {torch.get_num_threads()}")
    print(f"{'loader':<46}{'excerpts':>9}{'seconds':>10}{'excerpts/s':>12}{'ours/naive':>12}")
    for name, n, t in rows:
        rate = n / t
        print(f"{name:<46}{n:>9d}{t:>10.2f}{rate:>12.1f}{rate / naive_rate:>11.0f}x")
    return 0


def report_augment(a, tracks, cached) -> int:
    rows = augmentations(cached, a)
    prep = preparation(cached, a.prep_tracks)
    print(f"\n{len(tracks)} train tracks from {a.musdb_root}; {a.seconds:g} s stereo excerpts, incoherent mixing, "
          f"gain + swap, in process (two prefetching threads); median of {a.rounds} turns of {a.batches} batches")
    print(f"{'loader':<28}{'excerpts/s':>12}{'vs default':>12}")
    for name, rate, ratio in rows:
        print(f"{name:<28}{rate:>12.1f}{ratio:>11.2f}x")
    print(f"\nmaking one variant of the four sources (librosa, one thread), on {a.prep_tracks} tracks; an hour of "
          f"the four int16 sources is {4 * BYTES_PER_SECOND * 3600 / 1e9:.2f} GB")
    print(f"{'variant':<16}{'wall s per hour of audio':>26}{'CPU s per hour':>16}{'GB per hour':>14}")
    for name, sec, cpu, gb in prep:
        print(f"{name:<16}{sec:>26.0f}{cpu:>16.0f}{gb:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
