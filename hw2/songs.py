"""Any song separated: `python hw2/infer.py --input FILE_OR_FOLDER ...` (no MUSDB track, so nothing to score).

Every input is found and checked from its header before any work (a missing file, a file with no audio stream, a
folder with no audio files: one line each, nothing written), then per file: decoded once, to int16 at 44.1 kHz
(the models' rate) in its own channels; separated block by block (`hw2.separate.Separator`, the bounded memory of
a MUSDB track: the int16 song, one method's float32 estimates and one block); written back as `vocals.wav` and
`accompaniment.wav` (16-bit PCM) at the input's rate and channel count and its exact length; and a listening page
without scores (`hw2.listening.write_song_page`) lists every song separated into the folder.

    decoding   WAV, FLAC and AIFF at 44.1 kHz through soundfile (no ffmpeg needed), to int16 by the MUSDB18-HQ
               reader's rule (`hw2.tracks.wav_int16_blocks`: float and 24-bit files keep their level); anything
               else through ffmpeg, the first
               audio stream, resampled to 44.1 kHz on decode (`-ar 44100`, ffmpeg's default resampler)
    channels   mono goes to `Separator.separate` as it is, which separates it as the channel twice and gives it
               back mono (the mean of the two estimates); more than two channels are refused with the ffmpeg line
               that downmixes them
    rates      the estimates go back to the input's rate through ffmpeg too (aresample), padded or cut to the
               number of samples the input holds at its own rate: its header's count, or, where the header only
               estimates it (compressed files), counted by the same ffmpeg run that decodes it

The output folder is `<out>/<name>/<file stem>/` (`--name`, default `songs`; the file's parent folder joins the
stem where two inputs share one); with several checkpoints or phase methods, one subfolder per pair
(`<checkpoint>-<method>/`). `separation.json` beside the WAVs says what made them.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from hw2 import RATE, Hw2Error, atomic_write, atomic_write_text, listening
from hw2.checkpoint import check_writable
from hw2.tracks import BLOCK, TARGETS, _ffmpeg_pcm, bad_tracks_message, require_ffmpeg, wav_int16_blocks

# what a folder given to --input is searched for (a file given by name is tried whatever its suffix)
AUDIO_SUFFIXES = (".aac", ".aif", ".aiff", ".ape", ".flac", ".m4a", ".mka", ".mp3", ".mp4", ".oga", ".ogg", ".opus",
                  ".wav", ".webm", ".wma", ".wv")
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".aif", ".aiff")  # read without ffmpeg when at 44.1 kHz
INFO = "separation.json"
MIN_SECONDS = 0.1  # more than half the longest STFT window (n_fft 4096 at 44.1 kHz: 0.046 s)


@dataclass
class Song:
    path: Path
    rate: int
    channels: int
    frames: int | None  # samples at its own rate, when the header tells them exactly; else counted by decoding
    stream: int | None  # ffmpeg's index of its first audio stream; None: read through soundfile
    seconds: float


def find_inputs(items) -> tuple[list[Path], list[str]]:
    """The files to separate: each file named, and the audio files directly inside each folder named (sorted,
    hidden ones left out), each once; and one problem line per missing path or folder without audio files."""
    files, problems = [], []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append(f"{p}: no audio files in this folder (none of {' '.join(AUDIO_SUFFIXES)}); pass "
                                "the files themselves, or the folder that holds them")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder; pass --input an audio file or a folder of them")
    unique = {f.resolve(): f for f in reversed(files)}  # the first mention of a file given twice
    return [f for f in files if unique.get(f.resolve()) is f], problems


def probe(path: Path) -> Song:
    """Channels, rate, length and reader of one input, from its header; an `Hw2Error` line if it cannot be
    separated."""
    frames = None
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            info = sf.info(str(path))
        except Exception:  # a codec libsndfile lacks (or not audio at all): ffmpeg decides
            info = None
        if info is not None and info.frames == 0:
            raise Hw2Error(f"{path}: holds no audio (0 samples): pass another file")
        if info is not None and info.samplerate == RATE and info.channels in (1, 2):
            return _long_enough(Song(path, RATE, info.channels, info.frames, None, info.frames / RATE))
        frames = info.frames if info is not None else None
    require_ffmpeg()
    import stempeg  # here: slow to import, and WAV and FLAC inputs do without it

    try:
        probed = stempeg.Info(str(path))
    except Exception as e:  # ffmpeg-python's Error carries ffprobe's stderr
        lines = (getattr(e, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
        raise Hw2Error(f"{path}: ffmpeg cannot read it ({lines[-1][:100] if lines else type(e).__name__}): "
                       "pass an audio file") from None
    if not probed.audio_streams:
        kinds = sorted({s.get("codec_type", "?") for s in probed.info.get("streams", [])})
        raise Hw2Error(f"{path}: no audio stream ({', '.join(kinds) or 'no streams'} only): pass a file with "
                       "sound in it")
    stream = probed.audio_streams[0]
    channels, rate = int(stream.get("channels") or 0), int(stream.get("sample_rate") or 0)
    if channels not in (1, 2):
        raise Hw2Error(f"{path}: {channels} audio channels; separation takes mono or stereo: downmix it first "
                       f"(ffmpeg -i {shlex.quote(str(path))} -ac 2 {shlex.quote(path.stem + '-stereo.wav')})")
    seconds = float(stream.get("duration") or probed.info.get("format", {}).get("duration") or 0)
    if rate <= 0 or seconds <= 0:
        raise Hw2Error(f"{path}: its audio stream holds no audio ({seconds:g} s at {rate} Hz): pass another file")
    return _long_enough(Song(path, rate, channels, frames, int(stream["index"]), seconds))


def _long_enough(song: Song) -> Song:
    if song.seconds < MIN_SECONDS:  # refused here, before any work, not by the STFT after other songs are written
        raise Hw2Error(f"{song.path}: {song.seconds:.3f} s of audio, too short to separate (at least "
                       f"{MIN_SECONDS} s): pass a longer file")
    return song


def read_song(song: Song | str | Path) -> np.ndarray:
    """int16 (nb_samples, nb_channels) at 44.1 kHz of one input (a `Song`, or a path, probed first), in its own
    channels (mono: (nb_samples, 1)): what `Separator.separate` takes. Decoded once; then `song.frames` holds its
    exact length at its own rate. Memory: the result plus one block (and, for mono, the stereo copy
    `Separator.separate` separates: twice the result)."""
    song = song if isinstance(song, Song) else probe(Path(song))
    if song.stream is None:
        out = np.empty((song.frames, song.channels), np.int16)
        pos = 0
        # the MUSDB18-HQ reader's rule for every sample format, so a song and a stem read alike
        for block in wav_int16_blocks(song.path, sf.info(str(song.path)), "audio"):
            out[pos:pos + len(block)] = block
            pos += len(block)
        return out[:pos]
    parts = _decode(song)
    out = np.empty((sum(len(p) for p in parts), song.channels), np.int16)
    pos = 0
    while parts:  # each block freed once copied: the song is never held twice
        part = parts.pop(0)
        out[pos:pos + len(part)] = part
        pos += len(part)
    return out


def _decode(song: Song) -> list[np.ndarray]:
    """The input's int16 blocks at 44.1 kHz from one ffmpeg run, which also sets `song.frames` where the header
    left it open: at 44.1 kHz, the blocks' length; at another rate, the same run's second output, one line per
    decoded frame with its size (ffmpeg's framecrc), counts it, since several lengths resample to one."""
    with tempfile.TemporaryDirectory(prefix="hw2-song-") as tmp:
        frames = Path(tmp) / "frames.crc"
        count = song.frames is None and song.rate != RATE
        per_frame = ["-map", f"0:{song.stream}", "-ac", str(song.channels), "-c:a", "pcm_s16le", "-f", "framecrc",
                     str(frames)] if count else []
        try:
            parts = _ffmpeg_pcm(song.path, song.stream, song.channels, RATE, per_frame)
        except Hw2Error:
            raise Hw2Error(f"{song.path}: ffmpeg cannot decode it to the end: the file is damaged; re-encode or "
                           "replace it") from None
        if count:  # lines "stream, dts, pts, duration, size, checksum" after '#' header lines; size in bytes
            song.frames = sum(int(line.split(",")[4]) for line in frames.read_text().splitlines()
                              if line.strip() and not line.startswith("#")) // (2 * song.channels)
    if song.frames is None:
        song.frames = sum(len(p) for p in parts)
    return parts


def write_estimate(path: Path, audio: np.ndarray, song: Song) -> None:
    """Write float (nb_samples, song.channels) 44.1 kHz `audio` (an estimate of `read_song`'s result) as a 16-bit
    WAV at the song's rate and length, block by block (no full-length copy): through soundfile at 44.1 kHz, else
    resampled by ffmpeg."""
    def chunks():
        for lo in range(0, len(audio), BLOCK):
            yield np.clip(audio[lo:lo + BLOCK], -1, 1)

    with atomic_write(path) as tmp:
        if song.rate == RATE:
            with sf.SoundFile(str(tmp), "w", RATE, song.channels, "PCM_16") as f:
                for block in chunks():
                    f.write(block)
            return
        n = song.frames  # read_song set it
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", str(song.channels),
               "-i", "pipe:0", "-af", f"aresample={song.rate},apad=whole_len={n},atrim=end_sample={n}",
               "-c:a", "pcm_s16le", "-y", str(tmp)]
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                for block in chunks():
                    proc.stdin.write(np.ascontiguousarray(block, "<f4").tobytes())
                proc.stdin.close()
            except BrokenPipeError:  # ffmpeg stopped: its stderr says why
                pass
            err = proc.stderr.read().decode(errors="replace").strip()
        if proc.returncode != 0:
            raise Hw2Error(f"{path}: ffmpeg could not resample it to {song.rate} Hz "
                           f"({err.splitlines()[-1][:100] if err else f'exit {proc.returncode}'})")


def separate_songs(args, load_separators, distinct_names, command: str, log=print) -> list[dict]:
    """The --input command: check every input, then separate and write each; returns one dict per song (its
    input, folder and files). `hw2.infer`, on the floor above, hands in its `load_separators(args)`,
    `_row_names(paths)` and the command line to record (`command_line`), so that separators are set up, files
    named and the command recorded as for MUSDB rows without an import back."""
    if args.musdb_root:
        raise Hw2Error("--input and --musdb-root together: --input separates your own files (no scores), "
                       "--musdb-root scores MUSDB tracks; pass one of them")
    if args.references:
        raise Hw2Error("--references needs a MUSDB track's true stems, which your own files have not: leave it out")
    files, problems = find_inputs(args.input)
    songs = []
    for f in files:
        try:
            songs.append(probe(f))
        except Hw2Error as e:
            problems.append(str(e))
    if problems:
        raise Hw2Error(bad_tracks_message(problems))
    out = Path(args.out).absolute() / (args.name or "songs")
    check_writable(out, "the separated songs")
    separators = load_separators(args)
    for sep in separators:
        sep.check_methods(args.phase)
    pairs = [(sep, m) for sep in separators for m in args.phase]
    names = distinct_names([s.path for s in songs])  # the file stem; with its folder where two share one
    log(f"separating {len(songs)} file{'s' * (len(songs) != 1)} ({sum(s.seconds for s in songs) / 60:.1f} min of "
        f"audio) with {', '.join(f'{sep.name} / {m}' for sep, m in pairs)}; no scores: your files have no true "
        "stems")
    bar = tqdm(total=sum(round(s.seconds) for s in songs) * len(pairs), unit="s", desc="audio separated",
               dynamic_ncols=True)
    done = []
    try:
        for song, name in zip(songs, names):
            folder = out / name
            bar.set_postfix_str(name[:40])
            mixture = read_song(song)
            seconds = len(mixture) / RATE
            files = {}
            for sep, method in pairs:
                sub = folder / f"{sep.name}-{method}" if len(pairs) > 1 else folder
                ticks = _Ticks(bar, song.seconds / seconds)
                est = sep.separate(mixture, [method], key=name, progress=ticks)[method]
                ticks.to(round(song.seconds))  # the header's seconds, whatever the decoder gave
                for target in TARGETS:
                    write_estimate(sub / f"{target}.wav", est[target], song)
                del est
                files[f"{sep.name} / {method}"] = {t: str((sub / f"{t}.wav").relative_to(folder)) for t in TARGETS}
            del mixture
            atomic_write_text(folder / INFO, json.dumps(
                {"input": str(song.path.absolute()), "rate": song.rate, "channels": song.channels,
                 "seconds": round(seconds, 3), "files": files, "command": command}, indent=1))
            done.append({"input": song.path, "folder": folder, "files": files})
    except KeyboardInterrupt:
        bar.close()
        raise KeyboardInterrupt(f"interrupted: {len(done)} of {len(songs)} files separated (each whole) under "
                                f"{out}") from None
    bar.close()
    page = listening.write_song_page(out, _page_songs(out), title=f"Separated songs: {out.name}")
    for d in done:
        log(f"{d['input']}: {', '.join(str(d['folder'] / f) for v in d['files'].values() for f in v.values())}")
    log(f"vocals and accompaniment of {len(done)} file{'s' * (len(done) != 1)} in {out}/<file>/; listening page: "
        f"{page}")
    return done


class _Ticks:
    """The bar moves by the song's seconds as `Separator.separate` reports its blocks' samples; `scale` turns
    decoded seconds into the header's, whose sum is the bar's total."""

    def __init__(self, bar, scale: float):
        self.bar, self.scale, self.samples, self.shown = bar, scale, 0, 0

    def __call__(self, nb_samples: int) -> None:
        self.samples += nb_samples
        self.to(round(self.samples / RATE * self.scale))

    def to(self, seconds: int) -> None:
        if seconds > self.shown:
            self.bar.update(seconds - self.shown)
            self.shown = seconds


def _page_songs(out: Path) -> list:
    """What the page lists: every song separated into `out` (this run's and earlier ones'), from its INFO file."""
    songs = []
    for info in sorted(out.glob(f"*/{INFO}")):
        try:
            meta = json.loads(info.read_text())
            ests = [(label, info.parent / f["vocals"], info.parent / f["accompaniment"])
                    for label, f in meta["files"].items()]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or from another version: left off the page, not fatal
        if all(v.is_file() and a.is_file() for _, v, a in ests):
            songs.append((info.parent.name, Path(meta["input"]), ests))
    return songs
