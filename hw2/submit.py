"""The folder a student puts on the cloud drive, built from the committed tree, and a check that a classmate can run
it as the TA will.

    python -m hw2.submit            # submission/<id>/ and submission/<id>.zip (git-ignored)
    python -m hw2.submit --check    # then, in a scratch folder: unpack the zip, a fresh virtual environment,
                                    # pip install requirements.txt, and the TA's `python hw2/infer.py`

The assignment's drive holds the README (txt or pdf), requirements.txt, the code and ONE model checkpoint that runs
the whole inference, never training or test data, preprocessed data, caches or others' models; the report goes to
the course site as `<id>_report.pdf`, not in the folder. So the folder holds, as committed (`git archive HEAD`):
README.pdf, requirements.txt, requirements-dev.txt and pyproject.toml (the notebooks' install), hw2/ (the code),
notebooks/ with their outputs stripped, the checkpoint `hw2/infer.py` loads by default with the small records
beside it (model card, configs, history), and, from the working tree since it is never committed, the listening page
the report's Listening slide points to (`hw2.report.listening_folder`: results/phase/samples/) when it exists.
Everything else is left out and listed: milestone checkpoints, the vocoder, tests, benchmarks, docs, the report's
sources, result tables, audio or data files; runs, caches and data are never committed, so never included.

Before building, the student's fields in report/student.toml (name, id, drive) must be set and the report built
(`python -m hw2.report` writes report/<id>_report.pdf); otherwise one line names what is missing.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import hw2
from hw2 import Hw2Error, OneLineParser, atomic_write, run_cli

ROOT = Path(hw2.__file__).resolve().parents[1]
TOP_FILES = ("README.pdf", "requirements.txt", "requirements-dev.txt", "pyproject.toml")
# audio, arrays and archives: data (or preprocessed data), which the assignment keeps off the drive
DATA_SUFFIXES = {".wav", ".mp3", ".mp4", ".m4a", ".flac", ".ogg", ".aac", ".npy", ".npz", ".h5", ".hdf5", ".zip",
                 ".tar", ".gz"}
REASONS = {
    "milestones": "milestone checkpoints: the drive takes one model checkpoint, {checkpoint} (README.pdf's epoch "
                  "table needs them: it runs from the repository)",
    "checkpoints": "other checkpoints: the drive takes one, {checkpoint}",
    "vocoder": "the vocoder of --phase vocoder, not the model the TA's command loads",
    "data": "audio and data files: the drive never takes data",
    "tests": "the tests (the TA runs inference; the repository keeps them)",
    "bench": "the benchmarks",
    "docs": "the docs (README.pdf is the TA's guide)",
    "report": "the report's sources and figures (the report PDF goes to the course site)",
    "results": "the result tables (the report shows them; the TA's command writes its own)",
    "repository": "repository files (git, CI, pytest; README.pdf is the README)",
}
TA_COMMAND = "python hw2/infer.py"
PYTORCH_INDEX = "https://download.pytorch.org/whl/"


# ------------------------------------------------------------------------------------------------ what goes in
def classify(path: str, checkpoint: str) -> str | None:
    """None when the committed file `path` goes into the folder, else the key of its reason in `REASONS`."""
    p = PurePosixPath(path)
    top = p.parts[0] if len(p.parts) > 1 else ""
    if p.suffix.lower() in DATA_SUFFIXES:
        return "data"
    if path in TOP_FILES or (top == "hw2" and p.suffix == ".py") or (top == "notebooks" and p.suffix == ".ipynb"):
        return None
    if top == "checkpoints":
        if path == checkpoint:
            return None
        if "vocoder" in p.name.lower():
            return "vocoder"
        if p.suffix in (".json", ".md"):  # the shipped model's card, config, history, blend weights
            return None
        return "milestones" if re.fullmatch(r"epoch\d+\.pt", p.name) else "checkpoints"
    return top if top in REASONS else "repository"


def strip_outputs(text: str) -> tuple[str, int]:
    """A notebook without its outputs, execution counts and widget state (the drive takes code, not results), in
    the layout the repository keeps (`json.dumps(indent=1)`); and how many outputs it had."""
    nb = json.loads(text)
    count = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            count += len(cell.get("outputs", []))
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n", count


def read_student(root: Path) -> dict:
    """report/student.toml's fields, each required: one line names the first one missing."""
    from hw2.report import file_id, missing_fields, read_student as read

    path = root / "report" / "student.toml"
    student = read(path)
    fixes = {"name": 'your name, e.g. name = "Lin Mei-Ling"', "id": 'your student ID, e.g. id = "r12345678"',
             "drive": 'the open-access cloud-drive link this folder goes to, drive = "https://..."'}
    # the report's own rule for a missing field, plus an id that gives no file name
    missing = missing_fields(student) or ([] if file_id(student) else ["id"])
    if missing:
        raise Hw2Error(f"{path}: `{missing[0]}` is not set; set it to {fixes[missing[0]]}, then run this again")
    if not re.match(r"https?://", student["drive"]):
        raise Hw2Error(f"{path}: `drive` is not a link ({student['drive']!r}); write the cloud-drive link, "
                       'drive = "https://..."')
    return student


def _run(cmd: list, what: str, fix: str, log=None, binary: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run `cmd` with its output captured (shown first by `log`, if given); one line if it cannot start, runs
    over its `timeout` or fails: `what` went wrong (with the last line it printed), then `fix`."""
    if log is not None:
        log("  $ " + " ".join(str(c) for c in cmd))
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=not binary, **kw)
    except FileNotFoundError:
        raise Hw2Error(f"{what}: {cmd[0]} is not installed; install it, then run this again") from None
    except subprocess.TimeoutExpired:
        raise Hw2Error(f"{what} took over {kw.get('timeout', 0) / 60:.0f} min; {fix}") from None
    if r.returncode != 0:
        out = [o.decode(errors="replace") if binary else (o or "") for o in (r.stderr, r.stdout)]
        last = (out[0].strip().splitlines() or out[1].strip().splitlines() or ["no output"])[-1].strip()
        raise Hw2Error(f"{what} failed (exit {r.returncode}): {last}; {fix}")
    return r


def _git(root: Path, *args: str, binary: bool = False):
    return _run(["git", "-C", root, *args], f"{root}: git {args[0]}", "run this from a git checkout of the "
                "repository with at least one commit", binary=binary).stdout


def changed_files(root: Path, *paths: str) -> list[str]:
    """The files under `paths` that differ from HEAD or are not committed (git status, untracked files
    included), each once, by its path now (a rename's new one). Read NUL-separated (-z): paths with spaces or
    quotes come as they are, not quoted."""
    entries = iter(_git(root, "status", "--porcelain", "-z", "--untracked-files=all", "--", *paths).split("\0"))
    out = []
    for entry in entries:
        if entry:
            out.append(entry[3:])
            if "R" in entry[:2] or "C" in entry[:2]:
                next(entries, None)  # a rename's or copy's source path follows: the file is its new path
    return out


def committed(root: Path) -> dict[str, int]:
    """{path: size in bytes} of every file in HEAD."""
    out = {}
    for entry in _git(root, "ls-tree", "-r", "-z", "--long", "HEAD").split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            size = meta.split()[3]
            out[path] = int(size) if size.isdigit() else 0
    return out


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:,.0f} kB"


def _names(paths: list[str], shown: int = 4) -> str:
    """A group of paths: a folder as `tests/ (17 files)`, else up to `shown` names."""
    tops = {PurePosixPath(p).parts[0] for p in paths}
    if len(tops) == 1 and len(paths) > shown and all(len(PurePosixPath(p).parts) > 1 for p in paths):
        return f"{tops.pop()}/ ({len(paths)} files)"
    return ", ".join(paths[:shown]) + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def build(root: Path = ROOT, out: Path | None = None, log=print) -> dict:
    """Check the student's fields and report, then write `<out>/<id>/` and `<out>/<id>.zip` (`out`: the
    repository's submission/). Returns {"folder", "zip", "files": [paths in the folder], "left_out": {reason:
    [paths]}}."""
    from hw2.checkpoint import check_writable
    from hw2.infer import DEFAULT_CHECKPOINT, REPO
    from hw2.report import file_id, listening_folder, report_name

    root = Path(root).resolve()
    student = read_student(root)
    sid = file_id(student)
    report = root / "report" / report_name(student)
    if not report.is_file():
        raise Hw2Error(f"{report.relative_to(root)} not found: build it with `python -m hw2.report` (the report goes "
                       f"to the course site as {report.name}, not in the folder), then run this again")
    files = committed(root)
    checkpoint = DEFAULT_CHECKPOINT.relative_to(REPO).as_posix()
    for need, fix in ((checkpoint, "the model the TA's command loads by default"),
                      ("README.pdf", "build it with `python -m hw2.report`"), ("requirements.txt", "the TA's install")):
        if need not in files:
            raise Hw2Error(f"{need} is not committed ({fix}): commit it, then run this again")
    included, left_out = [], {}
    for path in sorted(files):
        reason = classify(path, checkpoint)
        if reason is None:
            included.append(path)
        else:
            left_out.setdefault(reason, []).append(path)

    out = Path(out).absolute() if out else root / "submission"
    folder, archive = out / sid, out / f"{sid}.zip"
    check_writable(out, "the submission folder")
    out.mkdir(parents=True, exist_ok=True)
    # the page the report's Listening slide names, as the report finds it: by the results files there are
    page = listening_folder({p.stem for p in (root / "results").glob("*.json")})
    has_page = page is not None and (root / page / "index.html").is_file()
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{sid}."))  # replaces the folder in one rename once whole
    try:
        nb_outputs = 0
        tar = _git(root, "archive", "--format=tar", "HEAD", "--", *included, binary=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            for member in t:
                if not member.isfile():
                    continue
                data = t.extractfile(member).read()
                if member.name.endswith(".ipynb"):
                    text, n = strip_outputs(data.decode("utf-8"))
                    data, nb_outputs = text.encode("utf-8"), nb_outputs + n
                dest = tmp / member.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        if has_page:
            shutil.copytree(root / page, tmp / page, ignore=shutil.ignore_patterns(".*"))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    contents = sorted(p for p in folder.rglob("*") if p.is_file())
    with atomic_write(archive) as tmp_zip:
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for p in contents:
                z.write(p, f"{sid}/{p.relative_to(folder).as_posix()}")

    size = sum(p.stat().st_size for p in contents)
    log(f"wrote {folder}/ ({len(contents)} files, {_size(size)}) and {archive} ({_size(archive.stat().st_size)}): "
        f"put the zip (or the folder) on {student['drive']}")
    if has_page:
        pages = [p for p in contents if p.relative_to(folder).as_posix().startswith(page + "/")]
        log(f"  with the listening page {page}/index.html ({len(pages)} files, "
            f"{_size(sum(p.stat().st_size for p in pages))}), from the working tree")
    elif page:
        log(f"  no listening page at {page}/index.html, where the report's Listening slide points: make it "
            f"with the command in {PurePosixPath(page).parent}.md (it writes the WAVs there), then run this again")
    else:
        log("  no listening page: the report's Listening slide names none until the phase table is in results/ "
            "(the page lies beside its WAVs)")
    log(f"left out ({sum(map(len, left_out.values()))} committed files, "
        f"{_size(sum(files[p] for ps in left_out.values() for p in ps))}):")
    for reason, paths in left_out.items():
        log(f"  {_names(paths)}, {_size(sum(files[p] for p in paths))}: "
            f"{REASONS[reason].format(checkpoint=checkpoint)}")
    if nb_outputs:
        log(f"  the notebooks' {nb_outputs} outputs (the code goes in, not its results)")
    log("  and what is never committed: data, caches, runs/, the scores and WAVs under results/")
    log(f"the report, {report.relative_to(root)}, goes to the course site as {report.name}: not in this folder")
    # edited or new files of the kinds that go in: the student may believe the folder holds them
    changed = [p for p in changed_files(root, *TOP_FILES, "hw2", "notebooks", "checkpoints")
               if classify(p, checkpoint) is None]
    if changed:
        log(f"note: {len(changed)} files differ from the commit and went in as committed (or not at all, if never "
            f"committed): {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}; commit them and run this again")
    return {"folder": folder, "zip": archive, "files": [p.relative_to(folder).as_posix() for p in contents],
            "left_out": left_out, "id": sid}


# ---------------------------------------------------------------------------------------- as the TA will run it
def torch_requirement() -> tuple[str, list[str]]:
    """The running torch as a pip requirement, with the PyTorch index its build comes from (+cpu, +cu121: not on
    PyPI): the fresh environment gets the same torch, as a TA installs the CPU wheel first (README.pdf)."""
    import torch

    version = torch.__version__.split("+")
    local = version[1] if len(version) > 1 else ""
    extra = ["--extra-index-url", PYTORCH_INDEX + local] if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", local) else []
    return f"torch=={torch.__version__}", extra


def _step(cmd: list, what: str, scratch: Path, log, **kw) -> subprocess.CompletedProcess:
    """A step of --check, shown as it runs; a failure keeps the scratch folder and names it."""
    return _run(cmd, f"--check: {what}", f"the unpacked copy is in {scratch}", log, **kw)


def make_environment(venv: Path, requirements: Path, scratch: Path, log=print) -> Path:
    """A fresh virtual environment (none of this machine's packages) with the running torch, then
    `requirements.txt`, as the TA installs them; returns its python."""
    _step([sys.executable, "-m", "venv", venv], "python -m venv (on Debian or Ubuntu: apt-get install python3-venv)",
          scratch, log, timeout=600)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    torch_spec, extra = torch_requirement()
    _step([python, "-m", "pip", "install", "--quiet", *extra, torch_spec], f"pip install {torch_spec}", scratch, log,
          timeout=1800)
    _step([python, "-m", "pip", "install", "--quiet", "-r", requirements], "pip install -r requirements.txt", scratch,
          log, timeout=1800)
    return python


def check(archive: Path, sid: str, log=print, scratch_in: Path | None = None) -> str:
    """Unpack `archive` into a scratch folder (in `scratch_in`, default the temporary folder), install it in a
    fresh virtual environment (`make_environment`) and run the TA's command there on the example track: it must
    exit 0 and print the SDR table. Returns the table; the scratch folder is removed when the check passes and
    kept (its path in the error) when it fails."""
    scratch = Path(tempfile.mkdtemp(prefix="hw2-submit-check-", dir=scratch_in))
    log(f"--check: unpacking {archive.name} into {scratch}, as a classmate would")
    with zipfile.ZipFile(archive) as z:
        z.extractall(scratch)
    folder = scratch / sid
    python = make_environment(scratch / "venv", folder / "requirements.txt", scratch, log)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
    r = _step([python, *TA_COMMAND.split()[1:]], f"`{TA_COMMAND}` in the unpacked folder", scratch, log, cwd=folder,
              env=env, timeout=1800)
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    if not any(re.search(r"/ mixture \|", line) for line in table):
        raise Hw2Error(f"--check: `{TA_COMMAND}` exited 0 but printed no SDR table; its output is in {scratch} "
                       "(run it there to see)")
    shutil.rmtree(scratch, ignore_errors=True)
    log("\n".join(table))
    log(f"--check passed: in a fresh virtual environment with requirements.txt alone, `{TA_COMMAND}` ran from the "
        "unpacked zip and printed the SDR table above")
    return "\n".join(table)


# ------------------------------------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m hw2.submit", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--check", action="store_true",
                   help="then unpack the zip into a scratch folder, install requirements.txt in a fresh virtual "
                        "environment and run the TA's command there (minutes: pip installs torch)")
    p.add_argument("--out", metavar="DIR", help="where <id>/ and <id>.zip go (default: submission/ of the repository)")
    p.add_argument("--root", metavar="DIR", default=str(ROOT), help="the repository (default: this one)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def work():
        built = build(Path(args.root), Path(args.out) if args.out else None)
        if args.check:
            check(built["zip"], built["id"])

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
