"""The notebooks' Colab set-up cell (the first code cell of each), run here with a stand-in `google.colab`: it uses
the student's copy of the repository on Google Drive, or clones REPO_URL when that is set, and otherwise stops
"Run all" with one clear error; outside Colab it does nothing. (The notebooks themselves run under nbval.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def setup_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


CELL = setup_cell(NOTEBOOKS[0])


def test_every_notebook_starts_with_the_same_setup_cell_and_no_placeholder_url():
    assert len(NOTEBOOKS) >= 5
    for path in NOTEBOOKS:
        assert setup_cell(path) == CELL, path.name
        text = path.read_text()
        assert "hw2-music-separation" not in text, path.name  # the old placeholder URL
        assert all(not c.get("outputs") for c in json.loads(text)["cells"]), f"{path.name}: stored with outputs"
    assert 'REPO_DIR = "/content/drive/MyDrive/hw2"' in CELL and 'REPO_URL = ""' in CELL


class Colab:
    """Stands in for Colab: a `google.colab.drive` that records mounts, subprocess calls recorded (a clone writes
    a repository), os.chdir recorded. `run(cell)` executes the cell as the notebook would."""

    def __init__(self, monkeypatch, tmp_path, git_fails=False):
        self.mounts, self.calls, self.cwd = [], [], []
        drive = types.SimpleNamespace(mount=self.mounts.append)
        colab = types.ModuleType("google.colab")
        colab.drive = drive
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
        monkeypatch.setattr(os, "chdir", self.cwd.append)
        monkeypatch.setattr(sys, "path", list(sys.path))
        self.clone_dir = tmp_path / "content" / "hw2"
        self.git_fails = git_fails
        monkeypatch.setattr(subprocess, "run", self._run)

    def _run(self, cmd, **kw):
        self.calls.append(list(cmd))
        if cmd[0] == "git":
            if self.git_fails:
                return subprocess.CompletedProcess(cmd, 128, "", "fatal: repository 'x' not found")
            (Path(cmd[-1]) / "hw2").mkdir(parents=True)
            (Path(cmd[-1]) / "hw2" / "__init__.py").write_text("")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def run(self, repo_dir, repo_url=""):
        cell = (CELL.replace('REPO_DIR = "/content/drive/MyDrive/hw2"', f"REPO_DIR = {str(repo_dir)!r}")
                .replace('REPO_URL = ""', f"REPO_URL = {repo_url!r}")
                .replace('"/content/hw2"', repr(str(self.clone_dir))))
        namespace = {}
        exec(compile(cell, "setup-cell", "exec"), namespace)
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


def test_git_url(monkeypatch, tmp_path):
    colab = Colab(monkeypatch, tmp_path)
    ns = colab.run(tmp_path / "nowhere", "https://example.org/me/hw2.git")
    assert colab.mounts == [] and ns["REPO_DIR"] == str(colab.clone_dir)
    assert colab.calls[0] == ["git", "clone", "-q", "https://example.org/me/hw2.git", str(colab.clone_dir)]
    assert colab.cwd == [str(colab.clone_dir)] and colab.calls[1][6] == "requirements.txt"
    colab.calls.clear()
    colab.run(tmp_path / "nowhere", "https://example.org/me/hw2.git")  # run again: the clone is reused
    assert [c[0] for c in colab.calls] == [sys.executable]


def test_failed_clone_stops_with_gits_message(monkeypatch, tmp_path):
    colab = Colab(monkeypatch, tmp_path, git_fails=True)
    with pytest.raises(RuntimeError, match="git clone -q https://example.org/x.*repository 'x' not found"):
        colab.run(tmp_path / "nowhere", "https://example.org/x")
    assert colab.cwd == []
