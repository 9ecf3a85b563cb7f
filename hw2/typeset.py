"""Typesetting with Typst: compiling a .typ file (or Typst source) to PDF with Typst's errors as one line, the
CJK fonts a Chinese name needs, and the TA's guide (docs/ta-guide.md, Markdown) converted to Typst for README.pdf.

`hw2.report` gathers the numbers and calls these; nothing here reads results/ or checkpoints/.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from hw2 import Hw2Error, atomic_write


# -------------------------------------------------------------------------------------------------- compiling
def compile_typst(source, root: Path, out: Path, font_paths=()) -> None:
    """Compile a .typ file (or Typst source bytes) to `out`, atomically; Typst's error becomes one line."""
    try:  # here, not at the top: a missing typst package becomes the one-line error below, not a traceback
        import typst
    except ImportError:
        raise Hw2Error("the typst package is not installed: pip install -r requirements-dev.txt "
                       "(or pip install typst)") from None
    name = source if isinstance(source, Path) else "README (converted from Markdown)"
    try:
        pdf, warnings = typst.compile_with_warnings(str(source) if isinstance(source, Path) else source,
                                                     root=str(root), font_paths=list(font_paths))
    except typst.TypstError as e:  # its diagnostic names the file, line and column
        # the error's own location: warnings (a missing fallback font) come first in the diagnostic
        where = re.search(r"error:.*?┌─ (\S+)", getattr(e, "diagnostic", "") or "", re.S)
        raise Hw2Error(f"{where.group(1) if where else name}: Typst cannot compile it: {e.message}; fix the "
                       "markup there and rebuild") from None
    for w in warnings:  # a missing optional font (the CJK fallback) is not worth a line
        if "unknown font family" not in w.message:
            print(f"warning: {name}: {w.message}", file=sys.stderr)
    with atomic_write(out) as tmp:
        tmp.write_bytes(pdf)


CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts", "/Library/Fonts",
             "~/Library/Fonts", "C:/Windows/Fonts")
CJK_FONT_FILES = re.compile(r"cjk|sourcehan|wqy|wenquanyi|droidsansfallback|msjh|mingliu|pingfang|notosanstc|"
                            r"notoseriftc", re.I)


def cjk_font_dirs() -> list[str]:
    """Folders holding a font with Chinese characters (Noto CJK, Source Han, WenQuanYi, ...), for Typst."""
    found = set()
    for d in FONT_DIRS:
        base = Path(d).expanduser()
        if base.is_dir():
            found.update(str(f.parent) for f in base.rglob("*") if f.suffix.lower() in (".ttf", ".otf", ".ttc")
                         and CJK_FONT_FILES.search(f.name))
    return sorted(found)


# ------------------------------------------------------------------------------ the TA's guide (Markdown) -> Typst
_INLINE = re.compile(r"\[!\[(?P<balt>[^\]]*)\]\([^)]*\)\]\((?P<blink>[^)\s]+)\)"  # [![alt](img)](link)
                     r"|!\[(?P<ialt>[^\]]*)\]\([^)]*\)"  # ![alt](img)
                     r"|\[(?P<text>[^\]]+)\]\((?P<link>[^)\s]+)\)"  # [text](link)
                     r"|(?P<tick>`+)(?P<code>.+?)(?P=tick)"  # `code`
                     r"|\*\*(?P<bold>.+?)\*\*"  # **bold**
                     r"|<(?P<auto>https?://[^>\s]+)>")  # <https://...>


def _escape(s: str) -> str:
    # ";" too: right after a #raw(...) or #link(...) call Typst reads it as the end of that expression and drops it
    return re.sub(r"([\\#$*_@<>\[\]`~=\-+/:;])", r"\\\1", s)


def inline(s: str) -> str:
    """One line of Markdown as Typst markup: links, code, bold; everything else literal."""
    out, pos = [], 0
    for m in _INLINE.finditer(s):
        out.append(_escape(s[pos:m.start()]))
        g = m.groupdict()
        if g["blink"]:
            out.append(f"#link({json.dumps(g['blink'])})[{_escape(g['balt'] or g['blink'])}]")
        elif g["ialt"] is not None:
            out.append(f"#emph[{_escape(g['ialt'])}]")
        elif g["link"]:
            out.append(f"#link({json.dumps(g['link'])})[{inline(g['text'])}]")
        elif g["code"]:
            out.append(f"#raw({json.dumps(g['code'].strip())})")
        elif g["bold"]:
            out.append(f"#strong[{inline(g['bold'])}]")
        else:
            out.append(f"#link({json.dumps(g['auto'])})")
        pos = m.end()
    return "".join(out) + _escape(s[pos:])


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


CODE_WIDTH = 140  # characters: a longer code line is cut into shell-continued lines


def wrap_code(line: str, width: int = CODE_WIDTH) -> list[str]:
    """A code line longer than `width`, cut at spaces into lines ending in a shell continuation (` \\`), so
    that what is copied still runs; shorter lines stay whole."""
    out = []
    while len(line) > width and (cut := line.rfind(" ", 0, width - 2)) > len(line) - len(line.lstrip()):
        out.append(line[:cut] + " \\")
        line = "    " + line[cut + 1:]
    return out + [line]


def markdown_to_typst(md: str, code_width: int = CODE_WIDTH) -> str:
    """Markdown (the TA's guide) as Typst markup: headings, paragraphs, lists, pipe tables, fenced code blocks. A
    code line longer than `code_width` is cut at spaces with shell continuations; HTML comments are dropped."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang, body = line[3:].strip(), []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            body = [w for line_ in body for w in wrap_code(line_, code_width)]
            out.append(f"#code-block({json.dumps(chr(10).join(body))}, lang: {json.dumps(lang or 'text')})")
        elif re.fullmatch(r"\s*<!--.*-->\s*", line):  # a note to the guide's editors
            pass
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            out.append("=" * len(m.group(1)) + " " + inline(m.group(2)))
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"\s*\|?\s*:?-", lines[i + 1]):
            head, aligns = _cells(line), _cells(lines[i + 1])
            rows, i = [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            align = ", ".join("right" if a.endswith(":") else "left" for a in aligns)
            cells = ", ".join(f"[#strong[{inline(c)}]]" for c in head) + ", " + ", ".join(
                f"[{inline(c)}]" for r in rows for c in (r + [""] * len(head))[:len(head)])
            out.append(f"#md-table(columns: {len(head)}, align: ({align},), {cells})")
            continue
        elif m := re.match(r"(\s*)([-*+]|\d+[.)])\s+(.*)", line):
            marker = "-" if m.group(2) in "-*+" else "+"
            out.append("  " * (len(m.group(1)) // 2) + f"{marker} {inline(m.group(3))}")
        else:
            out.append(inline(line))
        i += 1
    return "\n".join(out) + "\n"


README_TEMPLATE = """#set page(paper: "a4", margin: (x: 14mm, y: 13mm), numbering: "1 / 1")
#set text(font: ("DejaVu Sans", "Libertinus Serif", "Noto Sans CJK TC"), size: 9.5pt)
#set par(justify: false, leading: 0.5em, spacing: 0.75em)
#show heading: set text(fill: rgb("#1F3A5F"))
#show heading: set block(above: 0.9em, below: 0.5em)
#show raw: set text(size: 9pt)
#show raw.where(block: false): box.with(fill: luma(240), inset: (x: 2pt), outset: (y: 2pt), radius: 2pt)
#show link: set text(fill: rgb("#1F5FA0"))
// code at 9 pt, never smaller: the converter cuts a long command into shell-continued lines that fit
#let code-block(body, lang: "text") = block(width: 100%, fill: luma(245), inset: 5pt, radius: 3pt,
  raw(body, lang: lang, block: true))
#let md-table(columns: 1, align: (), ..cells) = table(columns: columns, align: align, stroke: 0.4pt + luma(200),
  inset: 3.5pt, ..cells.pos().map(c => text(size: 9pt, c)))
"""


GUIDE = Path("docs") / "ta-guide.md"  # README.pdf's source: the TA's guide, two A4 pages
GUIDE_CODE_WIDTH = 92  # characters of 9-pt code on A4 with 14 mm margins: a longer command is cut with ` \\`
# the line of the guide that README.pdf replaces with the expected test-set numbers (hw2.report writes them)
EXPECTED = re.compile(r"^<!-- expected:.*-->$", re.M)


def build_readme(root: Path, out: Path, expected: str | None = None) -> Path:
    """README.pdf from the TA's guide (docs/ta-guide.md), converted to Typst; `expected` (Markdown) takes the
    place of its `<!-- expected: ... -->` line."""
    guide = root / GUIDE
    try:
        md = guide.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Hw2Error(f"{guide}: cannot read the TA's guide ({type(e).__name__}); restore it with `git checkout "
                       f"{GUIDE.as_posix()}` or pass --no-readme") from None
    if expected is not None:
        md = EXPECTED.sub(lambda _: expected.rstrip("\n"), md)
    compile_typst((README_TEMPLATE + markdown_to_typst(md, GUIDE_CODE_WIDTH)).encode(), root, out)
    return out
