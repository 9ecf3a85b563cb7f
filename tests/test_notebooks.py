"""The notebooks' Colab set-up cell (the first code cell of each, hw2.notebook.SETUP_CELL), run here with a
stand-in `google.colab`: it mounts Google Drive, uses the student's copy of the repository on Drive, or clones
REPO_URL when that is set (and updates that clone on a later run), and otherwise stops "Run all" with one clear
error; outside Colab it does nothing. (The notebooks themselves run under nbval.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def setup_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


from hw2.notebook import SETUP_CELL as CELL  # noqa: E402


def test_every_notebook_starts_with_the_setup_cell_and_no_placeholder_url():
    assert len(NOTEBOOKS) >= 5
    for path in NOTEBOOKS:
        assert setup_cell(path) == CELL, f"{path.name}: run `python -m hw2.notebook` to write the set-up cell"
        text = path.read_text()
        assert "hw2-music-separation" not in text, path.name  # the old placeholder URL
        assert all(not c.get("outputs") for c in json.loads(text)["cells"]), f"{path.name}: stored with outputs"
    assert 'REPO_DIR = "/content/drive/MyDrive/hw2"' in CELL and 'REPO_URL = ""' in CELL


class Colab:
    """Stands in for Colab: a `google.colab.drive` that records mounts, subprocess calls recorded (a clone writes
    a repository), os.chdir recorded. `run(cell)` executes the cell as the notebook would."""

    def __init__(self, monkeypatch, tmp_path, git_fails=False, pull_fails=False, my_drive=None, clone_from=None):
        """my_drive: a folder that the mount shows as MyDrive under $HW2_DRIVE_MOUNT (set here), as Colab's
        drive.mount("/content/drive") shows the student's Drive. clone_from: a repository whose hw2/ a clone
        copies (else a clone holds an empty hw2 package)."""
        self.mounts, self.calls, self.cwd = [], [], []
        self.mount_point = tmp_path / "drive"
        monkeypatch.setenv("HW2_DRIVE_MOUNT", str(self.mount_point))

        def mount(path):
            self.mounts.append(path)
            if my_drive is not None and not (self.mount_point / "MyDrive").exists():
                self.mount_point.mkdir(parents=True, exist_ok=True)
                (self.mount_point / "MyDrive").symlink_to(my_drive)

        drive = types.SimpleNamespace(mount=mount)
        colab = types.ModuleType("google.colab")
        colab.drive = drive
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
        monkeypatch.setattr(os, "chdir", self.cwd.append)
        monkeypatch.setattr(sys, "path", list(sys.path))
        self.clone_dir = tmp_path / "content" / "hw2"
        self.git_fails, self.pull_fails, self.clone_from = git_fails, pull_fails, clone_from
        monkeypatch.setattr(subprocess, "run", self._run)

    def _run(self, cmd, **kw):
        self.calls.append(list(cmd))
        if cmd[:2] == ["git", "-C"]:  # git pull in an existing clone
            if self.pull_fails:
                return subprocess.CompletedProcess(cmd, 128, "", "fatal: Not possible to fast-forward, aborting.")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if cmd[0] == "git":
            if self.git_fails:
                return subprocess.CompletedProcess(cmd, 128, "", "fatal: repository 'x' not found")
            if self.clone_from:
                shutil.copytree(Path(self.clone_from) / "hw2", Path(cmd[-1]) / "hw2",
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (Path(cmd[-1]) / "hw2").mkdir(parents=True)
                (Path(cmd[-1]) / "hw2" / "__init__.py").write_text("")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def cell(self, repo_dir, repo_url="") -> str:
        """The set-up cell as the student edits it (REPO_DIR, REPO_URL), cloning into this test's folder."""
        return (CELL.replace('REPO_DIR = "/content/drive/MyDrive/hw2"', f"REPO_DIR = {str(repo_dir)!r}")
                .replace('REPO_URL = ""', f"REPO_URL = {repo_url!r}")
                .replace('"/content/hw2"', repr(str(self.clone_dir))))

    def run(self, repo_dir, repo_url=""):
        namespace = {}
        exec(compile(self.cell(repo_dir, repo_url), "setup-cell", "exec"), namespace)
        return namespace


def repo(folder: Path) -> Path:
    (folder / "hw2").mkdir(parents=True)
    (folder / "hw2" / "__init__.py").write_text("")
    return folder


def test_outside_colab_the_cell_does_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    cwd = os.getcwd()
    exec(compile(CELL, "setup-cell", "exec"), {})
    assert calls == [] and os.getcwd() == cwd


def test_copy_on_google_drive(monkeypatch, tmp_path):
    colab = Colab(monkeypatch, tmp_path)
    drive_copy = repo(tmp_path / "drive" / "MyDrive" / "hw2")
    colab.run(drive_copy)
    assert colab.mounts == ["/content/drive"] and colab.cwd == [str(drive_copy)]
    assert sys.path[0] == str(drive_copy)
    assert colab.calls == [[sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt", "matplotlib",
                            "ipywidgets"]]


def test_missing_drive_copy_stops_with_one_clear_error(monkeypatch, tmp_path):
    colab = Colab(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        colab.run(tmp_path / "drive" / "MyDrive" / "hw2")
    message = str(e.value)
    assert "\n" not in message and "no hw2 repository in" in message and "REPO_URL" in message
    assert colab.calls == [] and colab.cwd == []


def test_git_url(monkeypatch, tmp_path, capsys):
    """Code from REPO_URL: Drive is mounted all the same (the data and run folders may be there); a later run
    updates the clone with git pull, or says it keeps the clone as it is when the pull fails."""
    colab = Colab(monkeypatch, tmp_path)
    ns = colab.run(tmp_path / "nowhere", "https://example.org/me/hw2.git")
    assert colab.mounts == ["/content/drive"] and ns["REPO_DIR"] == str(colab.clone_dir)
    assert colab.calls[0] == ["git", "clone", "-q", "https://example.org/me/hw2.git", str(colab.clone_dir)]
    assert colab.cwd == [str(colab.clone_dir)] and colab.calls[1][6] == "requirements.txt"
    colab.calls.clear()
    colab.run(tmp_path / "nowhere", "https://example.org/me/hw2.git")  # run again: the clone is updated
    assert colab.calls[0] == ["git", "-C", str(colab.clone_dir), "pull", "-q", "--ff-only"]
    assert [c[0] for c in colab.calls[1:]] == [sys.executable]
    assert capsys.readouterr().out == f"{colab.clone_dir}: updated from its git repository\n"
    colab.pull_fails = True
    colab.run(tmp_path / "nowhere", "https://example.org/me/hw2.git")
    assert capsys.readouterr().out == (f"{colab.clone_dir}: kept as it is (git pull failed: fatal: Not possible to "
                                       "fast-forward, aborting.); delete it to clone REPO_URL afresh\n")


def test_code_from_a_url_and_musdb_on_drive(monkeypatch, tmp_path, wav_root):
    """The course's set-up: code cloned from REPO_URL, MUSDB18 in a folder on Drive. Before the cell has mounted
    Drive, opening MUSDB_ROOT says that Drive is not mounted (not "no such folder"); after it, the tracks open."""
    from hw2 import Hw2Error
    from hw2.tracks import open_tracks

    my_drive = tmp_path / "students-drive"
    my_drive.mkdir()
    (my_drive / "musdb18").symlink_to(wav_root)
    colab = Colab(monkeypatch, tmp_path, my_drive=my_drive)
    musdb_root = colab.mount_point / "MyDrive" / "musdb18"
    with pytest.raises(Hw2Error, match=f"{musdb_root}: Google Drive is not mounted at {colab.mount_point}, .*run "
                                       "the notebook's first cell"):
        open_tracks(musdb_root, "train")
    colab.run(tmp_path / "nowhere", "https://example.org/me/hw2.git")
    assert colab.mounts == ["/content/drive"]
    assert len(open_tracks(musdb_root, "train", "valid")) == 2


def test_failed_clone_stops_with_gits_message(monkeypatch, tmp_path):
    colab = Colab(monkeypatch, tmp_path, git_fails=True)
    with pytest.raises(RuntimeError, match="git clone -q https://example.org/x.*repository 'x' not found"):
        colab.run(tmp_path / "nowhere", "https://example.org/x")
    assert colab.cwd == []


def test_notebook_03_runs_in_colab_with_code_from_a_url_and_musdb_on_drive(monkeypatch, tmp_path, wav_root):
    """The course's set-up end to end: the stand-in Colab runs notebook 03 top to bottom (smoke mode: the tiny
    preset, two short epochs), its set-up cell cloning the code from REPO_URL and MUSDB_ROOT a folder on Drive.
    (hw2 is already imported in this process, so the cells run this checkout's code; the clone's own use is
    test_git_url's.)"""
    my_drive = tmp_path / "students-drive"
    my_drive.mkdir()
    (my_drive / "musdb18").symlink_to(wav_root)
    colab = Colab(monkeypatch, tmp_path, my_drive=my_drive, clone_from=Path(__file__).resolve().parents[1])
    monkeypatch.setenv("MUSDB_ROOT", str(colab.mount_point / "MyDrive" / "musdb18"))
    monkeypatch.setenv("HW2_SMOKE", "1")
    notebook = next(p for p in NOTEBOOKS if p.name.startswith("03_"))
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    namespace = {}
    for i, c in enumerate(cells):
        source = colab.cell(tmp_path / "nowhere", "https://example.org/me/hw2.git") if i == 0 else "".join(c["source"])
        source = "\n".join(line for line in source.splitlines() if not line.startswith("%"))  # IPython magics
        exec(compile(source, f"{notebook.name} cell {i}", "exec"), namespace)
    assert colab.mounts and colab.mounts[0] == "/content/drive"
    assert colab.calls[0][:2] == ["git", "clone"] and (colab.clone_dir / "hw2" / "train.py").is_file()
    assert namespace["summary"]["stopped"] == "done" and namespace["summary"]["epochs_done"] == 2
    assert "musdb18" in namespace["NOTE"] or str(wav_root) in namespace["NOTE"]
