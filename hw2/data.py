"""MUSDB18 data: open a root in either format, decode each track once into a cache, sample training excerpts.

The training loop never decodes audio. Each track is decoded once, one stem at a time, into a cache folder of
int16 `.npy` files of shape (nb_samples, nb_channels=2), one per stem a use reads: training the four sources,
validation and test also the real mixture (MUSDB's mixture is not exactly the sum of its stems). Channels are
interleaved, so one excerpt of one source is one contiguous read. MUSDB18 stems decode as 16-bit PCM and
MUSDB18-HQ stores 16-bit WAVs, so int16 loses nothing.

Excerpts are drawn by a strategy (seed 000, Open-Unmix's defaults from seed 003) and mixed on the fly, so random
track mixing and the gain / channel-swap augmentations survive the cache. Every batch is a pure function of
(seed, epoch, step): an interrupted run that resumes at (epoch, step) sees exactly the batches it would have seen.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hw2 import Hw2Error, atomic_write, remove_stale_temporaries

RATE = 44100
STEMS = ("mixture", "drums", "bass", "other", "vocals")  # MUSDB stem ids 0..4
SOURCES = STEMS[1:]
# A target is a sum of sources; "accompaniment" is MUSDB's non-vocals target.
TARGETS = {"vocals": ("vocals",), "accompaniment": ("drums", "bass", "other"),
           "drums": ("drums",), "bass": ("bass",), "other": ("other",)}
STRATEGIES = ("balanced", "random", "exhaustive", "roundrobin", "sequential")
MIXING = ("incoherent", "coherent")
OFFSETS = ("random", "fixed")
CACHE_VERSION = 2  # bump when the cache layout changes: entries live in <cache dir>/v<CACHE_VERSION>/
_SCALE = 1.0 / 32768.0


def default_cache_dir() -> Path:
    """`$HW2_CACHE`, else `~/.cache/hw2` (the MUSDB root may be read-only)."""
    return Path(os.environ.get("HW2_CACHE", Path.home() / ".cache" / "hw2")).expanduser()


def unmounted_drive(path: Path) -> Path | None:
    """Colab's Drive mount point when `path` lies under it and Drive is not mounted (a notebook run out of order,
    or its first cell skipped): then a missing folder there says nothing about the folder, only about the mount.
    $HW2_DRIVE_MOUNT stands in for /content/drive in the tests."""
    mount = Path(os.environ.get("HW2_DRIVE_MOUNT", "/content/drive"))
    return mount if mount in (path, *path.parents) and not (mount / "MyDrive").is_dir() else None


# --------------------------------------------------------------------------------------------------- opening
def detect_format(root: str | os.PathLike) -> bool:
    """Return `is_wav`: False for MUSDB18 (`<subset>/<track>.stem.mp4`), True for MUSDB18-HQ (`<track>/*.wav`)."""
    root = Path(root).expanduser()
    if not root.is_dir() and (mount := unmounted_drive(root.absolute())):
        raise Hw2Error(f"{root}: Google Drive is not mounted at {mount}, so the MUSDB folder there cannot be read: "
                       "run the notebook's first cell (it mounts Drive), or drive.mount('/content/drive')")
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


SYNTH_MARKER = "GENERATED_BY_HW2_SYNTH.txt"  # hw2.synth writes it into every root it makes
PREVIEW_MAX_DUR = 10.0  # musdb's sample set ("7-second preview") has 7 s tracks; full MUSDB18 tracks are minutes


def describe_dataset(root, tracks: Sequence = (), fmt: str | None = None) -> str:
    """What a MUSDB root holds, as a label for results files and captions: "generated tracks (hw2.synth)",
    "MUSDB18", "MUSDB18-HQ" or "MUSDB18 7-second preview".

    tracks: the opened tracks; their durations tell the 7-second preview from full tracks. Without them (a results
    file written before labels were recorded, a root not on this machine) the root's name decides: musdb18-7 and
    stempeg's example track are from the preview. fmt: "stem" or "wav" when the root is not at hand.
    """
    root = Path(str(root)).expanduser()
    if (root / SYNTH_MARKER).is_file():
        return "generated tracks (hw2.synth)"
    named_preview = root.name in ("musdb18-7", "hw2-example-musdb") or "stempeg" in str(root)
    if fmt is None:  # the preview ships as .stem.mp4 only; any other root must be here to be described
        fmt = "stem" if named_preview and not root.is_dir() else ("wav" if detect_format(root) else "stem")
    base = "MUSDB18-HQ" if fmt == "wav" else "MUSDB18"
    durations = [_duration(t) for t in tracks]
    preview = max(durations) < PREVIEW_MAX_DUR if durations and None not in durations else named_preview
    return f"{base} 7-second preview" if preview else base


def _duration(track) -> float | None:
    """Seconds of a musdb track (ffprobe's for .stem.mp4; the mixture WAV's header for MUSDB18-HQ)."""
    if getattr(track, "duration", None):
        return float(track.duration)
    path = Path(getattr(track, "path", ""))
    if path.suffix == ".wav" or (path / "mixture.wav").is_file():
        import soundfile as sf
        return sf.info(str(path if path.suffix == ".wav" else path / "mixture.wav")).duration
    return None


def require_ffmpeg() -> None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise Hw2Error(f"{' and '.join(missing)} not found on PATH: install ffmpeg "
                       "(apt-get install -y ffmpeg, brew install ffmpeg or conda install ffmpeg)")


def open_tracks(root: str | os.PathLike, subset: str = "train", split: str | None = None) -> list:
    """The `musdb` tracks of one subset, with musdb's standard train / valid split of the train folder.

    subset: "train" or "test"; split: None (the whole subset), "train" or "valid" (musdb's 14 validation tracks,
    those of them the root holds; full MUSDB18: 86 train and 14 valid tracks).
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


# One track's AAC streams may decode to lengths that differ by the encoder's delay (2112 samples of priming that
# a decoder may or may not drop) plus the padding of the last frame (up to 2 frames of 1024 samples): up to 4160
# samples (0.094 s) is padding and is cut off; more is different audio, not one track's stems. MUSDB18-HQ's WAV
# stems are equally long; a WAV track converted from MUSDB18 may carry the same padding, so the bound is shared.
MAX_PADDING = 2112 + 2 * 1024


def check_tracks(tracks, stems=STEMS, max_mismatch: int = MAX_PADDING) -> tuple[list[float], list[str], list[str]]:
    """Check, from the files' headers and without decoding, that every track can be read as `read_stems` will:
    the streams or files of `stems` exist, each has 1 or 2 channels at 44.1 kHz and some audio, and their
    lengths agree within `max_mismatch` samples.

    Returns (duration in seconds of each track, problems, notes): a problem is one line per bad track, naming the
    file and the fix; a note one line per track whose stems differ by padding only, which are cut to the shortest.
    """
    durations, problems, notes = [], [], []
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
            lengths = {s: round(d * RATE) for s, (_, _, d) in props.items()}
            if not issue and max(lengths.values()) - min(lengths.values()) > max_mismatch:
                issue = length_mismatch(lengths, max_mismatch)
            elif not issue and max(lengths.values()) > min(lengths.values()):
                notes.append(f"{where}: {length_mismatch(lengths, max_mismatch)}")
        except Hw2Error as e:
            issue = str(e).split(": ", 1)[-1]
        if issue:
            problems.append(f"{where}: {issue}")
        durations.append(min(seconds) if not issue else 0.0)
    return durations, problems, notes


def length_mismatch(lengths: dict[str, int], max_mismatch: int = MAX_PADDING) -> str:
    """What a track's stem lengths (samples) mean: within `max_mismatch`, padding cut off; beyond, a refusal. Both
    name the shortest and the longest stem with their lengths."""
    short, long = min(lengths, key=lengths.get), max(lengths, key=lengths.get)
    a, b = lengths[short], lengths[long]
    if b - a <= max_mismatch:
        return (f"stems differ by {b - a:,} samples ({short} {a:,}, {long} {b:,}), within AAC padding "
                f"(at most {max_mismatch:,}): cut to the shortest")
    return (f"stems of different lengths: the {short} stem has {a:,} samples, the {long} stem {b:,} ({b - a:,} more "
            f"than it, more than the {max_mismatch:,} AAC padding explains): replace the track")


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
        return self.stems[name].T.astype(np.float32) * np.float32(_SCALE)

    def target(self, name: str) -> np.ndarray:
        """float32 (nb_channels, nb_samples) of a target: the sum of its sources."""
        return sum(self.stem(s) for s in TARGETS[name])


def cache_key(track) -> str:
    """Changes when a source file's size or content changes, or the cache layout does; not with its folder or
    modification time, so a root copied to a new path (each Colab session) or synced by Drive keeps its cache.
    Content: a hash of five 4 KiB samples of each file (its header and four points across it)."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{track.name}".encode())
    for f in track_files(track):
        try:
            size = f.stat().st_size
            with open(f, "rb") as fh:
                for k in range(5):
                    fh.seek(k * size // 5)
                    h.update(fh.read(4096))
        except OSError:
            raise Hw2Error(f"{f}: cannot read this file; check that the MUSDB root is complete") from None
        h.update(f"|{f.name}|{size}".encode())
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


def read_stems(track, stems=STEMS, max_mismatch: int = MAX_PADDING) -> dict[str, np.ndarray]:
    """{stem: int16 (nb_samples, 2)}, one `read_stem` each, cut to a common length (`common_length`)."""
    out = {s: read_stem(track, s) for s in stems}
    n = common_length(track, {s: len(a) for s, a in out.items()}, max_mismatch)
    return {s: a[:n] for s, a in out.items()}


def common_length(track, lengths: dict[str, int], max_mismatch: int = MAX_PADDING) -> int:
    """The shortest of the stems' decoded lengths (samples). AAC streams may differ by their padding (stempeg cuts
    them to the shortest too); stems more than `max_mismatch` samples apart (MAX_PADDING) are not one track's
    stems and are refused."""
    n = min(lengths.values())
    if max(lengths.values()) - n > max_mismatch:
        where = track_files(track)[0] if not track.is_wav else Path(track.path).parent
        raise Hw2Error(f"{where}: {length_mismatch(lengths, max_mismatch)}")
    return n


def decode(track) -> dict[str, np.ndarray]:
    """{stem: int16 (nb_samples, 2)} of all five stems, the samples musdb decodes: `CachedTrack(name, decode(t))`."""
    return read_stems(track)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
        np.save(f, array)


BYTES_PER_SECOND = RATE * 2 * 2  # one int16 stereo stem: 176,400 bytes per second of audio
_NOTED: set = set()


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding this layout's entries (`<cache_dir>/v<CACHE_VERSION>`), created with its parents.

    A folder on Google Drive while Drive is not mounted is refused: creating it would put the cache on the
    runtime's disk, lost with the runtime, under a path that looks like Drive."""
    given = cache_dir is not None and str(cache_dir) != ""
    root = Path(cache_dir).expanduser() if given else default_cache_dir()
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
    / time-stretched copies of `stems`, made once from the decoded stems (`add_variants`)."""
    folder = cache_folder(cache_dir)
    entries = [folder / f"{_safe(t.name)}.{cache_key(t)}" for t in tracks]
    todo = [(t, e, [s for s in stems if not (e / f"{s}.npy").is_file()]) for t, e in zip(tracks, entries)]
    todo = [x for x in todo if x[2]]
    if todo:
        need = sum(t.duration * BYTES_PER_SECOND * len(missing) for t, _, missing in todo)
        free = shutil.disk_usage(folder).free
        if need > free:
            raise _disk_full(folder, need, free)
        from concurrent.futures import ThreadPoolExecutor

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


def open_cached(root, subset: str = "train", split: str | None = None, cache_dir=None,
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
    x = pcm.T.astype(np.float32) * np.float32(_SCALE)
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
        from concurrent.futures import ThreadPoolExecutor

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
                np.multiply(pcm[:, ::-1].T if d["swaps"][i, j] else pcm.T, d["gains"][i, j] * _SCALE, out=tmp,
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
            from concurrent.futures import ThreadPoolExecutor
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
