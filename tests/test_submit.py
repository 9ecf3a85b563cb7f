"""hw2.submit: the folder a student puts on the drive, built from the committed tree of a small fake repository
(what goes in, what is left out and said so, the notebooks stripped, the zip), its refusals (each one line naming
the field or file), and `--check` (unpack, environment, the TA's command) with the environment stubbed. The real
`--check` (a fresh virtual environment, pip installing torch: minutes) runs with HW2_SLOW=1.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hw2 import Hw2Error
from hw2 import submit

REPO = Path(__file__).resolve().parents[1]
STUDENT = 'name = "Lin Mei-Ling"\nid = "r12345678"\ndrive = "https://drive.example.com/hw2"\n'
TABLE = ('print("| row | vocals SDR | accompaniment SDR |")\nprint("|---|---:|---:|")\n'
         'print("| vocals / mixture | 0.85 | 8.49 |")\n')
NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": 3, "metadata": {}, "source": ["print(1)\n"],
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]},
                      {"cell_type": "markdown", "metadata": {}, "source": ["# hi"]}],
            "metadata": {"widgets": {"state": "x" * 1000}}, "nbformat": 4, "nbformat_minor": 5}
COMMITTED = {
    "README.pdf": "%PDF-1.4 the TA's guide", "README.md": "# hw2", "requirements.txt": "numpy\n",
    "requirements-dev.txt": "-r requirements.txt\n", "pyproject.toml": "[project]\n", ".gitignore": "/submission/\n",
    "hw2/__init__.py": "", "hw2/infer.py": TABLE, "notebooks/01.ipynb": json.dumps(NOTEBOOK, indent=1),
    "checkpoints/vocals.pt": "PK the model", "checkpoints/MODEL_CARD.md": "# card", "checkpoints/config.json": "{}",
    "checkpoints/epoch025.pt": "PK a milestone", "checkpoints/vocoder.pt": "PK the vocoder",
    "checkpoints/VOCODER_CARD.md": "# vocoder", "tests/test_a.py": "", "bench/b.py": "", "docs/ta-guide.md": "# TA",
    "report/report.typ": "= report", "report/student.toml": STUDENT, "results/valid.json": "{}",
    "results/phase.json": "{}",
    "data/song.wav": "RIFF by mistake", "hw2/cached.npy": "arrays by mistake",
}
INCLUDED = ["README.pdf", "checkpoints/MODEL_CARD.md", "checkpoints/config.json", "checkpoints/vocals.pt",
            "hw2/__init__.py", "hw2/infer.py", "notebooks/01.ipynb", "pyproject.toml", "requirements-dev.txt",
            "requirements.txt"]


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A committed fake repository laid out like this one, its report built, a run and caches beside it."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    root = tmp_path / "repo"
    for rel, text in COMMITTED.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "hw2")
    (root / "report" / "r12345678_report.pdf").write_text("%PDF the report")
    (root / "runs" / "vocals").mkdir(parents=True)
    (root / "runs" / "vocals" / "last.pt").write_text("PK a run")
    return root


def test_the_folder_holds_what_runs_inference_and_says_what_it_left_out(repo, tmp_path):
    logs = []
    built = submit.build(repo, tmp_path / "out", log=logs.append)
    folder = tmp_path / "out" / "r12345678"
    assert built["folder"] == folder and built["zip"] == tmp_path / "out" / "r12345678.zip"
    assert built["files"] == INCLUDED
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == INCLUDED
    with zipfile.ZipFile(built["zip"]) as z:
        assert sorted(z.namelist()) == [f"r12345678/{p}" for p in INCLUDED]
        assert z.read("r12345678/checkpoints/vocals.pt") == b"PK the model"
    nb = json.loads((folder / "notebooks" / "01.ipynb").read_text())
    assert nb["cells"][0]["outputs"] == [] and nb["cells"][0]["execution_count"] is None
    assert nb["cells"][0]["source"] == ["print(1)\n"] and "widgets" not in nb["metadata"]
    left = built["left_out"]
    assert left["milestones"] == ["checkpoints/epoch025.pt"]
    assert left["vocoder"] == ["checkpoints/VOCODER_CARD.md", "checkpoints/vocoder.pt"]
    assert left["data"] == ["data/song.wav", "hw2/cached.npy"]
    assert {"tests", "bench", "docs", "report", "results", "repository"} <= set(left)
    text = "\n".join(logs)
    assert "(10 files, " in logs[0] and "https://drive.example.com/hw2" in logs[0]
    for words in ("checkpoints/epoch025.pt", "milestone", "checkpoints/vocoder.pt", "data/song.wav", "tests/",
                  "the notebooks' 1 outputs", "runs/", "no listening page at results/phase/samples/index.html",
                  "report/r12345678_report.pdf, goes to the course site as r12345678_report.pdf: not in this folder"):
        assert words in text, words
    assert "note:" not in text


def test_the_listening_page_comes_from_the_working_tree_and_edits_go_in_as_committed(repo, tmp_path):
    page = repo / "results" / "phase" / "samples"
    (page / "track").mkdir(parents=True)
    (page / "index.html").write_text("<html>")
    (page / "track" / "mixture.wav").write_bytes(b"RIFF")
    (repo / "hw2" / "infer.py").write_text("print('edited, not committed')\n")
    (repo / "hw2" / "new.py").write_text("")
    logs = []
    built = submit.build(repo, tmp_path / "out", log=logs.append)
    assert "results/phase/samples/index.html" in built["files"]
    assert "results/phase/samples/track/mixture.wav" in built["files"]
    assert "hw2/new.py" not in built["files"]
    assert (built["folder"] / "hw2" / "infer.py").read_text() == TABLE  # the committed version
    note = next(line for line in logs if line.startswith("note:"))
    assert "hw2/infer.py" in note and "hw2/new.py" in note and "commit them" in note
    assert any("with the listening page results/phase/samples/index.html (2 files" in line for line in logs)
    again = submit.build(repo, tmp_path / "out", log=lambda _: None)  # a second build replaces the first
    assert again["files"] == built["files"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r12345678", "r12345678.zip"]


def test_the_listening_page_is_the_one_the_report_names(repo, tmp_path, monkeypatch):
    """The folder comes from the report's own rule (`hw2.report.listening_folder`), not a copy of its path: with
    the phase table moved, the page beside it goes in; with no phase table, the report names no page, and none
    goes in whatever lies in results/."""
    from hw2 import report

    for name in ("phase", "other"):
        (repo / "results" / name / "samples").mkdir(parents=True)
        (repo / "results" / name / "samples" / "index.html").write_text(f"<html>{name}")
    monkeypatch.setitem(report.OPTIONAL, "vocoder", "results/other.json")
    (repo / "results" / "other.json").write_text("{}")
    built = submit.build(repo, tmp_path / "out", log=lambda _: None)
    pages = [f for f in built["files"] if f.endswith("index.html")]
    assert pages == ["results/other/samples/index.html"]
    (repo / "results" / "other.json").unlink()
    logs = []
    built = submit.build(repo, tmp_path / "out", log=logs.append)
    assert not any(f.startswith("results/") for f in built["files"])
    assert any("no listening page: the report's Listening slide names none" in line for line in logs)


def test_edited_files_with_spaces_quotes_and_renames_are_named_as_they_are(repo, tmp_path):
    """git status is read NUL-separated: without -z, git quotes a path with a space or a quote ("hw2/my
    module.py"), which then matched no folder and was left out of the note."""
    (repo / "hw2" / "my module.py").write_text("")
    (repo / "hw2" / 'say "hi".py').write_text("")
    git(repo, "mv", "hw2/infer.py", "hw2/run me.py")
    assert sorted(submit.changed_files(repo, "hw2")) == ["hw2/my module.py", "hw2/run me.py", 'hw2/say "hi".py']
    logs = []
    submit.build(repo, tmp_path / "out", log=logs.append)
    note = next(line for line in logs if line.startswith("note:"))
    assert note.startswith("note: 3 files differ") and "hw2/my module.py" in note and 'hw2/say "hi".py' in note


@pytest.mark.parametrize("case,words", [
    ("no-name", "`name` is not set"), ("no-id", "`id` is not set"), ("no-drive", "`drive` is not set"),
    ("drive-not-a-link", "`drive` is not a link"), ("no-report", "report/r12345678_report.pdf not found"),
    ("not-git", "git"), ("no-checkpoint", "checkpoints/vocals.pt is not committed")])
def test_refusals_are_one_line_and_write_nothing(case, words, repo, tmp_path, capsys):
    toml = repo / "report" / "student.toml"
    field = {"no-name": "name", "no-id": "id", "no-drive": "drive"}.get(case)
    if field:
        toml.write_text("".join(f'{field} = ""\n' if line.startswith(field + " ") else line
                                for line in STUDENT.splitlines(keepends=True)))
    elif case == "drive-not-a-link":
        toml.write_text(STUDENT.replace("https://drive.example.com/hw2", "my drive"))
    elif case == "no-report":
        (repo / "report" / "r12345678_report.pdf").unlink()
    elif case == "not-git":
        shutil.rmtree(repo / ".git")
    elif case == "no-checkpoint":
        git(repo, "rm", "-q", "checkpoints/vocals.pt")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "no model")
    assert submit.main(["--root", str(repo), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and words in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_check_runs_the_ta_command_in_the_unpacked_folder(repo, tmp_path, monkeypatch):
    """The environment step stubbed with this interpreter: unpacking, the command from the unpacked folder, the
    table; a command that fails or prints no table is one line, and its scratch folder is kept to look at."""
    seen = []

    def environment(venv, requirements, scratch, log=print):
        seen.append(requirements)
        return Path(sys.executable)

    monkeypatch.setattr(submit, "make_environment", environment)
    built = submit.build(repo, tmp_path / "out", log=lambda _: None)
    logs = []
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    table = submit.check(built["zip"], built["id"], log=logs.append, scratch_in=scratch)
    assert "| vocals / mixture | 0.85 | 8.49 |" in table and "--check passed" in logs[-1]
    assert seen[0].name == "requirements.txt" and seen[0].parent.name == "r12345678"
    assert list(scratch.iterdir()) == []  # a passed check leaves no scratch folder

    for body, words in (("import sys\nsys.exit('boom: no model')\n", "boom: no model"),
                        ("print('no table')\n", "printed no SDR table")):
        (repo / "hw2" / "infer.py").write_text(body)
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "broken")
        built = submit.build(repo, tmp_path / "out", log=lambda _: None)
        with pytest.raises(Hw2Error, match=words) as e:
            submit.check(built["zip"], built["id"], log=lambda _: None, scratch_in=scratch)
        kept = list(scratch.iterdir())
        assert len(kept) == 1 and str(kept[0]) in str(e.value) and "\n" not in str(e.value)
        shutil.rmtree(kept[0])


def test_the_environment_installs_the_running_torch_then_the_requirements(tmp_path, monkeypatch):
    import torch

    steps = []
    monkeypatch.setattr(submit, "_step", lambda cmd, what, scratch, log, **kw: steps.append([str(c) for c in cmd]))
    python = submit.make_environment(tmp_path / "venv", tmp_path / "requirements.txt", tmp_path, log=lambda _: None)
    assert python.parent.parent == tmp_path / "venv"
    assert steps[0][1:3] == ["-m", "venv"] and steps[0][0] == sys.executable  # no --system-site-packages
    assert "--system-site-packages" not in steps[0]
    assert steps[1][0] == str(python) and f"torch=={torch.__version__}" in steps[1]
    assert steps[2][-2:] == ["-r", str(tmp_path / "requirements.txt")]


def test_this_repositorys_committed_files_are_sorted_as_the_assignment_asks():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    files = submit.committed(REPO)
    inside = {p for p in files if submit.classify(p, "checkpoints/vocals.pt") is None}
    assert {"README.pdf", "requirements.txt", "hw2/infer.py", "checkpoints/vocals.pt"} <= inside
    assert not any(p.endswith(".pt") and p != "checkpoints/vocals.pt" for p in inside)
    assert not any(p.startswith(("tests/", "report/", "docs/", "results/")) for p in inside)
    assert sum(files[p] for p in inside) < 50e6  # one checkpoint and the code: tens of MB, not the milestones


@pytest.mark.slow
def test_the_real_check_in_a_fresh_virtual_environment(tmp_path):
    """`python -m hw2.submit --check` on a clone of this repository: a fresh venv, pip installs torch and
    requirements.txt, and the TA's command runs from the unpacked zip on the example track (minutes)."""
    if os.environ.get("HW2_SLOW") != "1":
        pytest.skip("set HW2_SLOW=1: builds a virtual environment and installs torch (minutes)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    (clone / "report" / "student.toml").write_text(STUDENT)
    (clone / "report" / "r12345678_report.pdf").write_text("%PDF the report")
    r = subprocess.run([sys.executable, "-m", "hw2.submit", "--check"], cwd=clone, capture_output=True, text=True,
                       timeout=3600, env={**os.environ, "PYTHONPATH": str(clone)})
    assert r.returncode == 0, r.stderr
    assert "--check passed" in r.stdout and "/ mixture |" in r.stdout
