"""MUSDB18 tracks: open a root in either format, check its tracks (their headers, then their files against them),
decode a stem to int16, fingerprint a track's files.

MUSDB18 (`<subset>/<track>.stem.mp4`, decoded through ffmpeg) and MUSDB18-HQ (`<track>/*.wav`) are read alike: one
stem at a time, straight to int16 (nb_samples, nb_channels=2), the samples musdb returns. MUSDB18 stems decode as
16-bit PCM and MUSDB18-HQ stores 16-bit WAVs, so int16 loses nothing; WAVs in other sample formats (24/32-bit PCM,
float) give the int16 samples of their 16-bit copy (`wav_int16_blocks`). A bad root or track is an `Hw2Error` that
names the file and the fix.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from hw2 import RATE, Hw2Error
from hw2.integrity import STEM_NAMES, float_sample_problem, float_scale_problem, tail_problem, truncation

STEMS = STEM_NAMES  # MUSDB stem ids 0..4
SOURCES = STEMS[1:]
# A target is a sum of sources; "accompaniment" is MUSDB's non-vocals target.
TARGET_SOURCES = {"vocals": ("vocals",), "accompaniment": ("drums", "bass", "other"),
                  "drums": ("drums",), "bass": ("bass",), "other": ("other",)}
# The two targets every separation writes and every table scores: the vocals and what is left of the mixture.
TARGETS = ("vocals", "accompaniment")


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
        raise Hw2Error(bad_tracks_message([f"{f}: cannot read (ffprobe fails): " + (
            truncation(f) or "the file is corrupt or not a MUSDB track: replace it") for f in bad])) from None
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

    Then, for the tracks whose headers are sound, that the files hold what their headers promise (`_damage`):
    none is cut short (the file ends where its boxes or data chunk say), each .stem.mp4 stream decodes to the end
    its header gives, and float WAVs hold audio on the +-1 scale. A truncated .stem.mp4 whose index sits at its
    start (MUSDB18's files) passes every header check and decodes to what remains; this finds it before any work.

    Returns (duration in seconds of each track, problems, notes): a problem is one line per bad track, naming the
    file and the fix; a note one line per track whose stems differ by padding only, which are cut to the shortest.
    """
    durations, problems, notes = [], [], []
    damage = _damage_all(tracks, stems)
    for track, damaged in zip(tracks, damage):
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
        issue = issue or damaged
        if issue:
            problems.append(f"{where}: {issue}")
        durations.append(min(seconds) if not issue else 0.0)
    return durations, problems, notes


def _damage_all(tracks, stems) -> list[str | None]:
    """`_damage` of every track, several at once (each .stem.mp4 costs an ffprobe process)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda t: _damage(t, stems), tracks))


def _damage(track, stems) -> str | None:
    """Why a track's files do not hold what their headers promise (one line naming the file and the fix), or
    None: a file that ends before its boxes or data chunk do (`truncation`), a .stem.mp4 stream whose last
    second does not decode to its end (`tail_problem`), a float WAV not on the +-1 scale. Header problems (a
    missing stream, a file ffprobe cannot read) are `_stem_properties`' and are left to it."""
    try:
        if track.is_wav:
            import soundfile as sf

            for s in stems:
                path = Path(track.path).parent / f"{s}.wav"
                problem = truncation(path)
                if problem:
                    return f"{path.name} is {problem}"
                info = sf.info(str(path))
                if info.subtype in ("FLOAT", "DOUBLE"):
                    problem = float_sample_problem(path, info, s)
                    if problem:
                        return problem
            return None
        path = Path(track.path)
        info = track.info
        streams = {STEMS.index(s): float(info.duration(STEMS.index(s))) for s in stems}
    except Exception:  # an unreadable header: `_stem_properties` names it
        return None
    return truncation(path) or tail_problem(path, streams)


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


FINGERPRINT_BYTES = 1 << 16  # read from each end of each file by `fingerprint`


def fingerprint(track) -> str:
    """A cheap identity of the audio a track is decoded from: for each of its files (`track_files`), the name,
    size, modification time (ns) and the first and last 64 KiB. Scores and listening WAVs are reused only under
    the same fingerprint, so that other audio under the same track name (the 7-second preview, then full MUSDB18;
    a regenerated root) is scored again. Stricter than the decoded cache's `cache_key`, which leaves out the
    modification time so that a root copied to a new place keeps its cache: scoring again costs minutes, a reused
    score for other audio is a wrong table. Two 64 KiB reads a file."""
    def ends(f: Path, st: os.stat_result, fh) -> bytes:
        head = fh.read(FINGERPRINT_BYTES)
        fh.seek(max(len(head), st.st_size - FINGERPRINT_BYTES))
        return f"{f.name}|{st.st_size}|{st.st_mtime_ns}|".encode() + head + b"|" + fh.read(FINGERPRINT_BYTES)

    return hash_track_files(track, hashlib.sha1(), ends)


def hash_track_files(track, h, part) -> str:
    """`h` (a hashlib object) fed, file by file (`track_files`), the bytes `part(path, its stat, open file)`
    returns; its hex digest. The one reader behind `fingerprint` and the decoded cache's `cache_key`, which
    differ in what they take from each file; a file that cannot be read is one line naming it."""
    for f in track_files(track):
        try:
            with open(f, "rb") as fh:
                h.update(part(f, os.fstat(fh.fileno()), fh))
        except OSError:
            raise Hw2Error(f"{f}: cannot read this file; check that the MUSDB root is complete") from None
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------- reading
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
            parts = list(wav_int16_blocks(path, info, stem)) if info.frames else []
        except Hw2Error:
            raise
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


def wav_int16_blocks(path: Path, info, stem: str):
    """A WAV file's samples as int16 blocks (block, channels), whatever its sample format.

    Integer PCM (8 to 32 bits) goes through libsndfile's int16 read, which keeps the top 16 bits (24-bit v gives
    floor(v / 256)). Everything else (32- and 64-bit float, and the codecs libsndfile decodes: u-law, A-law,
    ADPCM, ...) is read as float64 and converted with the same rule, floor(x * 32768) clipped to int16: the same
    audio gives the same int16 in every format (a float copy of a 16-bit file, its 16-bit samples exactly). An
    int16 read of a float file would round each sample to -1, 0 or 1 (libsndfile does not scale float to int).
    """
    import soundfile as sf

    if info.subtype.startswith("PCM_"):
        yield from sf.blocks(str(path), BLOCK, dtype="int16", always_2d=True)
        return
    for block in sf.blocks(str(path), BLOCK, dtype="float64", always_2d=True):
        problem = float_scale_problem(block, stem, info.subtype)
        if problem:
            raise Hw2Error(f"{path}: {problem}")
        yield np.floor(block * 32768.0).clip(-32768, 32767).astype(np.int16)


def _ffmpeg_pcm(path: Path, stream: int, channels: int, rate: int,
                more_outputs: Sequence[str] = ()) -> list[np.ndarray]:
    """One audio stream of a file as int16 blocks (block, channels), read from ffmpeg's pipe; `more_outputs`:
    ffmpeg arguments of further outputs of the same run (files: nothing else may write to a pipe)."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-f", "s16le",
           "-ar", str(rate), "pipe:1", *more_outputs]
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


# ---------------------------------------------------------------------------------------------------- blocks
def blocks(length: int, size: int, context: int = 0, min_size: int = 1):
    """Cut [0, length) into consecutive blocks for block-wise processing of whole tracks (statistics, validation,
    separation, scoring) and for an epoch's batches: yields (lo, a, b, hi), the block [a, b) and its window
    [lo, hi) with up to `context` on each side.

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
