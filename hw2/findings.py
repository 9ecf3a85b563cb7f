"""The numbers the report's prose states, each computed from its results file: `findings(results)` for
`hw2.report`, and the grids' variants in words (`variant_name`) for its tables and `hw2.figures`' bars.

report/report.typ never types a number: a finding it quotes is here, with the file it came from.
"""
from __future__ import annotations

import re
from pathlib import Path

from hw2.config import TrainConfig
from hw2.stats import load_run_config

# the grids' variants (hw2.experiments) in words, for the model table and the figures' bars; a variant missing
# here is named by its description up to the first comma, semicolon or bracket
VARIANT_NAMES = {
    "openunmix-256": "Open-Unmix, 256 hidden units", "openunmix-512": "Open-Unmix, 512 hidden units",
    "openunmix-128": "Open-Unmix, 128 hidden units", "lstm-1": "Open-Unmix, one LSTM layer, not three",
    "no-lstm": "Open-Unmix without its LSTM", "unidirectional": "Open-Unmix, one-way (causal) LSTM",
    "no-skip": "Open-Unmix without its skip path", "no-mask": "Open-Unmix predicting magnitudes, no mask",
    "unet": "spectrogram U-Net", "tfctdf": "TFC-TDF U-Net, complex output",
    "tfctdf-wave": "TFC-TDF U-Net, waveform loss",
    "all-on": "all on (the reference)", "no-gain": "no random gain", "no-swap": "no left/right swap",
    "coherent": "coherent mixing", "all-off": "no augmentation at all", "no-offsets": "fixed excerpt start",
    "pitch": "+ pitch shift copies", "stretch": "+ time stretch copies", "pitch-stretch": "+ pitch and stretch",
    "sign-flip": "+ random sign flip", "combined": "coherent + fixed start + copies"}


def variant_name(row: dict) -> str | None:
    """A grid row in words; a repeat at another seed says its seed (two rows of one variant read alike otherwise)."""
    v = row.get("base") or row.get("variant")
    if not v:
        return None
    name = VARIANT_NAMES.get(v) or re.split(r"[,;(]", row.get("description") or v)[0].strip()
    seed = (row.get("config") or {}).get("seed")
    return f"{name}, seed {seed}" if str(row.get("variant", "")).endswith(f"-seed{seed}") else name



def sdr(row: dict | None, target: str = "vocals") -> float | None:
    try:
        v = row["scores"][target]["SDR"]
        return float(v) if v is not None else None
    except (KeyError, TypeError):
        return None


def _diff(a, b):
    return None if a is None or b is None else a - b


def _row_by_label(rows: list[dict], *patterns: str) -> dict | None:
    """The first row whose label matches every regex (bench/ship.py's candidates carry no config, only words)."""
    return next((r for r in rows if all(re.search(p, r.get("label", ""), re.I) for p in patterns)), None)


def findings(results: dict, root: Path | None = None) -> dict:
    """The numbers the findings and discussion state, each computed from its results file (None where the file
    or row is missing), with the file it came from: the prose in report.typ never types a number. `root`: the
    repository the results' checkpoints are relative to (their run folders' config.json)."""
    out: dict = {}
    by = lambda stem, key: {r.get(key): r for r in results.get(stem, {}).get("rows", [])}  # noqa: E731
    models = by("models", "variant")
    if models:
        base = sdr(models.get("openunmix-256"))
        budgets = sorted({r.get("epochs") for r in models.values() if r.get("epochs")})
        out["models"] = {"file": results["models"]["file"], "base": base, "nb": len(models),
                         "epochs": budgets[0] if len(budgets) == 1 else None,
                         **{k: sdr(r) for k, r in models.items()},
                         **{f"{k}_delta": _diff(sdr(r), base) for k, r in models.items()}}
    aug = results.get("augment", {}).get("rows", [])
    if aug:
        family: dict = {}
        for r in aug:
            family.setdefault(r.get("base") or r.get("variant"), []).append(r)
        delta = lambda r: (r.get("delta") or {}).get("vocals")  # noqa: E731
        fam = {k: {"seeds": [r["config"].get("seed") for r in rs], "vocals": [sdr(r) for r in rs],
                   "accompaniment": [sdr(r, "accompaniment") for r in rs],
                   "delta": [delta(r) for r in rs]} for k, rs in family.items()}
        for f in fam.values():
            ds = [d for d in f["delta"] if d is not None]
            f["mean_delta"] = sum(ds) / len(ds) if ds else None
            f["same_sign"] = bool(ds) and (all(d > 0 for d in ds) or all(d < 0 for d in ds))  # every seed agrees
            ranges = [max(v) - min(v) for v in ([x for x in f[t] if x is not None] for t in ("vocals", "accompaniment"))
                      if len(v) > 1]
            f["spread"] = max(ranges) if ranges else None  # the largest seed-to-seed range of either target
            f["nb_seeds"] = len(f["seeds"])
        budgets = sorted({r.get("epochs") for r in aug if r.get("epochs")})
        out["augment"] = {"file": results["augment"]["file"], "families": fam,
                          "nb_variants": len(fam) - ("all-on" in fam),  # the bars: every family but the default's
                          "max_seeds": max(f["nb_seeds"] for f in fam.values()),
                          "epochs": budgets[0] if len(budgets) == 1 else None}
    ship = results.get("ship", {}).get("rows", [])
    if ship:  # bench/ship.py's candidates: single networks (one epoch) against blends (one epoch per member)
        single = [r for r in ship if isinstance(r.get("epoch"), int)]
        blends = [r for r in ship if not isinstance(r.get("epoch"), int)]
        top = lambda rs: max(rs, key=lambda r: r.get("vocals_sdr") or -99, default=None)  # noqa: E731
        b1 = top(blends)
        # the blend's own members: the single rows at its members' epochs (a blend's epoch is "116+65")
        epochs = {int(e) for e in str((b1 or {}).get("epoch", "")).split("+") if e.isdigit()}
        s1 = top([r for r in single if r.get("epoch") in epochs])
        out["ship"] = {"file": results["ship"]["file"], "nb": len(ship), "nb_members": len(epochs),
                       "member": s1 and s1.get("vocals_sdr"), "member_label": s1 and s1.get("label"),
                       "blend": b1 and b1.get("vocals_sdr"), "gain": _diff(b1 and b1.get("vocals_sdr"),
                                                                            s1 and s1.get("vocals_sdr"))}
        # the augmentation ablation's winner at the full budget: Open-Unmix, coherent against random mixing
        coh, rnd = _row_by_label(single, r"^Open-Unmix", r"coherent"), _row_by_label(single, r"^Open-Unmix", r"random")
        if coh and rnd:
            budget = re.search(r"(\d+) epochs", coh.get("label", ""))
            out["coherent_full"] = {"file": results["ship"]["file"], "coherent": coh.get("vocals_sdr"),
                                    "random": rnd.get("vocals_sdr"), "coherent_epoch": coh.get("epoch"),
                                    "random_epoch": rnd.get("epoch"),
                                    "delta": _diff(coh.get("vocals_sdr"), rnd.get("vocals_sdr")),
                                    "epochs": int(budget.group(1)) if budget else None}
    acc = [r for r in results.get("ship-acc", {}).get("rows", []) if r.get("method") == "mixture"]
    if len(acc) >= 2:  # bench/ship.py --phase: the residual blend (fewest parameters) against accompaniment networks
        residual = min(acc, key=lambda r: r.get("parameters") or 0)
        top = max((r for r in acc if r is not residual), key=lambda r: r.get("accompaniment_sdr") or -99)
        wiener = [r for r in results["ship-acc"]["rows"] if r.get("method") == "wiener"]
        out["ship_acc"] = {"file": results["ship-acc"]["file"], "residual": residual.get("accompaniment_sdr"),
                           "network": top.get("accompaniment_sdr"),
                           "gain": _diff(top.get("accompaniment_sdr"), residual.get("accompaniment_sdr")),
                           "vocals_change": _diff(top.get("vocals_sdr"), residual.get("vocals_sdr")),
                           "wiener_vocals_gain": max((g for g in (_diff(w.get("vocals_sdr"), residual.get("vocals_sdr"))
                                                                 for w in wiener) if g is not None), default=None)}
    unet = results.get("unet-150", {}).get("rows", [])
    if unet:
        # the run's own checkpoints: a row of checkpoints/ scored the model shipped then, which is not there now
        own = [r for r in unet if not str(r.get("checkpoint", "")).startswith("checkpoints/")]
        best = next((r for r in own if str(r.get("checkpoint", "")).endswith("best.pt")), None)
        top = max(own, key=lambda r: sdr(r) or -99, default=None)
        grid = models.get("unet")
        out["unet150"] = {"file": results["unet-150"]["file"], "best": sdr(best),
                          "best_epoch": (best or {}).get("epoch"), "top": sdr(top),
                          "top_epoch": (top or {}).get("epoch"),
                          "epochs": max((r.get("epoch") or 0 for r in own if isinstance(r.get("epoch"), int)),
                                        default=None),
                          # the same seed and recipe pick the same epoch by valid loss: the grid's U-Net bar
                          "same_as_grid": bool(grid and best and grid.get("epoch") == best.get("epoch")
                                               and abs((sdr(grid) or 0) - (sdr(best) or 1)) < 1e-6)}
    sweep = results.get("phase-sweep", {}).get("rows", [])
    if sweep:
        curves: dict = {}
        for r in sorted(sweep, key=lambda r: r.get("iterations", 0)):
            curves.setdefault(r["method"], []).append({"iterations": r.get("iterations"), "vocals": sdr(r),
                                                       "accompaniment": sdr(r, "accompaniment")})
        out["sweep"] = {"file": results["phase-sweep"]["file"], "curves": curves}
    pairs = network_pairs(results, models, root)
    if pairs:
        out["network"] = {"pairs": pairs}
    moved = {r.get("phase"): r.get("scores") or {} for r in results.get("phase-transfer", {}).get("rows", [])}
    if moved:
        v = {k: moved.get(k, {}).get("vocals") for k in ("mixture", "network", "donor")}
        out["transfer"] = {"file": results["phase-transfer"]["file"], **v, "gain": _diff(v["network"], v["mixture"])}
    out["default_mixing"] = TrainConfig().mixing  # what `python -m hw2.train` does without --mixing
    return out


def network_pairs(results: dict, models: dict, root: Path | None) -> list[dict]:
    """Per complex checkpoint of the results/phase-network*.json tables: its vocals SDR with its own phase and with
    the mixture's on its magnitude, the gain, and how it was trained (loss, seed, epochs, the epoch kept), from the
    model grid's row that scored the same checkpoint the same way, else from the config.json of its run folder."""
    out = []
    for stem in sorted(s for s in results if s.startswith("phase-network")):
        rows = results[stem]["rows"]
        for ckpt in dict.fromkeys(r.get("checkpoint") for r in rows):
            own = next((r for r in rows if r.get("checkpoint") == ckpt and r.get("method") == "network"), None)
            mix = next((r for r in rows if r.get("checkpoint") == ckpt and r.get("method") == "mixture"), None)
            if own is None or mix is None:
                continue
            grid = next((r for r in models.values() if r.get("method") == "network" and sdr(r) == sdr(own)), None)
            cfg = (grid or {}).get("config") or load_run_config((root or Path(".")) / str(ckpt or ""))
            out.append({"file": results[stem]["file"], "checkpoint": ckpt, "own": sdr(own), "mixture": sdr(mix),
                        "gain": _diff(sdr(own), sdr(mix)), "loss": cfg.get("loss", "mse"), "seed": cfg.get("seed"),
                        "epoch": own.get("epoch"), "epochs": (grid or {}).get("epochs") or cfg.get("epochs")})
    # the 25-epoch grid's networks first (waveform loss before complex MSE), then the longer runs
    return sorted(out, key=lambda p: (p["epochs"] or 0, p["loss"] != "wave-l1", p["seed"] or 0))
