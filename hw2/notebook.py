"""Plumbing for the notebooks, so that their cells stay one-liners: a MUSDB root to work on (the real one, a
few of its tracks, or generated tracks), the splits as cached tracks, a run folder (on Google Drive in Colab),
and a measured training speed.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hw2.cache import open_cached
from hw2.tracks import detect_format

REPO = Path(__file__).resolve().parents[1]
DRIVE_RUNS = "/content/drive/MyDrive/hw2-runs"
MUSDB18_TRAIN_TRACKS = 86  # musdb's train split of full MUSDB18 / MUSDB18-HQ: 100 train-folder tracks - 14 valid


def in_colab() -> bool:
    return "google.colab" in sys.modules


def _scratch() -> Path:
    return Path(tempfile.gettempdir()) / "hw2-notebooks"


def demo_root(nb_train: int = 6, nb_valid: int = 2, nb_test: int = 2, duration: float = 8.0) -> Path:
    """A generated MUSDB-HQ root (`hw2.synth.make_musdb`) in the temp folder, written once and reused."""
    from hw2.synth import make_musdb

    folder = _scratch() / f"demo-{nb_train}-{nb_valid}-{nb_test}-{duration:g}"
    root = folder / "musdb"
    if not root.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".musdb-"))
        make_musdb(tmp, "wav", nb_train, nb_valid, nb_test, duration)
        try:
            os.replace(tmp, root)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def validation_names() -> list[str]:
    """musdb's fixed list of the train subset's validation tracks."""
    import musdb
    import yaml

    with open(Path(musdb.__file__).parent / "configs" / "mus.yaml") as f:
        return list(yaml.safe_load(f)["validation_tracks"])


def subset_root(root, nb_train: int = 8, nb_valid: int = 2, nb_test: int = 2, out=None) -> Path:
    """A MUSDB root of symbolic links to the first `nb_train` train-split, `nb_valid` valid-split and `nb_test`
    test tracks of `root` (same layout, same files: decoded-cache entries are shared with the full root)."""
    root = Path(root).expanduser().resolve()
    is_wav = detect_format(root)
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    out = Path(out) if out else _scratch() / f"subset-{tag}-{nb_train}-{nb_valid}-{nb_test}"
    valid = set(validation_names())

    def entries(subset):
        folder = root / subset
        if not folder.is_dir():
            return []
        if is_wav:
            return sorted(p for p in folder.iterdir() if (p / "mixture.wav").is_file())
        return sorted(p for p in folder.iterdir() if p.name.endswith(".stem.mp4"))

    def name(p):
        return p.name[: -len(".stem.mp4")] if p.name.endswith(".stem.mp4") else p.name

    train = entries("train")
    pick = {"train": [p for p in train if name(p) not in valid][:nb_train]
            + [p for p in train if name(p) in valid][:nb_valid], "test": entries("test")[:nb_test]}
    for subset, paths in pick.items():  # link what is missing, unlink what is extra: safe to run concurrently
        folder = out / subset
        want = {p.name: p for p in paths}
        if folder.is_dir():
            for link in list(folder.iterdir()):
                if link.name in want and link.is_symlink() and link.resolve() == want[link.name].resolve():
                    continue
                if link.is_dir() and not link.is_symlink():
                    shutil.rmtree(link)
                else:
                    link.unlink()
        elif paths:
            folder.mkdir(parents=True, exist_ok=True)
        for p in paths:
            try:
                (folder / p.name).symlink_to(p, target_is_directory=p.is_dir())
            except FileExistsError:
                pass
    return out


def prepare_root(musdb_root: str = "", smoke: bool = False, nb_train: int = 8, nb_valid: int = 2,
                 nb_test: int = 2) -> tuple[Path, str]:
    """(root, cache_dir) for a notebook: with no `musdb_root`, generated tracks (cached beside them); in smoke
    mode, links to the first `nb_train` / `nb_valid` / `nb_test` tracks of `musdb_root`; else `musdb_root`
    itself. cache_dir "" means the default decoded cache ($HW2_CACHE or ~/.cache/hw2)."""
    if not musdb_root:
        root = demo_root()
        print(f"no MUSDB_ROOT given: using generated tracks in {root}")
        return root, str(root.parent / "cache")
    root = Path(musdb_root).expanduser()
    detect_format(root)  # a clear error now rather than deep inside musdb
    if smoke:
        root = subset_root(root, nb_train, nb_valid, nb_test)
        print(f"smoke mode: the first {nb_train} train / {nb_valid} valid / {nb_test} test tracks, linked in {root}")
    return root, ""


def data_note(root, splits: dict) -> str:
    """One line saying which data a notebook's figures show (generated tracks, the first tracks of a root, or a
    whole root) and how many tracks per split: the report prints it under each figure."""
    root = Path(root)
    counts = ", ".join(f"{len(tracks)} {name}" for name, tracks in splits.items())
    if root.parent.name.startswith("demo-") and root.parent.parent == _scratch():
        return f"Data: generated tracks (hw2.synth), not MUSDB; {counts} tracks."
    links = [p for sub in ("train", "test") if (root / sub).is_dir() for p in (root / sub).iterdir()]
    if links and all(p.is_symlink() for p in links):
        source = links[0].resolve().parent.parent
        return f"Data: the first tracks of {source} (smoke mode); {counts} tracks."
    from hw2.tracks import describe_dataset
    return f"Data: {describe_dataset(root)} ({root}); {counts} tracks."


def open_splits(root, cache_dir: str = "", progress: bool = True) -> dict:
    """{"train": [...], "valid": [...], "test": [...]}: the cached tracks of musdb's train / valid split of the
    train subset and of the test subset (left out when the root has no test/ folder)."""
    root = Path(root)
    splits = {"train": open_cached(root, "train", "train", cache_dir, progress),
              "valid": open_cached(root, "train", "valid", cache_dir, progress)}
    if (root / "test").is_dir() and any((root / "test").iterdir()):
        splits["test"] = open_cached(root, "test", None, cache_dir, progress)
    return splits


def run_folder(name: str, smoke: bool = False) -> Path:
    """Where a notebook's run writes its checkpoints: a fresh temp folder in smoke mode; in Colab, Google Drive
    (mounted here) under MyDrive/hw2-runs/<name>, so a disconnect loses nothing; else runs/<name> of the repo."""
    if smoke:
        return Path(tempfile.mkdtemp(prefix=f"hw2-{name}-"))
    if in_colab():
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount("/content/drive")
        return Path(DRIVE_RUNS) / name
    return REPO / "runs" / name


def param_count(cfg) -> int:
    """Trainable parameters of the Open-Unmix model a `hw2.config.TrainConfig` describes."""
    from hw2.model import build_model, count_parameters

    return count_parameters(build_model(cfg.model_config()))


def config_table(configs: dict):
    """Named `hw2.config.TrainConfig`s side by side, as a pandas DataFrame: their parameter count (and whether it
    is under the assignment's 10M limit), then the model / data / optimiser fields that matter most and every
    other field on which they differ."""
    from dataclasses import asdict

    import pandas as pd

    from hw2.checkpoint import MAX_PARAMS

    table = pd.DataFrame({name: asdict(c) for name, c in configs.items()}).astype(str)
    key = {"target", "epochs", "seq_dur", "batch_size", "samples_per_track", "sampler", "mixing", "lr", "n_fft",
           "n_hop", "hidden_size", "nb_layers", "bandwidth", "nb_channels", "amp", "nb_workers"}
    differ = table[(table.nunique(axis=1) > 1) | table.index.isin(key)]
    counts = {name: param_count(c) for name, c in configs.items()}
    head = pd.DataFrame({name: {"parameters": f"{n:,}", "under 10M": str(n < MAX_PARAMS)}
                         for name, n in counts.items()})
    return pd.concat([head, differ])


def measure_speed(cfg, tracks, nb_steps: int = 3, warmup: int = 1) -> dict:
    """Time `nb_steps` training steps (after `warmup` untimed ones) of `cfg` on `cfg.device` with batches of
    `tracks`, as `hw2.train.train` runs them. Returns device, batch_size, seq_dur, batch_seconds (building one
    batch on the CPU), step_seconds (STFT, forward, backward, optimizer) and nb_workers."""
    import torch

    from hw2.model import build_model
    from hw2.checkpoint import resolve_device
    from hw2.train import make_sampler, precision, train_step

    device = resolve_device(cfg.device)
    sampler = make_sampler(cfg, tracks)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_config()).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dtype, scaler = precision(cfg.amp, device)
    nb_batches = sampler.nb_batches(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch_s, step_s = [], []
    for i in range(warmup + nb_steps):
        t0 = time.perf_counter()
        mix, tgt = sampler.batch(0, i % nb_batches)
        t1 = time.perf_counter()
        train_step(model, optimizer, scaler, mix, tgt, device, dtype)
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            batch_s.append(t1 - t0)
            step_s.append(t2 - t1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return {"device": name, "batch_size": cfg.batch_size, "seq_dur": cfg.seq_dur, "nb_steps": nb_steps,
            "batch_seconds": float(np.median(batch_s)), "step_seconds": float(np.median(step_s)),
            "nb_workers": cfg.nb_workers}


def epoch_estimate(speed: dict, nb_tracks: int, samples_per_track: int = 64, epochs: int = 1) -> dict:
    """Extrapolate `measure_speed` to an epoch of `nb_tracks x samples_per_track` excerpts (validation not
    included): with worker processes, batch building overlaps the GPU step, else it adds to it."""
    nb_steps = math.ceil(nb_tracks * samples_per_track / speed["batch_size"])
    if speed["nb_workers"] > 0:
        per_step = max(speed["step_seconds"], speed["batch_seconds"] / speed["nb_workers"])
    else:
        per_step = speed["step_seconds"] + speed["batch_seconds"]
    seconds = nb_steps * per_step
    return {"measured on": speed["device"], "steps per epoch": nb_steps, "seconds per step": round(per_step, 3),
            "minutes per epoch": round(seconds / 60, 2), f"hours for {epochs} epochs": round(seconds * epochs / 3600, 2),
            "excerpts per second": round(speed["batch_size"] / per_step, 1)}



# --------------------------------------------------------------------------------------- inference (04, inference)
def checkpoint_or_tiny(path, root, cache_dir: str = "", epochs: int = 1) -> Path:
    """`path` when that checkpoint exists; else a tiny vocals model (hw2.config.PRESETS["tiny"]: 16 hidden units, one
    LSTM layer, 1024-point STFT) trained for `epochs` short epochs on the first 8 train / 2 valid tracks of `root` into a fresh temp
    folder, and the path of its best.pt: the notebook still runs top to bottom, with poor separations (the
    message says so). cache_dir: the decoded cache, as `prepare_root` returns it ("" = the default)."""
    from hw2.config import preset_config
    from hw2.train import train

    path = Path(path)
    if path.is_file():
        return path
    print(f"{path} does not exist: training a tiny model for {epochs} epoch(s) instead, so that the notebook runs; "
          "its separations are poor. Train a real one (notebook 03) or fetch checkpoints/vocals.pt.")
    out = Path(tempfile.mkdtemp(prefix="hw2-tiny-")) / "run"
    cfg = preset_config("tiny", musdb_root=str(subset_root(root, nb_train=8, nb_valid=2, nb_test=0)), out=str(out),
                        cache_dir=cache_dir, epochs=epochs, quiet=True)
    train(cfg, log=lambda _: None)
    return out / "best.pt"


def infer_args(root, checkpoint, subset: str = "train", split: str | None = "valid", name: str = "notebook",
               smoke: bool = False, phase=("mixture", "griffinlim", "griffinlim-mix", "wiener"),
               references: bool = True, max_tracks: int = 0, samples: int = 1, gl_iters: int = 32,
               out=None, device: str = "auto", jobs: int = 1):
    """The notebooks' `hw2.infer.arguments`: their phase methods, references and one listening sample by default.
    out: the results folder; None = a fresh temp folder in smoke mode, else the repository's results/ (the table
    lands in `<out>/<name>.json` and `.md`)."""
    from hw2.infer import arguments

    if out is None:
        out = tempfile.mkdtemp(prefix=f"hw2-{name}-") if smoke else REPO / "results"
    return arguments(root, [checkpoint], subset, split, name, phase, references, max_tracks, samples, gl_iters, out,
                     device, jobs)


def track_audio(track) -> tuple[np.ndarray, dict]:
    """(mixture, {"vocals": ..., "accompaniment": ...}) of a cached track (`hw2.cache.CachedTrack`), float32
    arrays (nb_timesteps, nb_channels) as `hw2.separate` and `hw2.evaluate.score_track` take them; the
    accompaniment is the sum of drums, bass and other (what `hw2/infer.py` scores against)."""
    return track.stem("mixture").T, {t: track.target(t).T for t in ("vocals", "accompaniment")}


def checkpoint_summary(path):
    """What a checkpoint holds, as a pandas DataFrame (one "value" column): epoch, validation loss, parameter
    count, device and hw2 version of the run, then every field of the `hw2.config.TrainConfig` saved in it (the
    model is rebuilt from that config)."""
    import pandas as pd

    from hw2.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    head = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), "valid_loss": ckpt.get("valid_loss"),
            "parameters": f"{ckpt['nb_params']:,}" if ckpt.get("nb_params") is not None else None,
            "trained on": ckpt.get("device"), "hw2_version": ckpt.get("hw2_version")}
    rows = {**head, **{f"config.{k}": v for k, v in ckpt["config"].items()}}
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def medians_table(medians: dict, metrics=("SDR", "SIR", "ISR", "SAR")):
    """Per-track scores side by side, as a pandas DataFrame: medians is row label (say, a phase method) ->
    `hw2.evaluate.track_medians(...)` ({target: {metric: dB}}); columns (target, metric), rounded to 0.01 dB."""
    import pandas as pd

    data = {label: {(t, m): per[t][m] for t in per for m in metrics} for label, per in medians.items()}
    table = pd.DataFrame.from_dict(data, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["target", "metric"])
    return table.astype(float).round(2)


# ------------------------------------------------------------------------------------------- the set-up cell
# The first code cell of every notebook. It cannot import hw2 (it is what puts hw2 on the path), so each notebook
# holds a copy; this is the one to edit: `python -m hw2.notebook` writes it into every notebook, and
# tests/test_notebooks.py fails while a notebook's copy differs.
SETUP_CELL = '''\
# Colab set-up; on any other machine this cell does nothing. Google Drive is mounted (MUSDB_ROOT and the run
# folders may live there); the code is your copy of the repository on Drive at REPO_DIR (upload the repository
# folder there) or, if you set REPO_URL, a clone of that git repository, brought up to date on every run.
# (Written by `python -m hw2.notebook` from hw2/notebook.py's SETUP_CELL: edit it there.)
REPO_DIR = "/content/drive/MyDrive/hw2"
REPO_URL = ""
import os, subprocess, sys
def _run(*cmd):  # stop "Run all" with the command's own error message
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"`{' '.join(cmd[:4])}` failed: {(r.stderr or r.stdout).strip()[-800:]}")
if "google.colab" in sys.modules:
    from google.colab import drive
    drive.mount("/content/drive")
    if REPO_URL:
        REPO_DIR = "/content/hw2"
        if not os.path.isdir(REPO_DIR):
            _run("git", "clone", "-q", REPO_URL, REPO_DIR)
        else:  # cloned by an earlier run of this cell
            r = subprocess.run(["git", "-C", REPO_DIR, "pull", "-q", "--ff-only"], capture_output=True, text=True)
            why = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no message"]
            print(f"{REPO_DIR}: updated from its git repository" if r.returncode == 0 else
                  f"{REPO_DIR}: kept as it is (git pull failed: {why[0]}); delete it to clone REPO_URL afresh")
    if not os.path.isfile(os.path.join(REPO_DIR, "hw2", "__init__.py")):
        raise FileNotFoundError(f"no hw2 repository in {REPO_DIR}: upload the repository folder to that place "
                                "on Google Drive (or set REPO_DIR to where it is), or set REPO_URL to its git URL")
    os.chdir(REPO_DIR)
    sys.path.insert(0, REPO_DIR)
    # the TA's inference requirements plus what the notebooks draw with (both ship with Colab: no-ops there)
    _run(sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt", "matplotlib", "ipywidgets")'''


def write_setup_cells(folder=REPO / "notebooks") -> list[Path]:
    """Make SETUP_CELL the first code cell of every notebook in `folder`; returns the notebooks it changed."""
    import json

    changed = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        lines = SETUP_CELL.split("\n")
        source = [line + "\n" for line in lines[:-1]] + [lines[-1]]
        if cell["source"] != source:
            cell["source"] = source
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for p in write_setup_cells():
        print(f"set-up cell written into {p}")
