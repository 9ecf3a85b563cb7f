"""Build the graded 16:9 report and README.pdf with Typst: Python gathers the numbers, the student writes the text.

    python -m hw2.report                     # report/<student id>_report.pdf (report/report.pdf before an id
                                             # is set in report/student.toml) and README.pdf (the TA's
                                             # guide, from docs/ta-guide.md)

The report's text lives in `report/report.typ` (Typst markup, close to Markdown): edit it like a slide deck. Its
numbers, tables and figures come from `report/data.json`, which this module writes on every build from
  results/*.json               written by `python hw2/infer.py ...`: museval "median of medians" rows, each file
                               naming its data (dataset, subset/split, tracks), command and checkpoints
  checkpoints/config.json, history.json, MODEL_CARD.md   the shipped run: settings, losses, time per epoch
  report/figures/*.png, *.txt  figures (`python -m hw2.figures` draws the report's) and their notes
  report/references.bib        the references, cited with @key
  report/student.toml          name, student ID and cloud-drive link for the cover
After one build, `typst watch report/report.typ --root .` previews edits live (pip install typst gives the
Python binding; the `typst` CLI is optional).
"""
from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import re
import struct
import sys
from pathlib import Path

import hw2
from hw2 import Hw2Error, OneLineParser, __version__, atomic_write, run_cli
from hw2.checkpoint import MAX_PARAMS
from hw2.model import ModelConfig, build_model, describe, parameters_of
from hw2.reconstruct import griffinlim
from hw2.separate import Separator
from hw2.tracks import describe_dataset
from hw2.typeset import CJK, build_readme, cjk_font_dirs, compile_typst

ROOT = Path(hw2.__file__).resolve().parents[1]
METHOD_NAMES = {"mixture": "mixture phase", "griffinlim": "Griffin-Lim, random init",
                "griffinlim-mix": "Griffin-Lim, mixture-phase init", "wiener": "Wiener post-filter",
                "mix-as-estimate": "reference: mixture as estimate", "oracle-irm": "reference: oracle ratio mask",
                "misi": "MISI, mixture-phase init",
                "mel": "mel inversion (mel_to_audio)", "vocoder": "vocoder (ours, from scratch)",
                "oracle-vocoder": "reference: vocoder on the true magnitudes"}
OPTIONAL = {"models": "results/models.json", "augment": "results/augment.json", "vocoder": "results/phase.json",
            "sweep": "results/phase-sweep.json", "unet150": "results/unet-150.json",
            "tuning": "results/tuning-width.json"}
SYNTHETIC = re.compile(r"generated|synth", re.I)  # hw2.synth roots: never a test or valid table of the report
STUDENT_KEYS = ("name", "id", "drive")
MAX_COMMAND = 160  # characters of a command on the Reproduce slide


# ------------------------------------------------------------------------------------------------- gathering
def read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Hw2Error(f"{path}: cannot read it as JSON ({type(e).__name__}); {fix}") from None


def dataset_label(data: dict) -> str:
    """The results file's own label; files written before labels were recorded get one from their root's name."""
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
            "title": doc.get("title", path.stem), "command": public_command(doc.get("command", "not recorded")),
            "scores_command": public_command(doc["scores_command"]) if doc.get("scores_command") else None,
            "created": doc.get("created", "?"), "dataset": dataset, "subset": data.get("subset"),
            "split": data.get("split"), "split_label": split, "nb_tracks": data.get("nb_tracks"),
            "label": f"{dataset}, {split}, {data.get('nb_tracks', '?')} tracks", "rows": rows}
    return out


def public_command(command: str) -> str:
    """A recorded command as the report prints it: the MUSDB root as MUSDB_ROOT, any other absolute path (a
    development machine's) cut to what follows its checkpoints/, results/ or runs/ folder, else PATH."""
    words = command.split()
    for i, w in enumerate(words):
        if i and words[i - 1] == "--musdb-root":
            words[i] = "MUSDB_ROOT"
        elif w.startswith(("/", "~")) or re.match(r"[A-Za-z]:\\", w):
            m = re.search(r"(?:^|/)((?:checkpoints|results|runs)(?:/.*)?)$", w)
            words[i] = m.group(1) if m else "PATH"
    return " ".join(words)


def pick(results: dict, score) -> str | None:
    """The results file a section shows: test-set files first, then more tracks, then the most fitting rows."""
    ranked = [(r["subset"] == "test", r["nb_tracks"] or 0, score(r), stem) for stem, r in results.items()
              if not SYNTHETIC.search(r["dataset"])]
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


def _vocals(row: dict | None, target: str = "vocals") -> float | None:
    try:
        v = row["scores"][target]["SDR"]
        return float(v) if v is not None else None
    except (KeyError, TypeError):
        return None


def _diff(a, b):
    return None if a is None or b is None else a - b


def findings(results: dict) -> dict:
    """The numbers the findings and discussion state, each computed from its results file (None where the file
    or row is missing), with the file it came from: the prose in report.typ never types a number."""
    out: dict = {}
    by = lambda stem, key: {r.get(key): r for r in results.get(stem, {}).get("rows", [])}  # noqa: E731
    models = by("models", "variant")
    if models:
        base = _vocals(models.get("openunmix-256"))
        out["models"] = {"file": results["models"]["file"], "base": base,
                         **{k: _vocals(r) for k, r in models.items()},
                         **{f"{k}_delta": _diff(_vocals(r), base) for k, r in models.items()}}
    aug = results.get("augment", {}).get("rows", [])
    if aug:
        family: dict = {}
        for r in aug:
            family.setdefault(r.get("base") or r.get("variant"), []).append(r)
        delta = lambda r: (r.get("delta") or {}).get("vocals")  # noqa: E731
        fam = {k: {"seeds": [r["config"].get("seed") for r in rs], "vocals": [_vocals(r) for r in rs],
                   "accompaniment": [_vocals(r, "accompaniment") for r in rs],
                   "delta": [delta(r) for r in rs]} for k, rs in family.items()}
        for f in fam.values():
            ds = [d for d in f["delta"] if d is not None]
            f["mean_delta"] = sum(ds) / len(ds) if ds else None
            ranges = [max(v) - min(v) for v in ([x for x in f[t] if x is not None] for t in ("vocals", "accompaniment"))
                      if len(v) > 1]
            f["spread"] = max(ranges) if ranges else None  # the largest seed-to-seed range of either target
            f["nb_seeds"] = len(f["seeds"])
        out["augment"] = {"file": results["augment"]["file"], "families": fam}
    ship = results.get("ship", {}).get("rows", [])
    if ship:  # bench/ship.py's candidates: single networks (one epoch) against blends (one epoch per member)
        single = [r for r in ship if isinstance(r.get("epoch"), int)]
        blends = [r for r in ship if not isinstance(r.get("epoch"), int)]
        top = lambda rs: max(rs, key=lambda r: r.get("vocals_sdr") or -99, default=None)  # noqa: E731
        s1, b1 = top(single), top(blends)
        out["ship"] = {"file": results["ship"]["file"], "nb": len(ship),
                       "single": s1 and s1.get("vocals_sdr"), "single_label": s1 and s1.get("label"),
                       "blend": b1 and b1.get("vocals_sdr"), "gain": _diff(b1 and b1.get("vocals_sdr"),
                                                                            s1 and s1.get("vocals_sdr"))}
    acc = [r for r in results.get("ship-acc", {}).get("rows", []) if r.get("method") == "mixture"]
    if len(acc) >= 2:  # bench/ship.py --phase: the residual blend (fewest parameters) against accompaniment networks
        residual = min(acc, key=lambda r: r.get("parameters") or 0)
        top = max((r for r in acc if r is not residual), key=lambda r: r.get("accompaniment_sdr") or -99)
        wiener = [r for r in results["ship-acc"]["rows"] if r.get("method") == "wiener"]
        out["ship_acc"] = {"file": results["ship-acc"]["file"], "residual": residual.get("accompaniment_sdr"),
                           "network": top.get("accompaniment_sdr"),
                           "gain": _diff(top.get("accompaniment_sdr"), residual.get("accompaniment_sdr")),
                           "vocals_change": _diff(top.get("vocals_sdr"), residual.get("vocals_sdr")),
                           "wiener_vocals_gain": max((g for g in (_diff(w.get("vocals_sdr"), residual.get("vocals_sdr"))
                                                                 for w in wiener) if g is not None), default=None)}
    unet = results.get("unet-150", {}).get("rows", [])
    if unet:
        own = [r for r in unet if not str(r.get("checkpoint", "")).startswith("checkpoints/")]
        best = next((r for r in own if str(r.get("checkpoint", "")).endswith("best.pt")), None)
        top = max(own, key=lambda r: _vocals(r) or -99, default=None)
        shipped = next((r for r in unet if str(r.get("checkpoint", "")).startswith("checkpoints/")), None)
        out["unet150"] = {"file": results["unet-150"]["file"], "best": _vocals(best),
                          "best_epoch": (best or {}).get("epoch"), "top": _vocals(top),
                          "top_epoch": (top or {}).get("epoch"), "shipped": _vocals(shipped),
                          "shipped_epoch": (shipped or {}).get("epoch")}
    tuning = results.get("tuning-width", {}).get("rows", [])
    if len(tuning) >= 2:
        ref = next((r for r in tuning if str(r.get("checkpoint", "")).startswith("checkpoints/")), tuning[0])
        other = next(r for r in tuning if r is not ref)
        out["tuning"] = {"file": results["tuning-width"]["file"], "epoch": ref.get("epoch"), "base": _vocals(ref),
                         "other": _vocals(other), "other_name": other.get("name") or other.get("label"),
                         "delta": _diff(_vocals(other), _vocals(ref))}
    sweep = results.get("phase-sweep", {}).get("rows", [])
    if sweep:
        curves: dict = {}
        for r in sorted(sweep, key=lambda r: r.get("iterations", 0)):
            curves.setdefault(r["method"], []).append({"iterations": r.get("iterations"), "vocals": _vocals(r),
                                                       "accompaniment": _vocals(r, "accompaniment")})
        out["sweep"] = {"file": results["phase-sweep"]["file"], "curves": curves}
    return out


def separation_defaults() -> dict:
    """The block size, context and Griffin-Lim settings `hw2.separate.Separator` runs with by default."""
    sep = {k: v.default for k, v in inspect.signature(Separator.__init__).parameters.items()
           if v.default is not inspect.Parameter.empty}
    gl = {k: v.default for k, v in inspect.signature(griffinlim).parameters.items()
          if v.default is not inspect.Parameter.empty}
    return {"chunk_dur": sep["chunk_dur"], "context_dur": sep["context_dur"], "gl_iters": sep["gl_iters"],
            "momentum": gl.get("momentum")}


def training(root: Path) -> dict | None:
    """The shipped run: config, history summary (best epoch, time per epoch) and model size."""
    folder = root / "checkpoints"
    if not (folder / "history.json").is_file():
        return None
    fix = "copy the config.json and history.json that `python -m hw2.train` wrote into checkpoints/"
    hist = read_json(folder / "history.json", fix)
    cfg = read_json(folder / "config.json", fix) if (folder / "config.json").is_file() else {}
    valid = [h for h in hist if isinstance(h.get("valid_loss"), (int, float))]
    # the epoch the run kept as best.pt (by valid loss or, with --select-by sdr, by valid SDR): the last one marked
    kept = [h for h in hist if h.get("best")]
    best = kept[-1] if kept else min(valid, key=lambda h: h["valid_loss"]) if valid else {}
    secs = sorted(h["seconds"] for h in hist if isinstance(h.get("seconds"), (int, float)))
    card = folder / "MODEL_CARD.md"
    card_text = card.read_text(encoding="utf-8") if card.is_file() else ""
    command = re.search(r"```bash\n(python -m hw2\.train[^\n]*)", card_text) or \
        re.search(r"Blend command: `(python -m hw2\.blend[^`]*)`", card_text)
    nb_train = re.search(r"training tracks \|[^|\n]*?\((\d+) tracks\)", card_text)
    root_ = cfg.get("musdb_root", "")
    try:
        dataset = describe_dataset(root_) if root_ else "not recorded"
    except Hw2Error:  # trained elsewhere: named from its root's name, never by a path of that machine
        dataset = dataset_label({"root": root_, "format": "stem"})
    blend = blend_summary(folder / "blend.json") if (folder / "blend.json").is_file() else None
    model = model_size(cfg) if cfg else None
    if blend and model:
        model["params"] = blend["params"]  # every member counts toward the assignment's limit
    return {"config": cfg, "dataset": dataset, "epochs": len(hist), "best_epoch": best.get("epoch"), "blend": blend,
            "best_valid_loss": best.get("valid_loss"), "median_seconds": secs[len(secs) // 2] if secs else None,
            "train_tracks": int(nb_train.group(1)) if nb_train else None, "total_minutes": sum(secs) / 60, "command": public_command(command.group(1)) if command else None,
            "model": model}


def blend_summary(path: Path) -> dict:
    """A shipped blend (`python -m hw2.card --blend`): each member's network in words, its weight, epoch and
    parameters; config.json and history.json in checkpoints/ are member 1's run."""
    b = read_json(path, "ship the blend again with `python -m hw2.card --blend`")
    members = []
    for i, m in enumerate(b["members"]):
        mc = ModelConfig.from_dict(m["config"])
        members.append({"describe": describe(mc), "arch": mc.arch, "epoch": m.get("epoch"),
                        "weight": b["weights"][i] if i < len(b["weights"]) else b.get("accompaniment_weight"),
                        "mixing": m["config"].get("mixing"), "select_by": m["config"].get("select_by", "loss"),
                        "target": m["config"].get("target", "vocals"),
                        "params": parameters_of(mc)})
    return {"members": members, "swap": b.get("swap", False), "params": sum(m["params"] for m in members)}


def model_size(cfg: dict) -> dict:
    """Trainable parameters, per layer, of the Open-Unmix that `hw2.model` builds from a training config."""
    m = build_model(ModelConfig.from_dict(cfg))
    layers = [{"name": name, "params": sum(p.numel() for p in mod.parameters())} for name, mod in m.named_children()
              if any(True for _ in mod.parameters())]
    total = sum(p.numel() for p in m.parameters() if p.requires_grad)
    layers.append({"name": "input / output scalers", "params": total - sum(x["params"] for x in layers)})
    return {"params": total, "max_params": MAX_PARAMS, "layers": layers}


def png_size_cm(png: Path) -> tuple[float, float] | None:
    """(width, height) in cm from a PNG's pixel size and its pHYs resolution; None without a pHYs chunk."""
    data = png.read_bytes()
    w, h = struct.unpack(">II", data[16:24])
    i = data.find(b"pHYs")
    if i < 0:
        return None
    px, py, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    return (100 * w / px, 100 * h / py) if unit == 1 and px and py else None  # unit 1: pixels per metre


def figures(root: Path) -> dict:
    """{stem: {path, note, width_cm, height_cm}}: every report/figures PNG (path from the Typst root), its note,
    and the size it was drawn for (`hw2.figures` draws each at its slot's size: printed at that size, its text
    keeps its point size)."""
    out = {}
    for png in sorted((root / "report" / "figures").glob("*.png")):
        note = png.with_suffix(".txt")
        size = png_size_cm(png)
        out[png.stem] = {"path": "/" + png.relative_to(root).as_posix(),
                         "note": note.read_text(encoding="utf-8").strip() if note.is_file() else None,
                         "width_cm": size[0] if size else None, "height_cm": size[1] if size else None}
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
    tr = training(root)
    secs = sections(results)
    # every results file but a copy of a shown one (a notebook's) gets its command on the Reproduce slide
    shown = sorted({v for k, v in secs.items() if k != "other" and v} | set(secs["other"]))
    return {"student": student, "built": dt.date.today().isoformat(), "hw2_version": __version__,
            "results": results, "sections": secs, "training": tr,
            "findings": findings(results), "separation": separation_defaults(), "figures": figures(root),
            "commands": reproduce_commands(results, tr, shown)}


def reproduce_commands(results: dict, tr: dict | None, shown) -> list[dict]:
    """[{what, command}]: the command behind every table and figure the report shows (results files `shown`),
    for its Reproduce slide."""
    out = []
    if tr and tr.get("command"):
        out.append({"what": "the shipped model (checkpoints)", "command": tr["command"]})
    # a table scored as one step of another's command (bench/ship.py's infer run) is reproduced by that command
    steps = {r.get("scores_command") for r in results.values() if r.get("scores_command")}
    for stem in shown:
        if results[stem]["command"] in steps:
            continue
        command = results[stem]["command"]
        if len(command) > MAX_COMMAND:  # a slide line, not a page: the whole command is in the table's file
            command = command[:MAX_COMMAND].rsplit(" ", 1)[0] + f" ... (whole: {results[stem]['file'][:-5]}.md)"
        out.append({"what": results[stem]["file"], "command": command})
    out.append({"what": "the figures (report/figures)", "command": "python -m hw2.figures"})
    out.append({"what": "the listening figure (from the WAVs of results/phase.json's command)",
                "command": "python -m hw2.figures --listening results/phase/samples"})
    out.append({"what": "this report and README.pdf", "command": "python -m hw2.report"})
    return out


# ----------------------------------------------------------------------------------------------------- building
def starter_paragraphs(source: Path) -> list[str]:
    """`line N: first words` of every paragraph report.typ still marks as starter prose (#starter[...])."""
    out = []
    lines = source.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("//") or not (m := re.search(r"#starter\[\s*(.*)", line)):
            continue
        text = " ".join([m.group(1)] + lines[n:n + 2])  # the marker's line may hold no words
        words = re.sub(r"#\w+\([^)]*\)|[*_`#\[\]]|@\w+", "", text).split()[:8]
        out.append(f"line {n}: {' '.join(words)}...")
    return out


def file_id(student: dict) -> str:
    """The student ID as it goes into file names (the course's `<id>_report.pdf`): letters, digits, `.`, `-`, `_`."""
    return re.sub(r"[^\w.-]", "", student.get("id", ""))


def report_name(student: dict) -> str:
    """`<id>_report.pdf`, the name the course site asks for; `report.pdf` until an ID is set."""
    return f"{file_id(student)}_report.pdf" if file_id(student) else "report.pdf"


def build_report(root: Path, student: dict, out: Path | None = None, log=print) -> Path:
    source = root / "report" / "report.typ"
    if not source.is_file():
        raise Hw2Error(f"{source}: no report source; restore it with `git checkout report/report.typ`")
    fonts = cjk_font_dirs()
    if CJK.search(student.get("name", "")) and not fonts:
        raise Hw2Error("your name has Chinese characters and this machine has no CJK font to print them: "
                       "apt-get install -y fonts-noto-cjk (on Colab: !apt-get install -y fonts-noto-cjk), then rebuild")
    data = gather(root, student)
    with atomic_write(root / "report" / "data.json") as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    default = root / "report" / report_name(student)
    compile_typst(source, root, out or default, font_paths=fonts)
    if out is None:  # one report PDF in report/: the placeholder or an old ID's copy is never uploaded by mistake
        for old in (root / "report").glob("*.pdf"):
            if old != default and (old.name == "report.pdf" or old.name.endswith("_report.pdf")):
                old.unlink()
                log(f"removed {old} (an older build; {default.name} replaces it)")
    starters = starter_paragraphs(source)
    if starters:
        log(f"{len(starters)} paragraphs of report/report.typ are still starter text (tagged in the PDF); rewrite "
            "each and delete its #starter[...] marker:\n  " + "\n  ".join(starters))
    return out or default


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
            print(f"wrote {build_readme(root, root / 'README.pdf')}")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
