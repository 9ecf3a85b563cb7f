"""The listening page: `<samples>/index.html` beside the WAVs that `hw2/infer.py` writes, one section per sample
track with an audio player per file, the track's SDR per method and a spectrogram image per vocals estimate.

It opens from the folder itself (file://): relative links, no script, no server, no internet. It is written with
the TA's install alone (requirements.txt has no plotting library), so the spectrograms are drawn here with
torch.stft and written by a small PNG encoder (zlib).
"""
from __future__ import annotations

import html
import json
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
def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 (height, width, 3) as PNG bytes: 8-bit RGB, no filter, zlib-compressed."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def magnitude(audio: np.ndarray, n_fft: int = 2048, n_hop: int = 512) -> np.ndarray:
    """(n_fft // 2 + 1, nb_frames) STFT magnitude of the channel mean of float `audio` (nb_samples, nb_channels)."""
    import torch

    x = torch.from_numpy(np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=1))
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    return torch.stft(x, n_fft, n_hop, window=torch.hann_window(n_fft), return_complex=True).abs().numpy()


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


def _href(path: Path, folder: Path) -> str:
    return "/".join(quote(part) for part in path.relative_to(folder).parts)


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f} dB"


def _player(path: Path, folder: Path) -> str:
    if not path.is_file():
        return "—"
    return f'<audio controls preload="metadata" src="{_href(path, folder)}"></audio>'


def write_page(samples: Path, rows: list[dict], score_file, title: str = "Listening samples") -> Path | None:
    """Write `samples/index.html` and one spectrogram PNG per vocals file. `rows`: the table's rows (dicts with
    "label", "method" and the slug `hw2.evaluate.row_slug` gives); `score_file(row, track)`: the path of that
    row's museval JSON for the track (`Evaluation.path`). Returns the page, or None when there are no samples."""
    import soundfile as sf


    samples = Path(samples)
    tracks = sorted(d for d in samples.iterdir() if d.is_dir()) if samples.is_dir() else []
    tracks = [d for d in tracks if (d / "mixture.wav").is_file()]
    if not tracks:
        return None
    several = len({r.get("checkpoint") for r in rows if r.get("checkpoint")}) > 1
    parts = []
    for d in tracks:
        lines = []  # (label, sdr dict or None, vocals file, accompaniment file)
        lines.append(("the mixture (what the model hears)", None, d / "mixture.wav", None))
        if (d / f"{TRUE_PREFIX}_vocals.wav").is_file():
            lines.append(("the true stems (the reference)", None, d / f"{TRUE_PREFIX}_vocals.wav",
                          d / f"{TRUE_PREFIX}_accompaniment.wav"))
        for row in rows:
            slug = row_slug(row)
            voc, acc = d / f"{slug}_vocals.wav", d / f"{slug}_accompaniment.wav"
            if voc.is_file() or acc.is_file():
                lines.append((row_words(row, several), track_sdr(Path(score_file(row, d.name))), voc, acc))
        # one dB reference per track (the mixture's peak), so that the images compare
        mix, rate = sf.read(d / "mixture.wav", dtype="float32", always_2d=True)
        ref = float(magnitude(mix).max())
        body = []
        for label, sdr, voc, acc in lines:
            img = ""
            if voc.is_file():
                audio, rate = sf.read(voc, dtype="float32", always_2d=True)
                png = voc.with_suffix(".png")
                rgb = spectrogram_image(magnitude(audio), rate, fmax=FMAX, ref=ref, width=WIDTH)
                with atomic_write(png) as tmp:
                    tmp.write_bytes(png_bytes(rgb))
                img = spectrogram_figure(_href(png, samples), f"spectrogram of {html.escape(voc.name)}",
                                         rgb.shape[1], rgb.shape[0], len(audio) / rate)
            sdr_cells = "".join(f"<td class=num>{_fmt(sdr.get(t)) if sdr else ''}</td>" for t in TARGETS)
            # the mixture is neither stem: its one player spans both columns
            players = (f'<td colspan="2">{_player(voc, samples)}</td>' if acc is None
                       else f"<td>{_player(voc, samples)}</td><td>{_player(acc, samples)}</td>")
            body.append(f"<tr><th>{html.escape(label)}</th>{players}{sdr_cells}<td>{img}</td></tr>")
        parts.append(f"<section><h2>{html.escape(d.name)}</h2><table><thead><tr><th>what you hear</th>"
                     "<th>vocals</th><th>accompaniment</th><th>vocals SDR</th><th>accompaniment SDR</th>"
                     "<th>spectrogram of the vocals (the mixture's in its row), dB from the mixture's peak</th>"
                     "</tr></thead><tbody>" + "".join(body) + "</tbody></table></section>")
    page = samples / "index.html"
    with atomic_write(page) as tmp:
        tmp.write_text(PAGE.format(title=html.escape(title), body="\n".join(parts)), encoding="utf-8")
    return page


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
<p>Per track: the mixture, the true stems and each method's estimates, with the track's SDR (signal-to-distortion
ratio, museval's BSSEval v4, median over its one-second frames; the results table gives the median over all
tracks). Opens from this folder: no server, no internet.</p>
{body}
</body></html>
"""
