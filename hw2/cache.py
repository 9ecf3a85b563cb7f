"""The decoded cache: each MUSDB track decoded once, one stem at a time, and memory-mapped from then on.

The training loop never decodes audio. A cache entry holds int16 `.npy` files of shape (nb_samples,
nb_channels=2), one per stem a use reads: training the four sources, validation and test also the real mixture
(MUSDB's mixture is not exactly the sum of its stems). Channels are interleaved, so one excerpt of one source is one
contiguous read. Pitch-shifted and time-stretched copies of the sources are cached beside them.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from hw2 import RATE, Hw2Error, atomic_write, remove_stale_temporaries
from hw2.tracks import (SOURCES, STEMS, TARGET_SOURCES, bad_tracks_message, check_tracks, common_length, open_tracks,
                        hash_track_files, read_stem, unmounted_drive)

CACHE_VERSION = 2  # bump when the cache layout changes: entries live in <cache dir>/v<CACHE_VERSION>/
INT16_SCALE = 1.0 / 32768.0  # an int16 sample as a float in [-1, 1)


def default_cache_dir() -> Path:
    """`$HW2_CACHE`, else `~/.cache/hw2` (the MUSDB root may be read-only)."""
    return Path(os.environ.get("HW2_CACHE", Path.home() / ".cache" / "hw2")).expanduser()


@dataclass
class CachedTrack:
    """One decoded track. `stems`: {stem: int16 (nb_samples, nb_channels=2)}, memory-mapped from the cache, only
    the stems its use needs. An int16 (nb_stems=5, nb_channels, nb_samples) array in stem order is accepted too."""
    name: str
    stems: dict
    rate: int = RATE
    variants: dict = field(default_factory=dict)  # {variant name: {stem: int16 (nb_samples_v, 2)}} (`load_variants`)

    def __post_init__(self):
        if isinstance(self.stems, np.ndarray):
            self.stems = {s: a.T for s, a in zip(STEMS, self.stems)}

    @property
    def nb_samples(self) -> int:
        return len(next(iter(self.stems.values())))

    def stem(self, name: str) -> np.ndarray:
        """float32 (nb_channels, nb_samples) of one stem."""
        if name not in self.stems:
            raise Hw2Error(f"track {self.name!r}: the {name} stem was not cached for this use; open the tracks "
                           f"with stems including {name!r}")
        return self.stems[name].T.astype(np.float32) * np.float32(INT16_SCALE)

    def target(self, name: str) -> np.ndarray:
        """float32 (nb_channels, nb_samples) of a target: the sum of its sources."""
        return sum(self.stem(s) for s in TARGET_SOURCES[name])


def cache_key(track) -> str:
    """Changes when a source file's size or content changes, or the cache layout does; not with its folder or
    modification time, so a root copied to a new path (each Colab session) or synced by Drive keeps its cache.
    Content: a hash of five 4 KiB samples of each file (its header and four points across it)."""
    def samples(f: Path, st: os.stat_result, fh) -> bytes:
        out = b""
        for k in range(5):
            fh.seek(k * st.st_size // 5)
            out += fh.read(4096)
        return out + f"|{f.name}|{st.st_size}".encode()

    return hash_track_files(track, hashlib.sha1(f"v{CACHE_VERSION}|{track.name}".encode()), samples)[:16]


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
        np.save(f, array)


BYTES_PER_SECOND = RATE * 2 * 2  # one int16 stereo stem: 176,400 bytes per second of audio
_NOTED: set = set()


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding this layout's entries (`<cache_dir>/v<CACHE_VERSION>`), created with its parents.

    cache_dir None or "" is `default_cache_dir()`: "" is what an unset --cache-dir, config field or notebook
    setting holds, so every caller passes its value as it is. A folder on Google Drive while Drive is not mounted
    is refused: creating it would put the cache on the runtime's disk, lost with the runtime, under a path that
    looks like Drive."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if not root.exists() and (mount := unmounted_drive(root.absolute())):
        raise Hw2Error(f"{root}: Google Drive is not mounted at {mount}, so the decoded cache cannot go there: "
                       "mount it (drive.mount('/content/drive')) or set --cache-dir / $HW2_CACHE to a local folder")
    folder = root / f"v{CACHE_VERSION}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Hw2Error(f"{root}: cannot create the decoded cache here ({e.strerror}); "
                       "set --cache-dir or $HW2_CACHE to a writable folder") from None
    old = _old_layouts(root)
    if old and root not in _NOTED:
        _NOTED.add(root)
        size = sum(f.stat().st_size for p in old for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
        fix = " ".join([f"{root}/*.npy"] * any(p.is_file() for p in old) + [str(p) for p in old if p.is_dir()])
        print(f"note: {root} also holds an older hw2 cache layout ({len(old)} entries, {size / 1e9:.1f} GB) that "
              f"is no longer read; delete it to free the space: rm -r {fix}", file=sys.stderr)
    return folder


def _old_layouts(root: Path) -> list[Path]:
    """Entries of earlier layouts: version 1 kept one `<track>.<key>.npy` per track in the cache dir itself."""
    return sorted([p for p in root.glob("*.npy")] +
                  [p for p in root.glob("v[0-9]*") if p.is_dir() and p.name != f"v{CACHE_VERSION}"])


def load_cached(tracks: Sequence, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                stems: Sequence[str] = STEMS, jobs: int = 2, variants: Sequence[str] = ()) -> list[CachedTrack]:
    """Decode every stem not yet in the cache, then memory-map them all: a `CachedTrack` per track with `stems`.

    An entry is the folder `<cache_dir>/v<CACHE_VERSION>/<track>.<key>/` holding one `<stem>.npy` per decoded
    stem, each written atomically, so an interrupted build leaves whole files only and the next run decodes what
    is missing. Stems are decoded one at a time (peak memory: two copies of one stem, about 0.2 GB for a
    10-minute track), `jobs` tracks at once (ffmpeg decodes on one core). `variants` (`variant_names`): pitch-shifted
    / time-stretched copies of `stems`, made once from the decoded stems (`add_variants`). cache_dir: as in
    `cache_folder` (None or "": the default)."""
    folder = cache_folder(cache_dir)
    entries = [folder / f"{_safe(t.name)}.{cache_key(t)}" for t in tracks]
    todo = [(t, e, [s for s in stems if not (e / f"{s}.npy").is_file()]) for t, e in zip(tracks, entries)]
    todo = [x for x in todo if x[2]]
    if todo:
        # a truncated or damaged file would be cached as whatever part of it decodes, and trained on from then on
        _, problems, _ = check_tracks([t for t, _, _ in todo], stems)
        if problems:
            raise Hw2Error(bad_tracks_message(problems))
        need = sum(t.duration * BYTES_PER_SECOND * len(missing) for t, _, missing in todo)
        free = shutil.disk_usage(folder).free
        if need > free:
            raise _disk_full(folder, need, free)
        from tqdm.auto import tqdm
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            done = pool.map(lambda x: _build_entry(*x), todo)
            for _ in tqdm(done, total=len(todo), desc=f"decoding into {folder}", unit="track",
                          disable=not progress):
                pass
    cached = [_open_entry(t, e, stems) for t, e in zip(tracks, entries)]
    if variants:
        add_variants(cached, entries, variants, stems, progress, jobs)
    return cached


def _build_entry(track, entry: Path, stems: Sequence[str]) -> None:
    if entry.is_dir():
        remove_stale_temporaries(entry)
    for stem in stems:
        pcm = read_stem(track, stem)
        try:
            atomic_save_npy(entry / f"{stem}.npy", pcm)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(entry.parent, pcm.nbytes, shutil.disk_usage(entry.parent).free) from None
            raise
    try:  # stems of different lengths are not one track: keep no entry that every later run would refuse
        common_length(track, {p.stem: n for p in entry.glob("*.npy") if p.stem in STEMS and
                              (n := _npy_len(p)) is not None})
    except Hw2Error:
        shutil.rmtree(entry, ignore_errors=True)
        raise


def _npy_len(path: Path) -> int | None:
    try:
        return len(np.load(path, mmap_mode="r"))
    except (ValueError, OSError, TypeError):
        return None


def _disk_full(folder: Path, need: float, free: float) -> Hw2Error:
    old = _old_layouts(folder.parent)
    return Hw2Error(f"{folder}: not enough disk space for the decoded cache ({need / 1e9:.2f} GB more needed, "
                    f"{free / 1e9:.2f} GB free); free space there"
                    f"{' (an older cache layout there is no longer read: see the note above)' if old else ''}"
                    " or set --cache-dir / $HW2_CACHE to a folder with room")


def _open_entry(track, entry: Path, stems: Sequence[str]) -> CachedTrack:
    arrays = {}
    for stem in stems:
        path = entry / f"{stem}.npy"
        try:
            arrays[stem] = np.load(path, mmap_mode="r")
            if arrays[stem].dtype != np.int16 or arrays[stem].ndim != 2 or arrays[stem].shape[1] != 2:
                raise ValueError("not int16 (nb_samples, 2)")
        except (ValueError, OSError):  # unreadable entry (written by something else): decode that stem again
            path.unlink(missing_ok=True)
            _build_entry(track, entry, [stem])
            arrays[stem] = np.load(path, mmap_mode="r")
    n = common_length(track, {s: len(a) for s, a in arrays.items()})
    return CachedTrack(track.name, {s: a[:n] for s, a in arrays.items()})


def open_cached(root, subset: str = "train", split: str | None = None, cache_dir: str | os.PathLike | None = None,
                progress: bool = True, stems: Sequence[str] = STEMS) -> list[CachedTrack]:
    """`open_tracks` then `load_cached`: the usual way in. Training needs only `stems=SOURCES`."""
    return load_cached(open_tracks(root, subset, split), cache_dir, progress, stems)


# ------------------------------------------------------------------------------------ pitch / stretch variants
def variant_names(pitch_shift: float = 0.0, time_stretch: float = 0.0) -> tuple[str, ...]:
    """The cached variants of each source for Scaper's per-source pitch shift and time stretch (seed 001): a shift
    of -x and +x semitones, a stretch to 1 - x and 1 + x times the duration. Fixed points instead of Scaper's
    distributions, so that each is computed once (`add_variants`) and an excerpt costs one read as before."""
    x, y = abs(pitch_shift), abs(time_stretch)
    return ((f"pitch{-x:+g}", f"pitch{x:+g}") if x else ()) + ((f"stretch{1 - y:g}", f"stretch{1 + y:g}") if y else ())


def make_variant(pcm: np.ndarray, name: str) -> np.ndarray:
    """int16 (nb_samples_v, 2) of one variant (`variant_names`) of an int16 (nb_samples, 2) stem: librosa's phase
    vocoder (a dev package: only training with variants needs it); pitch shifts keep the length."""
    try:
        import librosa
    except ImportError:
        raise Hw2Error("pitch shift / time stretch variants need librosa: pip install -r requirements-dev.txt") from None
    x = pcm.T.astype(np.float32) * np.float32(INT16_SCALE)
    if name.startswith("pitch"):
        y = librosa.effects.pitch_shift(x, sr=RATE, n_steps=float(name[5:]), res_type="soxr_hq")
    elif name.startswith("stretch") and 0 < float(name[7:]):
        y = librosa.effects.time_stretch(x, rate=1.0 / float(name[7:]))
    else:
        raise Hw2Error(f"unknown variant {name!r}: use variant_names(pitch_shift, time_stretch)")
    # the phase vocoder loses about 3 dB on noisy and transient sources (overlap-added frames whose phases no
    # longer agree): the copy keeps the original's level, so that it changes the pitch or tempo, not the loudness
    level = np.sqrt(np.mean(np.square(y), dtype=np.float64))
    if level > 0:
        y *= np.float32(np.sqrt(np.mean(np.square(x), dtype=np.float64)) / level)
    return np.ascontiguousarray(np.clip(np.round(y.T * 32768.0), -32768, 32767).astype(np.int16))


def add_variants(cached: Sequence[CachedTrack], entries: Sequence[Path], variants: Sequence[str],
                 stems: Sequence[str] = SOURCES, progress: bool = True, jobs: int = 2) -> None:
    """Make the missing `<stem>.<variant>.npy` files of each cache entry (atomically, like the stems), then
    memory-map them into each track's `variants`. Disk: one stem's size per variant and stem (x the stretch)."""
    todo = [(c, e, v, s) for c, e in zip(cached, entries) for v in variants for s in stems
            if not (e / f"{s}.{v}.npy").is_file()]
    if todo:
        need = sum(c.nb_samples * 4 * max(1.0, float(v[7:]) if v.startswith("stretch") else 1.0)
                   for c, _, v, _ in todo)
        free = shutil.disk_usage(entries[0]).free
        if need > free:
            raise _disk_full(entries[0].parent, need, free)
        from tqdm.auto import tqdm
        build = lambda x: atomic_save_npy(x[1] / f"{x[3]}.{x[2]}.npy", make_variant(x[0].stems[x[3]], x[2]))  # noqa
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for _ in tqdm(pool.map(build, todo), total=len(todo), desc="pitch / stretch variants", unit="stem",
                          disable=not progress):
                pass
    for c, e in zip(cached, entries):
        c.variants = {v: {s: np.load(e / f"{s}.{v}.npy", mmap_mode="r") for s in stems} for v in variants}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
