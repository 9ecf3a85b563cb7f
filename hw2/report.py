"""Build the graded 16:9 report and README.pdf with Typst: Python gathers the numbers, the student writes the text.

    python -m hw2.report                     # report/<student id>_report.pdf (report/report.pdf before an id
                                             # is set in report/student.toml) and README.pdf

The report's text lives in `report/report.typ` (Typst markup, close to Markdown): edit it like a slide deck. Its
numbers, tables and figures come from `report/data.json`, which this module writes on every build from
  results/*.json               written by `python hw2/infer.py ...`: museval "median of medians" rows, each file
                               naming its data (dataset, subset/split, tracks), command and checkpoints
  checkpoints/config.json, history.json, MODEL_CARD.md   the shipped run: settings, losses, time per epoch
  report/figures/*.png, *.txt  figures and the notes the code that drew them wrote beside them
  report/student.toml          name, student ID and cloud-drive link for the cover
After one build, `typst watch report/report.typ --root .` previews edits live (pip install typst gives the
Python binding; the `typst` CLI is optional).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

import hw2
from hw2 import Hw2Error, OneLineParser, __version__, atomic_write, run_cli

ROOT = Path(hw2.__file__).resolve().parents[1]
METHOD_NAMES = {"mixture": "mixture phase", "griffinlim": "Griffin-Lim, random init",
                "griffinlim-mix": "Griffin-Lim, mixture-phase init", "wiener": "Wiener post-filter",
                "mix-as-estimate": "reference: mixture as estimate", "oracle-irm": "reference: oracle ratio mask",
                "misi": "MISI, mixture-phase init",
                "mel": "mel inversion (mel_to_audio)", "vocoder": "vocoder (ours, from scratch)",
                "oracle-vocoder": "reference: vocoder on the true magnitudes"}
OPTIONAL = {"models": "results/models.json", "augment": "results/augment.json", "vocoder": "results/phase.json"}
STUDENT_KEYS = ("name", "id", "drive")


# ------------------------------------------------------------------------------------------------- gathering
def read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Hw2Error(f"{path}: cannot read it as JSON ({type(e).__name__}); {fix}") from None


def dataset_label(data: dict) -> str:
    """The results file's own label; files written before labels were recorded get one from their root's name."""
    from hw2.data import describe_dataset

    if data.get("dataset"):
        return str(data["dataset"])
    if data.get("root") == "stempeg example track":
        return "MUSDB18 7-second preview (stempeg's example track)"
    return describe_dataset(data.get("root", ""), fmt=data.get("format") or "stem")


def split_label(data: dict) -> str:
    """"valid split" / "test set" / "train split" ...: says valid for valid results, never test."""
    subset, split = data.get("subset"), data.get("split")
    if subset == "test":
        return "test set"
    return {"valid": "valid split", "train": "train split"}.get(split, f"{subset} folder")


def load_results(folder: Path, root: Path) -> dict:
    """{stem: results file} for every results/*.json, rows with named methods and plain score dicts."""
    out = {}
    fix = "re-run the command that wrote it (`python hw2/infer.py ... --name NAME`) or delete it"
    for path in sorted(folder.glob("*.json")):
        doc = read_json(path, fix)
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise Hw2Error(f"{path}: not an hw2 results file (no \"rows\" list); {fix}")
        data = doc.get("data") or {}
        rows = [dict(r, method_name=METHOD_NAMES.get(r.get("method"), r.get("method") or r.get("label", "?")),
                     reference=r.get("method") in ("mix-as-estimate", "oracle-irm", "oracle-vocoder"))
                for r in doc["rows"] if isinstance(r, dict)]
        dataset, split = dataset_label(data), split_label(data)
        out[path.stem] = {
            "file": path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path),
            "title": doc.get("title", path.stem), "command": doc.get("command", "not recorded"),
            "created": doc.get("created", "?"), "dataset": dataset, "subset": data.get("subset"),
            "split": data.get("split"), "split_label": split, "nb_tracks": data.get("nb_tracks"),
            "label": f"{dataset}, {split}, {data.get('nb_tracks', '?')} tracks", "rows": rows}
    return out


def pick(results: dict, score) -> str | None:
    """The results file a section shows: test-set files first, then more tracks, then the most fitting rows."""
    ranked = [(r["subset"] == "test", r["nb_tracks"] or 0, score(r), stem) for stem, r in results.items()]
    ranked = [k for k in ranked if k[2] > 0]
    return max(ranked)[3] if ranked else None


def sections(results: dict) -> dict:
    optional = {k: Path(v).stem for k, v in OPTIONAL.items()}
    core = {k: v for k, v in results.items() if k not in optional.values()}
    phase = pick(core, lambda r: sum(x.get("method", "").startswith("griffinlim") for x in r["rows"]))
    # the shipped run's epochs (checkpoints/): a table of another run's epochs is not the shipped model's curve
    epochs = pick(core, lambda r: len({x.get("epoch") for x in r["rows"] if x.get("method") == "mixture"
                                       and str(x.get("checkpoint", "")).startswith("checkpoints/")}) - 1)
    out = {"phase": phase, "epochs": epochs}
    out.update({k: (stem if stem in results else None) for k, stem in optional.items()})
    same = lambda s: json.dumps([(r.get("method"), r.get("epoch"), r.get("scores")) for r in results[s]["rows"]])  # noqa: E731
    shown = {same(s) for s in out.values() if s}  # a notebook's copy of a shown table is not shown twice
    out["other"] = [s for s in results if s not in out.values() and same(s) not in shown]
    return out


def training(root: Path) -> dict | None:
    """The shipped run: config, history summary (best epoch, time per epoch) and model size."""
    folder = root / "checkpoints"
    if not (folder / "history.json").is_file():
        return None
    fix = "copy the config.json and history.json that `python -m hw2.train` wrote into checkpoints/"
    hist = read_json(folder / "history.json", fix)
    cfg = read_json(folder / "config.json", fix) if (folder / "config.json").is_file() else {}
    valid = [h for h in hist if isinstance(h.get("valid_loss"), (int, float))]
    best = min(valid, key=lambda h: h["valid_loss"]) if valid else {}
    secs = sorted(h["seconds"] for h in hist if isinstance(h.get("seconds"), (int, float)))
    card = folder / "MODEL_CARD.md"
    command = re.search(r"```bash\n(python -m hw2\.train[^\n]*)", card.read_text()) if card.is_file() else None
    root_ = cfg.get("musdb_root", "")
    try:
        from hw2.data import describe_dataset
        dataset = describe_dataset(root_) if root_ else "not recorded"
    except Hw2Error:
        dataset = f"{root_} (not on this machine)"
    return {"config": cfg, "dataset": dataset, "epochs": len(hist), "best_epoch": best.get("epoch"),
            "best_valid_loss": best.get("valid_loss"), "median_seconds": secs[len(secs) // 2] if secs else None,
            "total_minutes": sum(secs) / 60, "command": command.group(1) if command else None,
            "model": model_size(cfg) if cfg else None}


def model_size(cfg: dict) -> dict:
    """Trainable parameters, per layer, of the Open-Unmix that `hw2.model` builds from a training config."""
    from hw2.model import ModelConfig, build_model
    from hw2.train import MAX_PARAMS

    m = build_model(ModelConfig.from_dict(cfg))
    layers = [{"name": name, "params": sum(p.numel() for p in mod.parameters())} for name, mod in m.named_children()
              if any(True for _ in mod.parameters())]
    total = sum(p.numel() for p in m.parameters() if p.requires_grad)
    layers.append({"name": "input / output scalers", "params": total - sum(x["params"] for x in layers)})
    return {"params": total, "max_params": MAX_PARAMS, "layers": layers}


def figures(root: Path) -> dict:
    """{stem: {path, note}}: every report/figures PNG (path from the Typst root) and its note, if any."""
    out = {}
    for png in sorted((root / "report" / "figures").glob("*.png")):
        note = png.with_suffix(".txt")
        out[png.stem] = {"path": "/" + png.relative_to(root).as_posix(),
                         "note": note.read_text(encoding="utf-8").strip() if note.is_file() else None}
    return out


def read_student(path: Path) -> dict:
    """name / id / drive from report/student.toml (`key = "value"` lines; Python 3.9 has no tomllib)."""
    out = dict.fromkeys(STUDENT_KEYS, "")
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r'\s*(\w+)\s*=\s*(".*")\s*(?:#.*)?$', line)
            if m and m.group(1) in out:
                out[m.group(1)] = json.loads(m.group(2)).strip()
    return out


def gather(root: Path, student: dict) -> dict:
    results = load_results(root / "results", root) if (root / "results").is_dir() else {}
    return {"student": student, "built": dt.date.today().isoformat(), "hw2_version": __version__,
            "results": results, "sections": sections(results), "training": training(root),
            "figures": figures(root)}


# -------------------------------------------------------------------------------------------------- compiling
def compile_typst(source, root: Path, out: Path) -> None:
    """Compile a .typ file (or Typst source bytes) to `out`, atomically; Typst's error becomes one line."""
    try:
        import typst
    except ImportError:
        raise Hw2Error("the typst package is not installed: pip install -r requirements-dev.txt "
                       "(or pip install typst)") from None
    name = source if isinstance(source, Path) else "README (converted from Markdown)"
    try:
        pdf, warnings = typst.compile_with_warnings(str(source) if isinstance(source, Path) else source,
                                                     root=str(root))
    except typst.TypstError as e:  # its diagnostic names the file, line and column
        where = re.search(r"┌─ (\S+)", getattr(e, "diagnostic", "") or "")
        raise Hw2Error(f"{where.group(1) if where else name}: Typst cannot compile it: {e.message}; fix the "
                       "markup there and rebuild") from None
    for w in warnings:  # a missing optional font (the CJK fallback) is not worth a line
        if "unknown font family" not in w.message:
            print(f"warning: {name}: {w.message}", file=sys.stderr)
    with atomic_write(out) as tmp:
        tmp.write_bytes(pdf)


def build_report(root: Path, student: dict, out: Path | None = None) -> Path:
    source = root / "report" / "report.typ"
    if not source.is_file():
        raise Hw2Error(f"{source}: no report source; restore it with `git checkout report/report.typ`")
    data = gather(root, student)
    with atomic_write(root / "report" / "data.json") as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    sid = re.sub(r"[^\w.-]", "", student.get("id", ""))
    out = out or root / "report" / (f"{sid}_report.pdf" if sid else "report.pdf")
    compile_typst(source, root, out)
    return out


# ---------------------------------------------------------------------------------------- README.md -> Typst
_INLINE = re.compile(r"\[!\[(?P<balt>[^\]]*)\]\([^)]*\)\]\((?P<blink>[^)\s]+)\)"  # [![alt](img)](link)
                     r"|!\[(?P<ialt>[^\]]*)\]\([^)]*\)"  # ![alt](img)
                     r"|\[(?P<text>[^\]]+)\]\((?P<link>[^)\s]+)\)"  # [text](link)
                     r"|(?P<tick>`+)(?P<code>.+?)(?P=tick)"  # `code`
                     r"|\*\*(?P<bold>.+?)\*\*"  # **bold**
                     r"|<(?P<auto>https?://[^>\s]+)>")  # <https://...>


def _escape(s: str) -> str:
    return re.sub(r"([\\#$*_@<>\[\]`~=\-+/:])", r"\\\1", s)


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


CODE_WIDTH = 140  # characters: the template shrinks a block to fit its widest line, down to about 6 pt here


def wrap_code(line: str) -> list[str]:
    """A code line longer than CODE_WIDTH, cut at spaces into lines ending in a shell continuation (` \\`), so
    that what is copied still runs; shorter lines stay whole."""
    out = []
    while len(line) > CODE_WIDTH and (cut := line.rfind(" ", 0, CODE_WIDTH - 2)) > len(line) - len(line.lstrip()):
        out.append(line[:cut] + " \\")
        line = "    " + line[cut + 1:]
    return out + [line]


def markdown_to_typst(md: str) -> str:
    """README.md as Typst markup: headings, paragraphs, lists, pipe tables, fenced code blocks. Code blocks keep
    every line whole: the README template scales a block's font down until its widest line fits."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang, body = line[3:].strip(), []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            body = [w for line_ in body for w in wrap_code(line_)]
            out.append(f"#code-block({json.dumps(chr(10).join(body))}, lang: {json.dumps(lang or 'text')})")
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            out.append("=" * len(m.group(1)) + " " + inline(m.group(2)))
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"\s*\|?\s*:?-", lines[i + 1]):
            head, aligns = _cells(line), _cells(lines[i + 1])
            rows, i = [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            align = ", ".join("right" if a.endswith(":") else "left" for a in aligns)
            cells = ", ".join(f"[{inline(c)}]" for c in head) + ", " + ", ".join(
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


README_TEMPLATE = """#set page(paper: "a4", margin: (x: 16mm, y: 16mm), numbering: "1 / 1")
#set text(font: ("DejaVu Sans", "Libertinus Serif", "Noto Sans CJK TC"), size: 9.5pt)
#set par(justify: false)
#show heading: set text(fill: rgb("#1F3A5F"))
#show raw.where(block: false): box.with(fill: luma(240), inset: (x: 2pt), outset: (y: 2pt), radius: 2pt)
#show link: set text(fill: rgb("#1F5FA0"))
// a code block's font shrinks until its widest line fits: a command is never broken across two lines
#let code-block(body, lang: "text") = block(width: 100%, fill: luma(245), inset: 6pt, radius: 3pt,
  layout(size => context {
    let it = raw(body, lang: lang, block: true)
    let w = measure(text(size: 8.5pt, it)).width
    text(size: if w > size.width { 8.5pt * (size.width / w) } else { 8.5pt }, it)
  }))
#let md-table(columns: 1, align: (), ..cells) = table(columns: columns, align: align, stroke: 0.4pt + luma(200),
  inset: 4pt, ..cells.pos().map(c => text(size: 8.5pt, c)))
"""


def build_readme(readme: Path, out: Path) -> Path:
    try:
        md = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Hw2Error(f"{readme}: cannot read the README ({type(e).__name__}); write README.md as UTF-8 text or "
                       "pass --no-readme") from None
    compile_typst((README_TEMPLATE + markdown_to_typst(md)).encode(), readme.parent, out)
    return out


# ------------------------------------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m hw2.report", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--author", help="name on the cover (default: report/student.toml)")
    p.add_argument("--student-id", help="student ID on the cover and in the file name (default: report/student.toml)")
    p.add_argument("--drive", help="cloud-drive link to the code and model (default: report/student.toml)")
    p.add_argument("--out", metavar="PDF", help="report PDF (default report/<student id>_report.pdf)")
    p.add_argument("--root", metavar="DIR", default=str(ROOT),
                   help="folder holding results/, checkpoints/ and report/ (default: this repository)")
    p.add_argument("--no-readme", action="store_true", help="build the report only, not README.pdf")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    root = Path(args.root).resolve()

    def work():
        student = read_student(root / "report" / "student.toml")
        student.update({k: v for k, v in zip(STUDENT_KEYS, (args.author, args.student_id, args.drive)) if v})
        out = build_report(root, student, Path(args.out) if args.out else None)
        print(f"wrote {out}")
        if not args.no_readme:
            print(f"wrote {build_readme(root / 'README.md', root / 'README.pdf')}")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
