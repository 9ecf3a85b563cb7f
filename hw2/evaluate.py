"""museval scoring: BSSEval v4 on 1-second frames, median over frames per track, then median over tracks.

`score_track` scores vocals and accompaniment jointly, as `museval.eval_mus_track` does for that pair, and returns
the same JSON museval writes per track. `magnitude_distances` adds two phase-blind measures (spectral convergence and
a multi-resolution STFT distance): how close the estimate's magnitudes are, whatever its phase. `Evaluation` collects
rows (a checkpoint and a phase method, or a reference row) over tracks, optionally in worker processes, stores the
phase-blind measures per track beside museval's frames (key "magnitude"), and writes per-track JSON, a summary JSON
and a markdown table. Results files are written atomically.
"""
from __future__ import annotations

import datetime as _dt
import json
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hw2 import RATE, Hw2Error, __version__, as_json, atomic_write_text, bsseval
from hw2.separate import Separator
from hw2.tracks import TARGETS, blocks

METRICS = ("SDR", "SIR", "ISR", "SAR")
MAGNITUDE_METRICS = ("SC", "MRSTFT")  # phase-blind, per track; lower is better, 0 for identical magnitudes
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # MRSTFT's (n_fft, hop), as Yamamoto et al. (2020)
LOG_FLOOR = 1e-4  # magnitudes floored here before the log: about 16-bit quantisation noise in a 512-point bin
STFT_DEFAULT = (4096, 1024)  # (n_fft, hop) of a row that names no model STFT: hw2.model.STFT's defaults


def score_track(name: str, references: dict, estimates: dict, rate: int = RATE, scorer: str = "hw2",
                device="cpu") -> dict:
    """BSSEval v4 of one track. references / estimates: {"vocals": arr, "accompaniment": arr}, arrays
    (nb_timesteps, nb_channels). Returns museval's per-track dict, {"targets": [{"name", "frames": [...]}]}, and
    the "scorer" that made it.

    scorer "hw2": `hw2.bsseval`, museval's numbers in bounded memory, on `device`; "museval": museval.evaluate
    itself (where it is installed). Values are rounded to 5 decimals and +-inf stored as NaN, as museval's
    TrackStore does.
    """
    refs, ests = [references[t] for t in TARGETS], [estimates[t] for t in TARGETS]
    if scorer == "museval":
        import museval
        from museval.version import _version

        sdr, isr, sir, sar = museval.evaluate(np.stack(refs).astype(np.float64), np.stack(ests).astype(np.float64),
                                              win=rate, hop=rate)
        version = f"museval {_version}"
    elif scorer == "hw2":
        sdr, isr, sir, sar = bsseval.evaluate(refs, ests, win=rate, hop=rate, device=device)
        version = "hw2.bsseval (BSSEval v4 as museval 0.4.1)"
    else:
        raise Hw2Error(f"unknown scorer {scorer!r}: use hw2 or museval")

    def q(v):  # museval's TrackStore._q
        return float(Decimal(float(v)).quantize(Decimal(".00001"))) if np.isfinite(v) else float("nan")

    targets = [{"name": t, "frames": [{"time": i * 1.0, "duration": 1.0,
                                       "metrics": {"SDR": q(sdr[j, i]), "SIR": q(sir[j, i]), "SAR": q(sar[j, i]),
                                                   "ISR": q(isr[j, i])}} for i in range(sdr.shape[1])]}
               for j, t in enumerate(TARGETS)]
    return {"targets": targets, "scorer": version}


def magnitude_distances(reference: np.ndarray, estimate: np.ndarray, n_fft: int = 4096, n_hop: int = 1024,
                        resolutions=RESOLUTIONS, block_frames: int = 256) -> dict:
    """Phase-blind distances between the STFT magnitudes of a reference and an estimate, (nb_timesteps,
    nb_channels) arrays (the estimate zero-padded or cut to the reference's length, as museval does):

        SC      spectral convergence at (n_fft, n_hop), the separation model's STFT: || |R| - |E| || / || |R| ||
        MRSTFT  multi-resolution STFT distance (Yamamoto et al. 2020): the mean over `resolutions` of spectral
                convergence plus the mean absolute difference of log magnitudes (floored at LOG_FLOOR)

    Frames of n_fft samples every hop from sample 0 (no padding; a track shorter than n_fft is zero-padded to
    one frame), periodic Hann window, all channels; computed a block of `block_frames` frames at a time, so memory
    does not grow with the track (256: about 30 MiB; 4096 took 1.9 GB at n_fft 4096, and was slower). Scaling the estimate by a gives SC = |1 - a|.
    Returns {"SC": float, "MRSTFT": float}; NaN where the reference is silent.
    """
    ref = np.asarray(reference)
    est = np.asarray(estimate)[: len(ref)]
    n = len(ref)

    def sums(nfft, hop):
        """(sum (|R| - |E|)^2, sum |R|^2, sum |log |R| - log |E||, nb_values)."""
        window = torch.hann_window(nfft, dtype=torch.float64)
        nb_frames = max(1, (n - nfft) // hop + 1)
        acc = np.zeros(4)
        for _, a, b, _ in blocks(nb_frames, block_frames):
            lo, hi = a * hop, (b - 1) * hop + nfft
            seg = np.zeros((2, hi - lo, ref.shape[1]))
            part = ref[lo:min(hi, n)]
            seg[0, :len(part)] = part
            part = est[lo:min(hi, len(est))]
            seg[1, :len(part)] = part
            x = torch.from_numpy(seg).permute(0, 2, 1).reshape(-1, hi - lo)
            mag = torch.stft(x, nfft, hop, window=window, center=False, return_complex=True).abs()
            r, e = mag.reshape(2, -1).unbind(0)
            acc += [float((r - e).square().sum()), float(r.square().sum()),
                    float((r.clamp_min(LOG_FLOOR).log() - e.clamp_min(LOG_FLOOR).log()).abs().sum()), r.numel()]
        return acc

    def sc(acc):
        return float(np.sqrt(acc[0] / acc[1])) if acc[1] > 0 else float("nan")

    multi = [sums(nfft, hop) for nfft, hop in resolutions]
    return {"SC": sc(sums(n_fft, n_hop)), "MRSTFT": float(np.mean([sc(a) + a[2] / a[3] for a in multi]))}


def track_medians(track_scores: dict) -> dict:
    """{target: {metric: median over the track's 1-second frames}} (NaN frames, e.g. silent vocals, ignored), plus
    the track's phase-blind distances (MAGNITUDE_METRICS) where its scores hold them."""
    out = {}
    for target in track_scores["targets"]:
        values = {m: [f["metrics"][m] for f in target["frames"]] for m in METRICS}
        out[target["name"]] = {m: _nanmedian(v) for m, v in values.items()}
        out[target["name"]].update(track_scores.get("magnitude", {}).get(target["name"], {}))
    return out


def median_of_medians(per_track: list[dict]) -> dict:
    """{target: {metric: median over tracks of the per-track frame medians}}: the assignment's number. The
    phase-blind distances join where any track has them (median over the tracks that do)."""
    out = {}
    for target in TARGETS:
        extra = [m for m in MAGNITUDE_METRICS if any(m in t.get(target, {}) for t in per_track)]
        out[target] = {m: _nanmedian([t[target].get(m) for t in per_track if target in t])
                       for m in METRICS + tuple(extra)}
    return out


def _nanmedian(values) -> float | None:
    a = np.array([np.nan if v is None else v for v in values], dtype=float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if len(a) else None


def silent_targets(references: dict) -> list[str]:
    """The reference targets that are zero from start to end: BSSEval cannot score a track holding one (museval
    raises "All the reference sources should be non-silent")."""
    return [t for t in TARGETS if not np.any(references[t])]


def _score_job(name, references, estimates, json_path, identity=None, score_kw=None, stft=STFT_DEFAULT):
    """Score one track and row, write its JSON; returns its `track_medians`, or {"skipped": reason}. `stft`:
    the (n_fft, hop) of the row's model, at which its spectral convergence is measured."""
    silent = silent_targets(references)
    if silent:
        reason = f"{' and '.join(silent)} silent from start to end (BSSEval needs non-silent references)"
        scores = {"name": name, "targets": [], "skipped": reason}
    else:
        scores = score_track(name, references, estimates, **(score_kw or {}))
        scores["magnitude"] = {t: magnitude_distances(references[t], estimates[t], *stft) for t in TARGETS}
    if identity is not None:
        scores["hw2"] = identity  # what produced these scores: a rerun reuses them only when it matches
    atomic_write_text(Path(json_path), json.dumps(scores, indent=2))
    return {"skipped": scores["skipped"]} if silent else track_medians(scores)


def _score_spilled(name, folder, json_path, identity=None, score_kw=None, stft=STFT_DEFAULT):
    """`_score_job` on the arrays a `ScoringJob` wrote to `folder`, read memory-mapped; the folder is removed
    after."""
    try:
        arrays = {f"{kind}/{t}": np.load(Path(folder) / f"{kind}-{t}.npy", mmap_mode="r")
                  for kind in ("references", "estimates") for t in TARGETS}
        return _score_job(name, {t: arrays[f"references/{t}"] for t in TARGETS},
                          {t: arrays[f"estimates/{t}"] for t in TARGETS}, json_path, identity, score_kw, stft)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ScoringJob:
    """One track's references and estimates on their way to the scorer (`Evaluation.job`). For a worker, each
    `put` writes its arrays to .npy files at once, so that the caller can free them before it decodes the next
    ones (a job's arrays never all sit in the command's memory together); in this process, it keeps them."""

    def __init__(self, folder: Path | None):
        self.folder, self.arrays = folder, {}

    def put(self, kind: str, arrays: dict) -> None:
        """kind: "references" or "estimates"; arrays: {"vocals", "accompaniment": (nb_timesteps, nb_channels)}."""
        for t in TARGETS:
            if self.folder is None:
                self.arrays.setdefault(kind, {})[t] = arrays[t]
            else:
                np.save(self.folder / f"{kind}-{t}.npy", np.asarray(arrays[t]))  # its dtype: numbers as jobs=1


def _threads(n: int) -> None:
    torch.set_num_threads(n)


class Evaluation:
    """Rows x tracks of museval scores. Use `add(row, track, references, estimates)` per track and row, then
    `finish()`; with `jobs > 1` the scorer (`score_track`'s, hw2 by default) runs in worker processes and the
    numbers are identical to a serial run.

    A row is a dict: {"label", "checkpoint", "epoch", "method"}. Per-track JSON goes to
    `<out>/<name>/<row slug>/<subset>/<track>.json`, as museval lays it out, with an `identity` (what produced
    it) under "hw2": `resume` reuses a track's scores when that identity matches, so an interrupted run goes on
    where it stopped. A track whose references are silent is not scored: its JSON and the row's `skipped` say why,
    and the row's median of medians covers the tracks that have a value (`nb_tracks`).
    """

    def __init__(self, out: Path, name: str, subset: str, jobs: int = 1, score_kw: dict | None = None):
        self.dir = Path(out) / name
        self.subset, self.jobs, self.score_kw = subset, jobs, score_kw or {}
        self.rows: list[dict] = []
        self.pending: dict[str, list] = {}
        # spawned, not forked: a forked child of a process whose torch thread pool has run hangs in its first
        # parallel torch op (the hw2 scorer is torch); each worker gets its share of the cores
        self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_threads,
                                        initargs=(max(1, (os.cpu_count() or 1) // jobs),)) if jobs > 1 else None
        # a job's arrays go to the workers as .npy files, not pickled: a pickled job held its arrays in this
        # process until scored (times `jobs` in flight), plus a pickle buffer here and one in the worker
        self.spill = tempfile.TemporaryDirectory(prefix="hw2-scoring-") if self.pool else None

    def path(self, row: dict, track: str) -> Path:
        return self.dir / row_slug(row) / self.subset / f"{track}.json"

    def register(self, row: dict) -> list:
        """Give `row` its place in the table (rows come out in the order first registered); its pending scores."""
        slug = row_slug(row)
        if slug not in self.pending:
            self.rows.append(row)
            self.pending[slug] = []
        return self.pending[slug]

    def stored(self, row: dict, track: str) -> dict | None:
        """The track's scores an earlier run wrote for `row`, or None (none, or unreadable)."""
        try:
            scores = json.loads(self.path(row, track).read_text())
        except (OSError, ValueError):
            return None
        return scores if isinstance(scores, dict) else None

    def resume(self, row: dict, track: str, identity: dict, scores: dict | None) -> bool:
        """Reuse the track's scores from an earlier run (`scores`: what `stored` read) when they hold the same
        `identity`."""
        if scores is None or scores.get("hw2") != as_json(identity):
            return False
        if not scores.get("skipped") and "magnitude" not in scores:  # scored before the phase-blind measures
            return False
        medians = {"skipped": scores["skipped"]} if scores.get("skipped") else track_medians(scores)
        self.register(row).append((track, medians))
        return True

    def add(self, row: dict, track: str, references: dict, estimates: dict, identity: dict | None = None,
            scored: Callable[[], None] | None = None) -> None:
        """Score one track of one row, here or in a worker; `scored()` is called once its scores are written (from
        a pool thread when a worker scored it: a progress bar's update, say)."""
        job = self.job()
        job.put("references", references)
        job.put("estimates", estimates)
        self.submit(row, track, job, identity, scored)

    def job(self) -> ScoringJob:
        """A job to `put` a track's references and estimates in, one kind at a time, then to `submit`. With
        workers, first waits until fewer than `jobs` are in flight: that bounds the files on disk."""
        if not self.pool:
            return ScoringJob(None)
        in_flight = [f for jobs in self.pending.values() for _, f in jobs if isinstance(f, Future) and not f.done()]
        if len(in_flight) >= self.jobs:
            in_flight[0].result()
        return ScoringJob(Path(tempfile.mkdtemp(dir=self.spill.name)))

    def submit(self, row: dict, track: str, job: ScoringJob, identity: dict | None = None,
               scored: Callable[[], None] | None = None) -> None:
        """`add`, for a job filled by the caller."""
        pending = self.register(row)
        stft = tuple(row.get("stft") or STFT_DEFAULT)  # the row's model's: its SC is measured at that resolution
        if self.pool:
            future = self.pool.submit(_score_spilled, track, str(job.folder), self.path(row, track), identity,
                                      self.score_kw, stft)
            if scored is not None:
                future.add_done_callback(lambda f: f.exception() is None and scored())
            pending.append((track, future))
        else:
            pending.append((track, _score_job(track, job.arrays["references"], job.arrays["estimates"],
                                              self.path(row, track), identity, self.score_kw, stft)))
            if scored is not None:
                scored()

    def finish(self) -> list[dict]:
        """Rows with their `scores` (median of medians over the tracks that have a value), `nb_tracks` (how many)
        and `skipped` ([{"track", "reason"}] for the tracks that could not be scored)."""
        try:
            for row in self.rows:
                per_track = [(t, f.result() if isinstance(f, Future) else f) for t, f in self.pending[row_slug(row)]]
                scored = [m for _, m in per_track if "skipped" not in m]
                row["scores"] = median_of_medians(scored)
                row["nb_tracks"] = len(scored)
                skipped = [{"track": t, "reason": m["skipped"]} for t, m in per_track if "skipped" in m]
                if skipped:
                    row["skipped"] = skipped
        finally:
            if self.pool:
                self.pool.shutdown()
                self.spill.cleanup()
        return self.rows


def row_slug(row: dict) -> str:
    ckpt = row.get("name") or (Path(row["checkpoint"]).stem if row.get("checkpoint") else "reference")
    return f"{ckpt}-{row['method']}"


def markdown_table(rows: list[dict], metrics=("SDR",)) -> str:
    """One line per row; columns: target x metric, in dB (median of medians); the phase-blind distances
    (MAGNITUDE_METRICS, no unit) with three decimals."""
    cols = [(t, m) for t in TARGETS for m in metrics]
    head = "| row | epoch | " + " | ".join(f"{t} {m}" for t, m in cols) + " |"
    sep = "|---|---:|" + "---:|" * len(cols)
    lines = [head, sep]
    for r in rows:
        vals = [(r["scores"][t].get(m), m) for t, m in cols]
        cells = ["n/a" if v is None else f"{v:.3f}" if m in MAGNITUDE_METRICS else f"{v:.2f}" for v, m in vals]
        lines.append(f"| {r['label']} | {r.get('epoch') if r.get('epoch') is not None else '-'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines + skipped_notes(rows))


def skipped_notes(rows: list[dict]) -> list[str]:
    """A line under the table per track that some row could not score, with how many tracks each row covers."""
    skipped = {s["track"]: s["reason"] for r in rows for s in r.get("skipped", [])}
    if not skipped:
        return []
    counts = sorted({r["nb_tracks"] for r in rows})
    return ["", f"Medians over {' / '.join(map(str, counts))} tracks: {len(skipped)} track(s) not scored:"] + \
        [f"- {t}: {reason}" for t, reason in skipped.items()]


def _stft_words(rows: list[dict]) -> str:
    """"n_fft 4096, hop 1024": the STFT each row's SC was measured at (its model's), named once when they agree."""
    stfts = sorted({tuple(r.get("stft") or STFT_DEFAULT) for r in rows})
    return " / ".join(f"n_fft {n}, hop {h}" for n, h in stfts) + (" (each row's model's)" if len(stfts) > 1 else
                                                                   " (the model's STFT)")


def write_results(out: Path, name: str, rows: list[dict], data: dict, command: str, title: str = "") -> tuple[Path, Path]:
    """`<out>/<name>.json` (every metric) and `<out>/<name>.md` (SDR table plus provenance)."""
    out = Path(out)
    summary = {"title": title or f"museval SDR on {data.get('subset')}" + (f"/{data['split']}" if data.get("split") else ""),
               "command": command, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "hw2_version": __version__, "data": data,
               "aggregation": "BSSEval v4, 1 s frames; median over frames per track, then median over tracks",
               "rows": rows}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    try:
        atomic_write_text(json_path, json.dumps(summary, indent=2))
        shown = METRICS + tuple(m for m in MAGNITUDE_METRICS
                                if any(r["scores"][t].get(m) is not None for r in rows for t in TARGETS))
        md = (f"# {summary['title']}\n\n{markdown_table(rows, shown)}\n\n"
              f"Data: `{data.get('root')}`, subset `{data.get('subset')}`"
              + (f", split `{data['split']}`" if data.get("split") else "")
              + f", {data.get('nb_tracks')} tracks. {summary['aggregation']}.\n\n"
              + (f"SC: spectral convergence of the STFT magnitudes at {_stft_words(rows)}; MRSTFT: spectral "
                 f"convergence plus log-magnitude distance, mean over n_fft 512 / 1024 / 2048; both per track, "
                 f"then median over tracks; lower is better, blind to phase.\n\n" if len(shown) > len(METRICS) else "")
              + f"Command: `{command}`\n")
        atomic_write_text(md_path, md)
    except OSError as e:
        raise Hw2Error(f"{out}: cannot write results here ({e.strerror}); pass --out a writable folder") from None
    return json_path, md_path


def iteration_sweep(separator, mixture, references: dict, iterations=(0, 4, 8, 16, 32, 64),
                    method: str = "griffinlim", name: str = "track") -> list[dict]:
    """Median-over-frames SDR of one track's estimates by an iterative phase method (griffinlim, griffinlim-mix,
    misi, mel) against the number of iterations.

    mixture and references as for `Separator.separate` and `score_track`. Returns
    [{"iterations": n, "vocals": sdr, "accompaniment": sdr}, ...]; 0 iterations is the initial phase alone.
    """
    attr = separator.ITERATIONS.get(method, "gl_iters")
    saved = getattr(separator, attr)
    out = []
    try:
        for n in iterations:
            setattr(separator, attr, n)
            est = separator.separate(mixture, (method,), key=name)[method]
            medians = track_medians(score_track(name, references, est))
            out.append({"iterations": n, **{t: medians[t]["SDR"] for t in TARGETS}})
    finally:
        setattr(separator, attr, saved)
    return out


def score_model(model, tracks, device="cpu", chunk_dur: float = 30.0, method: str | None = None) -> dict:
    """{"vocals": SDR, "accompaniment": SDR} of a model (a `SpectrogramModel` or an `hw2.blend.Blend`) on cached
    tracks (`hw2.cache.CachedTrack`): medians over the tracks of the medians over 1-s frames, as `hw2/infer.py`
    scores a checkpoint; None for a target no track could be scored on (a silent estimate). method: the phase
    method, by default a complex model's own phase ("network") and the mixture's for a magnitude model."""
    method = method or ("network" if getattr(model, "complex_output", False) else "mixture")
    sep = Separator(model, device, chunk_dur=chunk_dur)
    medians = []
    for track in tracks:
        est = sep.separate(track.stem("mixture").T, (method,), key=track.name)[method]
        refs = {"vocals": track.target("vocals").T, "accompaniment": track.target("accompaniment").T}
        try:
            medians.append(track_medians(score_track(track.name, refs, est, device=device)))
        except Hw2Error:  # an all-silent estimate (an early model): BSSEval is undefined for that track
            continue
    mom = median_of_medians(medians)
    return {t: mom[t]["SDR"] for t in TARGETS}


# peak memory of the command's own process and of one scoring worker, as a fixed part plus bytes per stereo sample
# of the longest track: fitted to `bench/ta_command.py` on a 10-minute track (26.5 M samples), default --jobs, 2
# listening samples: 1,752 and 1,364 MiB (docs/benchmarks.md); the shipped blend's complex member added a block's
# worth to the command's process (1,900 MiB, the most of two runs), which does not grow with the track
MAIN_MEMORY, WORKER_MEMORY = (450 << 20, 58), (280 << 20, 43)


def default_jobs(longest: float, cpus: int | None = None, available: int | None = None) -> tuple[int, str]:
    """(--jobs, the line that says why it is fewer than the CPUs, or ""): one scoring worker per CPU, as many as the
    free memory (`available` bytes, default MemAvailable) holds beside the command's own process, for tracks up to
    `longest` seconds; 1 scores in the command's process, with no worker. Where the free memory is unknown (not
    Linux), one per CPU."""
    cpus = cpus or os.cpu_count() or 1
    available = _memory_available() if available is None else available
    if available is None or cpus == 1:
        return cpus, ""
    n = longest * RATE
    main, worker = (fixed + per * n for fixed, per in (MAIN_MEMORY, WORKER_MEMORY))
    jobs = int(max(1, min(cpus, (available - main) // worker)))
    if jobs == cpus:
        return jobs, ""
    return jobs, (f"--jobs {jobs}, not one per CPU ({cpus}): {available / 2**30:.1f} GiB of memory is free and each "
                  f"scoring worker holds about {worker / 2**30:.1f} GiB on the longest track ({longest / 60:.1f} min), "
                  f"beside this process's {main / 2**30:.1f} GiB; pass --jobs N to choose")


def _memory_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (what the kernel can give without swapping); None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
