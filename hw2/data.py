"""MUSDB18 data: open a root in either format, decode each track once into a cache, sample training excerpts.

The training loop never decodes audio. Each track is decoded once (through `musdb`) into one int16 `.npy`
of shape (nb_stems=5, nb_channels=2, nb_samples), stems in MUSDB's stem order
(mixture, drums, bass, other, vocals), memory-mapped at training time. MUSDB18 stems decode as 16-bit PCM and
MUSDB18-HQ stores 16-bit WAVs, so int16 loses nothing.

Excerpts are drawn by a strategy (seed 000, Open-Unmix's defaults from seed 003) and mixed on the fly, so random
track mixing and the gain / channel-swap augmentations survive the cache. Every batch is a pure function of
(seed, epoch, step): an interrupted run that resumes at (epoch, step) sees exactly the batches it would have seen.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hw2 import Hw2Error, atomic_write

RATE = 44100
STEMS = ("mixture", "drums", "bass", "other", "vocals")  # MUSDB stem ids 0..4; the cache keeps this order
SOURCES = STEMS[1:]
# A target is a sum of sources; "accompaniment" is MUSDB's non-vocals target.
TARGETS = {"vocals": ("vocals",), "accompaniment": ("drums", "bass", "other"),
           "drums": ("drums",), "bass": ("bass",), "other": ("other",)}
STRATEGIES = ("balanced", "random", "exhaustive", "roundrobin", "sequential")
MIXING = ("incoherent", "coherent")
CACHE_VERSION = 1  # bump when the cache layout changes: every key changes with it
_SCALE = 1.0 / 32768.0


def default_cache_dir() -> Path:
    """`$HW2_CACHE`, else `~/.cache/hw2` (the MUSDB root may be read-only)."""
    return Path(os.environ.get("HW2_CACHE", Path.home() / ".cache" / "hw2")).expanduser()


# --------------------------------------------------------------------------------------------------- opening
def detect_format(root: str | os.PathLike) -> bool:
    """Return `is_wav`: False for MUSDB18 (`<subset>/<track>.stem.mp4`), True for MUSDB18-HQ (`<track>/*.wav`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise Hw2Error(f"{root}: no such folder; pass the MUSDB18 folder that holds train/ and test/")
    subsets = [root / s for s in ("train", "test") if (root / s).is_dir()]
    if not subsets:
        raise Hw2Error(f"{root}: not a MUSDB root (no train/ or test/ folder); pass the folder that holds them")
    for sub in subsets:
        if any(p.name.endswith(".stem.mp4") for p in sub.iterdir()):
            return False
    for sub in subsets:
        if any((p / "mixture.wav").is_file() for p in sub.iterdir() if p.is_dir()):
            return True
    raise Hw2Error(f"{root}: not a MUSDB root (neither <track>.stem.mp4 files nor <track>/mixture.wav folders "
                   f"in {' or '.join(s.name + '/' for s in subsets)})")


def require_ffmpeg() -> None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise Hw2Error(f"{' and '.join(missing)} not found on PATH: install ffmpeg "
                       "(apt-get install -y ffmpeg, brew install ffmpeg or conda install ffmpeg)")


def open_tracks(root: str | os.PathLike, subset: str = "train", split: str | None = None) -> list:
    """The `musdb` tracks of one subset, with musdb's standard train / valid split of the train folder.

    subset: "train" or "test"; split: None (the whole subset), "train" (80 tracks) or "valid" (14 tracks).
    """
    if subset not in ("train", "test"):
        raise Hw2Error(f"unknown subset {subset!r}: use train or test")
    if split not in (None, "train", "valid"):
        raise Hw2Error(f"unknown split {split!r}: use train or valid (or none)")
    if split is not None and subset != "train":
        raise Hw2Error(f"split {split!r} only exists inside the train subset: use --subset train")
    root = Path(root).expanduser()
    is_wav = detect_format(root)
    if not is_wav:
        require_ffmpeg()
    import musdb  # imported late: it pulls stempeg, which is slow to import

    try:  # musdb probes every file (ffprobe) while listing: a corrupt file fails here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            db = musdb.DB(root=str(root), subsets=subset, split=split, is_wav=is_wav)
    except Exception as e:
        bad = _unreadable_files(root / subset)
        if not bad:
            raise Hw2Error(f"{root / subset}: cannot read ({type(e).__name__}: {str(e)[:100]}); check that it is "
                           "a MUSDB root") from None
        raise Hw2Error(bad_tracks_message([f"{f}: cannot read (ffprobe fails): the file is corrupt or not a "
                                           "MUSDB track: replace it" for f in bad])) from None
    # musdb walks the subset folder recursively: a hidden folder (Jupyter's .ipynb_checkpoints) or a nested one
    # would become a "track" with no files
    tracks = [t for t in db.tracks if not t.name.startswith(".") and
              (Path(t.path).parent if is_wav else Path(t.path)).parent == root / subset]
    where = f"{root / subset}" + (f" (musdb's {split} split)" if split else "")
    if not tracks:
        raise Hw2Error(f"{where}: no tracks in this subset; check --musdb-root and --subset")
    if is_wav:
        for track in tracks:
            folder = Path(track.path).parent
            missing = [f"{s}.wav" for s in STEMS if not (folder / f"{s}.wav").is_file()]
            if missing:
                raise Hw2Error(f"{folder}: missing {', '.join(missing)}; every MUSDB18-HQ track folder needs "
                               "mixture, drums, bass, other and vocals .wav files")
    return tracks


def bad_tracks_message(problems: list[str]) -> str:
    """One problem as is; several as a count and one line each."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} tracks cannot be read; nothing was run:\n" + "\n".join(problems)


def _unreadable_files(folder: Path) -> list[Path]:
    """Every audio file under `folder` that ffprobe cannot read (to name them all in one error)."""
    import stempeg

    bad = []
    for f in sorted(p for p in folder.rglob("*") if p.name.endswith((".stem.mp4", ".wav"))):
        try:
            stempeg.Info(str(f))
        except Exception:
            bad.append(f)
    return bad


def check_tracks(tracks, stems=STEMS, max_mismatch: float = 1.0) -> tuple[list[float], list[str]]:
    """Check, from the files' headers and without decoding, that every track can be read as `read_stems` will:
    the streams or files of `stems` exist, each has 1 or 2 channels at 44.1 kHz and some audio, and their
    lengths agree within `max_mismatch` seconds.

    Returns (duration in seconds of each track, problems): one line per bad track, naming the file and the fix.
    """
    durations, problems = [], []
    for track in tracks:
        where = Path(track.path) if not track.is_wav else Path(track.path).parent
        try:
            props = _stem_properties(track, stems)  # {stem: (channels, rate, seconds)}
            issue = next((f"the {s} stem has {c} channels; MUSDB stems are stereo (mono is upmixed): convert it "
                          "to stereo (ffmpeg -ac 2)" for s, (c, _, _) in props.items() if c not in (1, 2)), None)
            issue = issue or next((f"the {s} stem is {r} Hz, expected {RATE}: resample it (ffmpeg -ar 44100)"
                                   for s, (_, r, _) in props.items() if int(r) != RATE), None)
            issue = issue or next((f"the {s} stem holds no audio: replace the track"
                                   for s, (_, _, d) in props.items() if d <= 0), None)
            seconds = [d for _, _, d in props.values()]
            if not issue and max(seconds) - min(seconds) > max_mismatch:
                issue = ("stems of different lengths (" + ", ".join(f"{s} {d:.2f} s" for s, (_, _, d) in
                                                                    props.items()) + "): replace the track")
        except Hw2Error as e:
            issue = str(e).split(": ", 1)[-1]
        if issue:
            problems.append(f"{where}: {issue}")
        durations.append(min(seconds) if not issue else 0.0)
    return durations, problems


def _stem_properties(track, stems) -> dict[str, tuple[int, int, float]]:
    """{stem: (channels, sample rate, seconds)} from the file headers."""
    if track.is_wav:
        import soundfile as sf

        out = {}
        for s in stems:
            path = Path(track.path).parent / f"{s}.wav"
            try:
                info = sf.info(str(path))
            except Exception as e:
                raise _unreadable(path, e) from None
            out[s] = (info.channels, info.samplerate, info.frames / max(info.samplerate, 1))
        return out
    info = track.info
    if info is None or info.nb_audio_streams < len(STEMS):
        n = 0 if info is None else info.nb_audio_streams
        raise Hw2Error(f"{track.path}: {n} audio streams; a MUSDB18 .stem.mp4 holds 5 (mixture, drums, bass, "
                       "other, vocals): replace the file")
    try:
        return {s: (info.channels(STEMS.index(s)), info.rate(STEMS.index(s)), info.duration(STEMS.index(s)))
                for s in stems}
    except (KeyError, ValueError, TypeError) as e:
        raise Hw2Error(f"{track.path}: unreadable stream header ({type(e).__name__}): replace the file") from None


def track_files(track) -> list[Path]:
    """The files a track is decoded from: one .stem.mp4, or its five .wav files."""
    if track.is_wav:
        folder = Path(track.path).parent
        return [folder / f"{s}.wav" for s in STEMS]
    return [Path(track.path)]


# ---------------------------------------------------------------------------------------------------- blocks
def blocks(length: int, size: int, context: int = 0, min_size: int = 1):
    """Cut [0, length) into consecutive blocks for block-wise processing of whole tracks (statistics, validation,
    separation, scoring): yields (lo, a, b, hi), the block [a, b) and its window [lo, hi) with up to `context`
    on each side.

    size 0 (or >= length) gives one block. A last block shorter than `min_size` joins the one before, so that no
    block is too short for what it feeds (an STFT's reflect padding needs more than n_fft // 2 samples).
    """
    if length <= 0:
        return
    size = length if size <= 0 else size
    starts = list(range(0, length, size))
    if len(starts) > 1 and length - starts[-1] < min_size:
        starts.pop()
    for i, a in enumerate(starts):
        b = starts[i + 1] if i + 1 < len(starts) else length
        yield max(0, a - context), a, b, min(length, b + context)


# ----------------------------------------------------------------------------------------------------- cache
@dataclass
class CachedTrack:
    """One decoded track. `audio`: int16 (nb_stems=5, nb_channels=2, nb_samples), memory-mapped."""
    name: str
    audio: np.ndarray
    rate: int = RATE

    @property
    def nb_samples(self) -> int:
        return self.audio.shape[-1]

    def stem(self, name: str) -> np.ndarray:
        """float32 (nb_channels, nb_samples) of one stem."""
        return self.audio[STEMS.index(name)].astype(np.float32) * np.float32(_SCALE)

    def target(self, name: str) -> np.ndarray:
        """float32 (nb_channels, nb_samples) of a target: the sum of its sources."""
        return sum(self.stem(s) for s in TARGETS[name])


def cache_key(track) -> str:
    """Changes when any source file changes (path, size, mtime), or the cache layout does."""
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for f in track_files(track):
        try:
            st = f.stat()
        except OSError:
            raise Hw2Error(f"{f}: cannot read this file; check that the MUSDB root is complete") from None
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


BLOCK = 1 << 20  # samples per read while decoding: memory is the decoded int16 plus one block


def read_stem(track, stem: str) -> np.ndarray:
    """int16 (nb_samples, nb_channels=2) of one stem, decoded straight to 16-bit PCM block by block.

    The samples are the ones musdb returns (`track.stems[i] * 32768`): MUSDB18 through the same ffmpeg call as
    stempeg (`-map 0:<i> -f s16le -ar 44100`), MUSDB18-HQ through soundfile. Peak memory is the result plus one
    block, never a float64 copy of the track. Mono is upmixed; other channel counts are refused.
    """
    i = STEMS.index(stem)
    if track.is_wav:
        import soundfile as sf

        path = Path(track.path).parent / f"{stem}.wav"
        try:
            info = sf.info(str(path))
            channels, rate = info.channels, info.samplerate
            parts = list(sf.blocks(str(path), BLOCK, dtype="int16", always_2d=True)) if info.frames else []
        except Exception as e:  # soundfile raises several types on a corrupt file
            raise _unreadable(path, e) from None
    else:
        path = Path(track.path)
        try:
            channels, rate = track.info.channels(i), track.info.rate(i)
        except (IndexError, KeyError, TypeError):
            raise Hw2Error(f"{path}: has no audio stream {i} ({stem}); a MUSDB18 .stem.mp4 holds 5 streams "
                           "(mixture, drums, bass, other, vocals): replace the file") from None
        parts = _ffmpeg_pcm(path, i, channels, rate)
    if int(rate) != RATE:
        raise Hw2Error(f"{path}: sample rate {rate} Hz, expected {RATE}; MUSDB is 44.1 kHz: resample it "
                       "(ffmpeg -ar 44100) or use the original file")
    if channels not in (1, 2):
        raise Hw2Error(f"{path}: the {stem} stem has {channels} channels; MUSDB stems are stereo (mono is "
                       "upmixed): convert it to stereo (ffmpeg -ac 2)")
    pcm = np.concatenate(parts) if parts else np.zeros((0, channels), np.int16)
    del parts
    if len(pcm) == 0:
        raise Hw2Error(f"{path}: the {stem} stem decodes to no audio; the file is empty or corrupt: replace it")
    return np.repeat(pcm, 2, axis=1) if channels == 1 else pcm


def _ffmpeg_pcm(path: Path, stream: int, channels: int, rate: int) -> list[np.ndarray]:
    """One audio stream of a file as int16 blocks (block, channels), read from ffmpeg's pipe."""
    import subprocess

    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-f", "s16le",
           "-ar", str(rate), "pipe:1"]
    frame = 2 * channels
    parts, rest = [], b""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        while True:
            chunk = proc.stdout.read(BLOCK * frame)
            if not chunk:
                break
            chunk = rest + chunk
            usable = len(chunk) - len(chunk) % frame
            parts.append(np.frombuffer(chunk[:usable], "<i2").reshape(-1, channels).copy())
            rest = chunk[usable:]
        err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise _unreadable(path, RuntimeError(err.splitlines()[-1] if err else f"ffmpeg exit {proc.returncode}"))
    return parts


def _unreadable(path: Path, e: Exception) -> Hw2Error:
    detail = str(e).splitlines()[0][:120] if str(e) else "no detail"
    return Hw2Error(f"{path}: cannot decode ({type(e).__name__}: {detail}); the file is corrupt or not a MUSDB "
                    "track: replace it")


def read_stems(track, stems=STEMS, max_mismatch: float = 1.0) -> dict[str, np.ndarray]:
    """{stem: int16 (nb_samples, 2)}, one `read_stem` each, cut to a common length.

    AAC streams may differ by a few samples (stempeg cuts them to the shortest too); stems whose lengths differ
    by more than `max_mismatch` seconds are not one track's stems and are refused.
    """
    out = {s: read_stem(track, s) for s in stems}
    lengths = {s: len(a) for s, a in out.items()}
    n = min(lengths.values())
    if max(lengths.values()) - n > max_mismatch * RATE:
        where = track_files(track)[0] if not track.is_wav else Path(track.path).parent
        detail = ", ".join(f"{s} {v / RATE:.2f} s" for s, v in lengths.items())
        raise Hw2Error(f"{where}: stems of different lengths ({detail}); a MUSDB track's stems are equally "
                       "long: replace the track")
    return {s: a[:n] for s, a in out.items()}


def decode(track) -> np.ndarray:
    """int16 (5, 2, nb_samples) in stem order, the samples musdb decodes."""
    stems = read_stems(track)
    return np.stack([stems.pop(s).T for s in STEMS])


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
        np.save(f, array)


def load_cached(tracks: Sequence, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> list[CachedTrack]:
    """Decode every track not yet in the cache (atomically, with a progress bar) and memory-map them all."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Hw2Error(f"{cache_dir}: cannot create the decoded cache here ({e.strerror}); "
                       "set --cache-dir or $HW2_CACHE to a writable folder") from None
    paths = [cache_dir / f"{_safe(t.name)}.{cache_key(t)}.npy" for t in tracks]
    todo = [(t, p) for t, p in zip(tracks, paths) if not p.exists()]
    if todo:
        from tqdm.auto import tqdm
        for track, path in tqdm(todo, desc=f"decoding into {cache_dir}", unit="track", disable=not progress):
            atomic_save_npy(path, decode(track))
    out = []
    for track, path in zip(tracks, paths):
        try:
            audio = np.load(path, mmap_mode="r")
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # unreadable cache entry: decode again
            atomic_save_npy(path, decode(track))
            audio = np.load(path, mmap_mode="r")
        out.append(CachedTrack(track.name, audio))
    return out


def open_cached(root, subset: str = "train", split: str | None = None, cache_dir=None,
                progress: bool = True) -> list[CachedTrack]:
    """`open_tracks` then `load_cached`: the usual way in."""
    return load_cached(open_tracks(root, subset, split), cache_dir, progress)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


# -------------------------------------------------------------------------------------------------- sampling
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
    return [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]


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
    """

    def __init__(self, tracks: Sequence[CachedTrack], seq_dur: float = 6.0, targets: Sequence[str] = ("vocals",),
                 strategy: str = "balanced", batch_size: int = 16, samples_per_track: int = 64,
                 hop_dur: float | None = None, mixing: str = "incoherent",
                 gain: tuple[float, float] | None = (0.25, 1.25), swap: bool = True, seed: int = 42):
        if mixing not in MIXING:
            raise Hw2Error(f"unknown mixing {mixing!r}: use incoherent or coherent")
        for t in targets:
            if t not in TARGETS:
                raise Hw2Error(f"unknown target {t!r}: use one of {', '.join(TARGETS)}")
        if not tracks:
            raise Hw2Error("no tracks to sample from")
        self.tracks = list(tracks)
        self.excerpt_len = int(round(seq_dur * RATE))
        self.targets = tuple(targets)
        self.strategy, self.batch_size, self.samples_per_track = strategy, batch_size, samples_per_track
        self.hop = int(round(hop_dur * RATE)) if hop_dur else None
        self.mixing, self.gain, self.swap, self.seed = mixing, gain, swap, seed
        self.lengths = np.array([t.nb_samples for t in self.tracks])
        short = np.flatnonzero(self.lengths < self.excerpt_len)
        if len(short):
            t = self.tracks[short[0]]
            raise Hw2Error(f"track {t.name!r} is {t.nb_samples / RATE:.2f} s long, shorter than the "
                           f"{seq_dur:g} s excerpt; lower --seq-dur")
        self._plans: dict[int, list[np.ndarray]] = {}
        self._anchor = SOURCES.index(TARGETS[self.targets[0]][0])
        # where each source goes: index of the target it belongs to (or -1)
        self._dest = [next((k for k, t in enumerate(self.targets) if s in TARGETS[t]), -1) for s in SOURCES]

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
        if self.mixing == "coherent":
            tracks = np.repeat(pairs[:, :1], ns, 1)
            starts = np.repeat(pairs[:, 1:], ns, 1)
        else:
            tracks = rand_tracks
            starts = (rand_pos * (self.lengths[tracks] - self.excerpt_len + 1)).astype(np.int64)
            tracks[:, self._anchor], starts[:, self._anchor] = pairs[:, 0], pairs[:, 1]
        lo, hi = self.gain if self.gain else (1.0, 1.0)
        return {"tracks": tracks, "starts": starts, "gains": (lo + (hi - lo) * gains).astype(np.float32),
                "swaps": swaps & self.swap}

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.draw(epoch, step)
        b, n = len(d["tracks"]), self.excerpt_len
        mix = np.zeros((b, 2, n), np.float32)
        tgt = np.zeros((b, len(self.targets), 2, n), np.float32)
        tmp = np.empty((2, n), np.float32)
        for i in range(b):
            for j, source in enumerate(SOURCES):
                t, s = d["tracks"][i, j], d["starts"][i, j]
                pcm = self.tracks[t].audio[j + 1, :, s:s + n]
                if d["swaps"][i, j]:
                    pcm = pcm[::-1]
                np.multiply(pcm, d["gains"][i, j] * _SCALE, out=tmp, dtype=np.float32)
                mix[i] += tmp
                if self._dest[j] >= 0:
                    tgt[i, self._dest[j]] += tmp
        target = tgt[:, 0] if len(self.targets) == 1 else tgt
        return torch.from_numpy(mix), torch.from_numpy(target)

    def epoch(self, epoch: int, start_step: int = 0) -> "EpochBatches":
        return EpochBatches(self, epoch, start_step)


class EpochBatches(torch.utils.data.Dataset):
    """The batches of one epoch from `start_step` on, as a map-style dataset: use
    `DataLoader(batches, batch_size=None, num_workers=k)` to build them in worker processes."""

    def __init__(self, sampler: ExcerptSampler, epoch: int, start_step: int = 0):
        self.sampler, self.epoch, self.start_step = sampler, epoch, start_step
        self.length = max(0, sampler.nb_batches(epoch) - start_step)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(i)
        return self.sampler.batch(self.epoch, self.start_step + i)
