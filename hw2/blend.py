"""Blending networks (Uhlich et al., ICASSP 2017): several trained separators as one checkpoint.

    python -m hw2.blend --members runs/a/best.pt runs/b/best.pt --musdb-root PATH --out checkpoints/vocals.pt
    python -m hw2.blend --members runs/a/best.pt runs/b/best.pt --accompaniment runs/acc/best.pt --swap ...
    python -m hw2.blend --members runs/a/epoch025.pt runs/b/epoch025.pt --weights 0.6 --out blend-epoch025.pt
    python -m hw2.blend ... --out runs/blend/best.pt --milestones   # + runs/blend/epochNNN.pt, same weights
    python -m hw2.blend --unpack checkpoints/vocals.pt --out runs/shipped   # runs/shipped/member1/best.pt, ...
    python -m hw2.blend --members runs/shipped/member1/best.pt runs/shipped/member2/best.pt runs/c/best.pt \
        --accompaniment runs/shipped/accompaniment/best.pt --weights 0.5 0.4 ...   # a third member's weight t
    python -m hw2.blend ... --table results/blend-complex   # the weight search as a results table (.md, .json)

The vocals magnitude is a weighted average of the members' vocals magnitudes, V = w V_1 + (1 - w) V_2 (a mask
model's output is its mask times the mixture, so this is also the average of their masks). With an accompaniment
member (a model trained with `--target accompaniment`) the accompaniment magnitude is
A = u A_net + (1 - u) max(|X| - V, 0): u = 0 keeps the single-model rule, u = 1 trusts the network alone. `--swap`
averages each network's estimate of the mixture with its estimate of the left/right swapped mixture (test-time
augmentation; it doubles the network's work). The weights w and u are chosen on musdb's valid split, one after the
other, by the median vocals SDR and the median accompaniment SDR (mixture phase), unless `--weights` fixes them.
A third member joins a fixed pair: the weights are ((1 - t) w, (1 - t)(1 - w), t), w and u given by `--weights`
and t chosen on the valid split by the median vocals SDR (mixture phase; a blend with a complex member, whose
vocals are a complex sum (`hw2.model.Blend`), by its own phase), or given as a third value (`--milestones` does).

A blend checkpoint is an ordinary hw2 checkpoint (`load_checkpoint`, `model_from_checkpoint`, `hw2/infer.py
--checkpoint`) whose "blend" entry holds each member's config and weights; its "config" is the first member's.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np

from hw2 import Hw2Error, OneLineParser, atomic_write_text, run_cli
from hw2.cache import open_cached
from hw2.checkpoint import (CHECKPOINT_FORMAT, MAX_PARAMS, atomic_torch_save, check_writable, load_checkpoint,
                            model_from_checkpoint)
from hw2.config import config_from_dict
from hw2.evaluate import score_model
from hw2.model import Blend, blend_epoch, pair_share

WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def choose_weights(blend: Blend, tracks, device="cpu", log=print, search_w: bool = True) -> list[dict]:
    """Set `blend`'s weights by a grid search on `tracks` (two vocals members: w on WEIGHT_GRID by vocals SDR,
    unless `search_w` is False; three: the third's weight t on WEIGHT_GRID by vocals SDR, the first two keeping
    their ratio; then, with an accompaniment member, u on WEIGHT_GRID by accompaniment SDR).
    Returns every point scored."""
    scored = []
    if len(blend.members) == 3 and search_w:
        w0 = pair_share(blend.weights)
        for t in WEIGHT_GRID:
            blend.weights = [round(float((1 - t) * w0), 6), round(float((1 - t) * (1 - w0)), 6), round(float(t), 6)]
            scored.append({"w": w0, "t": float(t), "u": blend.accompaniment_weight,
                           **score_model(blend, tracks, device)})
            log(f"t {t:.1f}: vocals {scored[-1]['vocals']:.2f} dB, accompaniment {scored[-1]['accompaniment']:.2f} dB")
        best = max(scored, key=lambda r: r["vocals"])
        blend.weights = [round((1 - best["t"]) * w0, 6), round((1 - best["t"]) * (1 - w0), 6), round(best["t"], 6)]
        return scored
    if len(blend.members) == 2 and search_w:
        blend.accompaniment_weight = 0.0
        for w in WEIGHT_GRID:
            blend.weights = [round(float(w), 6), round(float(1 - w), 6)]
            scored.append({"w": float(w), "u": 0.0, **score_model(blend, tracks, device)})
            log(f"w {w:.1f}: vocals {scored[-1]['vocals']:.2f} dB, accompaniment {scored[-1]['accompaniment']:.2f} dB")
        best = max(scored, key=lambda r: r["vocals"])
        blend.weights = [best["w"], round(1 - best["w"], 6)]
    if blend.accompaniment is not None:
        for u in WEIGHT_GRID:
            blend.accompaniment_weight = float(u)
            scored.append({"w": blend.weights[0], "u": float(u), **score_model(blend, tracks, device)})
            log(f"u {u:.1f}: vocals {scored[-1]['vocals']:.2f} dB, accompaniment {scored[-1]['accompaniment']:.2f} dB")
        blend.accompaniment_weight = max((r for r in scored if r["w"] == blend.weights[0]),
                                         key=lambda r: r["accompaniment"])["u"]
    return scored


def build(member_paths, out: Path, musdb_root: str = "", accompaniment_path=None, weights=None,
          swap: bool = False, cache_dir=None, log=print) -> Path:
    """Read the member checkpoints, choose the weights on the valid split (or take `weights`), write `out`."""
    ckpts = [load_checkpoint(p) for p in member_paths]
    for p, c in zip(member_paths, ckpts):
        if "blend" in c:
            raise Hw2Error(f"{p}: already a blend; pass the member checkpoints themselves")
        if c["config"].get("target", "vocals") != "vocals":
            raise Hw2Error(f"{p}: a {c['config']['target']} model; --members takes vocals models "
                           "(an accompaniment model goes to --accompaniment)")
    acc_ckpt = load_checkpoint(accompaniment_path) if accompaniment_path else None
    if acc_ckpt is not None and acc_ckpt["config"].get("target") != "accompaniment":
        raise Hw2Error(f"{accompaniment_path}: a {acc_ckpt['config'].get('target')} model; --accompaniment takes "
                       "a model trained with --target accompaniment")
    members = [model_from_checkpoint(c, p)[0].eval() for p, c in zip(member_paths, ckpts)]
    acc = model_from_checkpoint(acc_ckpt, accompaniment_path)[0].eval() if acc_ckpt else None
    fixed = list(weights or [])
    w = fixed[:1] if fixed else [1.0]
    if len(members) == 3 and not fixed:
        raise Hw2Error("a third member joins a fixed pair: give --weights w (the first member's share of the "
                       "first two) and, with --accompaniment, u; the third's weight is chosen on the valid split")
    t = fixed[2] if len(fixed) > 2 else 0.0  # a third member's weight, when --weights fixes it too
    start = {1: [1.0], 2: [w[0], 1 - w[0]], 3: [(1 - t) * w[0], (1 - t) * (1 - w[0]), t]}[len(members)]
    blend = Blend(members, start, acc, fixed[1] if len(fixed) > 1 else 0.0, swap)
    nb_params = sum(p.numel() for p in blend.parameters())
    if nb_params > MAX_PARAMS:
        raise Hw2Error(f"the blend has {nb_params:,} parameters, over the assignment's {MAX_PARAMS:,}: blend "
                       "smaller members")
    scored = []
    search_w = len(members) == 2 and not fixed or len(members) == 3 and len(fixed) < 3
    if search_w or (acc is not None and len(fixed) < 2):
        if not musdb_root:
            raise Hw2Error("choosing the weights needs the valid split: pass --musdb-root (or fix them with "
                           "--weights)")
        tracks = open_cached(musdb_root, "train", "valid", cache_dir)
        scored = choose_weights(blend, tracks, "cpu", log, search_w)
    entry = blend.checkpoint_entry(
        [{"config": c["config"], "model": c["model"], "epoch": c.get("epoch"), "source": str(p)}
         for p, c in zip(member_paths, ckpts)],
        {"config": acc_ckpt["config"], "model": acc_ckpt["model"], "epoch": acc_ckpt.get("epoch"),
         "source": str(accompaniment_path)} if acc_ckpt else None)
    entry["scored"] = scored
    config_from_dict(ckpts[0]["config"])  # the first member's config must load: it describes the blend's STFT
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": ckpts[0]["config"], "blend": entry,
                       "epoch": blend_epoch(entry)}, out)
    log(f"wrote {out}: {len(members)} member(s) weighted {blend.weights}"
        + (f", accompaniment weight {blend.accompaniment_weight}" if acc is not None else "")
        + (", left/right swap averaging" if swap else "") + f", {nb_params:,} parameters")
    return out


def unpack(path: Path, out: Path, log=print) -> list[Path]:
    """A blend back into its members' run folders: out/member1/best.pt, out/member2/best.pt (out/accompaniment/
    best.pt), and an epochNNN.pt in each for every blend milestone beside `path`. The shipped blend's members can
    then be blended again (with an accompaniment network, other weights) without their training runs. The
    config.json and history.json beside `path` (member 1's, as `hw2.card` ships them) go to out/member1/, which
    `hw2.card --blend` needs to ship the new blend."""
    path = Path(path)
    entry = load_checkpoint(path).get("blend")
    if entry is None:
        raise Hw2Error(f"{path}: not a blend checkpoint; --unpack takes a file written by `python -m hw2.blend`")
    check_writable(out, "the members' checkpoints")
    blends = {"best.pt": entry}
    for f in sorted(path.parent.glob("epoch[0-9][0-9][0-9].pt")):
        e = load_checkpoint(f).get("blend")
        if e is not None and len(e["members"]) == len(entry["members"]):
            blends[f.name] = e
    written = []
    for name, e in blends.items():
        nets = [(f"member{i + 1}", m) for i, m in enumerate(e["members"])] + \
            ([("accompaniment", e["accompaniment"])] if e.get("accompaniment") else [])
        for folder, m in nets:
            (out / folder).mkdir(parents=True, exist_ok=True)
            atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": m["config"], "model": m["model"],
                               "epoch": m.get("epoch")}, out / folder / name)
            written.append(out / folder / name)
    for name in ("config.json", "history.json"):
        if (path.parent / name).is_file():
            atomic_write_text(out / "member1" / name, (path.parent / name).read_text())
    log(f"wrote {len(written)} checkpoints of {len(blends)} blend(s) under {out}")
    return written


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m hw2.blend", description=__doc__.split("\n\n")[0])
    p.add_argument("--members", nargs="+", default=[], help="vocals checkpoints (one, two, or a fixed pair and a "
                   "third whose weight is chosen)")
    p.add_argument("--unpack", default="", help="a blend checkpoint to split into its members' checkpoints, "
                   "written under --out (a folder); its epochNNN.pt milestones too")
    p.add_argument("--accompaniment", default="", help="an accompaniment checkpoint (--target accompaniment)")
    p.add_argument("--weights", nargs="+", type=float, default=None,
                   help="fix w (the first member's weight; of three, its share of the first two), u (with "
                        "--accompaniment; else 0) and, of three members, the third's t; those not given are chosen "
                        "on the valid split")
    p.add_argument("--swap", action="store_true", help="average over the left/right swapped mixture too")
    p.add_argument("--musdb-root", default="", help="MUSDB root whose valid split chooses the weights")
    p.add_argument("--cache-dir", default="", help="decoded cache folder (default $HW2_CACHE or ~/.cache/hw2)")
    p.add_argument("--out", required=True, help="the blend checkpoint to write (with --unpack: a folder)")
    p.add_argument("--milestones", action="store_true",
                   help="also write epochNNN.pt beside --out for every milestone all members' run folders hold, "
                        "with the weights chosen for --out (the epoch table of a blend)")
    p.add_argument("--table", default="", metavar="RESULTS/NAME", help="write the weight search as NAME.md and "
                   "NAME.json (every point scored on the valid split)")
    args = p.parse_args(argv)
    if len(args.members) > 3:
        p.error("--members takes one to three checkpoints")
    if bool(args.members) == bool(args.unpack):
        p.error("give either --members (to blend) or --unpack (to split a blend)")
    if args.unpack:
        return run_cli(lambda: unpack(Path(args.unpack), Path(args.out)))

    def work():
        out = build(args.members, Path(args.out), args.musdb_root, args.accompaniment or None, args.weights,
                    args.swap, args.cache_dir)
        if args.milestones:
            blend_milestones(out, log=print)
        if args.table:
            command = "python -m hw2.blend " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
            print(f"wrote {write_table(out, Path(args.table), args.musdb_root, command)}")

    return run_cli(work)


def write_table(path: Path, table: Path, musdb_root: str, command: str) -> Path:
    """The weight search a blend checkpoint records ("scored") as `table`.json and `table`.md: every point scored
    on the valid split, the weights chosen, the command."""
    from hw2.tracks import describe_dataset, open_tracks

    entry = load_checkpoint(path)["blend"]
    rows = entry.get("scored") or []
    if not rows:
        raise Hw2Error(f"{path}: no weights were searched (all fixed by --weights): no table to write")
    tracks = open_tracks(musdb_root, "train", "valid")
    data = {"dataset": describe_dataset(musdb_root, tracks), "root": musdb_root, "subset": "train",
            "split": "valid", "nb_tracks": len(tracks)}
    members = [Path(m["source"]).as_posix() for m in entry["members"]]
    phase = ("the blend's own phase (magnitude members on the mixture's phase, the complex member on its own)"
             if any(m["config"].get("arch") == "tfctdf" for m in entry["members"]) else "mixture phase")
    doc = {"title": f"Blend weights on the valid split: {', '.join(members)}", "data": data, "method": phase,
           "command": command, "weights_chosen": entry["weights"],
           "accompaniment_weight": entry["accompaniment_weight"], "rows": rows}
    atomic_write_text(table.with_suffix(".json"), json.dumps(doc, indent=2))
    keys = [k for k in ("w", "t", "u") if len({r.get(k) for r in rows}) > 1]
    lines = ["| " + " | ".join(keys + ["vocals SDR", "accompaniment SDR"]) + " |", "|" + "---:|" * (len(keys) + 2)]
    lines += ["| " + " | ".join([f"{r[k]:.1f}" for k in keys] + [f"{r['vocals']:.2f}", f"{r['accompaniment']:.2f}"])
              + " |" for r in rows]
    atomic_write_text(table.with_suffix(".md"), f"# {doc['title']}\n\n" + "\n".join(lines) + "\n\n"
                      f"Members: {', '.join(members)}; the third's weight is t, the first two share 1 - t as "
                      f"w : 1 - w; u: the accompaniment network's weight. Chosen: vocals weights {entry['weights']}, "
                      f"u = {entry['accompaniment_weight']}. SDR in dB on the valid split of the {data['dataset']} "
                      f"({data['nb_tracks']} tracks), median over 1 s frames, then over tracks; {phase}.\n\n"
                      f"Command: `{command}`\n")
    return table.with_suffix(".md")


def blend_milestones(path: Path, log=print) -> list[Path]:
    """For each epochNNN.pt that every member's run folder holds, the blend of those milestones with `path`'s
    weights, written beside `path`: a blend's 25 / 50 / ... epoch rows."""
    entry = load_checkpoint(path)["blend"]
    sources = [Path(e["source"]) for e in entry["members"]] + \
        ([Path(entry["accompaniment"]["source"])] if entry.get("accompaniment") else [])
    common = set.intersection(*({f.name for f in s.parent.glob("epoch[0-9][0-9][0-9].pt")} for s in sources))
    written = []
    for name in sorted(common):
        milestone = [s.parent / name for s in sources]
        # --weights as build takes them: w, u, and a third member's t
        fixed = [pair_share(entry["weights"]), entry["accompaniment_weight"], *entry["weights"][2:]]
        written.append(build(milestone[:len(entry["members"])], path.parent / name,
                             accompaniment_path=milestone[-1] if entry.get("accompaniment") else None,
                             weights=fixed, swap=entry["swap"], log=log))
    return written


if __name__ == "__main__":
    sys.exit(main())
