"""The listening page: `<samples>/index.html` beside the WAVs that `hw2/infer.py` writes, one section per sample
track with an audio player per file, the track's SDR per method and a spectrogram image per vocals estimate; and
its variant without scores for songs separated from any audio file (`write_song_page`, `infer.py --input`).

It opens from the folder itself (file://): relative links, no script, no server, no internet. It is written with
the TA's install alone (requirements.txt has no plotting library), so the spectrograms are drawn here with
torch.stft and written by a small PNG encoder (zlib).
"""
from __future__ import annotations

import html
import json
import os
import struct
import zlib
from pathlib import Path
from urllib.parse import quote

import numpy as np

from hw2 import RATE, atomic_write
from hw2.evaluate import row_slug, track_medians
from hw2.separate import METHOD_NAMES
from hw2.tracks import TARGETS

TRUE_PREFIX = "true"  # true_vocals.wav, true_accompaniment.wav: the reference stems of a sample track
# magma-like colour ramp, dark (quiet) to light (loud)
RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                 [250, 193, 39], [252, 255, 164]], dtype=float)


# ---------------------------------------------------------------------------------------------------- images
def png_bytes(rgb: np.ndarray, text: dict | None = None) -> bytes:
    """uint8 (height, width, 3) as PNG bytes: 8-bit RGB, no filter, zlib-compressed; `text`: {keyword: value}
    stored as tEXt chunks (Latin-1), before the image data, where `png_text` reads them back."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    texts = b"".join(chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1"))
                     for k, v in (text or {}).items())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + texts
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def png_text(path: Path) -> dict:
    """The tEXt chunks before a PNG file's image data, and its "width" and "height"; {} if it cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)  # the header and the text chunks: the image data comes after them
    except OSError:
        return {}
    if not head.startswith(b"\x89PNG\r\n\x1a\n") or len(head) < 24:
        return {}
    out = dict(zip(("width", "height"), map(str, struct.unpack(">II", head[16:24]))))
    pos = 8
    while pos + 8 <= len(head):
        n, tag = struct.unpack(">I4s", head[pos:pos + 8])
        if tag == b"IDAT":
            break
        if tag == b"tEXt":
            key, _, value = head[pos + 8:pos + 8 + n].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + n
    return out


MAX_COLUMNS = 1200  # a spectrogram image's width at most (a 10-minute track has 51,700 frames at hop 512)


def magnitude(audio: np.ndarray, n_fft: int = 2048, n_hop: int = 512, max_columns: int = MAX_COLUMNS,
              block: int = 1024) -> np.ndarray:
    """(n_fft // 2 + 1, nb_columns) STFT magnitude of the channel mean of float `audio` (nb_samples,
    nb_channels) or of mono `audio` (nb_samples,): one column per frame up to `max_columns` frames (14 s), beyond
    that the largest of each run of consecutive frames (so a loud moment stays visible), at most `max_columns`
    columns. Computed `block` frames at a time: a 10-minute track's whole STFT and its image took 1.6 GB at once,
    now a few MB."""
    import torch

    x = torch.from_numpy(np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=1))
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    nb_frames = 1 + len(x) // n_hop  # torch.stft's, centred
    # the centred STFT's reflection padding once, then each block's frames exactly as the whole STFT has them
    x = torch.nn.functional.pad(x[None, None], (n_fft // 2, n_fft // 2), mode="reflect")[0, 0]
    group = -(-nb_frames // max_columns)  # frames per column
    step = group * max(1, block // group)  # frames per block: whole columns
    window = torch.hann_window(n_fft)
    columns = []
    for f0 in range(0, nb_frames, step):
        f1 = min(f0 + step, nb_frames)
        seg = x[f0 * n_hop:(f1 - 1) * n_hop + n_fft]
        mag = torch.stft(seg, n_fft, n_hop, window=window, center=False, return_complex=True).abs()
        pad = -mag.shape[1] % group  # the last column may hold fewer frames
        if pad:
            mag = torch.cat([mag, mag[:, -1:].expand(-1, pad)], dim=1)
        columns.append(mag.reshape(mag.shape[0], -1, group).amax(dim=2))
    return torch.cat(columns, dim=1).numpy()


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """(float32 channel mean of a sound file, its rate), read block by block: no stereo float copy of it."""
    import soundfile as sf

    info = sf.info(str(path))
    out = np.empty(info.frames, np.float32)
    pos = 0
    for block in sf.blocks(str(path), 1 << 18, dtype="float32", always_2d=True):
        out[pos:pos + len(block)] = block.mean(axis=1)
        pos += len(block)
    return out[:pos], info.samplerate


def spectrogram_image(mag: np.ndarray, rate: int = RATE, fmax: float = 8000.0, height: int = 160,
                      range_db: float = 70.0, ref: float | None = None, width: int | None = None) -> np.ndarray:
    """uint8 (height, frames, 3) of a `magnitude` in dB up to `fmax`, low frequencies at the bottom, `range_db`
    below `ref` (default: its own peak) black. A shared `ref` makes the images of one track compare. `width`:
    at most that many columns (frames picked evenly), so that a long track's image stays on the page."""
    mag = mag[: int(fmax / (rate / 2) * (mag.shape[0] - 1)) + 1]
    peak = ref if ref is not None else float(mag.max())
    db = 20 * np.log10(np.maximum(mag, 1e-10) / max(peak, 1e-10))
    level = np.clip(1 + db / range_db, 0, 1)[::-1]  # 0 = range_db below the peak, 1 = the peak
    level = level[np.linspace(0, level.shape[0] - 1, height).round().astype(int)]
    if width and level.shape[1] > width:
        level = level[:, np.linspace(0, level.shape[1] - 1, width).round().astype(int)]
    pos = level * (len(RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (RAMP[lo] * (1 - frac) + RAMP[lo + 1] * frac).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ page
def track_sdr(score_file: Path) -> dict:
    """{target: median-over-frames SDR in dB} of one track's museval JSON; {} where it is missing or skipped."""

    try:
        scores = json.loads(score_file.read_text())
        if scores.get("skipped"):
            return {}
        return {t: m.get("SDR") for t, m in track_medians(scores).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


FMAX = 8000.0  # Hz: the top of the page's spectrograms (the voice and most of the accompaniment's energy)
WIDTH = 480  # pixels: the widest spectrogram; shorter tracks keep one column per STFT frame


def ticks(span: float, most: int = 8) -> list[float]:
    """Round tick values from 0 to `span`: steps of 1, 2 or 5 times a power of ten, at most `most` + 1 ticks."""
    step = 10 ** np.floor(np.log10(max(span, 1e-9) / most))
    step = next(k * step for k in (1, 2, 5, 10) if span / (k * step) <= most)
    return [float(v) for v in np.arange(0, span + step / 2, step)]


def spectrogram_figure(src: str, alt: str, width: int, height: int, seconds: float, fmax: float = FMAX) -> str:
    """An image at its own pixel size with a frequency axis (kHz) at its left and a time axis (s) below it,
    in HTML: the TA's install has no plotting library."""
    def label(v):
        return f"{v:g}"
    ys = "".join(f'<span style="bottom:{100 * f / fmax:.2f}%">{label(f / 1000)}</span>' for f in ticks(fmax, 4))
    xs = "".join(f'<span style="left:{100 * t / seconds:.2f}%">{label(t)}</span>'
                 for t in ticks(seconds) if t <= seconds)
    return (f'<div class="spec"><div class="ylab">kHz</div><div class="y" style="height:{height}px">{ys}</div>'
            f'<img src="{src}" alt="{alt}" width="{width}" height="{height}">'
            f'<div></div><div></div><div class="x" style="width:{width}px">{xs}</div>'
            f'<div></div><div></div><div class="xlab">time (s)</div></div>')


def row_words(row: dict, several: bool) -> str:
    """A table row in words: its phase method's name, and which checkpoint where the page has several."""
    words = METHOD_NAMES.get(row.get("method"), row.get("method") or row.get("label", "?"))
    if row.get("checkpoint"):
        words = f"the model, {words}"
    if several and row.get("checkpoint"):
        epoch = str(row.get("epoch", "?")).replace("+", ", ")
        words = f"{Path(row['checkpoint']).name} (epoch{'s' if ',' in epoch else ''} {epoch}): {words[11:]}"
    return words


def _href(path: Path, folder: Path) -> str:
    """A link from the page in `folder` to `path`: relative (the folder may move, or be opened from elsewhere),
    climbing out of it with ../ for a song's input file; absolute where no relative path exists (another drive)."""
    try:
        rel = Path(os.path.relpath(Path(path).absolute(), Path(folder).absolute()))
    except ValueError:
        return Path(path).absolute().as_uri()
    return "/".join(quote(part) for part in rel.parts)


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f} dB"


def _player(path: Path, folder: Path) -> str:
    if not path.is_file():
        return "<td>—</td>"
    return f'<td><audio controls preload="metadata" src="{_href(path, folder)}"></audio></td>'


def write_page(samples: Path, rows: list[dict], score_file, title: str = "Listening samples") -> Path | None:
    """Write `samples/index.html` and one spectrogram PNG per vocals file. `rows`: the table's rows (dicts with
    "label", "method" and the slug `hw2.evaluate.row_slug` gives); `score_file(row, track)`: the path of that
    row's museval JSON for the track (`Evaluation.path`). Returns the page, or None when there are no samples."""
    samples = Path(samples)
    tracks = sorted(d for d in samples.iterdir() if d.is_dir()) if samples.is_dir() else []
    tracks = [d for d in tracks if (d / "mixture.wav").is_file()]
    if not tracks:
        return None
    several = len({r.get("checkpoint") for r in rows if r.get("checkpoint")}) > 1
    sections = []
    for d in tracks:
        # (label, sdr dict or None, vocals, accompaniment)
        lines = [("the mixture (what the model hears)", None, d / "mixture.wav", None)]
        if (d / f"{TRUE_PREFIX}_vocals.wav").is_file():
            lines.append(("the true stems (the reference)", None, d / f"{TRUE_PREFIX}_vocals.wav",
                          d / f"{TRUE_PREFIX}_accompaniment.wav"))
        for row in rows:
            slug = row_slug(row)
            voc, acc = d / f"{slug}_vocals.wav", d / f"{slug}_accompaniment.wav"
            if voc.is_file() or acc.is_file():
                lines.append((row_words(row, several), track_sdr(Path(score_file(row, d.name))), voc, acc))
        sections.append((d.name, lines, [d / "mixture.wav"]))  # the mixture's peak: the images compare
    return _write(samples, title, SCORED_INTRO, sections, "mixture's peak", scored=True)


def write_song_page(folder: Path, songs: list, title: str = "Separated songs") -> Path:
    """The page without scores, for songs separated from any audio file (`hw2.songs`): no true stems exist to
    score against. `songs`: [(name, input file, [(label, vocals WAV, accompaniment WAV)])]; each song's input
    plays from where it lies (a link relative to the page), the estimates beside the page, with a spectrogram
    per vocals file in dB from the loudest estimate's peak. Writes and returns `folder/index.html`."""
    sections = [(name, [(f"mixture: {Path(src).name} (the input)", None, Path(src), None),
                        *((label, None, voc, acc) for label, voc, acc in ests)],
                 [f for _, voc, acc in ests for f in (voc, acc)]) for name, src, ests in songs]
    return _write(Path(folder), title, SONG_INTRO, sections, "loudest estimate's peak", scored=False)


def _write(folder: Path, title: str, intro: str, sections: list, ref_name: str, scored: bool) -> Path:
    """The page: per section (heading, lines, files whose loudest STFT bin is the dB reference of its images), a
    table of lines (label, SDR dict or None, first file, second file or None), a player per file, the SDRs if
    `scored`, and a spectrogram of each first file that is a WAV inside `folder` (the hw2-written ones)."""
    parts = []
    for heading, lines, ref_files in sections:
        images = _images(folder, [voc for _, _, voc, _ in lines if voc.suffix == ".wav" and voc.is_file()
                                  and folder.absolute() in voc.absolute().parents], ref_files)
        body = []
        for label, sdr, voc, acc in lines:
            img = ""
            if voc in images:
                png, width, height, seconds = images[voc]
                img = spectrogram_figure(_href(png, folder), f"spectrogram of {html.escape(voc.name)}", width,
                                         height, seconds)
            sdr_cells = "".join(f"<td class=num>{_fmt(sdr.get(t)) if sdr else ''}</td>" for t in TARGETS) \
                if scored else ""
            # the mixture is neither stem: its one player spans both columns
            players = (_player(voc, folder).replace("<td>", '<td colspan="2">', 1) if acc is None
                       else _player(voc, folder) + _player(acc, folder))
            body.append(f"<tr><th>{html.escape(label)}</th>{players}{sdr_cells}<td>{img}</td></tr>")
        sdr_heads = "<th>vocals SDR</th><th>accompaniment SDR</th>" if scored else ""
        # what the column shows: the mixture's own image only where its row has one (a song's input has none)
        mixture = " (the mixture's in its row)" if any(acc is None and voc in images for _, _, voc, acc in lines) \
            else ""
        parts.append(f"<section><h2>{html.escape(heading)}</h2><table><thead><tr><th>what you hear</th>"
                     f"<th>vocals</th><th>accompaniment</th>{sdr_heads}<th>spectrogram of the vocals{mixture}, "
                     f"dB from the {ref_name}</th></tr></thead><tbody>" + "".join(body)
                     + "</tbody></table></section>")
    page = folder / "index.html"
    with atomic_write(page) as tmp:
        tmp.write_text(PAGE.format(title=html.escape(title), intro=intro, body="\n".join(parts)), encoding="utf-8")
    return page


IMAGE_STYLE = f"1|{FMAX}|{WIDTH}|{MAX_COLUMNS}|{RAMP.tolist()}"  # change it when the drawing changes: all redrawn


def _images(folder: Path, files: list, ref_files: list) -> dict:
    """{file: (its spectrogram PNG beside it, width, height, seconds)} of each WAV in `files`, in dB from the
    loudest STFT bin of `ref_files`. A PNG is drawn again only when stale: its text records what it was drawn
    from (the size and modification time of its WAV and of the reference files, and `IMAGE_STYLE`), so a page
    rebuilt with new songs or rows reads and draws only theirs; each file is read and transformed once."""
    def stamp(f: Path) -> str:
        st = f.stat()
        return f"{_href(f, folder)}|{st.st_size}|{st.st_mtime_ns}"

    refs = "+".join(map(stamp, ref_files))
    out, todo, spectra = {}, {}, {}
    for f in files:
        png, made = f.with_suffix(".png"), "|".join((IMAGE_STYLE, stamp(f), refs))
        old = png_text(png)
        try:
            if old.get("hw2-made-from") == made:
                out[f] = (png, int(old["width"]), int(old["height"]), float(old["hw2-seconds"]))
                continue
        except (KeyError, ValueError):  # a damaged record: drawn again
            pass
        todo[f] = (png, made)

    def spectrum(f: Path) -> tuple:
        if f not in spectra:
            audio, rate = read_mono(f)
            spectra[f] = (magnitude(audio, max_columns=MAX_COLUMNS), rate, len(audio) / rate)
        return spectra[f]

    if todo:
        ref = max(float(spectrum(f)[0].max()) for f in ref_files)
    for f, (png, made) in todo.items():
        mag, rate, seconds = spectrum(f)
        rgb = spectrogram_image(mag, rate, fmax=FMAX, ref=ref, width=WIDTH)
        with atomic_write(png) as tmp:
            tmp.write_bytes(png_bytes(rgb, {"hw2-made-from": made, "hw2-seconds": repr(seconds)}))
        out[f] = (png, rgb.shape[1], rgb.shape[0], seconds)
    return out


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle; }}
td.num {{ text-align: right; white-space: nowrap; }}
audio {{ width: 230px; }}
.spec {{ display: inline-grid; grid-template-columns: auto auto auto; align-items: center; font-size: 11px; }}
.spec img {{ display: block; }}
.spec .ylab {{ writing-mode: vertical-rl; transform: rotate(180deg); padding-right: 2px; }}
.spec .y, .spec .x {{ position: relative; }}
.spec .y {{ width: 2.2em; }}
.spec .y span {{ position: absolute; right: 4px; transform: translateY(50%); }}
.spec .x {{ height: 1.3em; }}
.spec .x span {{ position: absolute; top: 1px; transform: translateX(-50%); }}
.spec .xlab {{ text-align: center; }}
</style></head>
<body>
<h1>{title}</h1>
<p>{intro} Opens from this folder: no server, no internet.</p>
{body}
</body></html>
"""
SCORED_INTRO = """Per track: the mixture, the true stems and each method's estimates, with the track's SDR
(signal-to-distortion ratio, museval's BSSEval v4, median over its one-second frames; the results table gives the
median over all tracks)."""
SONG_INTRO = """Per song: the input file as the mixture, and the vocals and accompaniment each checkpoint and phase
method separated from it. No scores: a song has no true stems to score against."""
