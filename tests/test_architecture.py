"""The package's shape (docs/architecture.md): imports run one way, the TA's command loads only what inference
needs, and each module stays short enough to hold one job."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.test_infer import checkpoint  # noqa: F401  (a fixture: a tiny trained checkpoint)

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hw2"
MODULES = {p.stem for p in PACKAGE.glob("*.py")}


def hw2_imports(path: Path) -> set[str]:
    """The hw2 modules `path` imports anywhere in it (at its top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hw2":  # `from hw2 import loop` imports a module, `from hw2 import Hw2Error` a name
                found |= {a.name for a in node.names if a.name in MODULES}
                found.add("__init__")
            elif node.module.startswith("hw2."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("hw2.")}
    found.discard(path.stem)
    return found


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the import graph as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt, path + [nxt])):
                return circle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start, [start])):
            return circle
    return None


def test_the_import_graph_has_no_circle():
    graph = {p.stem: hw2_imports(p) for p in PACKAGE.glob("*.py")}
    assert graph["checkpoint"] <= {"__init__", "config", "model", "data"}, "the checkpoint module reaches up"
    assert "train" not in graph["separate"] | graph["evaluate"] | graph["infer"]
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))


def test_the_circle_finder_finds_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_over_500_lines():
    long = {p.name: n for p in PACKAGE.glob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_the_tas_command_loads_no_training_plotting_or_vocoder_code(checkpoint, wav_root, tmp_path):  # noqa: F811
    """`python hw2/infer.py` (mixture phase) on a generated root: the modules it loaded, read at exit."""
    probe = ("import atexit, runpy, sys\n"
             "atexit.register(lambda: print('LOADED', ' '.join(sorted(sys.modules))))\n"
             f"sys.argv = ['hw2/infer.py', '--musdb-root', {str(wav_root)!r}, '--checkpoint', {str(checkpoint)!r},"
             f" '--out', {str(tmp_path / 'out')!r}, '--samples', '0', '--jobs', '1']\n"
             "runpy.run_path('hw2/infer.py', run_name='__main__')\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split("LOADED", 1)[1].split())
    assert "hw2.separate" in loaded and "hw2.checkpoint" in loaded  # it did separate, from a checkpoint
    unwanted = {"hw2.train", "hw2.loop", "hw2.vocoder", "hw2.plots", "hw2.experiments", "hw2.report",
                "matplotlib", "pandas", "librosa"}
    assert not loaded & unwanted
