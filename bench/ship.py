"""The candidates for the shipped model in one table: valid-split SDR from one run of the scorer, parameters,
training minutes and the time to separate one minute of audio.

    python bench/ship.py --musdb-root PATH --candidate "Open-Unmix=runs/umx/best.pt" "blend=runs/blend.pt" ...
    python bench/ship.py ... --phase mixture wiener --name ship-acc   # a row per candidate and phase method

1. SDR: one `python hw2/infer.py --subset train --split valid --phase <--phase> --checkpoint <all candidates>` run
   (so every row is scored by the same code on the same 14 tracks), written as results/<name>-scores.*.
2. Parameters: of the rebuilt model (a blend counts all its members).
3. Training minutes: the sum of `history.json` seconds of the run folder beside each checkpoint (each member's
   run for a blend; the blend's weight search is not included); "-" where the run folder is not here.
4. Separating one minute: wall seconds of `Separator.separate` (the row's phase method) on a 60 s generated track,
   one torch thread, each candidate in its own process (bench/separate.py's worker), so the figures compare side
   by side.

Writes results/<name>.json and results/<name>.md (results/ship.* by default).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.separate import measure  # noqa: E402


def training_minutes(path: Path, ckpt: dict) -> float | None:
    """Minutes of training and validation behind a checkpoint: its run folder's history (all members' for a blend)."""
    from hw2.card import read_history

    entry = ckpt.get("blend")
    members = (entry["members"] + ([entry["accompaniment"]] if entry.get("accompaniment") else [])) if entry else []
    runs = [Path(e.get("source", "")).parent for e in members] or [path.parent]
    histories = [read_history(run) for run in runs]
    return None if None in histories else sum(h["seconds"] for hist in histories for h in hist) / 60


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/ship.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", required=True, help="MUSDB root whose train folder holds the valid split")
    p.add_argument("--candidate", nargs="+", required=True, help="LABEL=CHECKPOINT, in the table's order")
    p.add_argument("--note", nargs="*", default=[], help="LABEL=how it was made (one sentence)")
    p.add_argument("--skip-timing", action="store_true", help="leave the time column out")
    p.add_argument("--phase", nargs="+", default=["mixture"], help="phase methods: a row per candidate and method")
    p.add_argument("--name", default="ship", help="results/<name>.md and .json")
    args = p.parse_args(argv)

    import torch

    from hw2 import atomic_write_text
    from hw2.checkpoint import load_checkpoint, model_from_checkpoint

    labels, paths = zip(*(c.rsplit("=", 1) for c in args.candidate))  # a label may hold "="
    notes = dict(n.split("=", 1) for n in args.note)
    cmd = ["python", "hw2/infer.py", "--musdb-root", args.musdb_root, "--subset", "train", "--split", "valid",
           "--phase", *args.phase, "--samples", "0", "--jobs", "1", "--name", f"{args.name}-scores", "--checkpoint",
           *paths]
    print("scoring:", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, check=True)
    scores = json.loads((REPO / "results" / f"{args.name}-scores.json").read_text())
    # infer writes a row per checkpoint and method, checkpoint by checkpoint in the order given
    scored = [(label, path, method) for label, path in zip(labels, paths) for method in args.phase]
    rows = []
    for (label, path, method), score in zip(scored, scores["rows"]):
        assert score["method"] == method and Path(score["checkpoint"]).resolve() == (REPO / path).resolve(), \
            (score["label"], score["checkpoint"], path, method)
        ckpt = load_checkpoint(REPO / path)
        model, _ = model_from_checkpoint(ckpt, path)
        row = {"label": label if args.phase == ["mixture"] else f"{label}, {method} phase", "checkpoint": path,
               "method": method, "epoch": score.get("epoch"), "note": notes.get(label, ""),
               "parameters": sum(t.numel() for t in model.parameters()),
               "training_minutes": training_minutes(REPO / path, ckpt),
               "vocals_sdr": score["scores"]["vocals"]["SDR"],
               "accompaniment_sdr": score["scores"]["accompaniment"]["SDR"]}
        if not args.skip_timing:
            print(f"timing: {row['label']}", file=sys.stderr, flush=True)
            r = measure({"checkpoint": str(REPO / path), "device": "cpu", "threads": 1, "gl_iters": 32,
                         "method": method, "duration": 60.0, "museval": False}, {"OMP_NUM_THREADS": "1"})
            row["seconds_per_minute"] = r["seconds"]
        rows.append(row)
        del model
    torch.set_num_threads(1)
    out = {"title": "Candidates for the shipped model", "data": scores["data"], "command": shlex.join(
        ["python", "bench/ship.py", *(argv if argv is not None else sys.argv[1:])]), "scores_command":
        scores["command"], "rows": rows}
    atomic_write_text(REPO / "results" / f"{args.name}.json", json.dumps(out, indent=2))
    lines = ["# Candidates for the shipped model, on the valid split", "",
             "| candidate | epoch | parameters | training min | s to separate 1 min (1 thread) | vocals SDR | "
             "accompaniment SDR |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        minutes = "-" if r["training_minutes"] is None else f"{r['training_minutes']:.1f}"
        secs = f"{r['seconds_per_minute']:.1f}" if "seconds_per_minute" in r else "-"
        lines.append(f"| {r['label']} | {r['epoch']} | {r['parameters']:,} | {minutes} | {secs} | "
                     f"{r['vocals_sdr']:.2f} | {r['accompaniment_sdr']:.2f} |")
    lines += ["", f"Data: {scores['data'].get('dataset')}, subset `train`, split `valid`, "
              f"{scores['data'].get('nb_tracks')} tracks; SDR in dB, BSSEval v4, median over 1 s frames, then "
              f"over tracks; {', '.join(args.phase)} phase. Every row was selected on this same valid split "
              "(epochs by valid SDR, blend weights by a grid of 11), so the numbers are optimistic as estimates of "
              "unseen music.", ""]
    lines += [f"- **{label}**: {notes[label]}" for label in labels if notes.get(label)]
    lines += ["", f"Scores: `{scores['command']}`", "", f"Table: `{out['command']}`"]
    atomic_write_text(REPO / "results" / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
