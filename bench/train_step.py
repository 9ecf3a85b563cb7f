"""End-to-end training throughput of a separator (Open-Unmix, the U-Net, the complex TFC-TDF U-Net): seconds per
optimizer step, excerpts per second, an epoch's time, and each row's step time as a ratio to the first row's.

One timed step is what `hw2.train` does per batch (`hw2.train.train_step`, `hw2.train.precision`): build the batch
from the decoded cache (hw2.sampling.ExcerptSampler, incoherent mixing, gain + swap, balanced sampling), move it to the
device, STFT of mixture and target, forward under the preset's autocast, MSE on magnitudes, backward, Adam step.
Steps after `--warmup` are timed; validation and checkpointing are not.

The epoch is Open-Unmix's on full MUSDB18: 86 train tracks x 64 excerpts = 5504 excerpts (`--epoch-tracks`). With
DataLoader workers (the presets' `nb_workers`) batch building overlaps the step, so a step costs
max(step, batch / workers); without, their sum.

    python bench/train_step.py --preset t4 1080ti                 # on a GPU: both presets side by side
    python bench/train_step.py --musdb-root PATH --hidden-size 512 256   # model widths, on whatever device
    python bench/train_step.py --preset t4 tfctdf --batch-size 4 --seconds 4   # the complex network vs Open-Unmix

Presets are hw2.config.PRESETS (the ones `python -m hw2.train --preset` and notebook 03 use): t4 = Open-Unmix's
defaults, `--amp auto` (float16 + GradScaler on CUDA), 2 workers; 1080ti = the same in float32, 4 workers; cpu and
tiny = smaller models. A preset row takes the preset's model, precision and workers; batch and excerpt length
are this script's flags. On a GPU that is not the preset's, the script also
prints the epoch scaled to a T4 (or GTX 1080 Ti) by the ratio of memory bandwidths (GPU_BANDWIDTH): a heuristic
that assumes the step is bound by memory traffic, which batch-16 LSTM steps mostly are; only a run on that GPU
measures it. Without --musdb-root it runs on generated tracks (hw2.synth, written to a temporary folder).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hw2, installed or not

from hw2 import Hw2Error
from hw2.cache import open_cached
from hw2.model import ModelConfig, build_model, count_parameters
from hw2.checkpoint import MAX_PARAMS, resolve_device
from hw2.config import AMP, PRESETS, preset_config
from hw2.sampling import ExcerptSampler
from hw2.train import precision, train_step

MUSDB18_TRAIN_TRACKS = 86  # musdb's train split of full MUSDB18: 100 train-folder tracks - 14 valid
GPU_OF_PRESET = {"t4": "T4", "1080ti": "1080 Ti"}  # the GPU a preset is made for, to scale an epoch to it
# GB/s, from the vendors' data sheets; matched against torch.cuda.get_device_name
GPU_BANDWIDTH = {"H200": 4800, "H100 SXM": 3350, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039,
                 "A100": 1555, "L4": 300, "A10G": 600, "A10": 600, "V100": 900, "T4": 320, "1080 Ti": 484,
                 "3090": 936, "4090": 1008, "P100": 732}


def bandwidth(name: str) -> float | None:
    return next((bw for key, bw in GPU_BANDWIDTH.items() if key in name), None)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(sampler, cfg: ModelConfig, device, steps: int, warmup: int, amp: str) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    dtype, scaler = precision(amp, device)
    times, data_times = [], []
    for step in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        mix, tgt = sampler.batch(0, step % sampler.nb_batches(0))
        t1 = time.perf_counter()
        train_step(model, optimizer, scaler, mix, tgt, device, dtype).item()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            data_times.append(t1 - t0)
    return {"params": count_parameters(model), "step_s": sum(times) / len(times),
            "data_s": sum(data_times) / len(data_times), "dtype": str(dtype or torch.float32).split(".")[-1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/train_step.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", default="", help="MUSDB root (default: generated tracks in a temporary folder)")
    p.add_argument("--cache-dir", default=None, help="decoded cache (default $HW2_CACHE or ~/.cache/hw2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--preset", nargs="+", choices=tuple(PRESETS), default=[],
                   help="presets of hw2.config.PRESETS, one row each (their model, precision and workers)")
    p.add_argument("--hidden-size", type=int, nargs="+", default=[],
                   help="one row per width (512: Open-Unmix's default), in --amp, no workers (default: 512 when "
                        "no --preset is given)")
    p.add_argument("--nb-layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=6.0, help="excerpt length")
    p.add_argument("--steps", type=int, default=2, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--amp", choices=AMP, default="auto", help="precision of the --hidden-size rows (as hw2.train)")
    p.add_argument("--epoch-tracks", type=int, default=MUSDB18_TRAIN_TRACKS,
                   help="train tracks of the epoch to estimate (x 64 excerpts)")
    a = p.parse_args(argv)
    presets = {name: preset_config(name) for name in a.preset}
    rows = [(f"preset {name}", c.model_config(), c.amp, c.nb_workers, GPU_OF_PRESET.get(name))
            for name, c in presets.items()]
    rows += [(f"hidden {h}, {a.nb_layers} layers", ModelConfig(hidden_size=h, nb_layers=a.nb_layers), a.amp, 0, None)
             for h in (a.hidden_size or ([] if a.preset else [512]))]
    try:
        if a.steps < 1 or a.warmup < 0 or a.batch_size < 1 or a.seconds <= 0 or min(a.hidden_size or [1]) < 1:
            raise Hw2Error("--steps, --batch-size, --seconds and --hidden-size must be positive")
        device = resolve_device(a.device)
        tmp = None
        root = a.musdb_root
        if not root:
            from hw2.synth import make_musdb
            tmp = tempfile.TemporaryDirectory(prefix="hw2-bench-")
            root = make_musdb(f"{tmp.name}/musdb", "wav", nb_train=4, nb_valid=0, nb_test=0,
                              duration=max(8.0, a.seconds + 1))
        cache = a.cache_dir or (f"{tmp.name}/cache" if tmp else None)
        tracks = open_cached(root, "train", "train", cache)
        sampler = ExcerptSampler(tracks, a.seconds, ("vocals",), "balanced", a.batch_size, samples_per_track=64,
                                 mixing="incoherent", gain=(0.25, 1.25), swap=True, seed=0)
        results = [bench(sampler, cfg, device, a.steps, a.warmup, amp) for _, cfg, amp, _, _ in rows]
    except Hw2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    excerpts = a.epoch_tracks * 64
    print(f"\ndevice {device} ({gpu or 'CPU'}), torch {torch.__version__}, torch threads {torch.get_num_threads()}; "
          f"{len(tracks)} train tracks from {a.musdb_root or 'generated tracks'}; batch {a.batch_size} x "
          f"{a.seconds:g} s stereo; {a.steps} timed steps after {a.warmup} warm-up; epoch = {a.epoch_tracks} x 64 = "
          f"{excerpts} excerpts, validation not included")
    print(f"{'row':<26}{'dtype':>9}{'params':>11}{'s/step':>9}{'batch s':>9}{'workers':>8}{'excerpts/s':>12}"
          f"{'epoch':>11}{'x row 1':>9}")
    notes, first = [], None
    for (name, _, _, workers, target), r in zip(rows, results):
        step = r["step_s"] - r["data_s"]  # the device's part; batch building runs in workers where there are any
        per_step = max(step, r["data_s"] / workers) if workers else r["step_s"]
        rate = a.batch_size / per_step
        epoch = excerpts / rate
        over = "" if r["params"] < MAX_PARAMS else " OVER 10M"
        first = first or per_step
        print(f"{name:<26}{r['dtype']:>9}{r['params']:>11,}{per_step:>9.3f}{r['data_s']:>9.3f}{workers:>8}"
              f"{rate:>12.1f}{epoch:>9.0f} s{per_step / first:>9.2f}{over}")
        if target and gpu and target not in gpu and bandwidth(gpu) and bandwidth(target):
            ratio = bandwidth(gpu) / bandwidth(target)
            notes.append(f"{name}: on a {target}, about {epoch * ratio:.0f} s an epoch (x {ratio:.2f}: "
                         f"{bandwidth(gpu):g} / {bandwidth(target):g} GB/s memory bandwidth; a heuristic)")
        elif target and not gpu:
            notes.append(f"{name}: measured on the CPU (float32, no CUDA kernels): says nothing about a {target}")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
