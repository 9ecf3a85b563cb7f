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
from hw2.findings import findings, sdr, variant_name
from hw2.model import ModelConfig, build_model, describe, parameters_of
from hw2.reconstruct import griffinlim
from hw2.separate import METHOD_NAMES, Separator
from hw2.tracks import describe_dataset
from hw2.typeset import CJK, GUIDE, build_readme, cjk_font_dirs, compile_typst

ROOT = Path(hw2.__file__).resolve().parents[1]
OPTIONAL = {"models": "results/models.json", "augment": "results/augment.json", "vocoder": "results/phase.json",
            "sweep": "results/phase-sweep.json", "unet150": "results/unet-150.json",
            # the network that predicts the phase (issue 29): its phase tables (two seeds at 25 epochs, the 150-epoch
            # run), its phase on the shipped blend's magnitude, and the blend round
            "network": "results/phase-network.json", "network_seed": "results/phase-network-seed43.json",
            "network_150": "results/phase-network-150.json", "transfer": "results/phase-transfer.json",
            "blend_complex": "results/blend-complex.json"}
# side studies: the Reproduce slide names their tables, whose .md files hold the commands (it has one page)
SIDE = ("network", "network_seed", "network_150", "transfer", "blend_complex")
SYNTHETIC = re.compile(r"generated|synth", re.I)  # hw2.synth roots: never a test or valid table of the report
STUDENT_KEYS = ("name", "id", "drive")


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
    """"valid split" / "test split" / "train split" ...: says valid for valid results, never test."""
    subset, split = data.get("subset"), data.get("split")
    if subset == "test":
        return "test split"
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
                     reference=r.get("method") in ("mix-as-estimate", "oracle-irm", "oracle-vocoder"),
                     name=variant_name(r),
                     # "ours, after Open-Unmix (Stöter et al., ...)": who wrote the code, without the citation
                     code_words=re.split(r"\s*\(", r["code"])[0] if isinstance(r.get("code"), str) else None)
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


SHIPPED = "checkpoints/vocals.pt"  # the TA's default checkpoint: the shipped model


def _phases(r: dict) -> int:
    """Griffin-Lim rows of the shipped checkpoint: another network's phase table (the complex one's) is not the
    required task's."""
    return sum(x.get("method", "").startswith("griffinlim") and x.get("checkpoint") == SHIPPED for x in r["rows"])


def _milestones(r: dict) -> int:
    """Epochs of the shipped run's checkpoints (checkpoints/) a table scores, less one: a table of another run's
    epochs is not the shipped model's curve."""
    return len({x.get("epoch") for x in r["rows"] if x.get("method") == "mixture"
                and str(x.get("checkpoint", "")).startswith("checkpoints/")}) - 1


def _shipped_alone(r: dict) -> float:
    """The TA's first table: the shipped checkpoint with the mixture phase; the fewer rows of other checkpoints,
    the better."""
    ok = any(x.get("checkpoint") == SHIPPED and x.get("method") == "mixture" for x in r["rows"])
    return sum(x.get("checkpoint") == SHIPPED for x in r["rows"]) / len(r["rows"]) if ok else 0


def sections(results: dict) -> dict:
    """{section: results stem}: the required tasks' tables on the test set (test, phase, epochs) and, beside
    each, the same table on the valid split where the model and its epoch were chosen (*_valid); the optional
    tasks' files; "other": every file not shown."""
    optional = {k: Path(v).stem for k, v in OPTIONAL.items()}
    core = {k: v for k, v in results.items() if k not in optional.values()}
    test = {k: v for k, v in core.items() if v["subset"] == "test"}
    valid = {k: v for k, v in core.items() if v["split"] == "valid"}
    out = {"test": pick(test, _shipped_alone), "phase": pick(core, _phases), "epochs": pick(core, _milestones),
           "test_valid": pick(valid, _shipped_alone), "phase_valid": pick(valid, _phases),
           "epochs_valid": pick(valid, _milestones)}
    for k in ("test", "phase", "epochs"):  # a valid table beside itself says nothing
        if out[k] == out[k + "_valid"]:
            out[k + "_valid"] = None
    out.update({k: (stem if stem in results else None) for k, stem in optional.items()})
    same = lambda s: json.dumps([(r.get("method"), r.get("epoch"), r.get("scores")) for r in results[s]["rows"]])  # noqa: E731
    shown = {same(s) for s in out.values() if s}  # a notebook's copy of a shown table is not shown twice
    out["other"] = [s for s in results if s not in out.values() and same(s) not in shown]
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
            "train_tracks": int(nb_train.group(1)) if nb_train else None, "total_minutes": sum(secs) / 60,
            "steps": shipping_steps(card_text, blend, cfg), "model": model}


def shipping_steps(card_text: str, blend: dict | None, cfg: dict) -> list[dict]:
    """[{what, command}]: the commands that rebuild the shipped model from a fresh clone, read from its model card:
    each training run with its seed (the card leaves defaults out), the blend, and the step that ships it."""
    members = (blend or {}).get("members") or [{"arch": cfg.get("arch", "openunmix"),
                                                "target": cfg.get("target", "vocals"), "seed": cfg.get("seed")}]
    out = []
    trains = re.findall(r"(python -m hw2\.train[^\n`]*)", card_text)
    for i, command in enumerate(trains):
        m = members[i] if i < len(members) else {}
        if m.get("seed") is not None and "--seed" not in command.split():
            command += f" --seed {m['seed']}"
        arch = {"openunmix": "Open-Unmix", "unet": "U-Net", "tfctdf": "TFC-TDF U-Net"}.get(m.get("arch"),
                                                                                     m.get("arch") or "the model")
        out.append({"what": f"train {arch}, {m.get('target', 'vocals')}", "command": public_command(command)})
    made = re.search(r"Blend command: `(python -m hw2\.blend[^`]*)`", card_text)
    if made:
        out.append({"what": "blend the runs", "command": public_command(made.group(1))})
        dest = re.search(r"--out (\S+)", made.group(1))
        ship = f"python -m hw2.card --blend {dest.group(1)}" if dest else None
    else:
        dest = re.search(r"--out (\S+)", trains[0]) if trains else None
        ship = f"python -m hw2.card --run {dest.group(1)}" if dest else None
    if ship:
        out.append({"what": "ship it (into checkpoints/)", "command": public_command(ship)})
    return out


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
                        "target": m["config"].get("target", "vocals"), "seed": m["config"].get("seed"),
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
    """name / id / drive and draft (true / false) from report/student.toml (`key = value` lines; Python 3.9 has
    no tomllib)."""
    out = dict.fromkeys(STUDENT_KEYS, "")
    out["draft"] = False
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r'\s*(\w+)\s*=\s*(".*"|true|false)\s*(?:#.*)?$', line)
            if m and m.group(1) in out:
                out[m.group(1)] = json.loads(m.group(2))
                out[m.group(1)] = out[m.group(1)].strip() if isinstance(out[m.group(1)], str) else out[m.group(1)]
    return out


def gather(root: Path, student: dict, draft: bool = False) -> dict:
    results = load_results(root / "results", root) if (root / "results").is_dir() else {}
    tr = training(root)
    secs = sections(results)
    listening = listening_folder(results)
    found = findings(results, root)
    return {"student": student, "draft": draft, "built": dt.date.today().isoformat(), "hw2_version": __version__,
            "results": results, "sections": secs, "training": tr,
            "listening": f"{listening}/index.html" if listening else None,
            "findings": found, "separation": separation_defaults(), "figures": figures(root),
            "commands": reproduce_commands(results, tr, secs, found)}


def listening_folder(results) -> str | None:
    """The folder of the listening page the report's Listening slide names: beside the WAVs of the phase table's
    command (results/phase.json), or None without that table. `results`: the results files' stems (or
    `load_results`' dict of them)."""
    table = OPTIONAL["vocoder"]
    return f"{table[:-len('.json')]}/samples" if Path(table).stem in results else None


REPRODUCED = ("test", "epochs", "phase", "test_valid", "epochs_valid", "phase_valid", *OPTIONAL)


def reproduce_commands(results: dict, tr: dict | None, secs: dict, findings: dict | None = None) -> list[dict]:
    """[{what, command}] for the Reproduce slide, in the order they run from a fresh clone: the shipped model's
    steps, then the command of every table the report shows, then the figures and the report. A command on a
    runs/ folder that no step here writes, or of a side study (SIDE), is not printed: its table's .md names it."""
    out = list(tr["steps"]) if tr else []
    made = [m for c in out for m in re.findall(r"--out (runs/\S+)", c["command"])]
    elsewhere, seen = [], set()
    # the shown sections, then the files a finding quotes (results/ship.json ...)
    quoted = sorted({Path(f["file"]).stem for f in (findings or {}).values() if isinstance(f, dict) and "file" in f})
    for key, stem in [(k, secs.get(k)) for k in REPRODUCED] + [(None, q) for q in quoted]:
        if not stem or stem in seen or stem not in results:
            continue
        seen.add(stem)
        rf = results[stem]
        if key in SIDE or any(not p.startswith(tuple(made)) for p in re.findall(r"runs/\S+", rf["command"])):
            elsewhere.append(rf["file"][:-len(".json")] + ".md")
            continue
        # --jobs only sets how many processes score: the numbers are the same at any value
        out.append({"what": rf["file"], "command": re.sub(r" --jobs \d+", "", rf["command"])})
    listening = f" --listening {listening_folder(results)}" if listening_folder(results) else ""
    out.append({"what": "figures, report, README.pdf", "command": f"python -m hw2.figures{listening} && "
                "python -m hw2.report"})
    if elsewhere:  # a sentence, not a command: the table names its runs' commands
        out.append({"what": "side studies", "note": ", ".join(elsewhere)})
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


def missing_fields(student: dict) -> list[str]:
    return [k for k in STUDENT_KEYS if not student.get(k)]


FIELD_FLAGS = {"name": "--author", "id": "--student-id", "drive": "--drive"}


def build_report(root: Path, student: dict, out: Path | None = None, draft: bool = False, log=print) -> Path:
    """report/<id>_report.pdf, finished: no tags, and refused while a cover field is unset; a draft
    (report/draft.pdf) tags the starter paragraphs and the unset fields instead."""
    source = root / "report" / "report.typ"
    if not source.is_file():
        raise Hw2Error(f"{source}: no report source; restore it with `git checkout report/report.typ`")
    missing = missing_fields(student)
    if missing and not draft:
        fields = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        many = len(missing) > 1
        raise Hw2Error(f"report/student.toml: {fields} {'are' if many else 'is'} empty; set {'them' if many else 'it'} "
                       f"there (or pass {', '.join(FIELD_FLAGS[k] for k in missing)}), or build a tagged draft with "
                       "--draft")
    fonts = cjk_font_dirs()
    if CJK.search(student.get("name", "")) and not fonts:
        raise Hw2Error("your name has Chinese characters and this machine has no CJK font to print them: "
                       "apt-get install -y fonts-noto-cjk (on Colab: !apt-get install -y fonts-noto-cjk), then rebuild")
    data = gather(root, student, draft)
    with atomic_write(root / "report" / "data.json") as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    default = root / "report" / ("draft.pdf" if draft else report_name(student))
    compile_typst(source, root, out or default, font_paths=fonts)
    if out is None and not draft:  # one report PDF in report/: an old ID's copy is never uploaded by mistake
        for old in (root / "report").glob("*.pdf"):
            if old != default and (old.name == "report.pdf" or old.name.endswith("_report.pdf")):
                old.unlink()
                log(f"removed {old} (an older build; {default.name} replaces it)")
    starters = starter_paragraphs(source)
    if starters:
        log(f"{len(starters)} paragraphs of report/report.typ are still starter text"
            f"{' (tagged in this draft)' if draft else ''}; rewrite each and delete its #starter[...] marker:\n  "
            + "\n  ".join(starters))
    page = data["listening"]
    if page and not (root / page).is_file():
        log(f"the listening slide names {page}, which is not here: run the command of "
            f"{page.split('/samples')[0]}.json (on the Reproduce slide; it writes the page) before uploading the "
            "repository to the drive")
    return out or default


def expected_markdown(data: dict, guide: str) -> str:
    """What a TA should see: the test-set tables of this repository's runs of the guide's commands, as Markdown
    for README.pdf (the Griffin-Lim table's rows are those the guide's --phase asks for)."""
    R, S = data["results"], data["sections"]
    phases = re.search(r"--phase ([a-z -]+?) (?:--[\w-]+ (?:[^-\s]\S* )?)*--name test-phase", guide)
    asked = set(phases.group(1).split()) if phases else None
    rows = []
    for key, what in (("test", "test table"), ("epochs", "epoch table"), ("phase", "Griffin-Lim table")):
        rf = R.get(S.get(key) or "")
        if not rf or rf["subset"] != "test":
            continue
        for r in rf["rows"]:
            if key == "phase" and asked is not None and r.get("method") not in asked:
                continue
            epoch = r.get("epoch")
            epoch = f"best epochs {str(epoch).replace('+', ', ')}" if isinstance(epoch, str) else f"epoch {epoch}"
            values = [sdr(r, t) for t in ("vocals", "accompaniment")]
            method = "" if r.get("method") == "mixture" else f", {r['method_name']}"
            rows.append(f"| {what} | `{Path(str(r.get('checkpoint'))).name}` ({epoch}){method} | "
                        + " | ".join("-" if v is None else f"{v:.2f}" for v in values) + " |")
    if not rows:
        return ("**What to expect:** no test-set table has been scored in this repository yet "
                "(`results/test.json` is missing).\n")
    rf = R[S["test"] or S["phase"] or S["epochs"]]
    preview = "preview" in rf["dataset"]
    return "\n".join([
        f"**What to expect.** This repository's own runs of these commands on the {rf['dataset']}'s test split "
        f"({rf['nb_tracks']} tracks{', excerpts of the full songs' if preview else ''}), read from "
        "`results/test*.json` when README.pdf is built (SDR in dB, median of medians; mixture phase unless "
        "named):", "",
        "| table | row | vocals SDR | accompaniment SDR |", "|---|---|---:|---:|", *rows, "",
        *(["Full MUSDB18's test set (the same songs at full length) was not scored here, so what it gives is not "
           "known: expect other numbers there, with the same order of rows (the mixture phase far above "
           "Griffin-Lim).", ""] if preview else [])])


# ------------------------------------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m hw2.report", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--author", help="name on the cover (default: report/student.toml)")
    p.add_argument("--student-id", help="student ID on the cover and in the file name (default: report/student.toml)")
    p.add_argument("--drive", help="cloud-drive link to the code and model (default: report/student.toml)")
    p.add_argument("--draft", action="store_true",
                   help="report/draft.pdf with the starter paragraphs and unset cover fields tagged (also: "
                        "draft = true in report/student.toml); the default is the finished <id>_report.pdf")
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
        draft = student.pop("draft") or args.draft
        student.update({k: v for k, v in zip(STUDENT_KEYS, (args.author, args.student_id, args.drive)) if v})
        out = build_report(root, student, Path(args.out) if args.out else None, draft=draft)
        print(f"wrote {out}")
        if not args.no_readme:
            data = json.loads((root / "report" / "data.json").read_text(encoding="utf-8"))
            guide = root / GUIDE
            text = guide.read_text(encoding="utf-8") if guide.is_file() else ""
            print(f"wrote {build_readme(root, root / 'README.pdf', expected_markdown(data, text))}")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
