"""Build the graded 16:9 PDF report and the TA's README.pdf, with matplotlib only (no browser, no TeX).

    python -m hw2.report                      # report/report.pdf and README.pdf from the repo's files
    python -m hw2.report --results results --runs-history runs/vocals/history.json \\
        --figures report/figures --out report/report.pdf --readme README.md --readme-out README.pdf \\
        --author "Name" --student-id r12345678 --repo-url https://...

Inputs, all optional (a section without its input says so and shows no number):
  results/*.json              written by the evaluation command (`python hw2/infer.py ...`): rows of museval
                              "median of medians" scores per checkpoint and phase method
  checkpoints/history.json    a run's per-epoch losses (or --runs-history, one or more)
  checkpoints/config.json     the run's training config (else the config.json beside a history file, else the
                              defaults of `python -m hw2.train`, labelled as such)
  checkpoints/MODEL_CARD.md   the model card, printed in the details section
  report/figures/*.png        figures saved by the notebooks, `NN_name.png` from `notebooks/NN_*.ipynb`;
                              an optional `NN_name.txt` beside one is printed as its provenance
Every table and figure carries a provenance line: results file, command, data and checkpoint.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from matplotlib import font_manager
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

import hw2
from hw2 import Hw2Error, OneLineParser, __version__, run_cli
from hw2.evaluate import METRICS, TARGETS
from hw2.separate import METHODS as MODEL_METHODS
from hw2.separate import REFERENCES
from hw2.train import MAX_PARAMS, TrainConfig

ROOT = Path(hw2.__file__).resolve().parents[1]
TITLE = "HW2 Source Separation: vocals / accompaniment with Open-Unmix"
SLIDE = (40 / 3, 7.5)  # 16:9 inches (960 x 540 pt)
A4 = (8.27, 11.69)

METHODS = {
    "mixture": "Mixture phase",
    "griffinlim": "Griffin-Lim",
    "griffinlim-mix": "Griffin-Lim (mixture-phase init)",
    "wiener": "Wiener filter",
    "mix-as-estimate": "Mixture as estimate (lower ref.)",
    "oracle-irm": "Oracle IRM (upper ref.)",
}
GL_METHODS = ("griffinlim", "griffinlim-mix")
NO_RESULTS = ("No results yet: run `python hw2/infer.py --musdb-root PATH ...` (it writes results/*.json), "
              "then `python -m hw2.report`.")

# ------------------------------------------------------------------------------------------------------ style
NAVY, ACCENT, TEXT, MUTED, LIGHT, RULE = "#1F3A5F", "#E07A2D", "#222222", "#5F6B7A", "#EEF2F7", "#C9D1DC"
GOOD, BAD = "#2E7D32", "#C62828"


def _families(first: str, fallbacks: Sequence[str]) -> list[str]:
    """`first` plus the installed CJK fallbacks (a student's name may need them); missing ones are left out."""
    have = {f.name for f in font_manager.fontManager.ttflist}
    return [first] + [f for f in fallbacks if f in have]


_CJK = ("Noto Sans CJK TC", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans TC", "Microsoft JhengHei",
        "PingFang TC", "Heiti TC", "Arial Unicode MS", "WenQuanYi Zen Hei", "AR PL UMing TW")
SANS = _families("DejaVu Sans", _CJK)
MONO = _families("DejaVu Sans Mono", _CJK)
RC = {"pdf.fonttype": 42, "font.family": SANS, "axes.titlesize": 12, "axes.labelsize": 11,
      "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 9.5, "axes.spines.top": False,
      "axes.spines.right": False}


@functools.lru_cache(maxsize=None)
def _font(mono: bool, weight: str):
    """A private FreeType face at 100 pt / 72 dpi: advances come out in points per 100 pt."""
    from matplotlib import ft2font
    path = font_manager.findfont(FontProperties(family=MONO if mono else SANS, weight=weight))
    font = ft2font.FT2Font(path)
    font.set_size(100, 72)
    flags = ft2font.LoadFlags.NO_HINTING if hasattr(ft2font, "LoadFlags") else ft2font.LOAD_NO_HINTING
    return font, flags


@functools.lru_cache(maxsize=4096)
def _advance(ch: str, mono: bool, weight: str) -> float:
    font, flags = _font(mono, weight)
    if font.get_char_index(ord(ch)) == 0:
        return 100.0  # not in the font (drawn by a fallback font, e.g. CJK): about one em
    return font.load_char(ord(ch), flags=flags).linearHoriAdvance / 65536.0


@functools.lru_cache(maxsize=65536)
def text_width(s: str, size: float, mono: bool = False, weight: str = "normal") -> float:
    """Width of one line of text in inches: unhinted advances, as the PDF lays them out (plus 1% slack)."""
    if not s:
        return 0.0
    return sum(_advance(c, mono, weight) for c in s) * size / 100.0 / 72.0 * 1.01


def line_height(size: float, spacing: float = 1.32) -> float:
    return size * spacing / 72.0


def wrap(s: str, width: float, size: float, mono: bool = False, weight: str = "normal",
         first_width: float | None = None) -> list[str]:
    """Greedy word wrap by measured width; words longer than a line are broken by characters. Keeps `\\n`."""
    out: list[str] = []
    for para in str(s).split("\n"):
        cur = ""
        for word in para.split(" "):
            limit = width if (out or first_width is None) else first_width
            cand = word if not cur else cur + " " + word
            if text_width(cand, size, mono, weight) <= limit:
                cur = cand
                continue
            if cur:
                out.append(cur)
                cur, limit = "", width
            while len(word) > 1 and text_width(word, size, mono, weight) > limit:
                k = _fit_chars(word, limit, size, mono, weight)
                out.append(word[:k])
                word, limit = word[k:], width
            cur = word
        out.append(cur)
    return out


def _fit_chars(word: str, width: float, size: float, mono: bool, weight: str) -> int:
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_width(word[:mid], size, mono, weight) <= width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fmt(v, digits: int = 2) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_delta(v) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:+.2f}"


def display_path(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------------------- drawing
class Page:
    """One PDF page; draw in inches from the top-left corner (y grows downwards)."""

    def __init__(self, size=SLIDE):
        self.w, self.h = size
        self.fig = Figure(figsize=size)
        FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, self.w)
        ax.set_ylim(self.h, 0)
        ax.set_axis_off()
        self.ax = ax

    def text(self, x, y, s, size=13.0, *, mono=False, weight="normal", color=TEXT, ha="left", va="top",
             style="normal", **kw):
        return self.ax.text(x, y, s, fontsize=size, family=MONO if mono else SANS, fontweight=weight,
                            color=color, ha=ha, va=va, fontstyle=style, parse_math=False, **kw)

    def rect(self, x, y, w, h, color, **kw):
        self.ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="none", **kw))

    def hline(self, x0, x1, y, color=RULE, lw=0.8):
        self.ax.plot([x0, x1], [y, y], color=color, lw=lw, solid_capstyle="butt")

    def paragraph(self, x, y, width, s, size=13.0, *, mono=False, weight="normal", color=TEXT, style="normal",
                  spacing=1.32) -> float:
        lh = line_height(size, spacing)
        for line in wrap(s, width, size, mono, weight):
            self.text(x, y, line, size, mono=mono, weight=weight, color=color, style=style)
            y += lh
        return y

    def lead_paragraph(self, x, y, width, lead, rest, size=13.0, color=TEXT) -> float:
        """A bold lead-in followed by normal text on the same line, wrapped."""
        lh = line_height(size)
        lead = lead.strip() + " "
        lw = text_width(lead, size, weight="bold")
        if lw > width * 0.6:
            y = self.paragraph(x, y, width, lead, size, weight="bold", color=color)
            return self.paragraph(x, y, width, rest, size, color=color)
        self.text(x, y, lead, size, weight="bold", color=color)
        lines = wrap(rest, width, size, first_width=width - lw)
        for i, line in enumerate(lines):
            self.text(x + (lw if i == 0 else 0), y, line, size, color=color)
            y += lh
        return y

    def bullets(self, x, y, width, items, size=13.0, *, marker="•", gap=0.45, color=TEXT) -> float:
        """items: strings or (bold lead, text) pairs."""
        indent = size / 72.0 * (1.25 if marker != "#" else 1.6 if len(items) < 10 else 2.1)
        lh = line_height(size)
        for i, item in enumerate(items):
            mk = f"{i + 1}." if marker == "#" else marker
            self.text(x, y, mk, size, color=ACCENT, weight="bold")
            if isinstance(item, tuple):
                y = self.lead_paragraph(x + indent, y, width - indent, item[0], item[1], size, color=color)
            else:
                y = self.paragraph(x + indent, y, width - indent, item, size, color=color)
            y += lh * gap
        return y

    def table(self, x, y, width, header, rows, *, size=11.0, groups=None, align=None, bold=(), muted=(),
              min_size=None, fill=True) -> float:
        """A clean table: optional group header (label, span) pairs, bold header, zebra rows. Returns its bottom.

        align: per column "l" or "r" (default: first column left, others right). bold / muted: sets of
        (row, col) cells and of rows. Too wide: the font shrinks down to `min_size`, then the widest
        left-aligned column wraps."""
        ncol = len(header)
        align = align or ["l"] + ["r"] * (ncol - 1)
        cells = [list(map(str, r)) for r in rows]
        pad = 0.12
        min_size = min_size or max(size - 1.5, 8.0)
        bold = set(bold)

        def weight(i, c):
            return "bold" if (i, c) in bold else "normal"

        def natural(sz):
            return [max([text_width(header[c], sz, weight="bold")] +
                        [text_width(r[c], sz, weight=weight(i, c)) for i, r in enumerate(cells)]) + 2 * pad
                    for c in range(ncol)]
        widths = natural(size)
        while sum(widths) > width and size > min_size:
            size -= 0.5
            widths = natural(size)
        if sum(widths) > width:
            lefts = [c for c in range(ncol) if align[c] == "l"] or list(range(ncol))
            c = max(lefts, key=lambda k: widths[k])
            widths[c] = max(width - (sum(widths) - widths[c]), 0.8)
        extra = max(width - sum(widths), 0.0) if fill else 0.0
        widths = [w + extra / ncol for w in widths]
        xs = np.concatenate([[x], x + np.cumsum(widths)])
        total_w = xs[-1] - x
        lh = line_height(size, 1.22)
        rh1 = size * 1.95 / 72.0

        def lines_of(i, c, s, wt):
            return wrap(s, widths[c] - 2 * pad + 1e-6, size, weight=wt)

        if groups:
            c = 0
            for label, span in groups:
                if label:
                    x0, x1 = xs[c], xs[c + span]
                    self.text((x0 + x1) / 2, y + rh1 / 2, label, size, weight="bold", color=NAVY, ha="center",
                              va="center")
                    self.hline(x0 + 0.08, x1 - 0.08, y + rh1 - 0.02, color=NAVY, lw=1.0)
                c += span
            y += rh1
        head = [lines_of(-1, c, h, "bold") for c, h in enumerate(header)]
        rh = max(rh1, max(len(h) for h in head) * lh + rh1 - lh)
        self.rect(x, y, total_w, rh, NAVY)
        for c, h in enumerate(head):
            self._cell(xs, c, y, rh, h, lh, size, align[c], pad, color="white", weight="bold")
        y += rh
        for i, r in enumerate(cells):
            body = [lines_of(i, c, v, weight(i, c)) for c, v in enumerate(r)]
            rh = max(rh1, max(len(b) for b in body) * lh + rh1 - lh)
            if i % 2 == 1:
                self.rect(x, y, total_w, rh, LIGHT)
            for c, b in enumerate(body):
                self._cell(xs, c, y, rh, b, lh, size, align[c], pad, color=MUTED if i in muted else TEXT,
                           weight=weight(i, c))
            y += rh
        self.hline(x, x + total_w, y, color=NAVY, lw=1.0)
        return y

    def _cell(self, xs, c, y, rh, lines, lh, size, al, pad, **kw):
        """The lines of one cell, centred vertically in its row."""
        y0 = y + (rh - len(lines) * lh) / 2 + (lh - size * 1.17 / 72) / 2
        for k, s in enumerate(lines):
            yy = y0 + k * lh
            if al == "r":
                self.text(xs[c + 1] - pad, yy, s, size, ha="right", **kw)
            elif al == "c":
                self.text((xs[c] + xs[c + 1]) / 2, yy, s, size, ha="center", **kw)
            else:
                self.text(xs[c] + pad, yy, s, size, ha="left", **kw)

    def axes(self, x, y, w, h):
        """A matplotlib Axes occupying the box (inches from the top-left)."""
        return self.fig.add_axes((x / self.w, 1 - (y + h) / self.h, w / self.w, h / self.h))

    def image(self, path: Path, x, y, w, h) -> tuple[float, float, float, float]:
        """Draw a PNG fitted (aspect kept) and centred in the box; returns the box it occupies."""
        try:
            img = mpimg.imread(str(path))
        except Exception as e:  # noqa: BLE001 - any decoder failure is the same user error
            raise Hw2Error(f"{display_path(path)}: not a readable PNG ({type(e).__name__}); re-run the notebook "
                           "that saves it, or delete it") from None
        ih, iw = img.shape[:2]
        scale = min(w / iw, h / ih)
        dw, dh = iw * scale, ih * scale
        bx, by = x + (w - dw) / 2, y + (h - dh) / 2
        ax = self.axes(bx, by, dw, dh)
        ax.imshow(img, interpolation="antialiased")
        ax.set_axis_off()
        return bx, by, dw, dh


class Deck:
    """The slide deck: pages in order, each with the report's title bar and footer."""

    def __init__(self, author: str):
        self.pages: list[Page] = []
        self.author = author

    def slide(self, section: str, title: str) -> Page:
        p = Page(SLIDE)
        p.rect(0, 0, p.w, 1.0, NAVY)
        p.rect(0, 1.0, p.w, 0.06, ACCENT)
        p.text(0.6, 0.2, section.upper(), 10.5, color="#C9D6E8", weight="bold")
        size = 23.0
        while size > 15 and text_width(title, size, weight="bold") > p.w - 1.2:
            size -= 1
        p.text(0.6, 0.45 + (23 - size) / 144, title, size, color="white", weight="bold")
        p.hline(0.6, p.w - 0.6, p.h - 0.45, color=RULE, lw=0.6)
        p.text(0.6, p.h - 0.38, f"HW2 Source Separation · {self.author}", 8.5, color=MUTED)
        p.text(p.w - 0.6, p.h - 0.38, str(len(self.pages) + 1), 8.5, color=MUTED, ha="right")
        self.pages.append(p)
        return p

    def blank(self) -> Page:
        p = Page(SLIDE)
        self.pages.append(p)
        return p


# body area of a slide
BX0, BY0 = 0.6, 1.35
BX1, BY1 = SLIDE[0] - 0.6, SLIDE[1] - 0.6
BW = BX1 - BX0


def _prov_wrap(lines: Sequence[str], width, size, max_lines=3) -> list[str]:
    """Each provenance line wrapped to at most `max_lines` (the full text is in the named file)."""
    out = []
    for line in lines:
        w = wrap(line, width, size, mono=True)
        if len(w) > max_lines:
            w = w[:max_lines]
            w[-1] = w[-1][:max(len(w[-1]) - 2, 0)] + " …"
        out.extend(w)
    return out


def provenance_block(page: Page, x, y, width, lines: Sequence[str], size=8.0, bottom: float | None = None) -> float:
    """Small monospace provenance lines; with `bottom`, they are placed so they end there."""
    wrapped = _prov_wrap(lines, width, size)
    lh = line_height(size, 1.25)
    if bottom is not None:
        y = bottom - lh * len(wrapped)
    page.hline(x, x + width, y - 0.06, color=RULE, lw=0.5)
    for line in wrapped:
        page.text(x, y, line, size, mono=True, color=MUTED)
        y += lh
    return y


def provenance_height(lines: Sequence[str], width, size=8.0) -> float:
    return line_height(size, 1.25) * len(_prov_wrap(lines, width, size)) + 0.1


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class ResultFile:
    path: Path
    title: str
    command: str
    created: str
    version: str
    data: dict
    extra: dict
    rows: list["Row"] = field(default_factory=list)

    @property
    def data_key(self) -> tuple:
        vals = (self.data.get(k) for k in ("root", "subset", "split", "nb_tracks", "format"))
        return tuple(v if isinstance(v, (str, int, float, type(None))) else str(v) for v in vals)

    def data_text(self) -> str:
        d = self.data
        if not d:
            return "data: not recorded"
        parts = [f"root {d.get('root', '?')}", f"subset {d.get('subset', '?')}",
                 f"split {d.get('split') or 'none'}", f"{d.get('nb_tracks', '?')} tracks"]
        if d.get("format"):
            parts.append(f"format {d['format']}")
        return "data: " + ", ".join(parts)

    def short_data(self) -> str:
        d = self.data
        s = f"MUSDB18 {d.get('subset', '?')}"
        if d.get("split"):
            s += f"/{d['split']}"
        n = d.get("nb_tracks")
        if n is not None:
            s += f", {n} track{'' if n == 1 else 's'}"
        return s

    def partial_note(self) -> str:
        """A hedge when the scores do not cover the whole MUSDB18 test set (50 tracks)."""
        d = self.data
        n = d.get("nb_tracks")
        if d.get("subset") == "test" and isinstance(n, int) and n < 50:
            return f"only {n} of the 50 test tracks: not comparable with full-test-set scores"
        if d.get("subset") == "train":
            return ("validation split of the train subset" if d.get("split") == "valid" else "train subset") + \
                ", not the test set"
        return ""


@dataclass
class Row:
    label: str
    checkpoint: str | None
    epoch: int | None
    method: str
    scores: dict
    source: ResultFile

    def score(self, target: str, metric: str = "SDR") -> float:
        t = self.scores.get(target)
        v = t.get(metric) if isinstance(t, dict) else None
        try:
            v = float(v)
        except (TypeError, ValueError):
            return math.nan
        return v

    @property
    def method_name(self) -> str:
        return METHODS.get(self.method, self.method)

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCES


def _read_json(path: Path, what: str, fix: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise Hw2Error(f"{display_path(path)}: cannot read {what} ({e.strerror or e}); {fix}") from None
    except (UnicodeDecodeError, ValueError) as e:
        where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise Hw2Error(f"{display_path(path)}: not valid JSON{where}; {fix}") from None


def load_results(paths: Sequence[Path], explicit: bool) -> list[ResultFile]:
    """Every results JSON under the given folders (or the given files), sorted by path."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(q for q in p.glob("*.json") if q.is_file()))
        elif p.is_file():
            files.append(p)
        elif explicit:
            raise Hw2Error(f"{p}: no such results file or folder; pass the folder the evaluation command "
                           "writes its JSON to (default results/)")
    fix = "re-run the evaluation command (`python hw2/infer.py ...`) or delete the file"
    out = []
    for path in files:
        doc = _read_json(path, "results", fix)
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise Hw2Error(f"{display_path(path)}: not an hw2 results file (no \"rows\" list); {fix}")
        data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
        known = {"title", "command", "created", "hw2_version", "data", "rows"}
        rf = ResultFile(path, str(doc.get("title") or path.stem), str(doc.get("command") or "not recorded"),
                        str(doc.get("created") or "?"), str(doc.get("hw2_version") or "?"), data,
                        {k: v for k, v in doc.items() if k not in known})
        for i, r in enumerate(doc["rows"]):
            if not isinstance(r, dict) or not isinstance(r.get("method"), str):
                raise Hw2Error(f"{display_path(path)}: row {i} is not an object with a \"method\"; {fix}")
            scores = r.get("scores") if isinstance(r.get("scores"), dict) else {}
            epoch = r.get("epoch")
            if isinstance(epoch, str) and epoch.strip().isdigit():
                epoch = int(epoch)
            epoch = int(epoch) if isinstance(epoch, (int, float)) and math.isfinite(epoch) else None
            ckpt = r.get("checkpoint")
            rf.rows.append(Row(str(r.get("label") or r["method"]), str(ckpt) if ckpt else None, epoch,
                               r["method"], scores, rf))
        out.append(rf)
    return out


@dataclass
class Run:
    path: Path
    history: list[dict]
    config: dict | None
    config_path: Path | None

    @property
    def name(self) -> str:
        out = (self.config or {}).get("out")
        return Path(out).name if isinstance(out, str) and out else (self.path.parent.name or str(self.path))

    def best_file(self) -> Path | None:
        """The checkpoint of the best epoch beside the history: a run's best.pt, or the shipped vocals.pt."""
        for name in ("best.pt", "vocals.pt"):
            if (self.path.parent / name).is_file():
                return self.path.parent / name
        return None

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(h["epoch"], h.get(key)) for h in self.history]
        pts = [(e, float(v)) for e, v in pts if isinstance(v, (int, float))]
        if not pts:
            return np.zeros(0), np.zeros(0)
        e, v = zip(*pts)
        return np.asarray(e, float), np.asarray(v, float)

    def best(self) -> dict | None:
        vals = [h for h in self.history if isinstance(h.get("valid_loss"), (int, float))
                and math.isfinite(h["valid_loss"])]
        return min(vals, key=lambda h: h["valid_loss"]) if vals else None


def load_runs(paths: Sequence[Path], explicit: bool) -> list[Run]:
    runs = []
    for p in paths:
        if p.is_dir():
            p = p / "history.json"
        if not p.is_file():
            if explicit:
                raise Hw2Error(f"{p}: no such history file; pass a run's history.json (written by "
                               "`python -m hw2.train` into its --out folder)")
            continue
        hist = _read_json(p, "training history", "pass the history.json of a run written by `python -m hw2.train`")
        if not isinstance(hist, list) or not all(isinstance(h, dict) and isinstance(h.get("epoch"), (int, float))
                                                 for h in hist):
            raise Hw2Error(f"{display_path(p)}: not a training history (a list of {{\"epoch\", \"train_loss\", "
                           "\"valid_loss\", ...}}); pass the history.json written by `python -m hw2.train`")
        cfg_path = p.parent / "config.json"
        cfg = None
        if cfg_path.is_file():
            cfg = _read_json(cfg_path, "config", "pass the run's config.json written by `python -m hw2.train`")
            cfg = cfg if isinstance(cfg, dict) else None
        runs.append(Run(p, hist, cfg, cfg_path if cfg else None))
    return runs


def load_config(path: Path | None, explicit: bool, runs: Sequence[Run]) -> tuple[dict | None, str]:
    """The training config and where it came from: --config, checkpoints/config.json, a run's config.json,
    or else the defaults of `python -m hw2.train` (labelled as such)."""
    if path is not None and path.is_file():
        cfg = _read_json(path, "config", "pass the config.json written by `python -m hw2.train`")
        if not isinstance(cfg, dict):
            raise Hw2Error(f"{display_path(path)}: not a training config (a JSON object)")
        return cfg, display_path(path)
    if path is not None and explicit:
        raise Hw2Error(f"{path}: no such config file; pass the config.json of a run written by `python -m hw2.train`")
    for r in runs:
        if r.config:
            return r.config, display_path(r.config_path)
    return asdict(TrainConfig()), "defaults of `python -m hw2.train` (no config.json found: the trained run may differ)"


def param_breakdown(cfg: dict) -> list[tuple[str, str, int]]:
    """Trainable parameters per layer of the Open-Unmix that `hw2.model` builds from this config."""
    from hw2.model import ModelConfig, OpenUnmix

    m = OpenUnmix(ModelConfig.from_dict(cfg))
    count = lambda *params: sum(p.numel() for p in params)  # noqa: E731
    lstm = m.lstm
    return [
        ("fc1", f"{m.fc1.in_features} → {m.fc1.out_features}", count(*m.fc1.parameters())),
        ("bn1", f"{m.bn1.num_features}", count(*m.bn1.parameters())),
        ("lstm", f"{lstm.num_layers} × {'bi' if lstm.bidirectional else 'uni'}-LSTM, {lstm.hidden_size}/dir",
         count(*lstm.parameters())),
        ("fc2", f"{m.fc2.in_features} → {m.fc2.out_features}", count(*m.fc2.parameters())),
        ("bn2", f"{m.bn2.num_features}", count(*m.bn2.parameters())),
        ("fc3", f"{m.fc3.in_features} → {m.fc3.out_features}", count(*m.fc3.parameters())),
        ("bn3", f"{m.bn3.num_features}", count(*m.bn3.parameters())),
        ("scalers", "input / output mean, scale",
         count(m.input_mean, m.input_scale, m.output_mean, m.output_scale)),
    ]


def nb_bins_of(cfg: dict) -> tuple[int, int]:
    """(output bins, bins below the bandwidth) of the model a config describes."""
    from hw2.model import bandwidth_to_max_bin

    n_fft = int(cfg.get("n_fft", 4096))
    out_bins = n_fft // 2 + 1
    nb_bins = bandwidth_to_max_bin(float(cfg.get("rate", 44100)), n_fft, float(cfg.get("bandwidth", 16000.0)))
    return out_bins, min(nb_bins, out_bins)


def param_count(cfg: dict | None, card: str | None) -> tuple[int | None, str]:
    if cfg:
        try:
            return sum(n for _, _, n in param_breakdown(cfg)), "computed from the config"
        except (TypeError, ValueError):
            pass
    if card:
        m = re.search(r"([\d][\d,_]{3,})\s*(?:trainable\s+)?param", card, re.I)
        if m:
            return int(re.sub(r"[,_]", "", m.group(1))), "from the model card"
    return None, "unknown"


@dataclass
class NotebookFigure:
    path: Path
    caption: str
    notebook: str
    note: str | None


def figure_caption(stem: str) -> str:
    words = re.sub(r"^\d+[_-]*", "", stem).replace("-", " ").replace("_", " ").split()
    abbrev = {"gl": "Griffin-Lim", "sdr": "SDR", "stft": "STFT", "irm": "IRM", "lr": "LR", "musdb": "MUSDB",
              "sir": "SIR", "sar": "SAR", "isr": "ISR", "vs": "vs"}
    out = [abbrev.get(w.lower(), w) for w in words]
    if out and out[0] == out[0].lower():
        out[0] = out[0].capitalize()
    return " ".join(out) or stem


def load_figures(folder: Path) -> list[NotebookFigure]:
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.png")):
        m = re.match(r"(\d+)_", p.name)
        if m:
            nbs = sorted((ROOT / "notebooks").glob(f"{m.group(1)}_*.ipynb"))
            nb = display_path(nbs[0]) if len(nbs) == 1 else f"notebooks/{m.group(1)}_*.ipynb"
        else:
            nb = "notebooks/*.ipynb"
        side = p.with_suffix(".txt")
        note = side.read_text(encoding="utf-8", errors="replace").strip() if side.is_file() else None
        out.append(NotebookFigure(p, figure_caption(p.stem), nb, note))
    return out


# --------------------------------------------------------------------------------------------------- analysis
class Results:
    """All rows, with the choices the report makes: the primary data set and the best checkpoint."""

    def __init__(self, files: list[ResultFile]):
        self.files = files
        self.rows = [r for f in files for r in f.rows]
        groups: dict[tuple, list[Row]] = {}
        for r in self.rows:
            groups.setdefault(r.source.data_key, []).append(r)
        self.primary: list[Row] = []
        if groups:
            def rank(item):
                key, rows = item
                n = key[3] if isinstance(key[3], int) else 0
                return (key[1] == "test", n, sum(not r.is_reference for r in rows), len(rows))
            self.primary = max(groups.items(), key=rank)[1]
        self.other_data = len(groups) > 1
        self.best_ckpt = self._best_checkpoint()

    @property
    def empty(self) -> bool:
        return not self.rows

    def _best_checkpoint(self) -> str | None:
        by_ckpt: dict[str, list[Row]] = {}
        for r in self.primary:
            if r.checkpoint and not r.is_reference:
                by_ckpt.setdefault(r.checkpoint, []).append(r)
        if not by_ckpt:
            return None

        def vocal_sdr(rows, methods):
            vals = [r.score("vocals") for r in rows if r.method in methods]
            vals = [v for v in vals if math.isfinite(v)]
            return max(vals) if vals else -math.inf

        with_gl = {c: rs for c, rs in by_ckpt.items() if any(r.method in GL_METHODS for r in rs)}
        pool = with_gl or by_ckpt  # Griffin-Lim is run on the best epoch: its checkpoint is the best one
        return max(pool, key=lambda c: (vocal_sdr(pool[c], ("mixture",)), vocal_sdr(pool[c], MODEL_METHODS),
                                        "best" in c))

    def best_rows(self) -> list[Row]:
        mine = [r for r in self.primary if r.checkpoint == self.best_ckpt and not r.is_reference]
        per_file = {}
        for r in mine:
            per_file[r.source.path] = per_file.get(r.source.path, 0) + 1
        rows = {}
        for r in mine:  # one row per method, preferably all from the file that evaluated this checkpoint most
            old = rows.get(r.method)
            if old is None or per_file[r.source.path] >= per_file[old.source.path]:
                rows[r.method] = r
        order = {m: i for i, m in enumerate(MODEL_METHODS)}
        return sorted(rows.values(), key=lambda r: order.get(r.method, len(order)))

    def best_row(self, method: str) -> Row | None:
        rows = [r for r in self.best_rows() if r.method == method]
        return rows[-1] if rows else None

    def references(self) -> list[Row]:
        out = []
        for m in REFERENCES:
            rows = [r for r in self.primary if r.method == m]
            if rows:
                out.append(rows[-1])
        return out

    def epoch_rows(self) -> list[Row]:
        """Mixture-phase rows of the best checkpoint's run (checkpoints in its folder), one per epoch; rows of other
        runs (a tuning experiment, say) are not part of the epoch series."""
        run = Path(self.best_ckpt).parent if self.best_ckpt else None
        rows = {}
        for r in self.primary:  # one row per epoch: a later results file wins
            if r.epoch is not None and r.method == "mixture" and (run is None or Path(r.checkpoint or "").parent == run):
                rows[r.epoch] = r
        return [rows[k] for k in sorted(rows)]

    def best_epoch(self) -> int | None:
        r = self.best_row("mixture") or (self.best_rows() or [None])[0]
        return r.epoch if r else None

    def methods_present(self) -> list[str]:
        seen = []
        for r in self.rows:
            if r.method not in seen:
                seen.append(r.method)
        order = {m: i for i, m in enumerate(MODEL_METHODS + REFERENCES)}
        return sorted(seen, key=lambda m: order.get(m, len(order)))


def provenance_lines(rows: Iterable[Row], extra: Sequence[str] = ()) -> list[str]:
    """One block per results file: file + title, command, data, checkpoints."""
    by_file: dict[Path, list[Row]] = {}
    for r in rows:
        by_file.setdefault(r.source.path, []).append(r)
    lines = []
    for path, rs in by_file.items():
        f = rs[0].source
        ckpts = []
        for r in rs:
            if r.checkpoint and r.checkpoint not in ckpts:
                ckpts.append(r.checkpoint)
        if len(ckpts) > 4:
            ck = f"{ckpts[0]}, {ckpts[1]} … {ckpts[-1]} ({len(ckpts)} checkpoints)"
        else:
            ck = ", ".join(ckpts) if ckpts else "none"
        if any(r.is_reference for r in rs):
            ck += " (reference rows need no checkpoint)"
        lines.append(f"Source: {display_path(path)} “{f.title}”, evaluated {f.created} with hw2 {f.version}")
        lines.append(f"  command: {f.command}")
        lines.append(f"  {f.data_text()}; checkpoint: {ck}")
    lines.extend(extra)
    return lines


def gl_settings(res: Results) -> list[tuple[str, str]]:
    """Griffin-Lim settings as recorded: flags on the evaluation command lines, and any extra settings object."""
    out: list[tuple[str, str]] = []
    for f in res.files:
        if not any(r.method in GL_METHODS for r in f.rows):
            continue
        for m in re.finditer(r"(--[\w-]*(?:gl|griffin|iter|momentum)[\w-]*)(?:[ =]((?!--)\S+))?", f.command, re.I):
            out.append((m.group(1), m.group(2) or "on"))
        for key in ("settings", "griffinlim", "griffin_lim", "gl"):
            obj = f.extra.get(key)
            if isinstance(obj, dict):
                for k, v in obj.items():
                    if isinstance(v, (str, int, float, bool)) or v is None:
                        out.append((f"{key}.{k}", str(v)))
    seen, uniq = set(), []
    for kv in out:
        if kv not in seen:
            seen.add(kv)
            uniq.append(kv)
    return uniq


def score_table(rows: Sequence[Row], with_method=True):
    """(header, groups, cells, bold) for the full metrics table; bold marks the best SDR per target among
    model rows."""
    header = ["Row"] + (["Method"] if with_method else []) + [m for _ in TARGETS for m in METRICS]
    lead = 2 if with_method else 1
    groups = [("", lead), ("Vocals (dB)", 4), ("Accompaniment (dB)", 4)]
    cells = []
    for r in rows:
        cells.append([r.label] + ([r.method_name] if with_method else []) +
                     [fmt(r.score(t, m)) for t in TARGETS for m in METRICS])
    bold = set()
    for ti, t in enumerate(TARGETS):
        col = lead + ti * 4
        vals = [(r.score(t), i) for i, r in enumerate(rows) if not r.is_reference and math.isfinite(r.score(t))]
        if len(vals) > 1:
            best = max(v for v, _ in vals)
            bold |= {(i, col) for v, i in vals if v == best}
    return header, groups, cells, bold


# ----------------------------------------------------------------------------------------------------- pages
@dataclass
class Inputs:
    results: Results
    runs: list[Run]
    config: dict | None
    config_src: str
    card: str | None
    card_src: str
    figures: list[NotebookFigure]
    author: str
    student_id: str
    repo_url: str

    @property
    def params(self) -> tuple[int | None, str]:
        n, src = param_count(self.config, self.card)
        if src == "computed from the config":
            src = ("for the default config of hw2.train: no config.json found" if self.config_src.startswith("defaults")
                   else f"computed from {self.config_src}")
        return n, src


def page_cover(deck: Deck, inp: Inputs) -> None:
    p = deck.blank()
    p.rect(0, 0, 0.35, p.h, NAVY)
    p.rect(0.35, 0, 0.08, p.h, ACCENT)
    x = 1.1
    p.text(x, 0.9, "HOMEWORK 2 · MUSIC SOURCE SEPARATION", 12, color=ACCENT, weight="bold")
    y = p.paragraph(x, 1.35, 11.2, TITLE, 32, weight="bold", color=NAVY, spacing=1.2)
    y = p.paragraph(x, y + 0.15, 11.0, "Open-Unmix trained from scratch on MUSDB18 · mixture phase vs Griffin-Lim "
                    "phase estimation · museval “median of medians” SDR", 15, color=MUTED)
    y += 0.45
    fields_ = [("Name", inp.author), ("Student ID", inp.student_id), ("Code & model", inp.repo_url),
               ("Date", dt.date.today().strftime("%d %B %Y"))]
    for k, v in fields_:
        p.text(x, y, k, 14, color=MUTED)
        y = p.paragraph(x + 2.1, y, 5.0, v, 14, weight="bold")
        y += 0.12
    glance_panel(p, inp, 8.45, 3.25, p.w - 8.45 - 0.6)
    p.text(x, p.h - 0.45, f"Built by `python -m hw2.report` (hw2 {__version__}) from results/*.json, the training "
           "history and report/figures; every number is read from those files.", 9, color=MUTED)


def glance_panel(p: Page, inp: Inputs, x: float, y: float, w: float) -> None:
    """The cover's "at a glance" box: only numbers that exist in the inputs."""
    res = inp.results
    mix, gl = res.best_row("mixture"), res.best_row("griffinlim")
    n, _ = inp.params
    facts = []
    if mix is not None:
        facts.append(("Vocals SDR, mixture phase", fmt(mix.score("vocals")) + " dB"))
        facts.append(("Accomp. SDR, mixture phase", fmt(mix.score("accompaniment")) + " dB"))
    if gl is not None:
        facts.append(("Vocals SDR, Griffin-Lim", fmt(gl.score("vocals")) + " dB"))
    if n is not None and not inp.config_src.startswith("defaults"):
        facts.append(("Parameters", f"{n / 1e6:.2f} M"))
    trained = [len(r.history) for r in inp.runs if r.history]
    if trained:
        facts.append(("Epochs trained", str(max(trained))))
    h = 0.55 + max(len(facts), 1) * 0.5
    p.ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.1", facecolor=LIGHT,
                                  edgecolor="none"))
    p.text(x + 0.3, y + 0.2, "AT A GLANCE", 10, color=ACCENT, weight="bold")
    yy = y + 0.6
    if not facts:
        p.paragraph(x + 0.3, yy, w - 0.6, "No results yet.", 13, color=MUTED)
    for k, v in facts:
        p.text(x + 0.3, yy, k, 11.5, color=MUTED)
        p.text(x + w - 0.3, yy - 0.04, v, 15, color=NAVY, weight="bold", ha="right")
        yy += 0.5
    if mix is not None:
        p.text(x + 0.3, y + h + 0.1, f"{res.best_ckpt} · {mix.source.short_data()}", 8.5, color=MUTED)


def page_novelty(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Novelty highlight", "What is special about this work")
    res = inp.results
    cfg = inp.config or {}
    methods = [METHODS.get(m, m) for m in res.methods_present()]
    if methods:
        study = ("The same trained magnitudes are turned into waveforms in several ways — evaluated here: "
                 + ", ".join(methods) + ". Mixture-as-estimate and an oracle ideal ratio mask, where present, "
                 "bracket what any magnitude model can reach.")
    else:
        study = ("The trained magnitudes are turned into waveforms with the mixture phase and with Griffin-Lim "
                 "phase estimation, bracketed by mixture-as-estimate and oracle-mask references (planned: no "
                 "results yet).")
    gain = (f"random gains in [{cfg.get('gain_low')}, {cfg.get('gain_high')}]"
            if "gain_low" in cfg else "random per-source gains")
    items = [
        ("Decode once, augment forever.",
         "Every MUSDB track is decoded once into an int16 memory-mapped cache (5 stems × 2 channels); excerpts "
         f"are mixed on the fly, so random track mixing, {gain} and left/right swaps survive the cache."),
        ("Reproducible, exactly resumable training.",
         "Every batch is a pure function of (seed, epoch, step). A run folder keeps config, history and "
         "best / last / milestone checkpoints; re-running the same command restores model, optimiser, scheduler, "
         "AMP scaler and RNG state, so a Colab disconnect costs at most the work since the last save."),
        ("A phase study, not a single number.", study),
        ("Numbers with provenance.",
         "Every score in this report is read from results/*.json written by the evaluation command; each table "
         "and figure names the results file, command, data and checkpoint it came from."),
    ]
    n, src = inp.params
    if n is not None:
        items.append(("Under the size limit.", f"{n:,} trainable parameters ({src}) against the assignment's "
                      f"10M limit; trained from scratch, no pre-trained weights and no extra data."))
    p.bullets(BX0, BY0 + 0.1, BW, items, 15, gap=0.55)


def training_summary_rows(cfg: dict) -> list[tuple[str, str]]:
    g = cfg.get
    rows = []

    def add(k, v):
        if v is not None:
            rows.append((k, str(v)))
    add("target", g("target"))
    add("excerpt / batch", f"{g('seq_dur')} s × {g('batch_size')}" if g("seq_dur") is not None else None)
    add("sampler", f"{g('sampler')}, {g('samples_per_track')} / track / epoch"
        if g("sampler") else None)
    add("mixing", g("mixing"))
    add("gain / swap", f"U[{g('gain_low')}, {g('gain_high')}] / {'on' if g('swap') else 'off'}"
        if g("gain_low") is not None else None)
    add("optimiser", f"Adam, lr {g('lr')}, weight decay {g('weight_decay')}" if g("lr") is not None else None)
    add("LR schedule", f"× {g('lr_decay_gamma')} after {g('lr_decay_patience')} flat epochs"
        if g("lr_decay_gamma") is not None else None)
    add("epochs / early stop", f"{g('epochs')} / patience {g('patience')}" if g("epochs") is not None else None)
    add("milestones", ", ".join(map(str, g("milestones"))) if g("milestones") else None)
    add("STFT", f"n_fft {g('n_fft')}, hop {g('n_hop')}" if g("n_fft") else None)
    add("model", f"hidden {g('hidden_size')}, {g('nb_layers')}× {'uni' if g('unidirectional') else 'bi'}-LSTM, "
        f"{g('nb_channels')} ch, ≤ {g('bandwidth'):g} Hz" if g("hidden_size") and g("bandwidth") else None)
    amp = {True: "auto", False: "off"}.get(g("amp"), g("amp"))  # amp was a bool before "auto / on / off"
    add("seed / AMP", f"{g('seed')} / {amp}" if g("seed") is not None else None)
    return rows


def page_methodology(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Methodology highlight", "How it was made")
    cfg = inp.config or {}
    n, _ = inp.params
    g = cfg.get
    steps = [
        ("Data.", "MUSDB18 train subset with musdb's standard train / valid split (valid: 14 tracks); the test "
         "subset is used only for the final evaluation."),
        ("Decoded cache.", "Each track is decoded once to one int16 .npy (mixture, drums, bass, other, vocals) and "
         "memory-mapped: the training loop never decodes audio."),
        ("Sampling + on-the-fly augmentation.",
         f"{g('sampler', 'balanced')} sampling of {g('seq_dur', '?')} s excerpts; {g('mixing', 'incoherent')} "
         "mixing (each source from its own random track and offset), random per-source gain and L/R swap; the "
         "mixture is the sum of the augmented sources."),
        ("Model.", f"Open-Unmix: magnitude-mask network with a {g('nb_layers', 3)}-layer "
         f"{'uni' if g('unidirectional') else 'bi'}directional LSTM, hidden size {g('hidden_size', '?')}"
         + (f", {n:,} parameters." if n is not None else ".")),
        ("Training.", f"MSE on magnitudes, Adam (lr {g('lr', '?')}), ReduceLROnPlateau, early stopping; "
         f"validation loss on full valid tracks; checkpoints best / last / epochs "
         f"{', '.join(map(str, g('milestones') or (25, 50, 150)))}."),
        ("Evaluation.", "museval (BSSEval v4) on the test tracks: median over 1-s frames, then median over tracks "
         "(“median of medians”); waveforms from the mixture phase and from Griffin-Lim."),
    ]
    left_w = 6.6
    p.bullets(BX0, BY0 + 0.05, left_w, steps, 12.5, marker="#", gap=0.35)
    rows = training_summary_rows(cfg)
    x2 = BX0 + left_w + 0.4
    w2 = BX1 - x2
    p.text(x2, BY0 + 0.05, "Training setup", 13, weight="bold", color=NAVY)
    if rows:
        p.table(x2, BY0 + 0.4, w2, ["setting", "value"], rows, size=11, align=["l", "l"])
    else:
        p.paragraph(x2, BY0 + 0.45, w2, "No training config found: copy the run's config.json to "
                    "checkpoints/config.json.", 12, color=MUTED)
    provenance_block(p, BX0, 0, BW, [f"Config: {inp.config_src}"], bottom=BY1 - 0.02)


def no_results(p: Page, y: float, lead: str = "", tail: str = NO_RESULTS) -> float:
    """A shaded notice that says plainly what is missing and how to make it."""
    text = " ".join(t for t in (lead, tail) if t)
    lines = wrap(text, BW - 0.7, 15)
    h = max(len(lines) * line_height(15) + 0.5, 1.1)
    p.rect(BX0, y, BW, h, LIGHT)
    p.rect(BX0, y, 0.08, h, ACCENT)
    p.paragraph(BX0 + 0.35, y + 0.25, BW - 0.7, text, 15, color=NAVY)
    return y + h + 0.2


SHORT = {"mixture": "Mixture phase", "griffinlim": "Griffin-Lim", "griffinlim-mix": "GL, mixture init",
         "wiener": "Wiener", "mix-as-estimate": "Mix as estimate", "oracle-irm": "Oracle IRM"}


def sdr_bars(ax, rows: Sequence[Row]) -> None:
    """Horizontal SDR bars per method, vocals and accompaniment; reference rows pale."""
    ys = np.arange(len(rows))[::-1].astype(float)
    for k, (t, c) in enumerate(zip(TARGETS, (ACCENT, NAVY))):
        vals = [r.score(t) for r in rows]
        bars = ax.barh(ys + (0.5 - k) * 0.38, [v if math.isfinite(v) else 0 for v in vals], 0.38, color=c,
                       label=t)
        for bar, r, v in zip(bars, rows, vals):
            if r.is_reference:
                bar.set_alpha(0.4)
            if math.isfinite(v):
                ax.annotate(f"{v:.1f}", (v, bar.get_y() + bar.get_height() / 2), xytext=(3 if v >= 0 else -3, 0),
                            textcoords="offset points", ha="left" if v >= 0 else "right", va="center", fontsize=7.5,
                            color=MUTED)
    ax.set_yticks(ys, [SHORT.get(r.method, r.method) for r in rows], fontsize=9)
    ax.axvline(0, color=MUTED, lw=0.6)
    ax.set_xlabel("SDR (dB)")
    lo = min([0.0] + [r.score(t) for r in rows for t in TARGETS if math.isfinite(r.score(t))])
    hi = max([0.0] + [r.score(t) for r in rows for t in TARGETS if math.isfinite(r.score(t))])
    pad = 0.18 * (hi - lo or 1)
    ax.set_xlim(lo - (pad if lo < 0 else 0), hi + pad)
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=9)
    ax.grid(axis="x", color=RULE, lw=0.5)
    ax.set_axisbelow(True)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)


def page_result_highlight(deck: Deck, inp: Inputs) -> None:
    res = inp.results
    best = res.best_rows()
    data = best[0].source.data if best else {}
    where = {"test": "Test-set "}.get(data.get("subset"), "Validation " if data.get("split") == "valid" else "")
    p = deck.slide("Result highlight", f"{where}SDR of the best checkpoint: mixture phase vs Griffin-Lim")
    if not best:
        no_results(p, BY0 + 0.3, "No model scores to show.")
        return
    mix, gl = res.best_row("mixture"), res.best_row("griffinlim") or res.best_row("griffinlim-mix")
    refs = res.references()
    prov = provenance_lines(best + refs)
    bottom = BY1 - provenance_height(prov, BW) - 0.15
    # headline cards
    cards = []
    for t in TARGETS:
        for r in (mix, gl):
            if r is not None:
                cards.append((f"{t.capitalize()} · {r.method_name}", r.score(t)))
    cw = (BW - 0.3 * (len(cards) - 1)) / max(len(cards), 1)
    for i, (label, v) in enumerate(cards):
        x = BX0 + i * (cw + 0.3)
        p.ax.add_patch(FancyBboxPatch((x, BY0), cw, 1.0, boxstyle="round,pad=0,rounding_size=0.08",
                                      facecolor=LIGHT, edgecolor="none"))
        p.text(x + 0.2, BY0 + 0.13, label, 10.5, color=MUTED)
        p.text(x + 0.2, BY0 + 0.42, fmt(v) + (" dB" if math.isfinite(v) else ""), 24, weight="bold", color=NAVY)
    y = BY0 + 1.25
    ep = res.best_epoch()
    header = ["Method", "Vocals SDR", "Δ vs mixture", "Accomp. SDR", "Δ vs mixture"]
    rows, muted = [], set()
    for r in best + refs:
        row = [r.method_name]
        for t in TARGETS:
            v = r.score(t)
            d = v - mix.score(t) if (mix is not None and r is not mix and not r.is_reference) else math.nan
            row += [fmt(v), fmt_delta(d)]
        if r.is_reference:
            muted.add(len(rows))
        rows.append(row)
    tw = 7.3
    note = best[0].source.partial_note()
    p.paragraph(BX0, y, BW, f"Best checkpoint: {res.best_ckpt}" + (f" (epoch {ep})" if ep is not None else "")
                + f" · {best[0].source.short_data()}" + (f" ({note})" if note else "") + " · dB, higher is better",
                10.5, color=BAD if note else MUTED)
    p.table(BX0, y + 0.35, tw, header, rows, size=11, muted=muted)
    x2 = BX0 + tw + 1.55
    h = min(max(bottom - y - 0.95, 1.0), 0.3 + 0.55 * len(best + refs))
    sdr_bars(p.axes(x2, y + 0.45, BX1 - x2 - 0.1, h), best + refs)
    provenance_block(p, BX0, 0, BW, prov, bottom=BY1 - 0.02)


def findings(inp: Inputs) -> list[tuple[str, str]]:
    """Takeaways computed from the rows and the history; hedged where an input is missing."""
    res, out = inp.results, []
    mix, gl = res.best_row("mixture"), res.best_row("griffinlim")
    glm = res.best_row("griffinlim-mix")
    if res.empty:
        out.append(("No scores yet.", NO_RESULTS))
    else:
        note = res.primary[0].source.partial_note() if res.primary else ""
        if note:
            out.append(("Caveat.", f"scores are on {res.primary[0].source.short_data()} — {note}."))
        best = res.best_rows()
        for t in TARGETS:
            cand = [(r.score(t), r) for r in best if math.isfinite(r.score(t))]
            if cand:
                v, r = max(cand, key=lambda c: c[0])
                others = ", ".join(f"{o.method_name} {fmt(o.score(t))}" for o in best
                                   if o is not r and math.isfinite(o.score(t)))
                out.append((f"Best for {t}: {r.method_name}.",
                            f"{fmt(v)} dB SDR on {r.source.short_data()} with {res.best_ckpt}"
                            + (f" (others: {others} dB)." if others else " (the only method evaluated).")))
        if mix and gl:
            parts = []
            for t in TARGETS:
                d = mix.score(t) - gl.score(t)
                if math.isfinite(d):
                    parts.append(f"{t} {abs(d):.2f} dB {'higher' if d > 0 else 'lower'} with the mixture phase "
                                 f"({fmt(mix.score(t))} vs {fmt(gl.score(t))})")
            if parts:
                out.append(("Mixture phase vs Griffin-Lim.", "; ".join(parts) + "." + (
                    " The estimated magnitudes are the same, so the gap is the price of discarding the "
                    "mixture phase." if all(mix.score(t) > gl.score(t) for t in TARGETS
                                            if math.isfinite(mix.score(t) - gl.score(t))) else "")))
        else:
            out.append(("Mixture phase vs Griffin-Lim: not measured yet.",
                        "Evaluate the best checkpoint with both the mixture phase and Griffin-Lim "
                        "(`python hw2/infer.py ...`) to compare them."))
        if glm and gl:
            d = glm.score("vocals") - gl.score("vocals")
            if math.isfinite(d):
                out.append(("Griffin-Lim initialisation.", f"starting Griffin-Lim from the mixture phase changes "
                            f"vocals SDR by {d:+.2f} dB vs its default initialisation."))
        eps = res.epoch_rows()
        if len(eps) >= 2:
            trend = " → ".join(f"{fmt(r.score('vocals'))}" for r in eps)
            d = eps[-1].score("vocals") - eps[0].score("vocals")
            out.append(("Longer training.", f"vocals SDR (mixture phase) {trend} dB at epochs "
                        f"{' / '.join(str(r.epoch) for r in eps)}"
                        + (f": {d:+.2f} dB from epoch {eps[0].epoch} to {eps[-1].epoch}." if math.isfinite(d)
                           else ".")))
        elif eps:
            out.append(("Epoch comparison incomplete.", f"only epoch {eps[0].epoch} is evaluated; the assignment "
                        "asks for epochs 25, 50 and 150."))
        refs = {r.method: r for r in res.references()}
        if mix and "mix-as-estimate" in refs and "oracle-irm" in refs:
            lo, hi, v = refs["mix-as-estimate"].score("vocals"), refs["oracle-irm"].score("vocals"), \
                mix.score("vocals")
            if all(map(math.isfinite, (lo, hi, v))) and hi > lo:
                out.append(("Room left.", f"vocals SDR {fmt(v)} dB sits {100 * (v - lo) / (hi - lo):.0f}% of the "
                            f"way from the mixture-as-estimate floor ({fmt(lo)} dB) to the oracle IRM "
                            f"({fmt(hi)} dB)."))
    for run in inp.runs[:2]:
        b = run.best()
        if b is not None:
            secs = sum(float(h.get("seconds") or 0) for h in run.history)
            lrs = [h.get("lr") for h in run.history if isinstance(h.get("lr"), (int, float))]
            cuts = sum(1 for a, c in zip(lrs, lrs[1:]) if c < a)
            out.append((f"Training ({run.name}).",
                        f"lowest validation loss {b['valid_loss']:.4g} at epoch {b['epoch']} of "
                        f"{len(run.history)} trained; {cuts} learning-rate cut(s); {secs / 3600:.2f} h of training."))
    if not inp.runs:
        out.append(("Training curves: no history yet.", "Pass --runs-history runs/<run>/history.json or copy it "
                    "to checkpoints/history.json."))
    n, src = inp.params
    if n is not None:
        out.append(("Model size.", f"{n:,} parameters ({src}): {'under' if n < MAX_PARAMS else 'OVER'} the 10M "
                    "limit."))
    return out


def page_findings(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Findings highlight", "Main takeaways")
    items = findings(inp)
    size = 14.0
    while size > 10:
        h = sum(len(wrap(a + " " + b, BW - 0.3, size)) for a, b in items) * line_height(size) \
            + len(items) * line_height(size) * 0.5
        if h < BY1 - BY0 - 0.9:
            break
        size -= 0.5
    p.bullets(BX0, BY0 + 0.1, BW, items, size, marker="#", gap=0.5)
    prov = provenance_lines(inp.results.best_rows() + inp.results.references()) if not inp.results.empty else []
    prov += [f"History: {display_path(r.path)}" for r in inp.runs]
    if prov:
        provenance_block(p, BX0, 0, BW, prov, bottom=BY1 - 0.02)


def page_architecture(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Details of the approach", "Open-Unmix: architecture and parameters")
    cfg = inp.config or {}
    hidden = cfg.get("hidden_size", "H")
    out_bins, nb_bins = nb_bins_of(cfg) if cfg else (2049, "B")
    ch = cfg.get("nb_channels", 2)
    layers = cfg.get("nb_layers", 3)
    blocks = [("STFT", f"|X| {ch}×{out_bins}"),
              ("crop +\nscale", f"{nb_bins} bins\n≤ {cfg.get('bandwidth', '?')} Hz"),
              ("fc1+BN\n+tanh", f"→ {hidden}"),
              (f"{layers}× LSTM", "bi" if not cfg.get("unidirectional") else "uni"),
              ("skip\nconcat", f"→ {2 * hidden if isinstance(hidden, int) else '2H'}"),
              ("fc2+BN\n+ReLU", f"→ {hidden}"), ("fc3+BN", f"→ {ch}×{out_bins}"),
              ("scale +\nReLU", "mask ≥ 0"), ("× |X|", "target mag.")]
    n = len(blocks)
    gap = 0.28
    bw = (BW - gap * (n - 1)) / n
    y = BY0 + 0.05
    for i, (name, sub) in enumerate(blocks):
        x = BX0 + i * (bw + gap)
        color = ACCENT if "LSTM" in name else NAVY
        p.ax.add_patch(FancyBboxPatch((x, y), bw, 0.85, boxstyle="round,pad=0,rounding_size=0.07",
                                      facecolor=color, edgecolor="none"))
        p.text(x + bw / 2, y + 0.42, name, 10, color="white", weight="bold", ha="center", va="center",
               multialignment="center")
        p.text(x + bw / 2, y + 0.95, sub, 8.5, color=MUTED, ha="center", multialignment="center")
        if i < n - 1:
            p.ax.add_patch(FancyArrowPatch((x + bw + 0.03, y + 0.42), (x + bw + gap - 0.03, y + 0.42),
                                           arrowstyle="-|>", mutation_scale=10, color=MUTED, lw=1))
    y += 1.55
    why = [
        ("Mask, not synthesis.", "the network outputs a non-negative mask (ReLU) multiplied with the mixture "
         "magnitude, so it only has to learn where in time-frequency the target dominates."),
        ("Long context.", "the LSTM reads the whole excerpt in both directions: sustained, pitched vocals are "
         "told apart from transient drums by how they evolve over time."),
        ("Compact input.", "bins above the bandwidth are cropped and fc1 compresses the frequency axis of all "
         "channels to the hidden size; a skip connection concatenates LSTM input and output."),
        ("Stable training.", "input / output scalers standardise each frequency bin with training-set "
         "statistics; batch norm after every linear layer."),
        ("Phase.", "the model works on magnitudes only; the waveform takes the mixture phase (or a Griffin-Lim "
         "estimate) at inference."),
    ]
    lw = 7.2
    p.bullets(BX0, y, lw, why, 11.5, gap=0.3)
    x2 = BX0 + lw + 0.4
    if cfg:
        parts = param_breakdown(cfg)
        total = sum(c for *_, c in parts)
        rows = [(a, b, f"{c:,}") for a, b, c in parts] + [("total", "trainable", f"{total:,}")]
        p.table(x2, y, BX1 - x2, ["layer", "shape", "parameters"], rows, size=10, align=["l", "l", "r"],
                bold={(len(rows) - 1, 2)})
    else:
        p.paragraph(x2, y, BX1 - x2, "Parameter count: unknown (no config.json found).", 12, color=MUTED)
    provenance_block(p, BX0, 0, BW, [f"Config: {inp.config_src}; parameters computed as hw2.model builds "
                                     "them. Reference: Stöter et al. (2019), Open-Unmix — A Reference "
                                     "Implementation for Music Source Separation, JOSS 4(41), 1667."],
                     bottom=BY1 - 0.02)


def page_settings(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Details of the approach", "STFT, Griffin-Lim and evaluation settings")
    cfg = inp.config or {}
    rate = int(cfg.get("rate", 44100))
    colw = (BW - 0.6) / 2
    y = BY0 + 0.05
    p.text(BX0, y, "STFT (shared by the model and the phase reconstruction)", 13, weight="bold", color=NAVY)
    if cfg.get("n_fft"):
        n_fft, hop = int(cfg["n_fft"]), int(cfg.get("n_hop", cfg["n_fft"] // 4))
        out_bins, nb_bins = nb_bins_of(cfg)
        rows = [("sample rate", f"{rate} Hz"),
                ("window", f"Hann (periodic), {n_fft} samples = {1000 * n_fft / rate:.1f} ms"),
                ("hop", f"{hop} samples = {1000 * hop / rate:.1f} ms ({n_fft // hop}× overlap)"),
                ("frequency resolution", f"{rate / n_fft:.2f} Hz / bin, {out_bins} bins"),
                ("bins seen by the LSTM", f"{nb_bins} (≤ {cfg.get('bandwidth')} Hz)"),
                ("framing", "centred frames (torch.stft, center=True)")]
        p.table(BX0, y + 0.35, colw, ["setting", "value"], rows, size=10.5, align=["l", "l"])
    else:
        p.paragraph(BX0, y + 0.4, colw, "No config.json found: STFT settings unknown.", 12, color=MUTED)
    x2 = BX0 + colw + 0.6
    p.text(x2, y, "Griffin-Lim (phase estimation)", 13, weight="bold", color=NAVY)
    gl = gl_settings(inp.results)
    has_gl = any(r.method in GL_METHODS for r in inp.results.rows)
    yy = y + 0.35
    if has_gl:
        yy = p.paragraph(x2, yy, colw, "Magnitudes from the model, phase iteratively re-estimated from the "
                         "magnitude alone (librosa.griffinlim), with the model's STFT settings.", 11.5)
        if gl:
            yy = p.table(x2, yy + 0.1, colw, ["recorded setting", "value"], gl[:8], size=10.5, align=["l", "l"])
        else:
            yy = p.paragraph(x2, yy + 0.1, colw, "Iteration count and initialisation are not recorded in the "
                             "results files: see the command in the provenance line.", 11, color=MUTED)
    else:
        yy = p.paragraph(x2, yy, colw, "Griffin-Lim has not been evaluated yet. " + NO_RESULTS, 11.5, color=MUTED)
    yy += 0.3
    p.text(x2, yy, "Evaluation", 13, weight="bold", color=NAVY)
    recorded = sorted({str(f.extra["aggregation"]) for f in inp.results.files if f.extra.get("aggregation")})
    p.bullets(x2, yy + 0.35, colw, [
        "museval BSSEval v4: SDR, SIR, ISR, SAR on 1-s windows",
        "median over the windows of a track, then median over tracks (“median of medians”)",
        "targets: vocals and accompaniment (drums + bass + other)"]
        + [f"as recorded in the results: {a}" for a in recorded[:2]], 11, gap=0.2)
    prov = provenance_lines([r for r in inp.results.rows if r.method in GL_METHODS])
    provenance_block(p, BX0, 0, BW, [f"Config: {inp.config_src}"] + prov, bottom=BY1 - 0.02)


def page_pipeline(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Details of the approach", "Training data: cache, sampling and augmentation")
    cfg = inp.config or {}
    used = cfg.get("sampler")
    strategies = [
        ("balanced", "each track exactly samples_per_track times, random starts, shuffled (Open-Unmix default)"),
        ("random", "tracks and starts drawn with replacement"),
        ("exhaustive", "every excerpt on a hop grid exactly once, shuffled"),
        ("roundrobin", "the exhaustive excerpts, no batch holds two excerpts of one track"),
        ("sequential", "the exhaustive excerpts in order, unshuffled (deterministic)"),
    ]
    rows = [((s + "  ← used") if s == used else s, d) for s, d in strategies]
    bold = {(i, 0) for i, (s, _) in enumerate(strategies) if s == used}
    y = BY0 + 0.05
    p.text(BX0, y, "Excerpt sampling strategies (hw2.data.plan_epoch)", 13, weight="bold", color=NAVY)
    y = p.table(BX0, y + 0.35, BW, ["strategy", "an epoch is"], rows, size=11, align=["l", "l"], bold=bold)
    y += 0.35
    colw = (BW - 0.6) / 2
    p.text(BX0, y, "Cache", 13, weight="bold", color=NAVY)
    p.bullets(BX0, y + 0.35, colw, [
        "each track decoded once through musdb to int16 (5 stems × 2 ch × samples), stems in MUSDB order",
        "key = source files' path, size and mtime + cache version: edits invalidate it",
        "memory-mapped at training time; MUSDB18 and MUSDB18-HQ are both 16-bit, so int16 loses nothing"],
        11, gap=0.2)
    x2 = BX0 + colw + 0.6
    p.text(x2, y, "On-the-fly augmentation (Uhlich et al., 2017)", 13, weight="bold", color=NAVY)
    aug = [f"mixing: {cfg.get('mixing', '?')} — incoherent draws each source from its own random track and "
           "offset; coherent keeps them aligned",
           f"gain: per source, uniform in [{cfg.get('gain_low', '?')}, {cfg.get('gain_high', '?')}]",
           f"channel swap: random left / right per source ({'on' if cfg.get('swap') else 'off'})",
           "the mixture is re-summed from the augmented sources, so target + rest = mixture"]
    p.bullets(x2, y + 0.35, colw, aug, 11, gap=0.2)
    provenance_block(p, BX0, 0, BW, [f"Config: {inp.config_src}; code: hw2/data.py"], bottom=BY1 - 0.02)


def pages_model_card(deck: Deck, inp: Inputs) -> None:
    if not inp.card:
        return
    blocks = parse_markdown(inp.card)

    count = [0]

    def new_page():
        p = deck.slide("Details of the approach", "Model card" + (" (continued)" if count[0] else ""))
        count[0] += 1
        provenance_block(p, BX0, 0, BW, [f"From {inp.card_src}"], bottom=BY1 - 0.02)
        return p, (BX0, BY0 + 0.05, BX1, BY1 - 0.35)

    Flow(new_page, base=10.5).render(blocks)


def page_epochs(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Result analysis & discussion", "SDR at epochs 25 / 50 / 150 (mixture phase)")
    res = inp.results
    rows = res.epoch_rows()
    if not rows:
        no_results(p, BY0 + 0.3, "No per-epoch scores.")
        return
    header, groups, cells, bold = score_table(rows, with_method=False)
    header[0] = "Checkpoint"
    cells = [[f"epoch {r.epoch}" + (" (best)" if r.checkpoint == res.best_ckpt else "")] + c[1:]
             for r, c in zip(rows, cells)]
    note = rows[0].source.partial_note()
    p.text(BX0, BY0 + 0.05, f"{rows[0].source.short_data()}" + (f" ({note})" if note else "")
           + " · median of medians, dB · bold: best per target", 10.5, color=BAD if note else MUTED)
    y = p.table(BX0, BY0 + 0.35, BW, header, cells, size=12, groups=groups, bold=bold)
    notes = []
    missing = [e for e in (25, 50, 150) if e not in {r.epoch for r in rows}]
    if missing:
        notes.append(f"Not evaluated yet: epoch {', '.join(map(str, missing))} — evaluate the milestone "
                     "checkpoints (epochNNN.pt) with `python hw2/infer.py ...`.")
    if len(rows) >= 2:
        for t in TARGETS:
            a, b = rows[0].score(t), rows[-1].score(t)
            if math.isfinite(a) and math.isfinite(b):
                notes.append(f"{t.capitalize()}: {fmt(a)} dB at epoch {rows[0].epoch} → {fmt(b)} dB at epoch "
                             f"{rows[-1].epoch} ({b - a:+.2f} dB).")
    prov = provenance_lines(rows)
    bottom = BY1 - provenance_height(prov, BW) - 0.15
    if notes:
        p.bullets(BX0, y + 0.35, 6.3, notes, 12, gap=0.3)
    if len(rows) >= 2 and bottom - y > 1.6:
        ax = p.axes(BX0 + 7.3, y + 0.45, BW - 7.4, bottom - y - 0.95)
        for t, c in zip(TARGETS, (ACCENT, NAVY)):
            e = [r.epoch for r in rows]
            ax.plot(e, [r.score(t) for r in rows], "o-", color=c, label=t, lw=1.8)
        ax.set_xticks(sorted({r.epoch for r in rows}))
        ax.set_xlabel("epoch")
        ax.set_ylabel("SDR (dB)")
        ax.grid(color=RULE, lw=0.5)
        ax.legend(frameon=False, fontsize=9)
    provenance_block(p, BX0, 0, BW, prov, bottom=BY1 - 0.02)


def pages_all_methods(deck: Deck, inp: Inputs) -> None:
    res = inp.results
    if res.empty:
        p = deck.slide("Result analysis & discussion", "All methods and references")
        no_results(p, BY0 + 0.3)
        return
    size = 11.0
    rh = size * 1.95 / 72.0
    for f in res.files:
        if not f.rows:
            continue
        note = f.partial_note()
        caption = (f"{display_path(f.path)} · {f.short_data()}" + (f" ({note})" if note else "")
                   + " · median of medians, dB · grey: reference rows (not a model) · bold: best model row per "
                   "target")
        top = BY0 + 0.05 + len(wrap(caption, BW, 10.5)) * line_height(10.5) + 0.05
        room = BY1 - provenance_height(provenance_lines(f.rows), BW) - 0.15 - top - 2 * rh
        per_page = max(int(room / rh), 3)
        chunks = [f.rows[i:i + per_page] for i in range(0, len(f.rows), per_page)]
        for k, rows in enumerate(chunks):
            p = deck.slide("Result analysis & discussion", "All methods and references"
                           + (f" ({k + 1}/{len(chunks)})" if len(chunks) > 1 else ""))
            header, groups, cells, bold = score_table(rows)
            muted = {i for i, r in enumerate(rows) if r.is_reference}
            p.paragraph(BX0, BY0 + 0.05, BW, caption, 10.5, color=MUTED)
            p.table(BX0, top, BW, header, cells, size=size, groups=groups, bold=bold, muted=muted,
                    align=["l", "l"] + ["r"] * 8, min_size=size)
            provenance_block(p, BX0, 0, BW, provenance_lines(rows), bottom=BY1 - 0.02)


def page_training(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Result analysis & discussion", "Training curves")
    runs = [r for r in inp.runs if r.history]
    if not runs:
        no_results(p, BY0 + 0.3, "No training history yet: `python -m hw2.train` writes <run>/history.json;",
                   "copy it to checkpoints/history.json or pass --runs-history PATH.")
        return
    colors = [NAVY, ACCENT, GOOD, BAD, "#7B1FA2", "#00838F"]
    lines = []
    for r in runs:
        b = r.best()
        bf = r.best_file()
        lines.append(f"History: {display_path(r.path)} ({len(r.history)} epochs"
                     + (f"; best validation loss at epoch {b['epoch']}" if b else "")
                     + (f" → {display_path(bf)}" if b and bf else "") + ")"
                     + (f"; config {display_path(r.config_path)}" if r.config_path else ""))
    h = BY1 - provenance_height(lines, BW) - 0.15 - (BY0 + 0.2) - 0.45
    ax = p.axes(BX0 + 0.55, BY0 + 0.2, 7.0, h)
    ax2 = p.axes(BX0 + 8.55, BY0 + 0.2, BW - 8.65, h / 2 - 0.35)
    ax3 = p.axes(BX0 + 8.55, BY0 + 0.2 + h / 2 + 0.35, BW - 8.65, h / 2 - 0.35)
    milestones = set()
    for i, run in enumerate(runs):
        c = colors[i % len(colors)]
        tag = f" ({run.name})" if len(runs) > 1 else ""
        e, v = run.series("train_loss")
        ax.plot(e, v, color=c, lw=1.3, ls="--", label="train" + tag)
        e, v = run.series("valid_loss")
        ax.plot(e, v, color=c, lw=1.8, label="valid" + tag)
        b = run.best()
        if b:
            ax.plot([b["epoch"]], [b["valid_loss"]], "o", color=c, ms=6)
            ax.annotate(f"best {b['valid_loss']:.4g} @ {b['epoch']}", (b["epoch"], b["valid_loss"]),
                        textcoords="offset points", xytext=(0, 9), ha="center", fontsize=9, color=c)
        e, v = run.series("lr")
        ax2.step(e, v, where="post", color=c, lw=1.5)
        e, v = run.series("seconds")
        ax3.plot(e, v, color=c, lw=1.2, marker="." if len(e) < 40 else None)
        milestones |= set((run.config or {}).get("milestones") or ())
    last = max(h["epoch"] for r in runs for h in r.history)
    for m in sorted(milestones):
        if m <= last:
            ax.axvline(m, color=RULE, lw=1, zorder=0)
            ax.text(m, 1.0, f" {m}", transform=ax.get_xaxis_transform(), fontsize=8, color=MUTED, va="top")
    allv = np.concatenate([r.series(k)[1] for r in runs for k in ("train_loss", "valid_loss")])
    if len(allv) and np.all(allv > 0) and allv.max() / allv.min() > 8:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE on magnitudes")
    ax.set_title("loss (dots: best validation epoch)", loc="left")
    ax.legend(frameon=False)
    ax.grid(color=RULE, lw=0.5)
    ax2.set_title("learning rate", loc="left")
    lrs = np.concatenate([r.series("lr")[1] for r in runs])
    if len(lrs) and np.all(lrs > 0) and lrs.max() / lrs.min() > 3:
        ax2.set_yscale("log")
    else:
        ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if len(lrs) and np.all(lrs >= 0):
            ax2.set_ylim(0, lrs.max() * 1.3 or 1)
    for a in (ax, ax2, ax3):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(color=RULE, lw=0.5)
    for a in (ax, ax2):
        if a.get_yscale() == "log":
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            a.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax3.set_title("seconds per epoch", loc="left")
    ax3.set_xlabel("epoch")
    ax3.grid(color=RULE, lw=0.5)
    provenance_block(p, BX0, 0, BW, lines, bottom=BY1 - 0.02)


def pages_figures(deck: Deck, inp: Inputs) -> None:
    for i, f in enumerate(inp.figures):
        p = deck.slide("Result analysis & discussion", f"Figure {i + 1}: {f.caption}")
        lines = [f"Figure: {display_path(f.path)} · from {f.notebook}"]
        if f.note:
            lines += f.note.splitlines()[:4]
        ph = provenance_height(lines, BW)
        p.image(f.path, BX0, BY0 + 0.05, BW, BY1 - BY0 - ph - 0.2)
        provenance_block(p, BX0, 0, BW, lines, bottom=BY1 - 0.02)


def page_discussion(deck: Deck, inp: Inputs) -> None:
    p = deck.slide("Result analysis & discussion", "Discussion and limitations")
    res = inp.results
    items = []
    mix, gl = res.best_row("mixture"), res.best_row("griffinlim")
    if mix and gl:
        d = mix.score("vocals") - gl.score("vocals")
        if math.isfinite(d):
            items.append(("Why the phase matters.",
                          f"SDR compares waveforms sample by sample, so it is phase-sensitive: with identical "
                          f"magnitudes, {'the mixture phase scores' if d > 0 else 'Griffin-Lim scores'} "
                          f"{abs(d):.2f} dB higher on vocals here. The mixture phase is exact wherever the target "
                          "dominates a time-frequency bin; Griffin-Lim only finds a phase consistent with the "
                          "magnitude, which need not match the reference."))
    else:
        items.append(("Phase comparison pending.", "Mixture phase and Griffin-Lim have not both been evaluated on the "
                      "best checkpoint yet; this page will quote the measured gap once they are."))
    if res.other_data:
        items.append(("Several data sets.", "the results files cover more than one data set (see the all-methods "
                      "tables); highlights and findings use " + (res.primary[0].source.short_data() if res.primary
                                                                  else "the test set") + " only."))
    items += [
        ("Median of medians.", "one bad track or silent window cannot dominate the score, but the median hides "
         "the spread: per-track scores are in the museval JSON written by the evaluation command."),
        ("Single runs.", "with one training run per setting, differences of a few tenths of a dB may be "
         "run-to-run noise rather than an effect."),
        ("Test set kept clean.", "the best checkpoint is the one with the lowest loss on musdb's validation split; "
         "the test tracks only score it."),
    ]
    if res.empty:
        items.insert(0, ("No results yet.", NO_RESULTS))
    p.bullets(BX0, BY0 + 0.1, BW, items, 13.5, gap=0.5)


# ---------------------------------------------------------------------------------------------------- markdown
_BADGE = re.compile(r"\[!\[([^\]]*)\]\([^)]*\)\]\(([^)\s]+)\)")  # [![alt](image)](link)
_IMG = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HTML = re.compile(r"</?(?:a|b|i|u|p|em|strong|code|kbd|sub|sup|span|div|img|details|summary|center|small|"
                   r"font|h[1-6])(?:\s[^>]*)?/?>", re.I)
_AUTO = re.compile(r"<(https?://[^>\s]+)>")


def inline(s: str) -> str:
    """Markdown inline markup to plain text: links as `text (url)`, emphasis and code marks dropped."""
    s = _BADGE.sub(lambda m: f"{m.group(1)} ({m.group(2)})", s)
    s = _IMG.sub(lambda m: f"[image: {m.group(1) or m.group(2)}]", s)
    s = _LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", s)
    s = _AUTO.sub(r"\1", s)
    s = re.sub(r"`([^`]+)`", r"\1", s)
    s = re.sub(r"(\*\*|__)(.+?)\1", r"\2", s)
    s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", s)
    s = re.sub(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)", r"\1", s)
    s = re.sub(r"<br\s*/?>", " ", s)
    s = _HTML.sub("", s)  # real HTML tags only: `<checkpoint>` placeholders stay
    return s.replace("\\", "") if "\\" in s and not re.search(r"\\[a-zA-Z]", s) else s


def parse_markdown(text: str) -> list[tuple]:
    """Blocks: ("h", level, text), ("p", text), ("li", depth, marker, text), ("code", lines), ("table", rows),
    ("quote", text), ("hr",)."""
    blocks: list[tuple] = []
    lines = text.replace("\t", "    ").splitlines()
    i, para = 0, []

    def flush():
        if para:
            blocks.append(("p", inline(" ".join(s.strip() for s in para))))
            para.clear()
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        m_fence = re.match(r"^\s*(```|~~~)", line)
        if m_fence:
            flush()
            fence = m_fence.group(1)
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                code.append(lines[i].rstrip())
                i += 1
            blocks.append(("code", code))
            i += 1
            continue
        if not s:
            flush()
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", s)
        if m:
            flush()
            blocks.append(("h", len(m.group(1)), inline(m.group(2))))
            i += 1
            continue
        if i + 1 < len(lines) and para == [] and re.match(r"^(=+|-+)\s*$", lines[i + 1].strip()) and \
                not s.startswith(("-", "*", "|")):
            blocks.append(("h", 1 if lines[i + 1].strip()[0] == "=" else 2, inline(s)))
            i += 2
            continue
        if re.match(r"^(\*\s*\*\s*\*|-\s*-\s*-|_\s*_\s*_)[\s*_-]*$", s):
            flush()
            blocks.append(("hr",))
            i += 1
            continue
        if s.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                filled = [c for c in cells if c]
                if not (filled and all(re.match(r"^:?-+:?$", c) for c in filled)):  # skip the |---| row
                    rows.append([inline(c) for c in cells])
                i += 1
            blocks.append(("table", rows))
            continue
        m = re.match(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$", line)
        if m:
            flush()
            depth = len(m.group(1).expandtabs(4)) // 2
            marker = "•" if m.group(2) in "-*+" else m.group(2)
            item = [m.group(3)]
            i += 1
            while i < len(lines) and lines[i].strip() and not re.match(r"^\s*([-*+]|\d+[.)])\s+", lines[i]) \
                    and lines[i].startswith(" ") and not lines[i].strip().startswith(("```", "~~~")):
                item.append(lines[i].strip())
                i += 1
            blocks.append(("li", min(depth, 4), marker, inline(" ".join(item))))
            continue
        if s.startswith(">"):
            flush()
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip().lstrip(">").strip())
                i += 1
            blocks.append(("quote", inline(" ".join(quote))))
            continue
        para.append(line)
        i += 1
    flush()
    return blocks


class Flow:
    """Lays markdown blocks out top to bottom over as many pages as needed.

    new_page() -> (Page, (x0, y0, x1, y1)): a fresh page and its text box."""

    def __init__(self, new_page: Callable[[], tuple[Page, tuple]], base: float = 10.5):
        self.new_page = new_page
        self.base = base
        self.page, self.box = None, None
        self.y = 0.0

    def _ensure(self, h: float) -> None:
        if self.page is None or self.y + h > self.box[3]:
            self.page, self.box = self.new_page()
            self.y = self.box[1]

    def _lines(self, lines: list[str], x: float, size: float, **kw) -> None:
        lh = line_height(size, 1.35)
        for line in lines:
            self._ensure(lh)
            self.page.text(x, self.y, line, size, **kw)
            self.y += lh

    def render(self, blocks: list[tuple]) -> None:
        b = self.base
        for blk in blocks:
            kind = blk[0]
            if self.page is None:
                self._ensure(0)
            x0, _, x1, _ = self.box
            width = x1 - x0
            if kind == "h":
                size = {1: b * 1.9, 2: b * 1.45, 3: b * 1.2}.get(blk[1], b * 1.05)
                lines = wrap(blk[2], width, size, weight="bold")
                gap = line_height(b) * (0.9 if blk[1] <= 2 else 0.5)
                # keep a heading with at least two lines of what follows
                need = gap + len(lines) * line_height(size, 1.35) + 2 * line_height(b, 1.35)
                if self.y > self.box[1]:
                    self._ensure(need)
                    if self.y > self.box[1]:
                        self.y += gap
                self._lines(lines, x0, size, weight="bold", color=NAVY)
                if blk[1] <= 2:
                    self.page.hline(x0, x1, self.y + 0.02, color=RULE if blk[1] == 2 else NAVY,
                                    lw=0.8 if blk[1] == 2 else 1.2)
                    self.y += 0.1
                self.y += line_height(b) * 0.25
            elif kind == "p":
                self._lines(wrap(blk[1], width, b), x0, b)
                self.y += line_height(b) * 0.55
            elif kind == "quote":
                self._lines(wrap(blk[1], width - 0.3, b), x0 + 0.3, b, style="italic", color=MUTED)
                self.y += line_height(b) * 0.55
            elif kind == "li":
                _, depth, marker, text = blk
                indent = 0.25 + depth * 0.3
                mw = max(text_width(marker + " ", b), 0.22)
                lines = wrap(text, width - indent - mw, b)
                lh = line_height(b, 1.35)
                self._ensure(lh)
                self.page.text(x0 + indent, self.y, marker, b, color=ACCENT if marker == "•" else TEXT,
                               weight="bold" if marker == "•" else "normal")
                self._lines(lines, x0 + indent + mw, b)
                self.y += lh * 0.2
            elif kind == "code":
                self._code(blk[1], x0, width, b * 0.88)
            elif kind == "table":
                self._table(blk[1], x0, width, b * 0.85)
            elif kind == "hr":
                self._ensure(0.3)
                self.page.hline(x0, x1, self.y + 0.1)
                self.y += 0.3

    def _code(self, code: list[str], x0: float, width: float, size: float) -> None:
        cw = text_width("M" * 20, size, mono=True) / 20
        ncols = max(int((width - 0.3) / cw), 10)
        lines = []
        for line in code or [""]:
            if not line:
                lines.append("")
            while line:
                if len(line) <= ncols:
                    lines.append(line)
                    break
                cut = line.rfind(" ", 0, ncols + 1)
                cut = cut if cut > ncols // 2 else ncols  # break at a space when one is near the end
                lines.append(line[:cut].rstrip())
                line = "    " + line[cut:].lstrip()
        lh = line_height(size, 1.35)
        self.y += 0.04
        for j, line in enumerate(lines):
            self._ensure(lh + (0.08 if j == len(lines) - 1 else 0))
            top = j == 0 or self.y == self.box[1]
            self.page.rect(x0, self.y - (0.08 if top else 0), width, lh + (0.08 if top else 0), "#F4F5F7")
            self.page.rect(x0, self.y - (0.08 if top else 0), 0.04, lh + (0.08 if top else 0), RULE)
            self.page.text(x0 + 0.15, self.y, line, size, mono=True, color="#1A1A1A")
            self.y += lh
        self.page.rect(x0, self.y, width, 0.08, "#F4F5F7")
        self.page.rect(x0, self.y, 0.04, 0.08, RULE)
        self.y += 0.08 + line_height(self.base) * 0.6

    def _table(self, rows: list[list[str]], x0: float, width: float, size: float) -> None:
        """A markdown table: bold first row, cells wrapped into columns that share the width fairly."""
        if not rows:
            return
        ncol = max(len(r) for r in rows)
        rows = [r + [""] * (ncol - len(r)) for r in rows]
        header = any(rows[0])
        if not header:  # `| | |` header: a plain key / value table
            rows = rows[1:] or rows
        pad = 0.07
        nat = [max(text_width(r[c], size, weight="bold" if i == 0 and header else "normal")
                   for i, r in enumerate(rows))
               + 2 * pad for c in range(ncol)]
        widths = list(nat)
        if sum(nat) > width:  # water-filling: narrow columns keep their width, wide ones share the rest
            left = width
            for k, c in enumerate(sorted(range(ncol), key=lambda c: nat[c])):
                widths[c] = min(nat[c], left / (ncol - k))
                left -= widths[c]
        xs = np.concatenate([[x0], x0 + np.cumsum(widths)])
        lh = line_height(size, 1.25)
        self.y += 0.04
        if not header:
            self._ensure(lh + 2 * pad)
            self.page.hline(x0, xs[-1], self.y, color=NAVY, lw=0.8)
        for i, r in enumerate(rows):
            wt = "bold" if i == 0 and header else "normal"
            cells = [wrap(v, max(widths[c] - 2 * pad, 0.2) + 1e-6, size, weight=wt) for c, v in enumerate(r)]
            rh = max(len(cl) for cl in cells) * lh + 2 * pad
            self._ensure(rh)
            if i == 0 and header:
                self.page.rect(x0, self.y, xs[-1] - x0, rh, LIGHT)
            for c, cl in enumerate(cells):
                for k, line in enumerate(cl):
                    self.page.text(xs[c] + pad, self.y + pad + k * lh, line, size, weight=wt)
            self.y += rh
            first = i == 0 and header
            self.page.hline(x0, xs[-1], self.y, color=NAVY if first else RULE, lw=0.8 if first else 0.5)
        self.y += line_height(self.base) * 0.6


def build_readme_pdf(readme: Path, out: Path) -> int:
    try:
        text = readme.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Hw2Error(f"{readme}: no such README; write README.md (how to install and run inference) or pass "
                       "--readme PATH") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Hw2Error(f"{readme}: cannot read the README ({type(e).__name__}); save it as UTF-8 text") from None
    blocks = parse_markdown(text)
    pages: list[Page] = []

    def new_page():
        p = Page(A4)
        pages.append(p)
        m = 0.8
        p.hline(m, p.w - m, p.h - 0.55, color=RULE, lw=0.5)
        p.text(m, p.h - 0.48, readme.name, 8, color=MUTED)
        p.text(p.w - m, p.h - 0.48, f"page {len(pages)}", 8, color=MUTED, ha="right")
        return p, (m, 0.75, p.w - m, p.h - 0.8)

    Flow(new_page, base=10.5).render(blocks)
    if not pages:
        new_page()
    write_pdf(pages, out, {"Title": readme.stem, "Subject": "HW2 Source Separation: how to run inference"})
    return len(pages)


# ------------------------------------------------------------------------------------------------------ build
def write_pdf(pages: Sequence[Page], out: Path, meta: dict) -> None:
    """All pages into `out`, atomically: a temporary file beside it, then a rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with PdfPages(tmp, metadata={"Creator": f"hw2 {__version__} (python -m hw2.report)", **meta}) as pdf:
            for p in pages:
                pdf.savefig(p.fig)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def missing_glyphs(*texts: str) -> str:
    """Characters no installed font can draw (e.g. a CJK name without a CJK font)."""
    if len(SANS) > 1:
        return ""  # a fallback font is installed
    font, _ = _font(False, "normal")
    return "".join(sorted({c for t in texts for c in t if ord(c) > 127 and font.get_char_index(ord(c)) == 0}))


def build_report(inp: Inputs, out: Path) -> int:
    miss = missing_glyphs(inp.author, inp.student_id, inp.repo_url)
    if miss:
        print(f"warning: no installed font draws {miss!r} (shown as boxes): install a CJK font, e.g. "
              "`apt-get install fonts-noto-cjk`, then rebuild", file=sys.stderr)
    deck = Deck(inp.author)
    for make in (page_cover, page_novelty, page_methodology, page_result_highlight, page_findings,
                 page_architecture, page_settings, page_pipeline, pages_model_card,
                 page_epochs, pages_all_methods, page_training, pages_figures, page_discussion):
        make(deck, inp)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # reported once above
        write_pdf(deck.pages, out, {"Title": TITLE, "Author": inp.author, "Subject": "HW2 report"})
    return len(deck.pages)


def gather(args) -> Inputs:
    explicit_results = args.results is not None
    results = load_results([Path(p) for p in (args.results or [ROOT / "results"])], explicit_results)
    explicit_hist = args.runs_history is not None
    runs = load_runs([Path(p) for p in (args.runs_history or [ROOT / "checkpoints" / "history.json"])],
                     explicit_hist)
    cfg_path = Path(args.config) if args.config else ROOT / "checkpoints" / "config.json"
    config, config_src = load_config(cfg_path, args.config is not None, runs)
    card_path = Path(args.model_card) if args.model_card else ROOT / "checkpoints" / "MODEL_CARD.md"
    card = None
    if card_path.is_file():
        try:
            card = card_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise Hw2Error(f"{card_path}: cannot read the model card ({type(e).__name__}); save it as UTF-8 "
                           "text") from None
    elif args.model_card:
        raise Hw2Error(f"{card_path}: no such model card; pass the MODEL_CARD.md of the checkpoint")
    figs_dir = Path(args.figures) if args.figures else ROOT / "report" / "figures"
    if args.figures and not figs_dir.is_dir():
        raise Hw2Error(f"{figs_dir}: no such figures folder; pass the folder the notebooks save PNGs to "
                       "(default report/figures)")
    return Inputs(Results(results), runs, config, config_src, card, display_path(card_path), load_figures(figs_dir),
                  args.author or os.environ.get("HW2_AUTHOR") or "<your name>",
                  args.student_id or os.environ.get("HW2_STUDENT_ID") or "<student ID>",
                  args.repo_url or os.environ.get("HW2_REPO_URL") or "<link to code and model (cloud drive)>")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m hw2.report", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--results", nargs="+", metavar="PATH", help="results folders or JSON files (default results/)")
    p.add_argument("--runs-history", nargs="+", metavar="PATH",
                   help="history.json of one or more runs (default checkpoints/history.json)")
    p.add_argument("--config", metavar="PATH", help="training config.json (default checkpoints/config.json, else "
                   "the one beside a history file)")
    p.add_argument("--model-card", metavar="PATH", help="model card (default checkpoints/MODEL_CARD.md)")
    p.add_argument("--figures", metavar="DIR", help="notebook figures (default report/figures)")
    p.add_argument("--out", metavar="PDF", help="report PDF (default report/report.pdf)")
    p.add_argument("--readme", metavar="MD", help="README to render (default README.md)")
    p.add_argument("--readme-out", metavar="PDF", help="README PDF (default README.pdf)")
    p.add_argument("--no-readme", action="store_true", help="build the report only")
    p.add_argument("--author", help="name on the cover (default $HW2_AUTHOR)")
    p.add_argument("--student-id", help="student ID on the cover (default $HW2_STUDENT_ID)")
    p.add_argument("--repo-url", help="link to the code and model on the cover (default $HW2_REPO_URL)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out) if args.out else ROOT / "report" / "report.pdf"
    readme = Path(args.readme) if args.readme else ROOT / "README.md"
    readme_out = Path(args.readme_out) if args.readme_out else ROOT / "README.pdf"
    import matplotlib

    def work():
        with matplotlib.rc_context(RC):
            if not args.no_readme and not readme.is_file():
                raise Hw2Error(f"{readme}: no such README; write README.md (install, inference command, where the "
                               "checkpoint is) or pass --readme PATH, or --no-readme")
            inp = gather(args)  # every input is checked before anything is written
            print(f"wrote {out} ({build_report(inp, out)} pages)")
            if not args.no_readme:
                print(f"wrote {readme_out} ({build_readme_pdf(readme, readme_out)} pages)")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
