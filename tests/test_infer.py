"""The TA's command, `python hw2/infer.py`: end to end on generated MUSDB roots with a tiny trained checkpoint,
identical numbers with museval workers, musdb's validation split, the stempeg example track, and bad inputs (each
one `error:` line on stderr, exit status 2, no traceback, no results written).

Fixtures `wav_root` (and the session $HW2_CACHE) come from tests/conftest.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hw2.infer import _row_names, example_root, main
from hw2.synth import VALID_NAMES, make_musdb
from hw2.checkpoint import load_checkpoint
from hw2.config import TrainConfig
from hw2.train import train

REPO = Path(__file__).resolve().parents[1]
INFER = REPO / "hw2" / "infer.py"
METRICS = ("SDR", "SIR", "ISR", "SAR")


@pytest.fixture(scope="module")
def checkpoint(wav_root, tmp_path_factory) -> Path:
    """A tiny vocals model trained for one short epoch on the generated root: fast, and a real hw2 checkpoint."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    cfg = TrainConfig(musdb_root=str(wav_root), out=str(run), epochs=1, milestones=(), seq_dur=1.0, batch_size=4,
                      samples_per_track=2, hidden_size=16, nb_layers=1, quiet=True, device="cpu")
    train(cfg, log=lambda _: None)
    return run / "best.pt"


@pytest.fixture(scope="module")
def stem_root_one_track(tmp_path_factory) -> Path:
    """A MUSDB18 (.stem.mp4) root with a single 1 s test track: all the ffmpeg check needs."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    return make_musdb(tmp_path_factory.mktemp("musdb_stem_1"), "stem", 0, 0, 1, 1.0, seed=3)


def env(**extra) -> dict:
    """The environment for a subprocess: one thread per library (the CPU is shared)."""
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return e


def infer(args, cwd, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INFER), *map(str, args)], cwd=cwd, env=env(**extra_env),
                          capture_output=True, text=True, timeout=300)


def results_files(folder: Path) -> list[Path]:
    """Anything infer writes as a result: tables, per-track JSON, WAVs."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.suffix in (".json", ".md", ".wav")]


# -------------------------------------------------------------------------------------------------- end to end
def test_cli_end_to_end_from_another_folder(wav_root, checkpoint, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    r = infer(["--musdb-root", wav_root, "--subset", "test", "--checkpoint", checkpoint,
               "--phase", "mixture", "griffinlim", "--gl-iters", "8", "--references", "--samples", "1", "--out", "out"],
              cwd)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = cwd / "out"  # a relative --out is relative to the caller's folder
    track = sorted(p.name for p in (wav_root / "test").iterdir())[0]
    labels = ["best / mixture", "best / griffinlim", "reference / mix-as-estimate", "reference / oracle-irm"]
    slugs = ["best-mixture", "best-griffinlim", "reference-mix-as-estimate", "reference-oracle-irm"]

    doc = json.loads((out / "synth-test.json").read_text())
    assert [row["label"] for row in doc["rows"]] == labels
    assert doc["data"]["subset"] == "test" and doc["data"]["nb_tracks"] == 1 and doc["data"]["format"] == "wav"
    assert doc["command"].startswith("python hw2/infer.py --musdb-root ")
    for row in doc["rows"]:
        assert row["nb_tracks"] == 1
        for target in ("vocals", "accompaniment"):
            assert set(row["scores"][target]) == set(METRICS) | {"SC", "MRSTFT"}  # museval's, the phase-blind
            assert isinstance(row["scores"][target]["SDR"], float)
    vocals_sdr = {row["label"]: row["scores"]["vocals"]["SDR"] for row in doc["rows"]}
    assert vocals_sdr["reference / oracle-irm"] > vocals_sdr["reference / mix-as-estimate"]

    md = (out / "synth-test.md").read_text()
    header = "| row | epoch | vocals SDR | accompaniment SDR |"
    assert header in r.stdout  # the table is printed
    for label in labels:
        assert f"| {label} |" in r.stdout and f"| {label} |" in md

    for slug in slugs:  # museval's per-track JSON
        per_track = json.loads((out / "synth-test" / slug / "test" / f"{track}.json").read_text())
        assert [t["name"] for t in per_track["targets"]] == ["vocals", "accompaniment"]
        assert len(per_track["targets"][0]["frames"]) == 5  # 5 s track, 1 s frames

    nb_samples = sf.info(str(wav_root / "test" / track / "mixture.wav")).frames
    wavs = ["mixture.wav", "true_vocals.wav", "true_accompaniment.wav"] + [
        f"{s}_{t}.wav" for s in slugs[:2] for t in ("vocals", "accompaniment")]
    samples = out / "synth-test" / "samples" / track
    assert sorted(p.name for p in samples.glob("*.wav")) == sorted(wavs)
    assert (samples.parent / "index.html").is_file()  # the listening page (tests/test_listening.py)
    for name in wavs:
        info = sf.info(str(samples / name))
        assert (info.frames, info.channels, info.samplerate) == (nb_samples, 2, 44100), name
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]  # no temporary files
    # generated tracks: the table's name and title say so, and a MUSDB18 test table is never overwritten
    assert not (out / "test.json").exists() and md.startswith("# museval SDR on generated tracks (hw2.synth")
    # two bars, separated and scored, both full at the end; the last line gives absolute paths
    for stage in ("separated", "scored"):
        assert re.findall(rf"audio {stage}: +(\d+)%", r.stderr)[-1] == "100", r.stderr
    assert r.stdout.strip().splitlines()[-1] == (f"tables: {out / 'synth-test.md'} and {out / 'synth-test.json'}; "
                                                 f"listening page: {out / 'synth-test' / 'samples' / 'index.html'} "
                                                 f"(WAVs in {out / 'synth-test' / 'samples'}/<track>/)")


def test_the_scored_bar_moves_when_a_worker_has_written_a_tracks_scores(tmp_path):
    """Evaluation.add's `scored` callback, the scored bar's update, comes once per job and only after the
    worker wrote the track's JSON: the bar cannot run ahead of the scoring."""
    from hw2.evaluate import Evaluation

    rng = np.random.default_rng(0)
    refs = {t: rng.standard_normal((2 * 44100, 2)).astype(np.float32) * 0.1 for t in ("vocals", "accompaniment")}
    ests = {t: v + np.float32(0.05) for t, v in refs.items()}
    row = {"label": "m", "checkpoint": None, "epoch": None, "method": "mixture"}
    for jobs in (1, 2):
        ev, done = Evaluation(tmp_path / f"jobs{jobs}", "x", "test", jobs=jobs), []
        for i in range(3):
            path = ev.path(row, f"t{i}")
            ev.add(row, f"t{i}", refs, ests, scored=lambda path=path: done.append(path.is_file()))
        assert ev.finish()[0]["nb_tracks"] == 3
        assert done == [True, True, True], jobs


def test_the_repositorys_results_from_any_folder(wav_root, checkpoint, tmp_path):
    """`cd hw2 && python infer.py`: the tables land in the repository's results/ (not hw2/results/), a relative
    --musdb-root is taken from the folder the command runs in, and a rerun from another folder reuses the scores.
    On a copy of the package with the tiny checkpoint as its shipped one, so the real results/ is untouched."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "hw2", repo / "hw2", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "checkpoints").mkdir()
    shutil.copy(checkpoint, repo / "checkpoints" / "vocals.pt")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "musdb").symlink_to(wav_root)
    flags = ["--samples", "0", "--jobs", "1"]
    first = subprocess.run([sys.executable, "infer.py", "--musdb-root", "../../data/musdb", *flags], cwd=repo / "hw2",
                           env=env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert (repo / "results" / "synth-test.json").is_file() and not (repo / "hw2" / "results").exists()
    again = subprocess.run([sys.executable, "repo/hw2/infer.py", "--musdb-root", "data/musdb", *flags], cwd=tmp_path,
                           env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 of 1 tracks already scored by an earlier run of this command: reused" in again.stdout
    assert str(repo / "results" / "synth-test.md") in again.stdout.strip().splitlines()[-1]


def test_jobs_give_identical_numbers_on_the_validation_split(wav_root, checkpoint, tmp_path, capsys):
    """`--subset train --split valid` scores musdb's validation tracks only; `--jobs 2` equals `--jobs 1`."""
    valid = sorted(p.name for p in (wav_root / "train").iterdir() if p.name in VALID_NAMES)
    assert valid  # generated roots name some train tracks as musdb's validation tracks
    rows = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["--musdb-root", str(wav_root), "--subset", "train", "--split", "valid", "--checkpoint",
                     str(checkpoint), "--samples", "0", "--jobs", str(jobs), "--out", str(out)]) == 0
        doc = json.loads((out / "synth-train-valid.json").read_text())
        assert doc["data"]["split"] == "valid" and doc["data"]["nb_tracks"] == len(valid)
        scored = sorted(p.stem for p in (out / "synth-train-valid" / "best-mixture" / "train").glob("*.json"))
        assert scored == valid
        rows[jobs] = doc["rows"]
    assert rows[1] == rows[2]
    assert "train/valid" in capsys.readouterr().out


def test_checkpoints_with_the_same_file_name_get_their_own_rows(tmp_path):
    """Regression: runs/a/best.pt and runs/b/best.pt were merged into one row (and one per-track folder)."""
    assert _row_names(["runs/a/best.pt", "runs/b/best.pt", "x/epoch025.pt"]) == ["a-best", "b-best", "epoch025"]
    assert _row_names(["runs/a/best.pt", "runs/a/best.pt"]) == ["a-best-1", "a-best-2"]
    assert _row_names(["checkpoints/vocals.pt"]) == ["vocals"]


# ------------------------------------------------------------------------------------------- the example track
def test_example_root_is_a_musdb_root_with_one_test_track(monkeypatch, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    from hw2.tracks import detect_format, open_tracks

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # example_root's folder lands in tmp_path
    root = example_root()
    assert root.parent == tmp_path
    assert [p.name for p in root.iterdir()] == ["test"]
    files = list((root / "test").iterdir())
    assert len(files) == 1 and files[0].name.endswith(".stem.mp4")
    assert detect_format(root) is False
    assert len(open_tracks(root, "test")) == 1


def test_infer_without_musdb_root_runs_on_the_example_track(checkpoint, monkeypatch, tmp_path, capsys):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = tmp_path / "out"
    assert main(["--checkpoint", str(checkpoint), "--samples", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "example.json").read_text())
    assert doc["data"]["nb_tracks"] == 1 and doc["data"]["format"] == "stem"
    assert [row["label"] for row in doc["rows"]] == ["best / mixture"]
    assert doc["rows"][0]["scores"]["vocals"]["SDR"] is not None
    wavs = list((out / "example" / "samples").rglob("*.wav"))
    assert len(wavs) == 5  # the mixture, the true vocals and accompaniment, the estimates
    assert "stempeg" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- bad inputs
def _bad_case(case: str, tmp: Path, wav_root: Path, checkpoint: Path) -> list[str]:
    """The arguments of one bad invocation (everything else valid); builds the bad file or folder in `tmp`."""
    root, ckpt, extra = str(wav_root), str(checkpoint), []
    if case == "no-such-root":
        root = str(tmp / "nowhere")
    elif case == "not-musdb":
        (tmp / "photos").mkdir()
        (tmp / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
        root = str(tmp / "photos")
    elif case == "not-musdb-tracks":
        (tmp / "fake" / "test").mkdir(parents=True)
        (tmp / "fake" / "test" / "notes.txt").write_text("no tracks here")
        root = str(tmp / "fake")
    elif case == "empty-test-subset":
        (tmp / "musdb" / "test").mkdir(parents=True)
        (tmp / "musdb" / "train").symlink_to(wav_root / "train")
        root = str(tmp / "musdb")
    elif case == "missing-checkpoint":
        ckpt = str(tmp / "nope.pt")
    elif case == "corrupt-checkpoint":
        ckpt = str(tmp / "corrupt.pt")
        Path(ckpt).write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "foreign-checkpoint":
        ckpt = str(tmp / "foreign.pt")
        torch.save({"a": 1}, ckpt)
    elif case == "mismatched-checkpoint":  # config says hidden size 32, weights are for 16
        c = load_checkpoint(checkpoint)
        c["config"]["hidden_size"] = 32
        ckpt = str(tmp / "mismatched.pt")
        torch.save(c, ckpt)
    elif case == "accompaniment-checkpoint":
        c = load_checkpoint(checkpoint)
        c["config"]["target"] = "accompaniment"
        ckpt = str(tmp / "accompaniment.pt")
        torch.save(c, ckpt)
    elif case == "nan-checkpoint":  # training diverged: today a table of n/a with exit 0
        c = load_checkpoint(checkpoint)
        c["model"]["fc1.weight"][0, 0] = float("nan")
        ckpt = str(tmp / "nan.pt")
        torch.save(c, ckpt)
    elif case == "zero-jobs":
        extra = ["--jobs", "0"]
    else:
        raise AssertionError(case)
    return ["--musdb-root", root, "--checkpoint", ckpt, "--samples", "1", "--out", str(tmp / "out"), *extra]


BAD = ["no-such-root", "not-musdb", "not-musdb-tracks", "empty-test-subset", "missing-checkpoint",
       "corrupt-checkpoint", "foreign-checkpoint", "mismatched-checkpoint", "accompaniment-checkpoint", "nan-checkpoint",
       "zero-jobs"]


def assert_one_error_line(stderr: str) -> None:
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line(case, wav_root, checkpoint, tmp_path, capsys):
    argv = _bad_case(case, tmp_path, wav_root, checkpoint)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert_one_error_line(captured.err)
    assert results_files(tmp_path / "out") == []


def test_unwritable_output_folder(wav_root, checkpoint, tmp_path, capsys):
    blocker = tmp_path / "results"  # tests run as root, where chmod blocks nothing: a file where a folder must be
    blocker.write_text("a file")
    assert main(["--musdb-root", str(wav_root), "--checkpoint", str(checkpoint), "--out", str(blocker / "out")]) == 2
    assert_one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_unknown_phase_method_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--phase", "mixture", "magic"])
    assert e.value.code == 2
    assert_one_error_line(capsys.readouterr().err)


# the same in a real process: nothing else (warnings, tracebacks) reaches stderr
def test_ffmpeg_missing_in_a_real_process(stem_root_one_track, checkpoint, tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with python on it, but no ffmpeg / ffprobe
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "python3").symlink_to(sys.executable)
    r = infer(["--musdb-root", stem_root_one_track, "--checkpoint", checkpoint, "--out", tmp_path / "out"], tmp_path,
              PATH=str(bin_dir))
    assert r.returncode == 2, r.stderr
    assert_one_error_line(r.stderr)
    assert "ffmpeg" in r.stderr and "install" in r.stderr
    assert results_files(tmp_path / "out") == []


@pytest.mark.parametrize("case", ["corrupt-checkpoint", "empty-test-subset"])
def test_bad_input_in_a_real_process(case, wav_root, checkpoint, tmp_path):
    r = infer(_bad_case(case, tmp_path, wav_root, checkpoint), tmp_path)
    assert r.returncode == 2
    assert_one_error_line(r.stderr)
    assert results_files(tmp_path / "out") == []


def test_unknown_phase_in_a_real_process(tmp_path):
    r = infer(["--phase", "magic"], tmp_path)
    assert r.returncode == 2
    assert_one_error_line(r.stderr)
    assert "--phase" in r.stderr


def test_scorer_hw2_gives_museval_numbers(wav_root, checkpoint, tmp_path):
    """`--scorer hw2` (the default) and `--scorer museval` write the same tables, to 0.01 dB."""
    pytest.importorskip("museval")
    scores = {}
    for scorer in ("hw2", "museval"):
        out = tmp_path / scorer
        assert main(["--musdb-root", str(wav_root), "--subset", "train", "--split", "valid", "--checkpoint",
                     str(checkpoint), "--samples", "0", "--scorer", scorer, "--out", str(out)]) == 0
        doc = json.loads((out / "synth-train-valid.json").read_text())
        scores[scorer] = [row["scores"] for row in doc["rows"]]
    for ours, theirs in zip(scores["hw2"], scores["museval"]):
        for target in ("vocals", "accompaniment"):
            for metric in METRICS:
                assert abs(ours[target][metric] - theirs[target][metric]) < 0.01, (target, metric)


def test_scorer_workers_do_not_hang_after_torch_ran_threaded(tmp_path):
    """Regression: `--jobs 2` forked its workers; after the parent had separated with several torch threads, a
    forked worker hung in its first parallel torch op (the hw2 scorer is torch). Workers are spawned now."""
    script = textwrap.dedent(f"""
        import numpy as np, torch
        from hw2.evaluate import Evaluation
        if __name__ == "__main__":
            torch.set_num_threads(2)
            a = torch.randn(1000, 1000); (a @ a).sum()  # the parent's thread pool has run, as after separating
            rng = np.random.default_rng(0)
            refs = {{t: np.round(rng.standard_normal((2 * 44100, 2)) * 3000).astype(np.float32) / 32768
                    for t in ("vocals", "accompaniment")}}
            ests = {{t: v + np.float32(0.05) * rng.standard_normal(v.shape).astype(np.float32) for t, v in refs.items()}}
            ev = Evaluation({str(tmp_path)!r}, "x", "test", jobs=2)
            for i in range(3):
                ev.add({{"label": "m", "checkpoint": None, "epoch": None, "method": "mixture"}}, f"t{{i}}", refs, ests)
            print(ev.finish()[0]["nb_tracks"])
    """)
    (tmp_path / "run.py").write_text(script)
    r = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, timeout=300,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "3"
# ------------------------------------------------------------------------------ the TA's run: fail fast, resume
def _copy_tracks(src: Path, dst: Path, names) -> None:
    for name in names:
        shutil.copytree(src / name, dst / name)


def test_bad_tracks_are_all_listed_before_any_work(wav_root, checkpoint, tmp_path, capsys, monkeypatch):
    """Three-channel stems and stems of different lengths: every bad track named (one line each), exit 2, no
    separation started and nothing written; a Jupyter `.ipynb_checkpoints` folder is not a track."""
    root = tmp_path / "musdb"
    train = sorted(p.name for p in (wav_root / "train").iterdir())
    _copy_tracks(wav_root / "train", root / "test", train[:3])
    (root / "test" / ".ipynb_checkpoints").mkdir()
    three = root / "test" / train[1] / "other.wav"
    audio, rate = sf.read(str(three), dtype="int16")
    sf.write(str(three), np.concatenate([audio, audio[:, :1]], 1), rate, subtype="PCM_16")
    short = root / "test" / train[2] / "vocals.wav"
    sf.write(str(short), sf.read(str(short), dtype="int16")[0][: -2 * rate], rate, subtype="PCM_16")
    import hw2.separate
    monkeypatch.setattr(hw2.separate.Separator, "separate", lambda *a, **k: pytest.fail("separation started"))
    args = ["--musdb-root", str(root), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: 2 tracks cannot be read; nothing was run") and len(err) == 3, err
    assert "Traceback" not in "\n".join(err)
    assert f"{root / 'test' / train[1]}: the other stem has 3 channels" in err[1]
    assert f"{root / 'test' / train[2]}: stems of different lengths" in err[2]
    assert results_files(tmp_path / "out") == []
    for name in train[1:3]:
        shutil.rmtree(root / "test" / name)
    monkeypatch.undo()
    assert main([*args, "--samples", "0", "--jobs", "1"]) == 0  # the checkpoints folder is ignored


def test_stems_a_few_samples_apart_are_cut_and_said_more_are_refused(wav_root, checkpoint, tmp_path, capsys,
                                                                     monkeypatch):
    """MUSDB18-HQ tracks whose vocals.wav is shorter than the other stems: 5,000 samples (0.11 s, more than the
    4,160 AAC padding explains) are refused before any work, naming the stem and both lengths; 1,000 samples are
    cut off, said in one line, and the track is scored."""
    from hw2.tracks import MAX_PADDING

    names = sorted(p.name for p in (wav_root / "train").iterdir())[:1]
    for cut, root in ((5000, tmp_path / "far"), (1000, tmp_path / "near")):
        _copy_tracks(wav_root / "train", root / "test", names)
        vocals = root / "test" / names[0] / "vocals.wav"
        audio, rate = sf.read(str(vocals), dtype="int16")
        sf.write(str(vocals), audio[:-cut], rate, subtype="PCM_16")
    n = len(audio)
    assert 1000 < MAX_PADDING < 5000
    import hw2.separate
    monkeypatch.setattr(hw2.separate.Separator, "separate", lambda *a, **k: pytest.fail("separation started"))
    args = ["--checkpoint", str(checkpoint), "--samples", "0", "--jobs", "1"]
    assert main(["--musdb-root", str(tmp_path / "far"), *args, "--out", str(tmp_path / "out-far")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'far' / 'test' / names[0]}: stems of different lengths: the vocals stem has "
                   f"{n - 5000:,} samples, the mixture stem {n:,} (5,000 more than it, more than the 4,160 AAC "
                   "padding explains): replace the track")
    assert results_files(tmp_path / "out-far") == []
    monkeypatch.undo()
    assert main(["--musdb-root", str(tmp_path / "near"), *args, "--out", str(tmp_path / "out-near")]) == 0
    printed = capsys.readouterr().out
    assert (f"{tmp_path / 'near' / 'test' / names[0]}: stems differ by 1,000 samples (vocals {n - 1000:,}, mixture "
            f"{n:,}), within AAC padding (at most 4,160): cut to the shortest") in printed
    (row,) = json.loads((tmp_path / "out-near" / "test.json").read_text())["rows"]
    assert row["nb_tracks"] == 1


def test_corrupt_stem_files_are_all_named(stem_root, checkpoint, tmp_path, capsys):
    root = tmp_path / "musdb"
    (root / "test").mkdir(parents=True)
    shutil.copy(next((stem_root / "test").glob("*.stem.mp4")), root / "test")
    for name in ("Broken - One", "Broken - Two"):
        (root / "test" / f"{name}.stem.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    assert main(["--musdb-root", str(root), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error: 2 tracks cannot be read" in err
    assert "Broken - One.stem.mp4: cannot read" in err and "Broken - Two.stem.mp4: cannot read" in err
    assert results_files(tmp_path / "out") == []


def test_an_interrupted_run_resumes_and_gives_the_same_table(wav_root, checkpoint, tmp_path, monkeypatch):
    args = ["--musdb-root", str(wav_root), "--subset", "train", "--split", "valid", "--checkpoint", str(checkpoint),
            "--phase", "mixture", "griffinlim", "--gl-iters", "2", "--references", "--samples", "0", "--jobs", "1"]
    assert main([*args, "--out", str(tmp_path / "fresh")]) == 0
    fresh = json.loads((tmp_path / "fresh" / "synth-train-valid.json").read_text())["rows"]

    import hw2.separate
    calls, separate = [], hw2.separate.Separator.separate

    def interrupted(self, mixture, methods, key=""):
        calls.append(key)
        if len(calls) == 3:  # the second track's first method
            raise KeyboardInterrupt
        return separate(self, mixture, methods, key)

    monkeypatch.setattr(hw2.separate.Separator, "separate", interrupted)
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 130
    assert not (out / "synth-train-valid.json").exists()
    monkeypatch.undo()
    log = []
    from hw2.infer import parser, run
    rows = run(parser().parse_args([*args, "--out", str(out)]), log=log.append)
    assert "1 of 2 tracks already scored by an earlier run of this command: reused" in log
    assert json.loads((out / "synth-train-valid.json").read_text())["rows"] == fresh == rows

    other = tmp_path / "retrained.pt"  # another checkpoint under the same row name: nothing reused
    c = load_checkpoint(checkpoint)
    c["model"]["fc1.weight"] += 0.01
    torch.save(c, other)
    log.clear()
    run(parser().parse_args([*args, "--out", str(out), "--checkpoint", str(other)]), log=log.append)
    assert not any("already scored" in line for line in log)


def test_an_error_after_the_bars_started_is_a_line_of_its_own(wav_root, checkpoint, tmp_path, monkeypatch):
    """In a log file (stdout and stderr together) the bars' carriage returns keep their text on one line: the
    interrupt or error line must not be glued to its end."""
    import contextlib
    import io

    import hw2.separate

    def stop(self, mixture, methods, key=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(hw2.separate.Separator, "separate", stop)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = main(["--musdb-root", str(wav_root), "--checkpoint", str(checkpoint), "--samples", "0", "--jobs", "1",
                     "--out", str(tmp_path / "out")])
    assert code == 130
    assert "audio separated" in log.getvalue()  # the bars were drawn
    assert log.getvalue().split("\n")[-2] == "interrupted: no results table was written", log.getvalue()


def test_the_default_jobs_fit_the_free_memory_and_say_so(wav_root, checkpoint, tmp_path, monkeypatch, capsys):
    """One worker per CPU while the free memory holds them beside the command's process, fewer (and a line saying
    why) when it does not; an explicit --jobs is kept."""
    import hw2.evaluate as evaluate_module
    from hw2.evaluate import MAIN_MEMORY, WORKER_MEMORY, default_jobs

    ten_min = 600 * 44100
    own, worker = (fixed + per * ten_min for fixed, per in (MAIN_MEMORY, WORKER_MEMORY))
    assert default_jobs(600, cpus=4, available=64 << 30) == (4, "")
    assert default_jobs(600, cpus=4, available=None) == (4, "")  # unknown (not Linux): one per CPU
    jobs, why = default_jobs(600, cpus=4, available=int(own + 2.5 * worker))
    assert jobs == 2 and why.startswith("--jobs 2, not one per CPU (4)") and "10.0 min" in why
    assert default_jobs(600, cpus=4, available=int(own))[0] == 1  # no room for a worker: score in-process
    assert default_jobs(7, cpus=4, available=int(own + 2.5 * worker))[0] == 4  # short tracks: small workers

    monkeypatch.setattr(evaluate_module, "_memory_available", lambda: 1 << 20)
    monkeypatch.setattr(evaluate_module.os, "cpu_count", lambda: 2)
    args = ["--musdb-root", str(wav_root), "--checkpoint", str(checkpoint), "--samples", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "--jobs 1, not one per CPU (2)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b"), "--jobs", "2"]) == 0
    assert "not one per CPU" not in capsys.readouterr().out


def test_a_track_with_silent_vocals_is_reported_not_scored(wav_root, checkpoint, tmp_path, capsys):
    root = tmp_path / "musdb"
    names = sorted(p.name for p in (wav_root / "train").iterdir())[:2]
    _copy_tracks(wav_root / "train", root / "test", names)
    silent = root / "test" / names[1]
    audio, rate = sf.read(str(silent / "vocals.wav"), dtype="int16")
    sf.write(str(silent / "vocals.wav"), np.zeros_like(audio), rate, subtype="PCM_16")
    out = tmp_path / "out"
    assert main(["--musdb-root", str(root), "--checkpoint", str(checkpoint), "--samples", "0", "--jobs", "1",
                 "--out", str(out)]) == 0
    (row,) = json.loads((out / "test.json").read_text())["rows"]
    assert row["nb_tracks"] == 1 and row["skipped"][0]["track"] == names[1]
    assert "vocals silent from start to end" in row["skipped"][0]["reason"]
    assert row["scores"]["vocals"]["SDR"] is not None
    printed = capsys.readouterr().out
    assert f"- {names[1]}: vocals silent from start to end" in printed and "1 track(s) not scored" in printed
    assert "skipped" in json.loads((out / "test" / "best-mixture" / "test" / f"{names[1]}.json").read_text())


def test_the_example_run_gives_the_vocals_sdr_the_readme_promises(monkeypatch, tmp_path, capsys):
    """The shipped checkpoint on stempeg's example track: the number the no-argument run tells the user to
    expect (README and infer.EXAMPLE_VOCALS_SDR)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    from hw2.infer import EXAMPLE_VOCALS_SDR
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["--samples", "0", "--jobs", "1", "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out" / "example.json").read_text())["rows"]
    assert abs(row["scores"]["vocals"]["SDR"] - EXAMPLE_VOCALS_SDR) < 0.01
    printed = capsys.readouterr().out
    assert "stempeg's example track" in printed and "(test)" not in printed


def test_the_models_stft_reaches_scoring_and_the_reference_rows(wav_root, tmp_path):
    """A model with STFT 2048 / 512: its SC column, the oracle row and the table's footnote use that STFT, not the
    4096 / 1024 defaults (the oracle mask and SC are checked against a direct computation at 2048 / 512)."""
    from dataclasses import asdict

    from hw2.evaluate import magnitude_distances
    from hw2.infer import _references
    from hw2.model import STFT, ModelConfig, OpenUnmix
    from hw2.separate import Separator, references
    from hw2.checkpoint import CHECKPOINT_FORMAT
    from hw2.tracks import open_tracks, read_stem

    torch.manual_seed(0)
    model = OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1, n_fft=2048, n_hop=512)).eval()
    ckpt = tmp_path / "small-stft.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(TrainConfig(hidden_size=16, nb_layers=1, n_fft=2048,
                                                                          n_hop=512)),
                "model": model.state_dict(), "epoch": 1}, ckpt)
    assert main(["--musdb-root", str(wav_root), "--subset", "test", "--checkpoint", str(ckpt), "--references",
                 "--samples", "0", "--jobs", "1", "--out", str(tmp_path / "out"), "--name", "stft"]) == 0
    track = open_tracks(wav_root, "test")[0]
    mixture = read_stem(track, "mixture")
    refs, n = _references(track, len(mixture))
    est = Separator.from_checkpoint(ckpt).separate(mixture, ["mixture"], key=track.name)["mixture"]
    oracle = references(mixture[:n].astype(np.float32) / 32768, refs["vocals"], refs["accompaniment"],
                        stft=STFT(2048, 512), rows=["oracle-irm"])["oracle-irm"]
    for slug, estimate in (("small-stft-mixture", est), ("reference-oracle-irm", oracle)):
        scored = json.loads((tmp_path / "out" / "stft" / slug / "test" / f"{track.name}.json").read_text())
        for t in ("vocals", "accompaniment"):
            direct = magnitude_distances(refs[t], estimate[t][:n], 2048, 512)["SC"]
            default = magnitude_distances(refs[t], estimate[t][:n])["SC"]
            assert scored["magnitude"][t]["SC"] == pytest.approx(direct, rel=1e-6), (slug, t)
            assert abs(direct - default) > 1e-4  # far beyond the tolerance: the test tells the two STFTs apart
    assert "n_fft 2048, hop 512" in (tmp_path / "out" / "stft.md").read_text()


# ------------------------------------------------------------- every sample format reads as the audio it holds
def _table(out: Path, name: str = "synth-test") -> list[dict]:
    return json.loads((out / f"{name}.json").read_text())["rows"]


def _twin_root(src: Path, dst: Path, subtype: str) -> Path:
    """A copy of the MUSDB18-HQ root `src` (its test subset) with every WAV written as `subtype`, holding the same
    samples (16-bit values are exact in every format here)."""
    for f in (src / "test").rglob("*.wav"):
        audio, rate = sf.read(str(f), dtype="float64")
        (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(dst / f.relative_to(src)), audio, rate, subtype=subtype)
    return dst


def test_a_float_wav_root_scores_as_its_16_bit_twin(wav_root, checkpoint, tmp_path):
    """32-bit float WAVs, which an int16 read turns into -1, 0 and 1 (near-silence), give the 16-bit root's table
    to the digit, the mixture-as-estimate row included."""
    flags = ["--subset", "test", "--checkpoint", str(checkpoint), "--references", "--samples", "0", "--jobs", "1"]
    twin = _twin_root(wav_root, tmp_path / "float", "FLOAT")
    assert sf.info(str(next(twin.rglob("vocals.wav")))).subtype == "FLOAT"
    assert main(["--musdb-root", str(wav_root), *flags, "--out", str(tmp_path / "pcm16"), "--name", "t"]) == 0
    assert main(["--musdb-root", str(twin), *flags, "--out", str(tmp_path / "f32"), "--name", "t"]) == 0
    assert _table(tmp_path / "f32", "t") == _table(tmp_path / "pcm16", "t")


def test_a_float_root_not_on_the_unit_scale_stops_before_any_work(wav_root, checkpoint, tmp_path, capsys,
                                                                   monkeypatch):
    """int16 values stored as floats (sf.write(path, pcm.astype(float32))) and NaN samples: one line each, exit 2,
    nothing separated or written."""
    root = _twin_root(wav_root, tmp_path / "bad", "FLOAT")
    (track,) = (root / "test").iterdir()
    pcm, rate = sf.read(str(wav_root / "test" / track.name / "vocals.wav"), dtype="int16")
    sf.write(str(track / "vocals.wav"), pcm.astype(np.float32), rate, subtype="FLOAT")
    other = root / "test" / "Other - Track"
    shutil.copytree(track, other)
    audio, rate = sf.read(str(other / "drums.wav"), dtype="float32")
    audio[: len(audio) // 2] = np.nan  # the first of the check's excerpts falls there
    sf.write(str(other / "drums.wav"), audio, rate, subtype="FLOAT")
    sf.write(str(other / "vocals.wav"), pcm / 32768, rate, subtype="FLOAT")
    import hw2.separate
    monkeypatch.setattr(hw2.separate.Separator, "separate", lambda *a, **k: pytest.fail("separation started"))
    assert main(["--musdb-root", str(root), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: 2 tracks cannot be read; nothing was run:" and len(err) == 3, err
    peak = np.abs(pcm.astype(np.int32)).max()
    assert err[1] == (f"{other}: the drums stem (FLOAT) holds NaN or infinite samples, which are no audio: the file "
                      "is damaged; write it again from its source")
    assert err[2] == (f"{track}: the vocals stem (FLOAT) reaches {peak:,.1f}, not audio on the +-1.0 float "
                      "scale (more than 2: int16 values stored as floats?): divide it by its scale (32768 for "
                      "int16 values) or write it as 16-bit PCM")
    assert results_files(tmp_path / "out") == []


# ------------------------------------------------------------------------ truncated and damaged files stop the run
# stempeg's example track is a real MUSDB18 file (its index at the start, as every MUSDB18 file has: a cut keeps the
# header whole). The issue cut a 1,121,410-byte test track to 400 KB and 1 MB; the same fractions of the example,
# and 60 KB (the header and a little audio).
def _cuts() -> dict[str, bytes]:
    import stempeg

    src = Path(stempeg.example_stem_path()).read_bytes()
    n = len(src)
    zeros = int(0.6 * n)  # a download tool that preallocates the file and died: the size is right, the end zeros
    return {"Cut - 400 KB": src[: n * 400_000 // 1_121_410], "Cut - 1 MB": src[: n * 1_000_000 // 1_121_410],
            "Cut - 60 KB": src[:60_000], "Zeroed - Tail": src[:zeros] + bytes(n - zeros), "Whole - Track": src}


def test_truncated_and_damaged_stem_files_stop_the_run_before_anything_is_written(checkpoint, tmp_path, capsys,
                                                                                  monkeypatch):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path / "musdb"
    (root / "test").mkdir(parents=True)
    cuts = _cuts()
    for name, data in cuts.items():
        (root / "test" / f"{name}.stem.mp4").write_bytes(data)
    import hw2.separate
    monkeypatch.setattr(hw2.separate.Separator, "separate", lambda *a, **k: pytest.fail("separation started"))
    out = tmp_path / "out"
    assert main(["--musdb-root", str(root), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: 4 tracks cannot be read; nothing was run:" and len(err) == 5, err
    assert "Traceback" not in "\n".join(err)
    whole = len(cuts["Whole - Track"]) - 71  # the header's boxes end where the last one, 71 bytes, begins
    for line, name in zip(err[1:], ("Cut - 1 MB", "Cut - 400 KB", "Cut - 60 KB")):
        assert line == (f"{root / 'test' / name}.stem.mp4: truncated: the file has {len(cuts[name]):,} bytes where "
                        f"its header promises {whole:,} (an interrupted download or copy): download or copy it again")
    assert err[4].startswith(f"{root / 'test' / 'Zeroed - Tail'}.stem.mp4: truncated or damaged: its mixture, drums, "
                             "bass, other, vocals streams should last 6.08 s (its header) but the mixture stream ")
    assert results_files(out) == [] and not (out / "test").exists()


def test_a_stem_file_cut_before_its_index_is_named_truncated(stem_root_one_track, checkpoint, tmp_path, capsys):
    """Files written with the index at the end (ffmpeg's default, hw2.synth's): ffprobe cannot read a cut one at
    all, and the line says it is truncated."""
    root = tmp_path / "musdb"
    (root / "test").mkdir(parents=True)
    (src,) = (stem_root_one_track / "test").iterdir()
    data = src.read_bytes()
    (root / "test" / src.name).write_bytes(data[: len(data) // 2])
    assert main(["--musdb-root", str(root), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert err.startswith(f"error: {root / 'test' / src.name}: cannot read (ffprobe fails): truncated: the file has "
                          f"{len(data) // 2:,} bytes where its header promises ")
    assert results_files(tmp_path / "out") == []


# ------------------------------------------------------------------------- scores belong to the audio they came from
def test_scores_and_samples_of_other_audio_under_the_same_names_are_made_again(checkpoint, tmp_path):
    """Root B holds other audio under root A's track names (what the 7-second preview and full MUSDB18 are): its
    table after a run on A is B's own (a fresh run's), the line says why the tracks were scored again, the
    listening WAVs are B's, and a sample folder of A beyond B's --samples is gone. A --samples 0 run, then
    --samples 1 on the same root, writes the WAVs that the first run did not."""
    a = make_musdb(tmp_path / "a", "wav", 0, 0, 2, 3.0, seed=11)
    b = make_musdb(tmp_path / "b", "wav", 0, 0, 2, 3.0, seed=12)
    names = sorted(p.name for p in (a / "test").iterdir())
    assert names == sorted(p.name for p in (b / "test").iterdir())
    flags = ["--checkpoint", str(checkpoint), "--references", "--jobs", "1"]
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert main(["--musdb-root", str(a), *flags, "--samples", "2", "--out", str(out)]) == 0
    table_a = _table(out)
    log = []
    from hw2.infer import parser, run
    run(parser().parse_args(["--musdb-root", str(b), *flags, "--samples", "1", "--out", str(out)]), log=log.append)
    assert main(["--musdb-root", str(b), *flags, "--samples", "1", "--out", str(fresh)]) == 0
    assert _table(out) == _table(fresh) != table_a
    assert ("2 of 2 tracks scored again: an earlier run scored other audio under their names (a file's size, "
            "modification time or first or last 64 KiB differ, or it did not record them)") in log
    assert not any("already scored" in line for line in log)
    samples, fresh_samples = out / "synth-test" / "samples", fresh / "synth-test" / "samples"
    wavs = sorted(p.relative_to(fresh_samples) for p in fresh_samples.rglob("*.wav"))
    assert sorted(p.relative_to(samples) for p in samples.rglob("*.wav")) == wavs  # names[1]'s folder of A: gone
    for wav in wavs:
        np.testing.assert_array_equal(sf.read(samples / wav)[0], sf.read(fresh_samples / wav)[0], err_msg=str(wav))
    log.clear()
    run(parser().parse_args(["--musdb-root", str(b), *flags, "--samples", "1", "--out", str(out)]), log=log.append)
    assert "2 of 2 tracks already scored by an earlier run of this command: reused" in log

    later = tmp_path / "later"
    assert main(["--musdb-root", str(b), *flags, "--samples", "0", "--out", str(later)]) == 0
    assert main(["--musdb-root", str(b), *flags, "--samples", "1", "--out", str(later)]) == 0
    assert sorted(p.relative_to(later / "synth-test" / "samples") for p in later.rglob("*.wav")) == wavs
    assert _table(later) == _table(fresh)
