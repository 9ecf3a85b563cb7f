"""Training variants at one budget, scored on musdb's valid split, in one table (the assignment's optional tasks).

    python -m hw2.experiments --musdb-root PATH                      # every variant of the model grid
    python -m hw2.experiments --musdb-root PATH --only unet no-lstm  # some rows
    python -m hw2.experiments --list                                 # the variants and what they change
    python -m hw2.experiments --musdb-root PATH --grid augment --only all-on coherent --set seed=43  # a repeat

Each variant is the shipped model's training config with a few fields changed, trained from scratch with the
same data, seed, augmentation and number of epochs (the budget), in `runs/experiments/<grid>/<variant>`; its best
checkpoint (lowest valid loss, or highest valid SDR where the variant says so) is separated with the mixture phase
(a complex network: with its own) and scored by `hw2/infer.py` on the valid split. A row already in the table with the same config is not trained again, and an interrupted run resumes, so
the same command finishes an interrupted grid. Writes `results/<grid>.json` and `results/<grid>.md`. A
`--set seed=N` other than the base seed (42) writes rows `<variant>-seedN` beside the others; the augment grid's
table gives each row's difference to `all-on` at its seed, and the means over seeds.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from hw2 import Hw2Error, OneLineParser, as_json, atomic_write_text, infer, run_cli
from hw2.checkpoint import load_checkpoint
from hw2.config import ADDED_LATER, RESUMABLE, TrainConfig
from hw2.plots import save_figure
from hw2.score_plots import augment_note, models_note, phases_used, plot_augment, plot_models
from hw2.stats import load_history
from hw2.train import train

# The base: the recipe of the first shipped model (Open-Unmix, random track mixing; before the blend), with a budget
# of epochs instead of 150: every committed grid row was trained with it.
BASE = dict(hidden_size=256, seq_dur=4.0, samples_per_track=2, lr_decay_patience=20, patience=150,
            mixing="incoherent", quiet=True)
BASE_SEED = 42  # TrainConfig's default seed
OURS = "ours (hw2.model)"
MDX_NET = "ours, after MDX-Net (Kim et al., MDX 2021; github.com/kuielab/mdx-net)"
# the complex TFC-TDF U-Net at its CPU size (hw2.config.PRESETS["tfctdf-cpu"]), trained with the recipe the study
# keeps (coherent mixing, valid SDR every 5 epochs, best epoch by valid SDR), scored with its own phase
TFCTDF = {"arch": "tfctdf", "hidden_size": 8, "nb_layers": 4, "bandwidth": 5600.0, "tfc_layers": 2,
          "tdf_bottleneck": 4, "mixing": "coherent", "sdr_every": 5, "select_by": "sdr"}
OPEN_UNMIX = "ours, after Open-Unmix (Stöter et al., JOSS 2019; github.com/sigsep/open-unmix-pytorch)"

# name -> (fields changed from BASE, what it tests, code)
GRIDS = {
    "models": {
        "openunmix-256": ({}, "Open-Unmix, hidden 256, 3 BLSTM layers (the shipped model)", OPEN_UNMIX),
        "openunmix-512": ({"hidden_size": 512}, "Open-Unmix's default width", OPEN_UNMIX),
        "openunmix-128": ({"hidden_size": 128}, "half the shipped width", OPEN_UNMIX),
        "lstm-1": ({"nb_layers": 1}, "one BLSTM layer instead of three", OPEN_UNMIX),
        "no-lstm": ({"nb_layers": 0}, "no LSTM: the fully connected path alone", OPEN_UNMIX),
        "unidirectional": ({"unidirectional": True}, "a causal, unidirectional LSTM", OPEN_UNMIX),
        "no-skip": ({"skip": False}, "no skip connection around the LSTM", OPEN_UNMIX),
        "no-mask": ({"mask": False}, "the network outputs the magnitude, not a mask", OPEN_UNMIX),
        "unet": ({"arch": "unet", "hidden_size": 64, "nb_layers": 6},
                 "spectrogram U-Net, 6 levels, 8-256 channels (Jansson et al., ISMIR 2017)", OURS),
        "tfctdf": (TFCTDF, "TFC-TDF U-Net, complex output (its own phase), MSE on the complex spectrum; coherent "
                           "mixing, best epoch by valid SDR", MDX_NET),
        "tfctdf-wave": ({**TFCTDF, "loss": "wave-l1"}, "the same, trained with an L1 loss on the waveform",
                        MDX_NET),
    },
    # optional task 2: the shipped model with the loader's augmentations taken away one at a time
    "augment": {
        "all-on": ({}, "the shipped recipe: random gain, channel swap, random track mixing, random offsets",
                   OPEN_UNMIX),
        "no-gain": ({"gain_low": 1.0, "gain_high": 1.0}, "no random source gain", OPEN_UNMIX),
        "no-swap": ({"swap": False}, "no random left/right swap", OPEN_UNMIX),
        "coherent": ({"mixing": "coherent"}, "no random track mixing: each excerpt's sources from one track",
                     OPEN_UNMIX),
        "all-off": ({"gain_low": 1.0, "gain_high": 1.0, "swap": False, "mixing": "coherent"},
                    "no augmentation", OPEN_UNMIX),
        "no-offsets": ({"offsets": "fixed"}, "no random excerpt offsets: every excerpt at its track's start",
                       OPEN_UNMIX),
        # additions, each on top of the default; +-1 semitone and +-10 % are the mean sizes of Scaper's
        # uniform(-2, 2) semitones and uniform(0.8, 1.2) (seed 001)
        "pitch": ({"pitch_shift": 1.0}, "+ per-source pitch shift by -1 / 0 / +1 semitone (cached copies)",
                  OPEN_UNMIX),
        "stretch": ({"time_stretch": 0.1}, "+ per-source time stretch to 0.9 / 1 / 1.1 times (cached copies)",
                    OPEN_UNMIX),
        "pitch-stretch": ({"pitch_shift": 1.0, "time_stretch": 0.1},
                          "+ both: each source excerpt the original or one of the four copies", OPEN_UNMIX),
        "sign-flip": ({"sign_flip": True}, "+ random per-source sign flip (Demucs, Défossez et al. 2019)",
                      OPEN_UNMIX),
        # issue 23 step 1: the ablation's winners together, kept only if it holds at two seeds
        "combined": ({"mixing": "coherent", "offsets": "fixed", "pitch_shift": 1.0, "time_stretch": 0.1},
                     "coherent mixing + fixed offsets + pitch-or-stretch copies (the winners together)",
                     OPEN_UNMIX),
    },
}
TITLES = {"models": "Model comparison", "augment": "Augmentation ablation"}


def variant_config(grid: str, name: str, musdb_root: str, epochs: int, runs: Path, base: dict):

    changes = GRIDS[grid][name][0]
    seed = base.get("seed", BASE_SEED)
    cfg = TrainConfig(**{**BASE, **base, **changes, "musdb_root": musdb_root, "epochs": epochs,
                         "milestones": (epochs,), "out": str(runs / grid / row_name(name, seed))})
    return cfg


def comparable(cfg) -> dict:
    """The config fields that decide what is trained (not where it runs or where it is written)."""

    # fields added after rows were trained are left out at their defaults, so that those rows still match
    return {k: v for k, v in as_json(asdict(cfg)).items()
            if k not in RESUMABLE | {"epochs"} and not (k in ADDED_LATER and v == ADDED_LATER[k])}


def row_name(name: str, seed: int) -> str:
    """A variant's row at the base seed is named as the variant; at another seed, `<variant>-seed<N>` (its own
    run folder and row, so that repeats at other seeds sit in the same table)."""
    return name if seed == BASE_SEED else f"{name}-seed{seed}"


def run_variant(grid: str, name: str, cfg, results_dir: Path, jobs: int, log=print) -> dict:
    """Train one variant (or resume it), score its best checkpoint on the valid split, return its table row."""
    row = row_name(name, cfg.seed)

    log(f"[{row}] training {cfg.epochs} epochs in {cfg.out}")
    summary = train(cfg, log=lambda m: log(f"[{row}] {m}"))
    if summary["stopped"] == "time-limit":
        raise Hw2Error(f"{row}: stopped at its time limit; run the same command to continue")
    run = Path(cfg.out)
    history = load_history(run)
    best = load_checkpoint(run / "best.pt")
    method = "network" if cfg.arch == "tfctdf" else "mixture"  # a complex model's own phase
    table = infer.table(infer.arguments(cfg.musdb_root, [run / "best.pt"], name=f"{grid}-{row}", out=results_dir,
                                        jobs=jobs, phase=(method,)))
    scored_row = table["rows"][0]
    # a results row like infer.py's (label, method, epoch, scores: every metric), plus the comparison's columns
    return {"label": row, "variant": row, "base": name, "seed": cfg.seed, "method": method, "checkpoint": str(run / "best.pt"),
            "epoch": best["epoch"], "scores": scored_row["scores"], "nb_tracks": scored_row.get("nb_tracks"),
            "description": GRIDS[grid][name][1], "code": GRIDS[grid][name][2], "pretrained": False,
            "params": best["nb_params"], "epochs": len(history),
            "train_minutes": round(sum(h["seconds"] for h in history) / 60, 1), "device": best.get("device"),
            "data": table["data"], "config": comparable(cfg)}


def save_row(path: Path, args, base: dict, row: dict) -> dict:
    """Add one row to the table on disk, after every variant, so that an interrupted grid keeps what it finished;
    under a lock, re-reading the file, so that two runners (one per core, `--only` different rows) can share it."""
    import fcntl

    grid = GRIDS[args.grid]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = {r["variant"]: r for r in (json.loads(path.read_text())["rows"] if path.exists() else [])}
        rows[row["variant"]] = row
        data = next(iter(rows.values()))["data"]
        order = sorted((r for r in rows.values() if r.get("base", r["variant"]) in grid),
                       key=lambda r: (list(grid).index(r.get("base", r["variant"])), r["config"]["seed"] != BASE_SEED,
                                      r["config"]["seed"]))
        if args.grid == "augment":
            add_deltas(order)
        table = {"title": f"{TITLES[args.grid]} ({args.grid} grid) on the valid split", "grid": args.grid, "data": data,
                 "budget": f"{args.epochs} epochs of {BASE['samples_per_track']} excerpts of "
                           f"{base.get('seq_dur', BASE['seq_dur']):g} s per train track, batch 16",
                 "musdb_root": args.musdb_root, "command": table_command(args, order), "commit": git_commit(),
                 "rows": order}
        atomic_write_text(path, json.dumps(table, indent=2))
        atomic_write_text(path.with_suffix(".md"), markdown(table))
    return table


def git_commit() -> str | None:
    """The code the rows were trained with (the loader's random stream and the models may change later)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def add_deltas(rows: list[dict], default: str = "all-on") -> None:
    """Each row's `delta`: its valid SDR minus the default's at the same seed (dB; None without that row)."""
    ref = {r["config"]["seed"]: r for r in rows if r.get("base", r["variant"]) == default}
    for r in rows:
        d = ref.get(r["config"]["seed"])
        r["delta"] = {t: None if d is None or None in (r["scores"][t]["SDR"], d["scores"][t]["SDR"]) else
                      round(r["scores"][t]["SDR"] - d["scores"][t]["SDR"], 2) for t in ("vocals", "accompaniment")}


def seed_means(table: dict) -> list[dict]:
    """Per variant with rows at several seeds: the mean SDR and mean difference to the default over those seeds."""
    groups: dict[str, list[dict]] = {}
    for r in table["rows"]:
        groups.setdefault(r.get("base", r["variant"]), []).append(r)
    mean = lambda v: None if not v or None in v else round(sum(v) / len(v), 2)  # noqa: E731
    return [{"variant": name, "seeds": [r["config"]["seed"] for r in rs],
             **{f"{t} SDR": mean([r["scores"][t]["SDR"] for r in rs]) for t in ("vocals", "accompaniment")},
             **{f"{t} delta": mean([r.get("delta", {}).get(t) for r in rs]) for t in ("vocals", "accompaniment")}}
            for name, rs in groups.items() if len(rs) > 1]


def augment_markdown(table: dict) -> list[str]:
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    sign = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    lines = ["| variant | what changes | seed | training min | best epoch | vocals SDR | accompaniment SDR | "
             "Δ vocals | Δ accompaniment |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table["rows"]:
        sdr = [fmt(r["scores"][t]["SDR"]) for t in ("vocals", "accompaniment")]
        delta = [sign(r.get("delta", {}).get(t)) for t in ("vocals", "accompaniment")]
        lines.append(f"| {r['variant']} | {r['description']} | {r['config']['seed']} | {r['train_minutes']} | "
                     f"{r['epoch']} / {r['epochs']} | {sdr[0]} | {sdr[1]} | {delta[0]} | {delta[1]} |")
    means = seed_means(table)
    if means:
        lines += ["", "Mean over seeds (Δ: to the default at the same seed):", "",
                  "| variant | seeds | vocals SDR | accompaniment SDR | Δ vocals | Δ accompaniment |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {m['variant']} | {', '.join(map(str, m['seeds']))} | {fmt(m['vocals SDR'])} | "
                  f"{fmt(m['accompaniment SDR'])} | {sign(m['vocals delta'])} | {sign(m['accompaniment delta'])} |"
                  for m in means]
    return lines


def markdown(table: dict) -> str:
    lines = [f"# {table['title']}", "",
             "| variant | parameters | pretrained | code | training min | best epoch | vocals SDR | accompaniment SDR |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    for r in table["rows"]:
        sdr = [fmt(r["scores"][t]["SDR"]) for t in ("vocals", "accompaniment")]
        lines.append(f"| {r['variant']} | {r['params']:,} | no | {r['code']} | {r['train_minutes']} | "
                     f"{r['epoch']} / {r['epochs']} | {sdr[0]} | {sdr[1]} |")
    if table.get("grid") == "augment":  # one model: its size and code once, the differences to the default instead
        r = table["rows"][0]
        lines[2:] = augment_markdown(table) + ["", f"Model: {r['code']}, {r['params']:,} parameters, not pretrained."]
    data = table["data"]
    lines += ["", f"Budget: {table['budget']}. Data: {data.get('dataset', '')} (`{table['musdb_root']}`), trained on "
              f"musdb's train split, scored on its valid split ({data.get('nb_tracks')} tracks; SDR in dB, BSSEval "
              f"v4, median over 1 s frames, then over tracks; {phases_used(table)}).", "",
              f"Command: `{table['command']}` (code at commit {table.get('commit')})", ""]
    return "\n".join(lines)


def run_grid(args, log=print) -> dict:
    grid = GRIDS[args.grid]
    names = args.only or list(grid)
    unknown = [n for n in names if n not in grid]
    if unknown:
        raise Hw2Error(f"unknown variant {unknown[0]!r} in grid {args.grid}: use one of {', '.join(grid)}")
    if args.epochs < 1:
        raise Hw2Error(f"--epochs must be at least 1, got {args.epochs}")
    base = parse_set(args.set)
    results_dir, runs = Path(args.out), Path(args.runs)
    path = results_dir / f"{args.grid}.json"
    table = json.loads(path.read_text()) if path.exists() else {"rows": []}
    done = {r["variant"]: r for r in table["rows"]}
    for name in names:
        cfg = variant_config(args.grid, name, args.musdb_root, args.epochs, runs, base)
        row = row_name(name, cfg.seed)
        if row in done and done[row]["config"] == comparable(cfg) and done[row]["epochs"] == args.epochs:
            log(f"[{row}] already in {path}: skipped")
            continue
        t0 = time.monotonic()
        done[row] = run_variant(args.grid, name, cfg, results_dir / "experiments", args.jobs, log)
        sdr = {t: done[row]["scores"][t]["SDR"] for t in ("vocals", "accompaniment")}
        log(f"[{row}] vocals SDR {sdr['vocals']}, accompaniment SDR {sdr['accompaniment']} "
            f"({(time.monotonic() - t0) / 60:.1f} min)")
        table = save_row(path, args, base, done[row])
    if table["rows"]:

        if args.grid == "models":  # SDR against size and time; the ablation's rows all have one size
            save_figure(plot_models(table), "05_models", note=models_note(table))
        elif any(r.get("base", r["variant"]) != "all-on" and r.get("delta", {}).get("vocals") is not None
                 for r in table["rows"]):  # the difference each augmentation makes to the default
            save_figure(plot_augment(table), "06_augment", note=augment_note(table))
        log(markdown(table))
    return table


def parse_set(items) -> dict:
    """`--set seq_dur=1 hidden_size=16` -> {"seq_dur": 1.0, "hidden_size": 16}, typed like TrainConfig."""

    types = {f.name: type(getattr(TrainConfig(), f.name)) for f in fields(TrainConfig)}
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if key not in types or not value:
            raise Hw2Error(f"--set {item!r}: use FIELD=VALUE with a TrainConfig field (python -m hw2.train --help)")
        out[key] = value.lower() in ("1", "true", "yes") if types[key] is bool else types[key](value)
    return out


def command_line(args, seed: bool = True, only: list[str] | None = None, sets: list[str] | None = None) -> str:
    """The command of a run; without `seed`, less a `--set seed=N` (the table's command, for its base seed rows);
    `only` adds --only, `sets` more --set fields."""
    cmd = f"python -m hw2.experiments --musdb-root {args.musdb_root} --grid {args.grid} --epochs {args.epochs}"
    sets = [x for x in args.set or [] if seed or not x.startswith("seed=")] + list(sets or [])
    return cmd + (f" --only {' '.join(only)}" if only else "") + (f" --set {' '.join(sets)}" if sets else "")


def table_command(args, rows: list[dict]) -> str:
    """The command that rebuilds every row of a table: the grid's at the base seed, then one `--only` run per other
    seed its rows were repeated at."""
    repeats: dict[int, list[str]] = {}
    for r in rows:
        if r["config"]["seed"] != BASE_SEED:
            repeats.setdefault(r["config"]["seed"], []).append(r.get("base", r["variant"]))
    return " && ".join([command_line(args, seed=False)] + [command_line(args, False, names, [f"seed={s}"])
                                                            for s, names in sorted(repeats.items())])


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m hw2.experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", default="", help="MUSDB18 root (musdb's train / valid split is used)")
    p.add_argument("--grid", default="models", choices=tuple(GRIDS))
    p.add_argument("--only", nargs="+", default=None, help="variants to run (default: all)")
    p.add_argument("--epochs", type=int, default=25, help="the budget: epochs per variant")
    p.add_argument("--set", nargs="+", default=None, metavar="FIELD=VALUE",
                   help="change the base config for every variant (e.g. a tiny budget for a smoke run)")
    p.add_argument("--runs", default="runs/experiments", help="where the variants' run folders go")
    p.add_argument("--out", default="results", help="results folder")
    p.add_argument("--jobs", type=int, default=1, help="scoring worker processes")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, (changes, what, code) in GRIDS[args.grid].items():
            print(f"{name:16s} {what}  [{', '.join(f'{k}={v}' for k, v in changes.items()) or 'base'}]")
        return 0
    if not args.musdb_root:
        p.error("--musdb-root is required (python -m hw2.synth OUT makes a small generated root)")
    return run_cli(lambda: run_grid(args), "interrupted: finished rows are in the table; run the same command "
                                           "to continue")


if __name__ == "__main__":
    sys.exit(main())
