"""A track's files against what their headers promise: cut short, damaged at the end, or float samples off the
audio scale. `hw2.tracks` runs these before any work (`check_tracks`) and while decoding (`float_scale_problem`);
each answer is one line naming the problem and the fix, or None.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from hw2 import RATE

STEM_NAMES = ("mixture", "drums", "bass", "other", "vocals")  # MUSDB18's stream order (hw2.tracks.STEMS)


# The up-front check decodes the last TAIL_SECONDS of every .stem.mp4 stream; a stream whose decoded audio ends
# more than TAIL_TOLERANCE before the duration its header gives is cut short (two AAC frames: on the 7-second
# preview's 50 test tracks the decoded ends lie within 0.004 s of the headers').
TAIL_SECONDS = 1.0
TAIL_TOLERANCE = 0.05


def truncation(path: Path) -> str | None:
    """"truncated: ..." when the file is shorter than its own structure says: the top-level boxes of an MP4,
    the data chunk of a RIFF WAV (one written as a stream, with no length, passes). Reads a few bytes per box."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if path.name.endswith(".wav"):
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None  # RF64, Wave64, ...: soundfile's own checks
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk, n = struct.unpack("<4sI", f.read(8))
                if chunk == b"data":
                    end = pos + 8 + n
                    return None if n in (0, 0xFFFFFFFF) or end <= size else _cut(size, end)
                pos += 8 + n + (n & 1)
            return None
        pos, boxes = 0, 0
        while pos < size and boxes < 10_000:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return _cut(size, pos + 8)
            n = struct.unpack(">I", head[:4])[0]
            if n == 1:
                n = struct.unpack(">Q", head[8:16])[0] if len(head) == 16 else 16
            elif n == 0:  # the last box, to the end of the file
                n = size - pos
            if n < 8:
                return f"damaged: an MP4 box of {n} bytes at byte {pos:,}: download it again"
            pos, boxes = pos + n, boxes + 1
        return _cut(size, pos) if pos > size else None


def _cut(size: int, end: int) -> str:
    return (f"truncated: the file has {size:,} bytes where its header promises {end:,} (an interrupted download "
            "or copy): download or copy it again")


def tail_problem(path: Path, streams: dict[int, float], names=STEM_NAMES) -> str | None:
    """Decode the last TAIL_SECONDS of the .stem.mp4 `streams` ({stream index: header duration}; `names`: the
    streams' stem names) with ffprobe:
    "truncated or damaged: ..." when a stream's audio ends early or its decoder reports errors."""
    start = max(0.0, min(streams.values()) - TAIL_SECONDS)
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a", "-read_intervals", f"{start:.3f}%",
           "-show_entries", "frame=stream_index,pts_time,nb_samples", "-of", "csv=p=0", str(path)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"damaged: ffprobe did not decode its last {TAIL_SECONDS:g} s within 120 s: download it again"
    ends = {}
    for line in r.stdout.split():
        fields = line.split(",")
        try:
            i, end = int(fields[0]), float(fields[1]) + int(fields[2]) / RATE
        except (ValueError, IndexError):
            continue
        ends[i] = max(ends.get(i, 0.0), end)
    short = [i for i, d in streams.items() if ends.get(i, 0.0) < d - TAIL_TOLERANCE]
    fix = "download it again"
    if short:
        i = short[0]
        decoded = f"ends at {ends[i]:.2f} s" if i in ends else f"decodes to nothing after {start:.2f} s"
        names_ = ", ".join(names[j] for j in short)
        return (f"truncated or damaged: its {names_} stream{'s' if len(short) > 1 else ''} should last "
                f"{streams[i]:.2f} s (its header) but the {names[i]} stream {decoded}: {fix}")
    err = next((line.strip() for line in r.stderr.splitlines() if line.strip()), "")
    if err or r.returncode != 0:
        return (f"damaged: its last {TAIL_SECONDS:g} s does not decode cleanly "
                f"({err[:120] or f'ffprobe exit {r.returncode}'}): {fix}")
    return None


def float_sample_problem(path: Path, info, stem: str, points: int = 5) -> str | None:
    """`float_scale_problem` on `points` one-second excerpts spread over a float WAV: up front, an
    int16-valued float file is refused at once (reading the whole file waits for the decoding)."""
    import soundfile as sf

    win = min(info.frames, RATE)
    with sf.SoundFile(str(path)) as f:
        for k in range(points):
            f.seek((info.frames - win) * k // max(1, points - 1))
            problem = float_scale_problem(f.read(win, dtype="float64", always_2d=True), stem, info.subtype)
            if problem:
                return problem
    return None


# A float WAV stem whose peak exceeds this is not on the +-1 scale of audio (int16 values written as floats, an
# unnormalised sum): refused. Up to it, samples beyond +-1 are clipped, as ffmpeg clips the overs of MUSDB18's
# AAC stems when it decodes them to 16 bits (decoded to float, the 7-second preview's 720 stems peak at
# 1.0021; 4 of them pass 1.0).
FLOAT_PEAK_MAX = 2.0


def float_scale_problem(block: np.ndarray, stem: str, subtype: str) -> str | None:
    """Why float samples cannot be read as audio on the +-1 scale (NaN or infinite values, a peak beyond
    FLOAT_PEAK_MAX), or None."""
    if not np.isfinite(block).all():
        return (f"the {stem} stem ({subtype}) holds NaN or infinite samples, which are no audio: the file is "
                "damaged; write it again from its source")
    peak = float(np.abs(block).max()) if block.size else 0.0
    if peak > FLOAT_PEAK_MAX:
        return (f"the {stem} stem ({subtype}) reaches {peak:,.1f}, not audio on the +-1.0 float scale "
                f"(more than {FLOAT_PEAK_MAX:g}: int16 values stored as floats?): divide it by its scale (32768 for "
                "int16 values) or write it as 16-bit PCM")
    return None
