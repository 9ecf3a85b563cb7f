"""museval scoring: BSSEval v4 on 1-second frames, median over frames per track, then median over tracks.

`score_track` scores vocals and accompaniment jointly, as `museval.eval_mus_track` does for that pair, and returns
the same JSON museval writes per track. `Evaluation` collects rows (a checkpoint and a phase method, or a
reference row) over tracks, optionally in worker processes, and writes per-track JSON, a summary JSON and a
markdown table. Results files are written atomically.
"""
from __future__ import annotations

import datetime as _dt
import json
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path

import numpy as np

from hw2 import Hw2Error, __version__, atomic_write

METRICS = ("SDR", "SIR", "ISR", "SAR")
TARGETS = ("vocals", "accompaniment")
RATE = 44100


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
        from hw2.bsseval import evaluate

        sdr, isr, sir, sar = evaluate(refs, ests, win=rate, hop=rate, device=device)
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


def track_medians(track_scores: dict) -> dict:
    """{target: {metric: median over the track's 1-second frames}} (NaN frames, e.g. silent vocals, ignored)."""
    out = {}
    for target in track_scores["targets"]:
        values = {m: [f["metrics"][m] for f in target["frames"]] for m in METRICS}
        out[target["name"]] = {m: _nanmedian(v) for m, v in values.items()}
    return out


def median_of_medians(per_track: list[dict]) -> dict:
    """{target: {metric: median over tracks of the per-track frame medians}}: the assignment's number."""
    out = {}
    for target in TARGETS:
        out[target] = {m: _nanmedian([t[target][m] for t in per_track if target in t]) for m in METRICS}
    return out


def _nanmedian(values) -> float | None:
    a = np.array([np.nan if v is None else v for v in values], dtype=float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if len(a) else None


def _score_job(name, references, estimates, json_path, scorer="hw2"):
    scores = score_track(name, references, estimates, scorer=scorer)
    atomic_write_text(Path(json_path), json.dumps(scores, indent=2))
    return track_medians(scores)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


class Evaluation:
    """Rows x tracks of museval scores. Use `add(row, track, references, estimates)` per track and row, then
    `finish()`; with `jobs > 1` the scorer (`score_track`'s, hw2 by default) runs in worker processes and the
    numbers are identical to a serial run.

    A row is a dict: {"label", "checkpoint", "epoch", "method"}. Per-track JSON goes to
    `<out>/<name>/<row slug>/<subset>/<track>.json`, as museval lays it out.
    """

    def __init__(self, out: Path, name: str, subset: str, jobs: int = 1, scorer: str = "hw2"):
        self.dir = Path(out) / name
        self.subset, self.jobs, self.scorer = subset, jobs, scorer
        self.rows: list[dict] = []
        self.pending: dict[str, list] = {}
        # spawned, not forked: a forked child of a process whose torch thread pool has run hangs in its first
        # parallel torch op (the hw2 scorer is torch); each worker gets its share of the cores
        self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_threads,
                                        initargs=(max(1, (os.cpu_count() or 1) // jobs),)) if jobs > 1 else None

    def add(self, row: dict, track: str, references: dict, estimates: dict) -> None:
        slug = row_slug(row)
        if slug not in self.pending:
            self.rows.append(row)
            self.pending[slug] = []
        path = self.dir / slug / self.subset / f"{track}.json"
        if self.pool:
            # bound the work in flight: each job holds a track's audio
            in_flight = [f for jobs in self.pending.values() for f in jobs if isinstance(f, Future) and not f.done()]
            if len(in_flight) >= 2 * self.jobs:
                in_flight[0].result()
            self.pending[slug].append(self.pool.submit(_score_job, track, references, estimates, path, self.scorer))
        else:
            self.pending[slug].append(_score_job(track, references, estimates, path, self.scorer))

    def finish(self) -> list[dict]:
        """Rows with their `scores` (median of medians) and `nb_tracks`."""
        try:
            for row in self.rows:
                per_track = [f.result() if isinstance(f, Future) else f for f in self.pending[row_slug(row)]]
                row["scores"] = median_of_medians(per_track)
                row["nb_tracks"] = len(per_track)
        finally:
            if self.pool:
                self.pool.shutdown()
        return self.rows


def row_slug(row: dict) -> str:
    ckpt = row.get("name") or (Path(row["checkpoint"]).stem if row.get("checkpoint") else "reference")
    return f"{ckpt}-{row['method']}"


def markdown_table(rows: list[dict], metrics=("SDR",)) -> str:
    """One line per row; columns: target x metric, in dB (median of medians)."""
    cols = [(t, m) for t in TARGETS for m in metrics]
    head = "| row | epoch | " + " | ".join(f"{t} {m}" for t, m in cols) + " |"
    sep = "|---|---:|" + "---:|" * len(cols)
    lines = [head, sep]
    for r in rows:
        vals = [r["scores"][t][m] for t, m in cols]
        cells = ["n/a" if v is None else f"{v:.2f}" for v in vals]
        lines.append(f"| {r['label']} | {r.get('epoch') if r.get('epoch') is not None else '-'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        md = (f"# {summary['title']}\n\n{markdown_table(rows, METRICS)}\n\n"
              f"Data: `{data.get('root')}`, subset `{data.get('subset')}`"
              + (f", split `{data['split']}`" if data.get("split") else "")
              + f", {data.get('nb_tracks')} tracks. {summary['aggregation']}.\n\n"
              f"Command: `{command}`\n")
        atomic_write_text(md_path, md)
    except OSError as e:
        raise Hw2Error(f"{out}: cannot write results here ({e.strerror}); pass --out a writable folder") from None
    return json_path, md_path


def iteration_sweep(separator, mixture, references: dict, iterations=(0, 4, 8, 16, 32, 64),
                    method: str = "griffinlim", name: str = "track") -> list[dict]:
    """Median-over-frames SDR of one track's Griffin-Lim estimates against the number of iterations.

    mixture and references as for `Separator.separate` and `score_track`. Returns
    [{"iterations": n, "vocals": sdr, "accompaniment": sdr}, ...]; 0 iterations is the initial phase alone.
    """
    saved = separator.gl_iters
    out = []
    try:
        for n in iterations:
            separator.gl_iters = n
            est = separator.separate(mixture, (method,), key=name)[method]
            medians = track_medians(score_track(name, references, est))
            out.append({"iterations": n, **{t: medians[t]["SDR"] for t in TARGETS}})
    finally:
        separator.gl_iters = saved
    return out
