"""Training: a tiny model learns, resuming is exact, checkpoints survive a crash while saving, bad inputs are one
clear error."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from hw2 import Hw2Error
from hw2.train import (CHECKPOINT_FORMAT, MAX_PARAMS, TrainConfig, atomic_torch_save, config_from_dict,
                       load_checkpoint, model_from_checkpoint, train)


def tiny(root, out, cache, **kw) -> TrainConfig:
    """A model and data small enough for an epoch to take a fraction of a second on one CPU thread."""
    base = dict(musdb_root=str(root), out=str(out), cache_dir=str(cache), epochs=2, milestones=(2,),
                hidden_size=32, nb_layers=1, n_fft=1024, n_hop=256, seq_dur=1.0, batch_size=4, samples_per_track=4,
                lr=3e-3, device="cpu", quiet=True)
    base.update(kw)
    return TrainConfig(**base)


def history(run) -> list[dict]:
    return json.loads((Path(run) / "history.json").read_text())


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------------ learning
def test_tiny_model_learns(wav_root, wav_cache, tmp_path):
    logs = []
    cfg = tiny(wav_root, tmp_path / "run", wav_cache, epochs=15, milestones=(10,))
    summary = train(cfg, log=logs.append)
    assert summary["stopped"] == "done" and summary["epochs_done"] == 15
    h = history(tmp_path / "run")
    assert [e["epoch"] for e in h] == list(range(1, 16))
    losses = [e["train_loss"] for e in h]
    assert all(math.isfinite(x) for x in losses + [e["valid_loss"] for e in h])
    final = sum(losses[-3:]) / 3
    assert final < 0.5 * losses[0], f"training loss went {losses[0]:.4g} -> {final:.4g}: {losses}"
    # the run folder holds what the docs say
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "history.json", "last.pt", "best.pt", "epoch010.pt"}
    assert not leftovers(run)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == summary["best_epoch"] and best["valid_loss"] == pytest.approx(summary["best_valid_loss"])
    assert min(e["valid_loss"] for e in h) == pytest.approx(summary["best_valid_loss"])
    model, saved = model_from_checkpoint(best)
    assert saved == cfg and model.cfg.hidden_size == 32
    assert "4 train / 2 valid tracks" in logs[0] and "under the 10M limit" in logs[0]


# -------------------------------------------------------------------------------------------------------- resume
def test_resume_equals_uninterrupted(wav_root, wav_cache, tmp_path):
    """A: 3 epochs straight. B: 1 epoch, then stopped by the time limit one step into epoch 2, then finished.
    Two LSTM layers, so dropout draws random numbers and the RNG state has to be restored too."""
    cfg = dict(epochs=3, nb_layers=2, milestones=(2,))
    a = train(tiny(wav_root, tmp_path / "A", wav_cache, **cfg), log=lambda m: None)
    assert a["stopped"] == "done"

    logs = []
    b = tiny(wav_root, tmp_path / "B", wav_cache, **cfg)
    assert train(replace(b, epochs=1), log=logs.append)["epochs_done"] == 1
    stopped = train(replace(b, max_minutes=1e-9), log=logs.append)  # stops after the first step it takes
    assert stopped["stopped"] == "time-limit" and stopped["epochs_done"] == 1
    state = load_checkpoint(tmp_path / "B" / "last.pt")["state"]
    assert (state["epoch"], state["step"]) == (1, 1)
    assert train(b, log=logs.append)["stopped"] == "done"
    assert sum("resuming" in m for m in logs) == 2 and any("epoch 2, step 1" in m for m in logs)

    for name in ("last.pt", "best.pt", "epoch002.pt"):
        wa = load_checkpoint(tmp_path / "A" / name)["model"]
        wb = load_checkpoint(tmp_path / "B" / name)["model"]
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=0, msg=f"{name}: {k}")
    ha, hb = history(tmp_path / "A"), history(tmp_path / "B")
    assert len(ha) == len(hb) == 3
    for ea, eb in zip(ha, hb):
        for key in ("epoch", "lr", "best"):
            assert ea[key] == eb[key]
        for key in ("train_loss", "valid_loss"):
            assert eb[key] == pytest.approx(ea[key], rel=1e-6), (key, ha, hb)
    sa = load_checkpoint(tmp_path / "A" / "last.pt")
    sb = load_checkpoint(tmp_path / "B" / "last.pt")
    assert sa["state"]["best_epoch"] == sb["state"]["best_epoch"]
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    for k, v in sa["optimizer"]["state"].items():
        torch.testing.assert_close(sb["optimizer"]["state"][k]["exp_avg"], v["exp_avg"], atol=1e-6, rtol=0)
    # a finished run run again does nothing more
    again = train(b, log=lambda m: None)
    assert again["epochs_done"] == 3 and len(history(tmp_path / "B")) == 3


def test_resume_with_more_epochs_continues(wav_root, wav_cache, tmp_path):
    cfg = tiny(wav_root, tmp_path / "run", wav_cache, epochs=1)
    train(cfg, log=lambda m: None)
    summary = train(replace(cfg, epochs=2), log=lambda m: None)
    assert summary["epochs_done"] == 2 and [e["epoch"] for e in history(tmp_path / "run")] == [1, 2]


# ------------------------------------------------------------------------------------------------ crash safety
class Killed(BaseException):
    """Stands for the process dying in the middle of torch.save."""


def partial_save(obj, f, *args, **kwargs):
    with open(f, "wb") as fh:
        fh.write(b"PK\x03\x04 half a checkpoint")
    raise Killed()


def test_crash_while_saving_keeps_previous_checkpoint(wav_root, wav_cache, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = tiny(wav_root, run, wav_cache, epochs=1)
    train(cfg, log=lambda m: None)
    before = (run / "last.pt").read_bytes()

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(Killed):
        train(replace(cfg, epochs=2), log=lambda m: None)  # dies at its first save, after epoch 2
    monkeypatch.undo()

    assert (run / "last.pt").read_bytes() == before
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["state"]["epoch"] == 1
    load_checkpoint(run / "best.pt")
    assert not leftovers(run)
    # and the run resumes from it
    assert train(replace(cfg, epochs=2), log=lambda m: None)["epochs_done"] == 2


def test_atomic_save_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": {}, "v": torch.arange(3)}, path)
    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(Killed):
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": {}, "v": torch.arange(5)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["v"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


SAVER = textwrap.dedent("""
    import sys, torch
    from hw2.train import CHECKPOINT_FORMAT, atomic_torch_save
    path, w = sys.argv[1], torch.randn(4_000_000)
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": {}, "i": 0, "w": w}, path)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": {}, "i": i, "w": w}, path)
""")


def test_sigkill_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """A real process killed (SIGKILL, no cleanup) while it rewrites a 16 MB checkpoint in a loop."""
    path = tmp_path / "last.pt"
    for delay in (0.3, 0.75):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        ckpt = load_checkpoint(path)
        assert ckpt["w"].shape == (4_000_000,) and ckpt["i"] >= 0


# -------------------------------------------------------------------------------------------------- bad inputs
def test_run_folder_with_another_config(wav_root, wav_cache, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny(wav_root, run, wav_cache)
    (run / "config.json").write_text(json.dumps(asdict(cfg)))
    with pytest.raises(Hw2Error, match=r"different config \(hidden_size: 32 there, 16 now\)"):
        train(replace(cfg, hidden_size=16), log=lambda m: None)
    with pytest.raises(Hw2Error, match=r"different config \(sampler"):
        train(replace(cfg, sampler="exhaustive"), log=lambda m: None)
    (run / "config.json").write_text("{not json")
    with pytest.raises(Hw2Error, match="config.json: unreadable"):
        train(cfg, log=lambda m: None)
    (run / "config.json").unlink()
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(Hw2Error, match="holds checkpoints but no config.json"):
        train(cfg, log=lambda m: None)


def test_bad_train_settings(wav_root, wav_cache, tmp_path):
    cfg = tiny(wav_root, tmp_path / "run", wav_cache)
    for bad, pattern in [(dict(musdb_root=""), "no --musdb-root"), (dict(epochs=0), "--epochs must be at least 1"),
                         (dict(batch_size=0), "--batch-size must be"),
                         (dict(gain_low=2.0, gain_high=1.0), "gain range"),
                         (dict(musdb_root=str(tmp_path / "nope")), "nope: no such folder"),
                         (dict(seq_dur=30.0), "shorter than the 30 s excerpt")]:
        with pytest.raises(Hw2Error, match=pattern):
            train(replace(cfg, **bad), log=lambda m: None)
    if not torch.cuda.is_available():
        with pytest.raises(Hw2Error, match="no CUDA GPU"):
            train(replace(cfg, device="cuda"), log=lambda m: None)


def test_load_checkpoint_bad_files(tmp_path):
    with pytest.raises(Hw2Error, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(Hw2Error, match="garbage.pt: not a readable checkpoint"):
        load_checkpoint(garbage)
    good = tmp_path / "good.pt"
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": {}, "w": torch.randn(100_000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(Hw2Error, match="truncated.pt: not a readable checkpoint"):
        load_checkpoint(truncated)
    for i, obj in enumerate([{"state_dict": {"w": torch.zeros(3)}}, torch.zeros(3), [1, 2],
                             {"format": "something-else", "config": {}}, {"format": CHECKPOINT_FORMAT}]):
        other = tmp_path / f"other{i}.pt"
        torch.save(obj, other)
        with pytest.raises(Hw2Error, match=f"other{i}.pt: not an hw2 Open-Unmix checkpoint"):
            load_checkpoint(other)


def test_checkpoint_with_wrong_weights_or_config(tmp_path):
    cfg = TrainConfig(hidden_size=16, nb_layers=1, n_fft=512, n_hop=128)
    with pytest.raises(Hw2Error, match="do not fit the model"):
        model_from_checkpoint({"config": asdict(cfg), "model": {"fc1.weight": torch.zeros(2, 2)}}, "x.pt")
    with pytest.raises(Hw2Error, match="unknown fields"):
        config_from_dict({**asdict(cfg), "dropout": 0.5})
    assert config_from_dict(json.loads(json.dumps(asdict(cfg)))) == cfg


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hw2.train", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("args,words", [(["--musdb-root", "x", "--sampler", "foo"], "foo"),
                                        (["--out", "run"], "--musdb-root"),
                                        (["--musdb-root", "no/such/root", "--out", "run"], "no such folder"),
                                        (["--epochs", "ten"], "ten")])
def test_train_cli_bad_input(tmp_path, args, words):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------- integration
@pytest.mark.integration
def test_one_tiny_epoch_on_real_musdb(musdb_root, real_cache_dir, tmp_path):
    logs = []
    cfg = tiny(musdb_root, tmp_path / "run", real_cache_dir, epochs=1, samples_per_track=1, batch_size=8,
               hidden_size=16)
    summary = train(cfg, log=logs.append)
    assert summary["stopped"] == "done" and summary["epochs_done"] == 1
    assert "80 train / 14 valid tracks; 10 batches an epoch" in logs[0]
    (entry,) = history(tmp_path / "run")
    assert math.isfinite(entry["train_loss"]) and math.isfinite(entry["valid_loss"]) and entry["best"]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["nb_params"] < MAX_PARAMS and ckpt["state"]["epoch"] == 1


def test_bad_settings_and_run_folders_are_refused_before_any_work(wav_root, tmp_path, monkeypatch):
    """--lr nan, a hop above the window, an --out that cannot be written, and a run folder with best.pt but no
    last.pt: one error before any decoding (open_cached is never reached); stale temporaries are cleared."""
    import hw2.train
    monkeypatch.setattr(hw2.train, "open_cached", lambda *a, **k: pytest.fail("decoding started"))
    cfg = tiny(wav_root, tmp_path / "run", tmp_path / "cache")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run folder should go")
    for bad, pattern in [(dict(lr=float("nan")), "--lr must be a positive number, got nan"),
                         (dict(n_fft=256, n_hop=512), "--n-hop 512 exceeds --n-fft 256"),
                         (dict(out=str(blocker / "run")), "cannot write the run folder")]:
        with pytest.raises(Hw2Error, match=pattern):
            train(replace(cfg, **bad), log=lambda m: None)
    assert not (tmp_path / "run").exists()

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(asdict(cfg)))
    (run / "best.pt").write_bytes(b"the best weights so far")
    stale = run / ".last.pt.999999999.tmp.pt"  # a save killed mid-write (no such pid)
    stale.write_bytes(b"half")
    with pytest.raises(Hw2Error, match="holds best.pt but no last.pt"):
        train(cfg, log=lambda m: None)
    assert not stale.exists() and (run / "best.pt").read_bytes() == b"the best weights so far"
