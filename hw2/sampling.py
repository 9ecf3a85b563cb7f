"""Training excerpts from cached tracks: the sampling strategies, mixing on the fly and the augmentations.

Excerpts are drawn by a strategy (seed 000, Open-Unmix's defaults from seed 003) and mixed on the fly, so random
track mixing and the gain / channel-swap augmentations survive the cache. Every batch is a pure function of
(seed, epoch, step): an interrupted run that resumes at (epoch, step) sees exactly the batches it would have seen.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from hw2 import RATE, Hw2Error
from hw2.cache import INT16_SCALE, CachedTrack
from hw2.tracks import SOURCES, TARGET_SOURCES, blocks

STRATEGIES = ("balanced", "random", "exhaustive", "roundrobin", "sequential")
MIXING = ("incoherent", "coherent")
OFFSETS = ("random", "fixed")


def plan_epoch(strategy: str, lengths: Sequence[int], excerpt_len: int, *, batch_size: int,
               samples_per_track: int = 64, hop: int | None = None, seed: int = 0, epoch: int = 0) -> list[np.ndarray]:
    """The excerpts of one epoch, as batches: a list of int64 arrays of shape (batch, 2) = (track, start).

    balanced    each track exactly `samples_per_track` times, random starts, shuffled (Open-Unmix's default)
    random      tracks and starts drawn with replacement, `samples_per_track * nb_tracks` excerpts
    exhaustive  every excerpt on a `hop` grid exactly once, shuffled
    roundrobin  the exhaustive excerpts, but no batch holds two excerpts of one track
    sequential  the exhaustive excerpts in order, unshuffled: deterministic, for validation
    """
    if strategy not in STRATEGIES:
        raise Hw2Error(f"unknown sampling strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    lengths = np.asarray(lengths, dtype=np.int64)
    room = lengths - excerpt_len + 1  # valid start positions per track
    if (room < 1).any():
        i = int(np.argmin(room))
        raise Hw2Error(f"track #{i} is {lengths[i] / RATE:.2f} s long, shorter than the {excerpt_len / RATE:.2f} s "
                       "excerpt; lower --seq-dur")
    rng = np.random.default_rng([seed, epoch, 0x5A4D])
    nb_tracks = len(lengths)
    if strategy in ("balanced", "random"):
        n = samples_per_track * nb_tracks
        if strategy == "balanced":
            tracks = rng.permutation(np.repeat(np.arange(nb_tracks), samples_per_track))
        else:
            tracks = rng.integers(0, nb_tracks, n)
        starts = (rng.random(n) * room[tracks]).astype(np.int64)
        return _chunks(np.stack([tracks, starts], 1), batch_size)

    hop = hop or excerpt_len
    grid = [np.arange(0, r, hop, dtype=np.int64) for r in room]
    if strategy == "sequential":
        pairs = np.concatenate([np.stack([np.full(len(g), t), g], 1) for t, g in enumerate(grid)])
        return _chunks(pairs, batch_size)
    if strategy == "exhaustive":
        pairs = np.concatenate([np.stack([np.full(len(g), t), g], 1) for t, g in enumerate(grid)])
        return _chunks(pairs[rng.permutation(len(pairs))], batch_size)
    # roundrobin: each batch takes the tracks with the most excerpts left (ties broken at random), one each
    queues = [list(rng.permutation(g)) for g in grid]
    batches = []
    while any(queues):
        left = np.array([len(q) for q in queues])
        order = np.lexsort((rng.random(nb_tracks), -left))  # most left first, random among equals
        chosen = [t for t in order[:batch_size] if left[t] > 0]
        batches.append(np.array([[t, queues[t].pop()] for t in chosen], dtype=np.int64))
    return batches


def _chunks(pairs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [pairs[a:b] for _, a, b, _ in blocks(len(pairs), batch_size)]


class ExcerptSampler:
    """Batches of mixed excerpts from cached tracks, reproducible from (seed, epoch, step).

    A batch is `(mixture, target)`: float32 tensors (nb_samples, nb_channels, excerpt_len); with several targets,
    `target` is (nb_samples, nb_targets, nb_channels, excerpt_len). The mixture is always the sum of the
    (augmented) sources, so the target and its complement add up to it.

    mixing       "incoherent": the anchor source (the first target's first source) comes from the planned
                 (track, start); every other source from its own random track and offset (Open-Unmix's random
                 track mixing). "coherent": all sources from the planned track and offset.
    gain         (low, high) per-source random gain, or None
    swap         randomly swap left / right per source
    offsets      "random": excerpts start where the plan says (random for balanced / random sampling), other
                 sources at random offsets; "fixed": every source excerpt starts at its track's start (Open-Unmix's
                 `random_chunks=False`)
    variants     names of cached pitch / stretch variants (`variant_names`, `load_cached(variants=...)`): each
                 source excerpt is read from the original or one variant, uniformly at random, at the same
                 relative position
    sign_flip    randomly multiply each source by -1 (Demucs's FlipSign: Défossez et al., arXiv:1911.13254, 2019;
                 github.com/facebookresearch/demucs, demucs/augment.py): changes how the sources interfere in the
                 mixture while each source's magnitude stays the same
    """

    def __init__(self, tracks: Sequence[CachedTrack], seq_dur: float = 6.0, targets: Sequence[str] = ("vocals",),
                 strategy: str = "balanced", batch_size: int = 16, samples_per_track: int = 64,
                 hop_dur: float | None = None, mixing: str = "incoherent",
                 gain: tuple[float, float] | None = (0.25, 1.25), swap: bool = True, seed: int = 42,
                 offsets: str = "random", variants: Sequence[str] = (), sign_flip: bool = False):
        if mixing not in MIXING:
            raise Hw2Error(f"unknown mixing {mixing!r}: use incoherent or coherent")
        if offsets not in OFFSETS:
            raise Hw2Error(f"unknown offsets {offsets!r}: use random or fixed")
        for t in targets:
            if t not in TARGET_SOURCES:
                raise Hw2Error(f"unknown target {t!r}: use one of {', '.join(TARGET_SOURCES)}")
        if not tracks:
            raise Hw2Error("no tracks to sample from")
        self.tracks = list(tracks)
        self.excerpt_len = int(round(seq_dur * RATE))
        self.targets = tuple(targets)
        self.strategy, self.batch_size, self.samples_per_track = strategy, batch_size, samples_per_track
        self.hop = int(round(hop_dur * RATE)) if hop_dur else None
        self.mixing, self.gain, self.swap, self.seed = mixing, gain, swap, seed
        self.offsets, self.variants, self.sign_flip = offsets, tuple(variants), sign_flip
        self.lengths = np.array([t.nb_samples for t in self.tracks])
        # (track, 1 + variant, source) -> length: index 0 is the original
        self._vlengths = np.array([[[t.nb_samples] * len(SOURCES)] + [[_variant(t, v, s).shape[0] for s in SOURCES]
                                                                      for v in self.variants] for t in self.tracks])
        if (self._vlengths < self.excerpt_len).any():
            t = self.tracks[int(np.argwhere(self._vlengths < self.excerpt_len)[0, 0])]
            raise Hw2Error(f"track {t.name!r}: a time-stretched variant is shorter than the {seq_dur:g} s excerpt; "
                           "lower --seq-dur or --time-stretch")
        short = np.flatnonzero(self.lengths < self.excerpt_len)
        if len(short):
            t = self.tracks[short[0]]
            raise Hw2Error(f"track {t.name!r} is {t.nb_samples / RATE:.2f} s long, shorter than the "
                           f"{seq_dur:g} s excerpt; lower --seq-dur")
        self._plans: dict[int, list[np.ndarray]] = {}
        self._anchor = SOURCES.index(TARGET_SOURCES[self.targets[0]][0])
        # where each source goes: index of the target it belongs to (or -1)
        self._dest = [next((k for k, t in enumerate(self.targets) if s in TARGET_SOURCES[t]), -1) for s in SOURCES]

    def plan(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._plans:
            self._plans = {epoch: plan_epoch(self.strategy, self.lengths, self.excerpt_len,
                                             batch_size=self.batch_size, samples_per_track=self.samples_per_track,
                                             hop=self.hop, seed=self.seed, epoch=epoch)}
        return self._plans[epoch]

    def nb_batches(self, epoch: int = 0) -> int:
        return len(self.plan(epoch))

    def draw(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """The random choices of one batch: per excerpt and source, track, start, gain and swap."""
        pairs = self.plan(epoch)[step]
        b, ns = len(pairs), len(SOURCES)
        rng = np.random.default_rng([self.seed, epoch, step])
        # draw everything in a fixed order whatever the settings, so that a setting never shifts the stream
        rand_tracks = rng.integers(0, len(self.tracks), (b, ns))
        rand_pos = rng.random((b, ns))
        gains = rng.random((b, ns))
        swaps = rng.random((b, ns)) < 0.5
        picks = rng.random((b, ns))  # drawn after the others: settings from before these options draw as they did
        signs = rng.random((b, ns)) < 0.5
        if self.mixing == "coherent":
            tracks = np.repeat(pairs[:, :1], ns, 1)
            starts = np.repeat(pairs[:, 1:], ns, 1)
        else:
            tracks = rand_tracks
            starts = (rand_pos * (self.lengths[tracks] - self.excerpt_len + 1)).astype(np.int64)
            tracks[:, self._anchor], starts[:, self._anchor] = pairs[:, 0], pairs[:, 1]
        if self.offsets == "fixed":
            starts = np.zeros_like(starts)
        variant = (picks * (1 + len(self.variants))).astype(np.int64)  # 0: the original
        if self.variants:  # the same relative position in the variant, whose length may differ (a stretch)
            room = self.lengths[tracks] - self.excerpt_len + 1
            room_v = self._vlengths[tracks, variant, np.arange(ns)] - self.excerpt_len + 1
            starts = starts * room_v // room
        lo, hi = self.gain if self.gain else (1.0, 1.0)
        sign = np.where(signs & self.sign_flip, -1.0, 1.0)
        return {"tracks": tracks, "starts": starts, "gains": (sign * (lo + (hi - lo) * gains)).astype(np.float32),
                "swaps": swaps & self.swap, "variants": variant}

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.draw(epoch, step)
        b, n = len(d["tracks"]), self.excerpt_len
        mix = np.zeros((b, 2, n), np.float32)
        tgt = np.zeros((b, len(self.targets), 2, n), np.float32)
        tmp = np.empty((2, n), np.float32)
        pcm = np.empty((n, 2), np.int16)
        for i in range(b):
            for j, source in enumerate(SOURCES):
                track, k = self.tracks[d["tracks"][i, j]], d["variants"][i, j]
                read_excerpt(track.stems[source] if k == 0 else _variant(track, self.variants[k - 1], source),
                             d["starts"][i, j], pcm)
                np.multiply(pcm[:, ::-1].T if d["swaps"][i, j] else pcm.T, d["gains"][i, j] * INT16_SCALE, out=tmp,
                            dtype=np.float32)
                mix[i] += tmp
                if self._dest[j] >= 0:
                    tgt[i, self._dest[j]] += tmp
        target = tgt[:, 0] if len(self.targets) == 1 else tgt
        return torch.from_numpy(mix), torch.from_numpy(target)

    def epoch(self, epoch: int, start_step: int = 0) -> "EpochBatches":
        return EpochBatches(self, epoch, start_step)


def _variant(track: CachedTrack, name: str, source: str) -> np.ndarray:
    if name not in track.variants:
        raise Hw2Error(f"track {track.name!r}: no cached {name} variant; open the tracks with "
                       f"load_cached(..., variants=variant_names(...))")
    return track.variants[name][source]


def read_excerpt(stem: np.ndarray, start: int, out: np.ndarray) -> None:
    """Copy `stem[start:start + len(out)]` (int16 (nb_samples, 2)) into `out`: for a cache file, one `pread` of
    exactly those bytes (a memory-mapped slice would page-fault it in 4 KiB pieces with read-around)."""
    if isinstance(stem, np.memmap) and stem.flags.c_contiguous:
        fd = os.open(stem.filename, os.O_RDONLY)
        try:
            view = memoryview(out).cast("B")
            offset, got = stem.offset + int(start) * out.strides[0], 0
            while got < len(view):
                k = os.preadv(fd, [view[got:]], offset + got)
                if k <= 0:
                    raise Hw2Error(f"{stem.filename}: cache file shorter than its header says; delete it")
                got += k
        finally:
            os.close(fd)
    else:
        out[...] = stem[start:start + len(out)]


class EpochBatches(torch.utils.data.Dataset):
    """The batches of one epoch from `start_step` on, as a map-style dataset: use
    `DataLoader(batches, batch_size=None, num_workers=k)` to build them in worker processes.

    Read in order, it builds the next `prefetch` batches in `threads` background threads (their reads and numpy
    mixing release the GIL), so the training step does not wait on the disk while it can keep up. The batches
    are the same with or without prefetching: each one is `sampler.batch(epoch, step)`."""

    def __init__(self, sampler: ExcerptSampler, epoch: int, start_step: int = 0, prefetch: int = 4,
                 threads: int = 2):
        self.sampler, self.epoch, self.start_step = sampler, epoch, start_step
        self.length = max(0, sampler.nb_batches(epoch) - start_step)
        self.prefetch, self.threads = prefetch, threads
        self._pool, self._pid, self._ahead = None, None, {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(i)
        if self.prefetch <= 0:
            return self.sampler.batch(self.epoch, self.start_step + i)
        if self._pid != os.getpid():  # first use in this process (a DataLoader worker is a fork)
            self._pool, self._pid, self._ahead = ThreadPoolExecutor(self.threads), os.getpid(), {}
        info = torch.utils.data.get_worker_info()
        stride = info.num_workers if info else 1  # a worker is asked every num_workers-th batch
        for k in range(i, min(self.length, i + stride * (self.prefetch + 1)), stride):
            if k not in self._ahead:
                self._ahead[k] = self._pool.submit(self.sampler.batch, self.epoch, self.start_step + k)
        for k in [k for k in self._ahead if k < i]:  # skipped (random access): drop
            self._ahead.pop(k).cancel()
        return self._ahead.pop(i).result()

    def __getstate__(self):  # pickled for spawned workers: without the threads
        return {**self.__dict__, "_pool": None, "_pid": None, "_ahead": {}}
