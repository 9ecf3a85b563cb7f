"""The one training loop: epochs, time limit, Ctrl-C, history, milestones, the best epoch, exact resume.

The separator (`hw2.train`) and the vocoder (`hw2.vocoder`) each hand it a `Job`: their model, optimiser, batches,
one optimisation step and one validation. Everything a run folder holds is written here, atomically:
`config.json`, `history.json`, `last.pt` (all a resume needs: model, optimiser, scheduler, scaler, RNGs, the
sampler's (epoch, step)), `best.pt` and `epochNNN.pt` at each milestone.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from hw2 import Hw2Error, __version__, as_json, atomic_write_text, close_bar, remove_stale_temporaries
from hw2.checkpoint import atomic_torch_save, check_writable, load_checkpoint

# the loop's clock: a test replaces it to step past a time limit without waiting for one
clock = time.monotonic


@dataclass
class Job:
    """What a run brings to the loop.

    cfg         its config dataclass: `out`, `epochs`, `max_minutes` are read; `milestones`, `patience`,
                `select_by` ("loss" or "sdr") and `sdr_every` where it has them
    fmt         the checkpoint format written into every .pt
    model, optimizer
    batches     (epoch, step) -> the epoch's batches from that step on
    nb_batches  epoch -> how many batches it has
    step        one optimisation step on a batch -> (loss, weight of the loss in the epoch's mean)
    validate    epoch index -> the history fields of its validation ({"valid_loss": ...}, maybe "valid_sdr")
    stateful    more objects with state_dict / load_state_dict saved in last.pt (scheduler, scaler)
    on_valid    called with the valid loss after each validation (a plateau scheduler's step)
    info        more fields of every checkpoint (parameter count, device)
    """
    cfg: object
    fmt: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Callable[[int, int], Iterable]
    nb_batches: Callable[[int], int]
    step: Callable[[object], tuple[float, int]]
    validate: Callable[[int], dict]
    stateful: dict = field(default_factory=dict)
    on_valid: Callable[[float], None] = lambda valid: None
    info: dict = field(default_factory=dict)


def open_run(cfg, fmt: str, kind: str, writer: str, from_dict: Callable[[dict], object], resumable: set,
             log: Callable[[str], None]) -> tuple[dict | None, dict | None]:
    """Check `cfg.out` before any work: (the last.pt to resume from, or None for a new run; the summary of a
    run that is already finished, or None). `kind` and `writer` name the model and its command in error lines,
    `from_dict` reads a saved config, `resumable` names the fields that may change on resuming. A folder that
    cannot be written, holds another config, or holds checkpoints a new run would overwrite, is one `Hw2Error`
    line."""
    run = Path(cfg.out)
    check_writable(run)
    if run.is_dir():
        remove_stale_temporaries(run)  # left by a kill during a save
    ckpt = _resume_point(run, cfg, fmt, kind, writer, from_dict, resumable)
    if ckpt is None or not _finished(ckpt["state"], cfg):
        return ckpt, None
    done = ckpt["state"]
    stop = "done" if done["epoch"] >= cfg.epochs else "early-stopped"
    log(f"{run}: finished ({'' if stop == 'done' else 'early-stopped after '}{done['epoch']} epochs, best epoch "
        f"{done['best_epoch']}); nothing to train: pass a larger --epochs to train further")
    return ckpt, summary(run, done, stop)


def _resume_point(run: Path, cfg, fmt: str, kind: str, writer: str, from_dict, resumable: set) -> dict | None:
    saved = run / "config.json"
    if not saved.exists():
        if run.exists() and any(run.glob("*.pt")):
            raise Hw2Error(f"{run}: holds checkpoints but no config.json; choose a new --out")
        return None
    try:  # through the dataclass: older spellings and fields added since read as what those runs did
        old = _comparable(from_dict(json.loads(saved.read_text())))
    except (ValueError, TypeError):
        raise Hw2Error(f"{saved}: unreadable; remove the run folder or choose a new --out") from None
    new = _comparable(cfg)
    diff = [k for k in new if k not in resumable and old.get(k) != new[k]]
    if diff:
        k = diff[0]
        article = "an" if kind[:1].lower() in "aeiou" else "a"  # an Open-Unmix run, a vocoder run
        raise Hw2Error(f"{run}: holds {article} {kind} run with a different config ({k}: {old.get(k)!r} there, "
                       f"{new[k]!r} now); use the same flags to resume it, or a new --out")
    if not (run / "last.pt").exists():
        kept = sorted(p.name for p in run.glob("*.pt"))
        if kept:
            raise Hw2Error(f"{run}: holds {', '.join(kept)} but no last.pt to resume from (killed before its "
                           "first full save?); starting over would overwrite them: move them away, or use a new --out")
        return None
    ckpt = load_checkpoint(run / "last.pt", fmt=fmt, kind=kind, flag="--out", writer=writer)
    if "state" not in ckpt:
        raise Hw2Error(f"{run / 'last.pt'}: not a resumable checkpoint; choose a new --out")
    return ckpt


def _comparable(cfg) -> dict:
    return as_json(asdict(cfg))  # tuples as lists, as config.json holds them


def _finished(state: dict, cfg) -> bool:
    return state["epoch"] >= cfg.epochs or state.get("bad_epochs", 0) > getattr(cfg, "patience", math.inf)


def summary(run: Path, state: dict, stop: str) -> dict:
    return {"run": str(run), "epochs_done": state["epoch"], "best_epoch": state["best_epoch"],
            "best_valid_loss": state["best_loss"], "stopped": stop}


def fit(prepare: Callable[[], Job], run: Path, ckpt: dict | None, t_start: float,
        log: Callable[[str], None]) -> dict:
    """Build the job (`prepare`: decoding, statistics), then train it in `run` from `ckpt` (None: a new run) to its last
    epoch, its patience or its time limit. Ctrl-C is made to mean what the time limit means: the state in
    progress is saved to last.pt and the `KeyboardInterrupt` carries the line that says what was kept."""
    gate, resumable = InterruptGate(), {}
    with gate.installed():
        try:
            return _loop(prepare(), ckpt, t_start, gate, resumable, log)
        except KeyboardInterrupt:
            saved = None
            if "save" in resumable and not gate.torn:
                with gate.held():
                    resumable["save"]()
                saved = resumable["state"]
            kept = resumable.get("on_disk", ckpt and ckpt["state"])
            raise KeyboardInterrupt(interrupted_message(run, saved, kept)) from None


def _loop(job: Job, ckpt: dict | None, t_start: float, gate: InterruptGate, resumable: dict,
          log: Callable[[str], None]) -> dict:
    """fit()'s work once the job is built. Fills `resumable` with the state and its saver as soon
    as the run has a state to resume, and with the (epoch, step) of each last.pt it writes ("on_disk")."""
    from tqdm.auto import tqdm  # tqdm picks its notebook or terminal bar when first imported

    cfg, model, run = job.cfg, job.model, Path(job.cfg.out)
    select_by = getattr(cfg, "select_by", "loss")
    state = {"epoch": 0, "step": 0, "loss_sum": 0.0, "loss_count": 0, "best_loss": math.inf, "best_epoch": 0,
             "bad_epochs": 0, "history": [], "seconds": 0.0, "best_sdr": -math.inf}
    run.mkdir(parents=True, exist_ok=True)
    # a resume may change the resumable fields (--epochs, --milestones, ...): the folder keeps the latest command's
    atomic_write_text(run / "config.json", json.dumps(asdict(cfg), indent=2))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        job.optimizer.load_state_dict(ckpt["optimizer"])
        for name, obj in job.stateful.items():
            if ckpt.get(name):
                obj.load_state_dict(ckpt[name])
        state.update(ckpt["state"])
        if "rng" in ckpt:
            _set_rng_state(ckpt["rng"])
        log(f"resuming {run} at epoch {state['epoch'] + 1}, step {state['step']}")

    def save(path: Path, full: bool) -> None:
        obj = {"format": job.fmt, "hw2_version": __version__, "config": asdict(cfg), "model": model.state_dict(),
               **job.info, "epoch": state["epoch"],
               "valid_loss": state["history"][-1]["valid_loss"] if state["history"] else None}
        if full:
            obj.update(optimizer=job.optimizer.state_dict(), state=dict(state), rng=_rng_state(),
                       **{name: o.state_dict() for name, o in job.stateful.items()})
        atomic_torch_save(obj, path)
        if full:
            resumable["on_disk"] = {"epoch": state["epoch"], "step": state["step"]}

    def save_progress() -> None:
        """last.pt at the sampler's position, this epoch's seconds so far counted: what a resume needs."""
        state["seconds"] += clock() - t_epoch
        save(run / "last.pt", full=True)

    t_epoch = clock()
    resumable.update(state=state, save=save_progress)
    deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
    stop = "done"
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]  # 0-based index of the epoch in progress
        t_epoch = clock()
        model.train()
        bar = tqdm(job.batches(epoch, state["step"]), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=cfg.quiet, initial=state["step"], total=job.nb_batches(epoch))
        try:
            for batch in bar:
                with gate.held():  # a step is taken whole: a Ctrl-C during it takes effect at its end
                    loss, weight = job.step(batch)
                    state["step"] += 1
                    state["loss_sum"] += loss * weight
                    state["loss_count"] += weight
                bar.set_postfix(loss=f"{state['loss_sum'] / state['loss_count']:.4g}")
                if time_limit_reached(deadline, cfg.max_minutes, epoch, state["step"], save_progress,
                                      run / "last.pt", log, bar):
                    return summary(run, state, "time-limit")
        finally:  # on an error or Ctrl-C too: the line printed next is not glued to the bar's in a log file
            close_bar(bar)

        # validation changes nothing a resume needs: stopped in it, the run resumes with this epoch's validation
        scores = job.validate(epoch)
        model.train()
        with gate.held():  # the epoch's bookkeeping and saves land together
            seconds = state["seconds"] + clock() - t_epoch
            t_epoch = clock()
            job.on_valid(scores["valid_loss"])
            row = _end_epoch(cfg, state, job.optimizer, scores, seconds, select_by, save)
        sdr = row.get("valid_sdr")
        log(f"epoch {epoch + 1}: train {row['train_loss']:.5g}  valid {row['valid_loss']:.5g}"
            f"{'' if sdr is None else f'  SDR {sdr:.2f} dB'}{'  *best' if row['best'] else ''}  "
            f"lr {row['lr']:.3g}  {seconds:.1f}s")
        if state["bad_epochs"] > getattr(cfg, "patience", math.inf):
            stop = "early-stopped"
            log(f"early stopping: no validation improvement for {state['bad_epochs']} epochs")
            break
        if clock() > deadline and state["epoch"] < cfg.epochs:
            log(f"time limit of {cfg.max_minutes:g} min reached after epoch {epoch + 1}; run the same command "
                "to resume")
            return summary(run, state, "time-limit")
    return summary(run, state, stop)


def _end_epoch(cfg, state: dict, optimizer, scores: dict, seconds: float, select_by: str,
               save: Callable[[Path, bool], None]) -> dict:
    """An epoch's end: its history row, the best / milestone / last checkpoints and history.json, in this order
    (last.pt last: a kill before it resumes the epoch's validation). Returns the row."""
    run = Path(cfg.out)
    epoch = state["epoch"]
    valid, sdr = scores["valid_loss"], scores.get("valid_sdr")
    train_loss = state["loss_sum"] / max(state["loss_count"], 1)
    improved = valid < state["best_loss"]
    keep = improved if select_by == "loss" else sdr is not None and sdr > state["best_sdr"]
    row = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid, "lr": optimizer.param_groups[0]["lr"],
           "seconds": seconds, "best": keep, **{k: v for k, v in scores.items() if k != "valid_loss"}}
    state["history"].append(row)
    state.update(epoch=epoch + 1, step=0, loss_sum=0.0, loss_count=0, seconds=0.0)
    if improved:
        state.update(best_loss=valid, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    if keep:
        state.update(best_epoch=epoch + 1, best_sdr=sdr if sdr is not None else state["best_sdr"])
        save(run / "best.pt", False)
    if epoch + 1 in getattr(cfg, "milestones", ()):
        save(run / f"epoch{epoch + 1:03d}.pt", False)
    save(run / "last.pt", True)
    atomic_write_text(run / "history.json", json.dumps(state["history"], indent=2))
    return row


def time_limit_reached(deadline: float, max_minutes: float, epoch: int, step: int,
                       save_progress: Callable[[], None], last: Path, log: Callable[[str], None], bar=None) -> bool:
    """After every step, the last of an epoch included (the resume then starts with that epoch's validation), so
    that a run stops within one step of its limit: past `deadline`, save what a resume needs (`save_progress`) and
    say so, once the epoch's `bar` is closed (its line ended)."""
    if clock() <= deadline:
        return False
    save_progress()
    if bar is not None:
        close_bar(bar)
    log(f"time limit of {max_minutes:g} min reached in epoch {epoch + 1} at step {step}; saved {last}: "
        "run the same command to resume")
    return True


class InterruptGate:
    """Ctrl-C during a training loop, made to mean what the time limit means: the run stops with a state it really
    passed through, which the loop then saves. A SIGINT that arrives inside `held()` (a step, the end-of-epoch
    bookkeeping) waits until that block ends and is raised there, between two steps; elsewhere (loading a batch,
    validation) it interrupts at once, also between two steps. A second Ctrl-C inside a held block interrupts at
    once and marks the state `torn`: then nothing may be saved. Outside the main thread (no signal handlers
    there) a Ctrl-C is Python's own KeyboardInterrupt."""

    def __init__(self):
        self.inside = self.pending = self.torn = False

    def _on_sigint(self, signum, frame):
        if self.inside and not self.pending:
            self.pending = True
            return
        self.torn = self.inside
        raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextmanager
    def held(self):
        self.inside = True
        try:
            yield
        finally:
            self.inside = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the training process: a worker that died of it would fail the next batch
    the loop asks for, instead of the loop stopping and saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted_message(run: Path, saved: dict | None, kept: dict | None) -> str:
    """The line a Ctrl-C leaves: what was saved (`saved`: the state just written to last.pt), what was kept (`kept`:
    the state in last.pt from its latest save, when a second Ctrl-C in the middle of a step left nothing to save),
    or that nothing was."""
    last = run / "last.pt"
    if saved is not None:
        return (f"interrupted in epoch {saved['epoch'] + 1} at step {saved['step']}; saved {last}: run the same "
                "command to resume")
    if kept is not None:
        return (f"interrupted with nothing new to save; {last} holds epoch {kept['epoch'] + 1}, step {kept['step']} "
                "from its latest save: run the same command to resume from there")
    return ("interrupted before training started: nothing was saved (decoded tracks stay in the cache); the same "
            "command starts the run over")


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
