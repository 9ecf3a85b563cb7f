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

import numpy as np
import pytest
import torch

from hw2 import RATE, Hw2Error
from hw2.cache import open_cached
from hw2.model import OpenUnmix
from hw2.separate import Separator
from hw2.synth import VALID_NAMES, make_stems, write_track
from hw2.checkpoint import CHECKPOINT_FORMAT, MAX_PARAMS, atomic_torch_save, load_checkpoint, model_from_checkpoint
from hw2.config import TrainConfig, config_from_dict
from hw2.tracks import open_tracks
from hw2.train import _chunks, input_statistics, precision, train, validation_loss


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


def assert_same_weights(run_a, run_b):
    wa, wb = (load_checkpoint(Path(run) / "last.pt")["model"] for run in (run_a, run_b))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=0, msg=k)


def test_ctrl_c_saves_the_sampler_position_and_resumes_exactly(wav_root, wav_cache, tmp_path, monkeypatch):
    """A real SIGINT in the middle of step 3 lets that step finish, saves last.pt at (epoch 1, step 3) and says so;
    a Ctrl-C during the epoch's validation saves the epoch's end. Resumed twice, the run ends with the weights of
    a run never interrupted (4 batches an epoch)."""
    import hw2.train as train_module

    cfg = dict(epochs=2, nb_layers=2, milestones=(2,))
    train(tiny(wav_root, tmp_path / "A", wav_cache, **cfg), log=lambda m: None)
    b = tiny(wav_root, tmp_path / "B", wav_cache, **cfg)
    real_step, calls = train_module.train_step, []

    def step_then_sigint(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the step runs
        return real_step(*args, **kw)

    monkeypatch.setattr(train_module, "train_step", step_then_sigint)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted in epoch 1 at step 3; saved .*last.pt: run the same"):
        train(b, log=lambda m: None)
    monkeypatch.undo()
    assert len(calls) == 3
    assert load_checkpoint(tmp_path / "B" / "last.pt")["state"]["step"] == 3

    def interrupted_validation(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "validation_loss", interrupted_validation)
    with pytest.raises(KeyboardInterrupt, match="interrupted in epoch 1 at step 4; saved"):
        train(b, log=lambda m: None)
    monkeypatch.undo()
    logs = []
    assert train(b, log=logs.append)["stopped"] == "done"
    assert any("resuming" in m and "epoch 1, step 4" in m for m in logs)
    assert [e["epoch"] for e in history(tmp_path / "B")] == [1, 2]
    assert_same_weights(tmp_path / "A", tmp_path / "B")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # train() put Python's handler back


def test_ctrl_c_before_anything_was_saved_says_so(wav_root, wav_cache, tmp_path, monkeypatch):
    import hw2.train as train_module

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "input_statistics", interrupted)  # the statistics pass of a new run
    with pytest.raises(KeyboardInterrupt, match="before training started: nothing was saved"):
        train(tiny(wav_root, tmp_path / "run", wav_cache), log=lambda m: None)
    assert not (tmp_path / "run" / "last.pt").exists()
    # the command line says the same, with exit status 130 and no traceback
    from hw2 import run_cli
    assert run_cli(lambda: train(tiny(wav_root, tmp_path / "run", wav_cache), log=lambda m: None)) == 130


def test_a_second_ctrl_c_in_a_step_saves_nothing_and_names_the_latest_save(wav_root, wav_cache, tmp_path,
                                                                             monkeypatch):
    """Two Ctrl-C in one step (an impatient user): the step is torn, so nothing is saved, and the line names the
    state last.pt holds from its latest save (epoch 1's end), not the one the run started from."""
    import hw2.train as train_module

    real_step, calls = train_module.train_step, []

    def step_then_two_sigints(*args, **kw):
        calls.append(1)
        if len(calls) == 6:  # epoch 2, step 2 (4 batches an epoch)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kw)

    monkeypatch.setattr(train_module, "train_step", step_then_two_sigints)
    with pytest.raises(KeyboardInterrupt, match=r"nothing new to save; .*last.pt holds epoch 2, step 0 from its "
                                                r"latest save"):
        train(tiny(wav_root, tmp_path / "run", wav_cache), log=lambda m: None)
    state = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert (state["epoch"], state["step"]) == (1, 0)


def test_time_limit_stops_within_one_step_and_a_finished_run_says_so(wav_root, wav_cache, tmp_path, monkeypatch):
    """A fake clock that moves 10 s a step: with --max-minutes 0.58 (35 s) the run stops after step 4, the last
    of epoch 1 (it used to go on through validation), saved there; resumed, it finishes; run again, it says it
    is finished instead of resuming."""
    import hw2.loop
    import hw2.train as train_module

    now = [0.0]
    real_step = train_module.train_step

    def ten_second_step(*args, **kw):
        now[0] += 10.0
        return real_step(*args, **kw)

    monkeypatch.setattr(hw2.loop, "clock", lambda: now[0])
    monkeypatch.setattr(train_module, "train_step", ten_second_step)
    logs = []
    cfg = tiny(wav_root, tmp_path / "run", wav_cache)
    stopped = train(replace(cfg, max_minutes=35 / 60), log=logs.append)
    assert stopped["stopped"] == "time-limit" and "in epoch 1 at step 4; saved" in logs[-1]
    state = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert (state["epoch"], state["step"]) == (0, 4) and not (tmp_path / "run" / "history.json").exists()
    monkeypatch.undo()
    assert train(cfg, log=logs.append)["epochs_done"] == 2
    logs.clear()
    again = train(cfg, log=logs.append)
    assert (again["epochs_done"], again["stopped"]) == (2, "done") and len(history(tmp_path / "run")) == 2
    assert len(logs) == 1 and "finished (2 epochs" in logs[0] and "resuming" not in logs[0]


def test_a_time_limit_line_in_a_log_file_starts_its_own_line(wav_root, wav_cache, tmp_path):
    """Output to a file (stdout and stderr together, as `> log 2>&1` gives): the progress bar redraws its line with
    carriage returns, so the time-limit and epoch lines must come after a newline, not glued to the bar's text."""
    import contextlib
    import io

    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train(tiny(wav_root, tmp_path / "a", wav_cache, epochs=1, quiet=False), log=print)
        train(tiny(wav_root, tmp_path / "b", wav_cache, quiet=False, max_minutes=1e-9), log=print)
    lines = log.getvalue().split("\n")
    ours = [line for line in lines if "time limit of" in line or line.lstrip("\r ").startswith("epoch 1:")]
    assert len(ours) == 2, log.getvalue()
    assert all(line.startswith(("time limit of", "epoch 1:")) for line in ours), ours


def test_resume_with_more_epochs_continues(wav_root, wav_cache, tmp_path):
    cfg = tiny(wav_root, tmp_path / "run", wav_cache, epochs=1)
    train(cfg, log=lambda m: None)
    summary = train(replace(cfg, epochs=2), log=lambda m: None)
    assert summary["epochs_done"] == 2 and [e["epoch"] for e in history(tmp_path / "run")] == [1, 2]
    # the folder's config.json is the extended run's, so a card reproduces the 2 epochs, not the first command's 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 2


def test_mixed_precision_on_cpu_resumes_exactly(wav_root, wav_cache, tmp_path):
    """--amp on runs the model under bfloat16 autocast on the CPU: the code path the CUDA float16 runs take
    (autocast, scaler calls, scaler state in last.pt), so CI executes it. Interrupted mid-epoch and resumed, it
    ends with exactly the weights of an uninterrupted run; and its weights differ from a float32 run's."""
    a = train(tiny(wav_root, tmp_path / "A", wav_cache, amp="on"), log=lambda m: None)
    logs = []
    b = tiny(wav_root, tmp_path / "B", wav_cache, amp="on")
    assert train(replace(b, max_minutes=1e-9), log=logs.append)["stopped"] == "time-limit"
    assert train(b, log=logs.append) == {**a, "run": str(tmp_path / "B")}
    assert "torch.bfloat16 autocast" in logs[0] and any("epoch 1, step 1" in m for m in logs)
    fp32 = train(tiny(wav_root, tmp_path / "C", wav_cache, amp="off"), log=lambda m: None)
    wa, wb, wc = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in "ABC")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert any(not torch.equal(wa[k], wc[k]) for k in wa) and fp32["best_valid_loss"] != a["best_valid_loss"]


def test_amp_setting_and_older_configs():
    cpu = torch.device("cpu")
    assert precision("auto", cpu)[0] is None and precision("off", cpu)[0] is None
    dtype, scaler = precision("on", cpu)
    assert dtype == torch.bfloat16 and not scaler.is_enabled()  # bfloat16 keeps float32's range: no scaling
    with pytest.raises(Hw2Error, match="unknown --amp 'fast'"):
        precision("fast", cpu)
    # `amp` was a bool: the shipped checkpoints and older run folders still load and resume
    cfg = tiny("root", "run", "cache")
    assert config_from_dict({**asdict(cfg), "amp": True}).amp == "auto"
    assert config_from_dict({**asdict(cfg), "amp": False}).amp == "off"


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
    from hw2.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save
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
    with pytest.raises(Hw2Error, match=r"holds an Open-Unmix run with a different config \(hidden_size: 32 there, "
                                       r"16 now\)"):
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


def test_a_folder_or_another_file_as_checkpoint_says_what_it_is(tmp_path):
    """A run folder is not "no such checkpoint": the line names the .pt files in it. A file that is no checkpoint
    at all (README.md) is not told to be restored with git checkout: that would not make it one."""
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(Hw2Error, match=r"run: a folder, not a checkpoint file; .* holds none") as e:
        load_checkpoint(run)
    assert "no such" not in str(e.value)
    for name in ("last.pt", "best.pt", "epoch002.pt"):
        (run / name).write_bytes(b"x")
    with pytest.raises(Hw2Error, match=r"run: a folder, not a checkpoint file; pass --checkpoint one of the .pt "
                                       r"files in it \(best.pt, epoch002.pt, last.pt\), for example .*run/best.pt"):
        load_checkpoint(run)
    readme = Path(__file__).resolve().parents[1] / "README.md"
    with pytest.raises(Hw2Error, match=r"README.md: not a checkpoint \(torch.save writes a zip archive") as e:
        load_checkpoint(readme)
    assert "git checkout" not in str(e.value)


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
    nb_train = len(open_tracks(musdb_root, "train", "train"))  # 80 in the 7-s preview, 86 in MUSDB18
    assert f"{nb_train} train / 14 valid tracks; {math.ceil(nb_train / 8)} batches an epoch" in logs[0]
    (entry,) = history(tmp_path / "run")
    assert math.isfinite(entry["train_loss"]) and math.isfinite(entry["valid_loss"]) and entry["best"]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["nb_params"] < MAX_PARAMS and ckpt["state"]["epoch"] == 1


# ------------------------------------------------------------------------------------------ full-length tracks
# Whole tracks are cut into chunks of --valid-chunk-dur for the input statistics and the validation loss, and into
# blocks of frames by the Separator. These lengths hit every boundary case of that chunking at the default STFT
# (n_fft 4096: a chunk shorter than n_fft // 2 = 2048 samples cannot be reflect-padded) with 2-s chunks, so the
# tracks stay seconds long; test_minutes_long_tracks and the CLI test below run the default 30-s chunks.
CHUNK_DUR, N_FFT = 2.0, 4096
CHUNK = int(CHUNK_DUR * RATE)
LENGTHS = {"2 chunks": 2 * CHUNK, "2 chunks + 1000 (the reported crash)": 2 * CHUNK + 1000,
           "2 chunks + n_fft//2 - 1": 2 * CHUNK + N_FFT // 2 - 1, "2 chunks + n_fft//2 + 1": 2 * CHUNK + N_FFT // 2 + 1,
           "2 chunks + n_fft - 1": 2 * CHUNK + N_FFT - 1, "2 chunks + n_fft": 2 * CHUNK + N_FFT,
           "shorter than a chunk": CHUNK - 1000}
VALID_LENGTHS = [2 * CHUNK + 1000, CHUNK - 1000]


def write_root(root: Path, train_lengths, valid_lengths, seed=0) -> Path:
    """A MUSDB18-HQ root whose tracks have exactly these lengths in samples (valid ones named as musdb's)."""
    names = [(f"Synth {i:02d} - Train", n) for i, n in enumerate(train_lengths)]
    names += [(VALID_NAMES[i], n) for i, n in enumerate(valid_lengths)]
    for i, (name, n) in enumerate(names):
        write_track(make_stems(seed * 100 + i, (n + 1) / RATE)[:, :n], root / "train", name, "wav")
    return root


@pytest.fixture(scope="module")
def edge_tracks(tmp_path_factory):
    """{length: cached track} of every boundary length, and the root and cache they come from."""
    base = tmp_path_factory.mktemp("edge")
    root = write_root(base / "musdb", list(LENGTHS.values()), VALID_LENGTHS)
    tracks = open_cached(root, "train", None, base / "cache", progress=False)
    by_length = {t.nb_samples: t for t in tracks}
    assert set(LENGTHS.values()) <= set(by_length)
    return by_length, root, base / "cache"


def edge_model(seed=0) -> OpenUnmix:
    torch.manual_seed(seed)
    return OpenUnmix(tiny("", "", "", n_fft=N_FFT, n_hop=1024, hidden_size=16).model_config()).eval()


@pytest.mark.parametrize("name", list(LENGTHS))
def test_chunks_cover_every_length(name):
    n = LENGTHS[name]
    signal = torch.arange(2 * n, dtype=torch.float32).reshape(2, n).numpy()
    pieces = [c for (c,) in _chunks([signal], RATE, CHUNK_DUR, N_FFT)]
    assert torch.equal(torch.cat(pieces, -1)[0], torch.from_numpy(signal))  # every sample once, in order
    assert all(c.shape[-1] > N_FFT // 2 for c in pieces)  # each one can be reflect-padded by the STFT
    assert all(c.shape[-1] >= CHUNK for c in pieces[:-1]) or len(pieces) == 1


@pytest.mark.parametrize("name", list(LENGTHS))
def test_statistics_validation_and_separation_on_every_length(edge_tracks, name):
    track = edge_tracks[0][LENGTHS[name]]
    model = edge_model()
    # statistics and validation loss in 2-s chunks: defined, and close to one pass over the whole track. The
    # chunks change only the frames at each chunk edge, where the STFT pads by reflection; measured on these
    # tracks: mean within 1.2 %, std within 5 % (relative L2 over bins), loss within 0.6 %
    mean, std = input_statistics(model, [track.stem("mixture")], "cpu", CHUNK_DUR)
    mean1, std1 = input_statistics(model, [track.stem("mixture")], "cpu", 0)
    assert torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()
    assert (mean - mean1).norm() < 0.05 * mean1.norm() and (std - std1).norm() < 0.15 * std1.norm()
    model.set_input_stats(mean, std)
    loss = validation_loss(model, [track], "vocals", "cpu", CHUNK_DUR)
    loss1 = validation_loss(model, [track], "vocals", "cpu", 0)
    assert math.isfinite(loss) and loss > 0 and loss == pytest.approx(loss1, rel=0.05)
    # the Separator in blocks of 2 s, with context reaching over the whole track: exactly the one-pass result,
    # so every block is stitched back in its place
    mix = track.stem("mixture").T
    one = Separator(model, chunk_dur=1000.0).separate(mix, ("mixture",))
    blocked = Separator(model, chunk_dur=CHUNK_DUR, context_dur=1000.0).separate(mix, ("mixture",))
    for method in one:
        for target, est in one[method].items():
            assert est.shape == mix.shape and np.isfinite(est).all(), (method, target)
            np.testing.assert_allclose(blocked[method][target], est, atol=1e-5 * np.abs(est).max() + 1e-9)
    # and with the default 5-s context on 0.5-s blocks: exact length, finite
    short = Separator(model, chunk_dur=0.5).separate(mix, ("mixture",))["mixture"]
    assert all(est.shape == mix.shape and np.isfinite(est).all() for est in short.values())


def test_training_on_every_boundary_length(edge_tracks, tmp_path):
    """Statistics over the 7 train tracks, then validation over the 2 valid ones, in 2-s chunks at n_fft 4096."""
    _, root, cache = edge_tracks
    logs = []
    cfg = tiny(root, tmp_path / "run", cache, epochs=1, n_fft=N_FFT, n_hop=1024, hidden_size=16,
               valid_chunk_dur=CHUNK_DUR, samples_per_track=1)
    assert train(cfg, log=logs.append)["stopped"] == "done"
    assert f"{len(LENGTHS)} train / {len(VALID_LENGTHS)} valid tracks" in logs[0]
    assert math.isfinite(history(tmp_path / "run")[0]["valid_loss"])


@pytest.fixture(scope="module")
def long_root(tmp_path_factory):
    """Full-length tracks: 2 train tracks of 60 s and 60 s + 2049 samples, one valid track of 60 s + 1000 samples
    (at the default 30-s chunks, the reported crash: a 1000-sample tail)."""
    base = tmp_path_factory.mktemp("long")
    return write_root(base / "musdb", [60 * RATE, 60 * RATE + 2049], [60 * RATE + 1000], seed=7), base / "cache"


def test_minutes_long_tracks(long_root):
    root, cache = long_root
    tracks = open_cached(root, "train", None, cache, progress=False)
    assert sorted(t.nb_samples for t in tracks) == [60 * RATE, 60 * RATE + 1000, 60 * RATE + 2049]
    model = edge_model()
    mean, std = input_statistics(model, [t.stem("mixture") for t in tracks], "cpu")  # the default 30-s chunks
    assert torch.isfinite(mean).all() and (std > 0).all()
    model.set_input_stats(mean, std)
    assert math.isfinite(validation_loss(model, tracks, "vocals", "cpu", 30.0))
    valid = next(t for t in tracks if t.nb_samples == 60 * RATE + 1000)
    mix = valid.stem("mixture").T
    est = Separator(model).separate(mix, ("mixture",))["mixture"]  # 30-s blocks with 5 s of context
    assert all(e.shape == mix.shape and np.isfinite(e).all() for e in est.values())


def cli(*args, cwd):
    repo = str(Path(__file__).resolve().parents[1])  # this checkout's hw2, whatever `pip install -e` points at
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "hw2.train", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stdout


def test_cli_full_length_run_is_interrupted_resumes_and_finishes(long_root, tmp_path):
    """The reported set-up end to end at the default STFT and 30-s validation chunks: a new run stopped by the
    time limit after its first step, resumed to finish epoch 1, extended to epoch 2; its weights equal those of
    a run never interrupted."""
    root, cache = long_root
    flags = ["--musdb-root", str(root), "--cache-dir", str(cache), "--hidden-size", "16", "--nb-layers", "1",
             "--seq-dur", "1", "--samples-per-track", "2", "--batch-size", "2", "--device", "cpu", "--quiet"]
    first, _ = cli(*flags, "--out", "B", "--epochs", "1", "--max-minutes", "1e-9", cwd=tmp_path)
    assert first["stopped"] == "time-limit" and first["epochs_done"] == 0
    second, out = cli(*flags, "--out", "B", "--epochs", "1", cwd=tmp_path)
    assert second["stopped"] == "done" and second["epochs_done"] == 1 and "at epoch 1, step 1" in out
    third, out = cli(*flags, "--out", "B", "--epochs", "2", cwd=tmp_path)
    assert third["stopped"] == "done" and third["epochs_done"] == 2 and "at epoch 2, step 0" in out
    straight, _ = cli(*flags, "--out", "A", "--epochs", "2", cwd=tmp_path)
    assert straight["best_valid_loss"] == pytest.approx(third["best_valid_loss"], rel=1e-6)
    assert [e["epoch"] for e in history(tmp_path / "B")] == [1, 2]
    wa, wb = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in "AB")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=0, msg=k)


def test_preset_tiny_trains_from_the_command_line_and_flags_override_it(wav_root, wav_cache, tmp_path):
    """The quick recipe: `--preset tiny` is hw2.train.PRESETS["tiny"] (what notebook 03 and bench/train_step.py
    use); an explicit flag beside it wins; the run finishes its preset's epochs."""
    from hw2.config import PRESETS, preset_config

    summary, _ = cli("--preset", "tiny", "--musdb-root", str(wav_root), "--cache-dir", str(wav_cache), "--out", "run",
                     "--hidden-size", "8", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert summary["stopped"] == "done" and summary["epochs_done"] == PRESETS["tiny"]["epochs"]
    saved = config_from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert saved == preset_config("tiny", musdb_root=str(wav_root), cache_dir=str(wav_cache), out="run", hidden_size=8,
                                  device="cpu", quiet=True)
    assert saved.n_fft == PRESETS["tiny"]["n_fft"] != TrainConfig().n_fft
    with pytest.raises(Hw2Error, match="unknown preset 'huge'"):
        preset_config("huge")


# ------------------------------------------------------------------------------------------------ valid SDR
def test_valid_sdr_in_history_and_best_by_sdr(wav_root, wav_cache, tmp_path):
    """--sdr-every 1 --select-by sdr: every epoch's valid SDR is in history.json, and best.pt is the epoch with
    the highest one; that number is what infer.py's scorer gives for best.pt on the valid split."""
    from hw2.cache import open_cached
    from hw2.evaluate import median_of_medians, score_track, track_medians
    from hw2.separate import Separator

    cfg = tiny(wav_root, tmp_path / "run", wav_cache, epochs=2, sdr_every=1, select_by="sdr")
    logs = []
    summary = train(cfg, log=logs.append)
    h = history(tmp_path / "run")
    sdrs = [e["valid_sdr"] for e in h]
    assert all(isinstance(x, float) and math.isfinite(x) for x in sdrs), sdrs
    best_epoch = max(range(len(sdrs)), key=lambda i: sdrs[i]) + 1
    assert summary["best_epoch"] == best_epoch == load_checkpoint(tmp_path / "run" / "best.pt")["epoch"]
    assert [e["best"] for e in h][0] and "SDR" in logs[-1]
    # the recorded SDR is the scorer's on best.pt's separations of the valid tracks
    sep = Separator.from_checkpoint(tmp_path / "run" / "best.pt")
    medians = []
    for track in open_cached(wav_root, "train", "valid", wav_cache, progress=False):
        est = sep.separate(track.stem("mixture").T, ("mixture",), key=track.name)["mixture"]
        refs = {"vocals": track.target("vocals").T, "accompaniment": track.target("accompaniment").T}
        medians.append(track_medians(score_track(track.name, refs, est)))
    assert median_of_medians(medians)["vocals"]["SDR"] == pytest.approx(sdrs[best_epoch - 1], abs=1e-4)


def test_select_by_sdr_needs_sdr_every(wav_root, wav_cache, tmp_path):
    with pytest.raises(Hw2Error, match="--select-by sdr needs --sdr-every"):
        train(tiny(wav_root, tmp_path / "run", wav_cache, select_by="sdr"))
    with pytest.raises(Hw2Error, match="needs --target vocals"):
        train(tiny(wav_root, tmp_path / "run", wav_cache, sdr_every=1, target="drums"))
    h_default = tiny(wav_root, tmp_path / "run", wav_cache)
    assert (h_default.sdr_every, h_default.select_by) == (0, "loss")


def test_bad_settings_and_run_folders_are_refused_before_any_work(wav_root, tmp_path, monkeypatch):
    """--lr nan, a hop above the window, an --out that cannot be written, and a run folder with best.pt but no
    last.pt: one error before any decoding (load_cached is never reached); stale temporaries are cleared."""
    import hw2.train
    monkeypatch.setattr(hw2.train, "load_cached", lambda *a, **k: pytest.fail("decoding started"))
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


def test_a_model_over_the_parameter_limit_is_refused_before_any_decoding(wav_root, tmp_path, monkeypatch):
    import hw2.train
    monkeypatch.setattr(hw2.train, "load_cached", lambda *a, **k: pytest.fail("decoding started"))
    cfg = replace(tiny(wav_root, tmp_path / "run", tmp_path / "cache"), n_fft=4096, n_hop=1024, hidden_size=512,
                  nb_layers=3, unidirectional=True)  # 10,466,212 parameters
    with pytest.raises(Hw2Error, match="10,466,212 parameters; the assignment allows under 10,000,000"):
        train(cfg, log=lambda m: None)
