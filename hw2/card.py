"""Ship a training run: copy its best and milestone checkpoints into `checkpoints/` and write the model card.

    python -m hw2.card --run runs/musdb7-vocals --results results/train-valid.json
    python -m hw2.card --vocoder --run runs/vocoder --results results/vocoder-valid.json   # the vocoder

The card is built from facts only: the config and history saved by the run, the checkpoint's metadata, and the
SDR table written by `hw2/infer.py` (its command and data are quoted). Nothing in it is typed by hand.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import fields, replace
from pathlib import Path

from hw2 import Hw2Error, OneLineParser, atomic_write, atomic_write_text, run_cli
from hw2.checkpoint import load_checkpoint
from hw2.config import config_from_dict
from hw2.evaluate import METRICS, markdown_table
from hw2.model import ModelConfig, describe, pair_share, parameters_of
from hw2.stats import load_history, load_run_config
from hw2.tracks import open_tracks
from hw2.vocoder import VocoderConfig, load_vocoder

REPO = Path(__file__).resolve().parents[1]
MIXING_WORDS = {"coherent": "coherent mixing (each excerpt's sources from one track)",
                "incoherent": "incoherent random track mixing"}


def shown_path(path) -> str:
    """A path as a card shows it: relative to the repository (a run on this machine used absolute paths), so a
    card names no folder of the machine it was written on."""
    p = Path(str(path))
    return os.path.relpath(p, REPO) if p.is_absolute() else str(path)


def train_command(cfg, prog: str = "python -m hw2.train") -> str:
    """The command that reproduces a config (`TrainConfig`, or `VocoderConfig` with prog `python -m hw2.vocoder`):
    the flags that differ from the defaults."""
    default = type(cfg)()
    parts = [prog]
    for f in fields(cfg):
        value, base = getattr(cfg, f.name), getattr(default, f.name)
        if f.name in ("quiet", "cache_dir", "device", "nb_workers", "max_minutes") or value == base:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, (tuple, list)):
            parts.append(f"{flag} {' '.join(map(str, value))}")
        else:
            parts.append(f"{flag} {shown_path(value) if f.name in ('musdb_root', 'out') else value}")
    return " ".join(parts)


def model_card(run: Path, results: dict | None, best: dict) -> str:
    cfg = config_from_dict(json.loads((run / "config.json").read_text()))
    history = load_history(run)
    wall = sum(h["seconds"] for h in history)
    sdr = next((h.get("valid_sdr") for h in history if h["epoch"] == best["epoch"]), None)
    excerpts = f"{cfg.samples_per_track} excerpts of {cfg.seq_dur:g} s per train track"
    counts = _split_counts(cfg.musdb_root)
    lines = [
        f"# Model card: {'U-Net' if cfg.arch == 'unet' else 'Open-Unmix'} vocals model (`checkpoints/vocals.pt`)",
        "",
        "| | |",
        "|---|---|",
        f"| model | {describe(cfg.model_config())} |",
        f"| parameters | {best['nb_params']:,} (the assignment's limit is 10M) |",
        "| initialisation | from scratch (random weights, seed {}); no pretrained weights, no extra data |".format(cfg.seed),
        f"| data | `{shown_path(cfg.musdb_root)}`, its train folder, with musdb's standard train / valid split |",
        f"| training tracks | musdb's train split ({counts['train']} tracks); the test split was never read |",
        f"| model selection | {_selection(cfg)} on musdb's valid split ({counts['valid']} tracks, full length) |",
        f"| an epoch | {excerpts} (balanced sampling: each track {cfg.samples_per_track}x), "
        f"{cfg.sampler} sampling, {MIXING_WORDS[cfg.mixing]}, gain [{cfg.gain_low:g}, {cfg.gain_high:g}]"
        f"{', left/right swap' if cfg.swap else ''}; batch {cfg.batch_size} |",
        f"| optimiser | Adam lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}; ReduceLROnPlateau x{cfg.lr_decay_gamma:g} "
        f"after {cfg.lr_decay_patience} epochs; early-stopping patience {cfg.patience} |",
        f"| epochs | {len(history)} trained; best (shipped) epoch {best['epoch']}, valid loss {best['valid_loss']:.4g}"
        + (f", valid vocals SDR {sdr:.2f} dB" if sdr is not None else "") + " |",
        f"| wall time | {wall / 60:.1f} min of training and validation (sum of `history.json` seconds) |",
        f"| device | {best.get('device', 'unknown')} |",
        "",
        "Training command (reproduces `checkpoints/config.json`):",
        "",
        f"```bash\n{train_command(cfg)}\n```",
        "",
    ]
    lines += _results_lines(results)
    lines += ["Files: `vocals.pt` (the best epoch), `epochNNN.pt` (milestones), `config.json`, `history.json`."]
    return "\n".join(lines) + "\n"


def _results_lines(results: dict | None) -> list[str]:
    """The card's SDR section: the valid-split table written by hw2/infer.py, its command and the caveat."""
    if not results:
        return ["No SDR table yet: run `python hw2/infer.py --musdb-root ... --subset train --split valid` and "
                "pass its JSON with --results.", ""]
    data = results["data"]
    lines = [f"## SDR on musdb's {data.get('split') or data.get('subset')} split ({data.get('nb_tracks')} tracks)",
             "", "BSSEval v4 (museval), 1-second frames; median over frames per track, then median over tracks; dB.",
             "", markdown_table(results["rows"], METRICS), "",
             f"Produced by `{results['command']}` on {results['created']}.", ""]
    if data.get("split") == "valid":
        lines += ["The shipped epoch was selected on this same valid split, so these numbers are slightly "
                  "optimistic as an estimate of unseen music; comparisons between phase methods are not affected "
                  "(they share the magnitudes). The test split is for independent measurement.", ""]
    return lines


def blend_card(path: Path, ckpt: dict, results: dict | None) -> str:
    """The card of a blend checkpoint (`python -m hw2.blend`; `ckpt` as `load_checkpoint` read it): each member's
    network, recipe, epoch and training time from its own run folder, the weights and how they were chosen, the
    SDR table if given."""

    entry = ckpt["blend"]
    members = entry["members"] + ([entry["accompaniment"]] if entry.get("accompaniment") else [])
    counts = _split_counts(members[0]["config"]["musdb_root"])
    params = [parameters_of(ModelConfig.from_dict(m["config"])) for m in members]
    nb_params = sum(params)
    weights = entry["weights"] + ([entry["accompaniment_weight"]] if entry.get("accompaniment") else [])
    scored = entry.get("scored", [])
    searched = {k: len({r.get(k) for r in scored}) > 1 for k in ("w", "t", "u")}  # the grids hw2.blend ran, if any
    ws = entry["weights"]
    w = pair_share(ws)
    fixed = [] if searched["w"] else [w] + (
        [entry["accompaniment_weight"]] if entry.get("accompaniment") and not searched["u"] else [])
    if len(ws) == 3 and not searched["t"]:  # a fixed third weight follows w and u in --weights
        fixed = [w, entry["accompaniment_weight"], ws[2]]
    complex_member = any(m["config"].get("arch") == "tfctdf" for m in entry["members"])
    vocals_models = f"{len(entry['members'])} vocals model{'s' if len(entry['members']) > 1 else ''}"
    lines = [
        f"# Model card: a blend of {vocals_models}"
        + (" and an accompaniment model" if entry.get("accompaniment") else "") + " (`checkpoints/vocals.pt`)", "",
        ("The vocals are the weighted sum of the members' complex estimates (network blending, Uhlich et al., ICASSP "
         "2017): a magnitude member's estimate on the mixture's phase, the complex member's with its own predicted "
         "phase; the accompaniment is what is left of the mixture" if complex_member else
         "The vocals magnitude is the weighted average of the members' vocals magnitudes (network blending, Uhlich "
         "et al., ICASSP 2017); the accompaniment is what is left of the mixture")
        + (", blended with an accompaniment network's estimate" if entry.get("accompaniment") else "")
        + (". Each network's estimate is also averaged with its estimate of the left/right swapped mixture."
           if entry.get("swap") else "."), "",
        "| | |", "|---|---|",
        f"| parameters | {nb_params:,} in all (the assignment's limit is 10M) |",
        "| initialisation | every member from scratch (random weights); no pretrained weights, no extra data |",
        f"| data | `{shown_path(members[0]['config']['musdb_root'])}`, its train folder, with musdb's standard "
        "train / valid split |",
        f"| training tracks | musdb's train split ({counts['train']} tracks); the test split was never read |",
        f"| weights | {', '.join(f'{w:g}' for w in weights)} (in member order); "
        f"{_weights_origin(entry, searched, counts)} |",
        "",
        "| member | weight | network | parameters | epochs trained | selected epoch | selection | training min |",
        "|---|---:|---|---:|---:|---:|---|---:|",
    ]
    commands = []
    for i, (m, w) in enumerate(zip(members, weights)):
        run = Path(m.get("source", "")).parent
        # the folder's config.json is the last command's (a resumed run may have trained more --epochs)
        saved = load_run_config(run) or m["config"]
        cfg = replace(config_from_dict(saved), out=str(run))  # where its checkpoints live now
        history = read_history(run)
        minutes = "-" if history is None else f"{sum(h['seconds'] for h in history) / 60:.1f}"
        trained = "-" if history is None else str(len(history))
        lines.append(f"| {i + 1}: {cfg.target} | {w:g} | {describe(ModelConfig.from_dict(m['config']))} | "
                     f"{params[i]:,} | {trained} | {m.get('epoch')} | {_selection(cfg).rstrip(',')} | {minutes} |")
        commands.append(f"# member {i + 1}\n{train_command(cfg)}")
    lines += ["", "Training commands (each member's own run):", "", "```bash\n" + "\n".join(commands) + "\n```", "",
              f"Blend command: `python -m hw2.blend --members "
              f"{' '.join(m.get('source', '?') for m in entry['members'])}"
              + (f" --accompaniment {entry['accompaniment'].get('source')}" if entry.get("accompaniment") else "")
              + (" --swap" if entry.get("swap") else "")
              + (f" --weights {' '.join(f'{x:g}' for x in fixed)}" if len(entry["members"]) >= 2 and fixed
                 or len(fixed) > 1 else "")  # one member: its w is not a choice, only a fixed u is
              + f" --musdb-root MUSDB_ROOT --out {shown_path(path.absolute())} "
              "--milestones`", ""]
    lines += _results_lines(results)
    lines += ["Files: `vocals.pt` (the blend of the members' selected epochs), `epochNNN.pt` (the blend of the "
              "members' epoch-NNN milestones, same weights), `config.json` and `history.json` (member 1's run), "
              "`blend.json` (members, weights, sources)."]
    return "\n".join(lines) + "\n"


def _weights_origin(entry: dict, searched: dict, counts: dict) -> str:
    """How a blend's weights were set, in words: the grids hw2.blend searched on the valid split, or --weights."""
    grid = f"chosen on musdb's valid split ({counts['valid']} tracks) among 0, 0.1, ..., 1"
    parts = []
    if len(entry["members"]) == 2:
        parts.append(f"the vocals weights {grid} by the median vocals SDR (mixture phase)" if searched["w"]
                     else "the vocals weights fixed with `--weights`")
    if len(entry["members"]) == 3:
        parts.append("the first two vocals members' shares fixed with `--weights`; the third's weight t "
                     + (f"{grid} by the median vocals SDR (the blend's own phase)" if searched["t"]
                        else "fixed with `--weights`"))
    if entry.get("accompaniment"):
        parts.append(f"the accompaniment weight {grid} by the median accompaniment SDR (mixture phase)"
                     if searched["u"] else "the accompaniment weight fixed with `--weights`")
    return "; ".join(parts) or "one vocals model"


def read_history(run: Path) -> list[dict] | None:
    """A run folder's history.json (one dict per epoch, with its "seconds"); None where it is not here."""
    try:
        return load_history(run)
    except (OSError, ValueError):
        return None


def ship_blend(path: Path, dest: Path, results_path: Path | None) -> Path:
    """A blend checkpoint and the milestone blends beside it -> vocals.pt and epochNNN.pt (older milestones
    removed), member 1's config.json and history.json, blend.json and MODEL_CARD.md."""
    ckpt = load_checkpoint(path)
    if "blend" not in ckpt:
        raise Hw2Error(f"{path}: not a blend checkpoint; write one with `python -m hw2.blend`, or ship a training "
                       "run with --run")
    results = _read_results(results_path)
    entry = ckpt["blend"]
    first = Path(entry["members"][0].get("source", "")).parent
    for name in ("config.json", "history.json"):
        if not (first / name).is_file():
            raise Hw2Error(f"{first}: no {name}; blend members must be checkpoints inside their training run folders")
    card = blend_card(path, ckpt, results)  # before anything is replaced: a member may live in dest
    dest.mkdir(parents=True, exist_ok=True)
    milestones = sorted(path.parent.glob("epoch[0-9][0-9][0-9].pt"))
    for old in dest.glob("epoch[0-9][0-9][0-9].pt"):
        if old.name not in {m.name for m in milestones}:
            old.unlink()
    for src in [path, *milestones]:
        with atomic_write(dest / ("vocals.pt" if src == path else src.name)) as tmp:
            shutil.copyfile(src, tmp)
    for name in ("config.json", "history.json"):
        atomic_write_text(dest / name, (first / name).read_text())
    members = entry["members"] + ([entry["accompaniment"]] if entry.get("accompaniment") else [])
    atomic_write_text(dest / "blend.json", json.dumps({
        "weights": entry["weights"], "accompaniment_weight": entry.get("accompaniment_weight", 0.0),
        "swap": entry.get("swap", False), "scored": entry.get("scored", []),
        "members": [{"source": m.get("source"), "epoch": m.get("epoch"), "config": m["config"]} for m in members]},
        indent=2))
    atomic_write_text(dest / "MODEL_CARD.md", card)
    return dest


def _read_results(results_path) -> dict | None:
    if not results_path:
        return None
    try:
        return json.loads(Path(results_path).read_text())
    except (OSError, ValueError):
        raise Hw2Error(f"{results_path}: not a readable results JSON; write it with hw2/infer.py") from None


def _selection(cfg) -> str:
    if cfg.select_by == "sdr":
        phase = "its own phase" if cfg.arch == "tfctdf" else "mixture phase"
        return f"highest median vocals SDR ({phase}), computed every {cfg.sdr_every} epochs,"
    return "lowest validation loss"


def _split_counts(root: str) -> dict:
    """Track counts of musdb's train / valid split of `root`, or "?" where the root cannot be read here."""
    out = {}
    for split in ("train", "valid"):
        try:
            out[split] = len(open_tracks(root, "train", split))
        except Hw2Error:
            out[split] = "?"
    return out


def ship(run: Path, dest: Path, results_path: Path | None) -> Path:
    for name in ("config.json", "history.json", "best.pt"):
        if not (run / name).exists():
            raise Hw2Error(f"{run}: no {name}; pass --run a training run folder (python -m hw2.train --out ...)")
    best = load_checkpoint(run / "best.pt")
    results = _read_results(results_path)
    dest.mkdir(parents=True, exist_ok=True)
    for src in [run / "best.pt", *sorted(run.glob("epoch[0-9][0-9][0-9].pt"))]:
        target = dest / ("vocals.pt" if src.name == "best.pt" else src.name)
        with atomic_write(target) as tmp:
            shutil.copyfile(src, tmp)
    for name in ("config.json", "history.json"):
        atomic_write_text(dest / name, (run / name).read_text())
    best_meta = {k: best.get(k) for k in ("nb_params", "epoch", "valid_loss", "device")}
    atomic_write_text(dest / "MODEL_CARD.md", model_card(run, results, best_meta))
    return dest


def vocoder_card(run: Path, results: dict | None, best: dict) -> str:
    """The vocoder's card: its config, budget and losses from the run folder, the SDR table if given."""
    cfg = VocoderConfig.from_dict(json.loads((run / "config.json").read_text()))
    history = load_history(run)
    counts = _split_counts(cfg.musdb_root)
    lines = [
        "# Model card: vocoder (`checkpoints/vocoder.pt`)",
        "",
        "| | |",
        "|---|---|",
        f"| model | Vocos-style (Siuzdak 2023): {cfg.nb_layers} ConvNeXt blocks of {cfg.dim} channels, kernel "
        f"{cfg.kernel} frames, over the log magnitude of STFT {cfg.n_fft}/{cfg.n_hop} (Hann, {cfg.rate} Hz, the "
        "separator's); a linear head gives one phase per bin and frame; output = inverse STFT of the input "
        "magnitude with that phase; mono (each channel on its own) |",
        f"| parameters | {best['nb_params']:,} |",
        f"| initialisation | from scratch (random weights, seed {cfg.seed}); no pretrained weights, no extra data |",
        f"| data | `{shown_path(cfg.musdb_root)}`: the vocals and accompaniment (drums + bass + other) stems of musdb's train "
        f"split ({counts['train']} tracks), never a mixture; the test split was never read |",
        f"| model selection | lowest loss on the full stems of musdb's valid split ({counts['valid']} tracks) |",
        f"| an epoch | {cfg.samples_per_track} excerpts of {cfg.seq_dur:g} s per train track, random gain "
        f"[{cfg.gain_low:g}, {cfg.gain_high:g}], batch {cfg.batch_size} excerpts (x 2 targets x 2 channels) |",
        f"| loss | multi-resolution STFT (spectral convergence + log-magnitude L1), n_fft "
        f"{', '.join(map(str, cfg.loss_ffts))}, hop n_fft / 4; no adversarial term |",
        f"| optimiser | AdamW lr {cfg.lr:g}, betas (0.8, 0.9) |",
        f"| epochs | {len(history)} trained; best (shipped) epoch {best['epoch']}, valid loss {best['valid_loss']:.4f} |",
        f"| wall time | {sum(h['seconds'] for h in history) / 60:.1f} min of training and validation "
        f"(sum of `vocoder-history.json` seconds) |",
        f"| device | {best.get('device', 'unknown')}"
        f"{f'; a budget of --max-minutes {cfg.max_minutes:g} (the run stops there, resumably)' if cfg.max_minutes else ''} |",
        "",
        "Training command (reproduces `checkpoints/vocoder-config.json`):",
        "",
        f"```bash\n{train_command(cfg, 'python -m hw2.vocoder')}"
        f"{f' --max-minutes {cfg.max_minutes:g}' if cfg.max_minutes else ''}\n```",
        "",
        "| epoch | train loss | valid loss | seconds |",
        "|---:|---:|---:|---:|",
        *(f"| {h['epoch']} | {h['train_loss']:.4f} | {h['valid_loss']:.4f} | {h['seconds']:.0f} |" for h in history),
        "",
    ]
    if results:
        data = results["data"]
        lines += [f"## SDR on musdb's {data.get('split') or data.get('subset')} split ({data.get('nb_tracks')} "
                  "tracks)", "", "BSSEval v4, 1-second frames; median over frames per track, then over tracks; dB. "
                  "`oracle-vocoder` vocodes the true stems' magnitudes (the vocoder alone).", "",
                  markdown_table(results["rows"], METRICS), "", f"Produced by `{results['command']}` on "
                  f"{results['created']}.", ""]
    return "\n".join(lines) + "\n"


def ship_vocoder(run: Path, dest: Path, results_path: Path | None) -> Path:
    """best.pt -> vocoder.pt, with vocoder-config.json, vocoder-history.json and VOCODER_CARD.md."""
    for name in ("config.json", "history.json", "best.pt"):
        if not (run / name).exists():
            raise Hw2Error(f"{run}: no {name}; pass --run a vocoder run folder (python -m hw2.vocoder --out ...)")
    load_vocoder(run / "best.pt")  # refuses anything but a vocoder checkpoint
    import torch
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    results = json.loads(Path(results_path).read_text()) if results_path else None
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest / "vocoder.pt") as tmp:
        torch.save({k: best[k] for k in ("format", "hw2_version", "config", "model", "nb_params", "epoch",
                                         "valid_loss", "device")}, tmp)
    for name in ("config.json", "history.json"):
        atomic_write_text(dest / f"vocoder-{name}", (run / name).read_text())
    meta = {k: best.get(k) for k in ("nb_params", "epoch", "valid_loss", "device")}
    atomic_write_text(dest / "VOCODER_CARD.md", vocoder_card(run, results, meta))
    return dest


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m hw2.card", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="", help="training run folder")
    p.add_argument("--blend", default="", help="a blend checkpoint (python -m hw2.blend), its milestones beside it")
    p.add_argument("--results", default="", help="results JSON of the valid-split table (from hw2/infer.py)")
    p.add_argument("--dest", default=str(REPO / "checkpoints"))
    p.add_argument("--vocoder", action="store_true", help="--run is a vocoder run (python -m hw2.vocoder)")
    a = p.parse_args(argv)
    def work():
        if a.vocoder:
            dest = ship_vocoder(Path(a.run), Path(a.dest), Path(a.results) if a.results else None)
            print(f"shipped {a.run} to {dest} (vocoder.pt, vocoder-config.json, vocoder-history.json, VOCODER_CARD.md)")
            return
        if a.blend:
            dest = ship_blend(Path(a.blend), Path(a.dest), Path(a.results) if a.results else None)
            print(f"shipped {a.blend} to {dest} (vocals.pt, milestones, blend.json, MODEL_CARD.md)")
            return
        if not a.run:
            raise Hw2Error("pass --run a training run folder (or --blend a blend checkpoint)")
        dest = ship(Path(a.run), Path(a.dest), Path(a.results) if a.results else None)
        print(f"shipped {a.run} to {dest} (vocals.pt, milestones, config, history, MODEL_CARD.md)")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
