"""End-to-end training throughput of Open-Unmix: excerpts per second and seconds per optimizer step.

One timed step is what `hw2.train` does per batch: build the batch from the decoded cache (hw2.data.ExcerptSampler,
incoherent mixing, gain + swap, balanced sampling), move it to the device, STFT of mixture and target, forward
(autocast fp16 on CUDA), MSE on magnitudes, backward, Adam step. Steps after `--warmup` are timed; validation and
checkpointing are not. The implied epoch time is for Open-Unmix's epoch on full MUSDB18: 80 train tracks x 64
excerpts = 5120 excerpts.

    python bench/train_step.py [--musdb-root PATH --cache-dir DIR] [--device auto] [--hidden-size 512 128]

Without --musdb-root it runs on generated tracks (hw2.synth, written to a temporary folder).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from hw2 import Hw2Error
from hw2.data import ExcerptSampler, open_cached
from hw2.model import ModelConfig, OpenUnmix, count_parameters
from hw2.train import MAX_PARAMS, resolve_device, train_step

EPOCH_EXCERPTS = 80 * 64  # Open-Unmix: 64 excerpts per track per epoch, MUSDB18's 80 train tracks


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(sampler, cfg: ModelConfig, device, steps: int, warmup: int, amp: bool) -> dict:
    torch.manual_seed(0)
    model = OpenUnmix(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    times, data_times = [], []
    for step in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        mix, tgt = sampler.batch(0, step % sampler.nb_batches(0))
        t1 = time.perf_counter()
        train_step(model, optimizer, scaler, mix, tgt, device).item()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            data_times.append(t1 - t0)
    per_step = sum(times) / len(times)
    return {"params": count_parameters(model), "step_s": per_step, "data_s": sum(data_times) / len(data_times),
            "rate": sampler.batch_size / per_step}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/train_step.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", default="", help="MUSDB root (default: generated tracks in a temporary folder)")
    p.add_argument("--cache-dir", default=None, help="decoded cache (default $HW2_CACHE or ~/.cache/hw2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--hidden-size", type=int, nargs="+", default=[512],
                   help="one model per value (512: the default Open-Unmix), e.g. --hidden-size 512 128")
    p.add_argument("--nb-layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=6.0, help="excerpt length")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no fp16 autocast on CUDA")
    a = p.parse_args(argv)
    try:
        if a.steps < 1 or a.warmup < 0 or a.batch_size < 1 or a.seconds <= 0 or min(a.hidden_size) < 1:
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
        results = [(h, bench(sampler, ModelConfig(hidden_size=h, nb_layers=a.nb_layers), device, a.steps,
                             a.warmup, a.amp)) for h in a.hidden_size]
    except Hw2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    where = device.type if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"\ndevice {device} ({where}), torch threads {torch.get_num_threads()}, "
          f"{'fp16 autocast' if a.amp and device.type == 'cuda' else 'fp32'}; {len(tracks)} train tracks from "
          f"{a.musdb_root or 'generated tracks'}; batch {a.batch_size} x {a.seconds:g} s stereo; "
          f"{a.steps} timed steps after {a.warmup} warm-up")
    print(f"{'model':<28}{'params':>11}{'s/step':>9}{'batch s':>9}{'excerpts/s':>12}{'epoch (5120 exc.)':>19}")
    for h, r in results:
        name = f"hidden {h}, {a.nb_layers} layers" + (" (default)" if (h, a.nb_layers) == (512, 3) else "")
        epoch = EPOCH_EXCERPTS / r["rate"]
        over = "" if r["params"] < MAX_PARAMS else " OVER 10M"
        print(f"{name:<28}{r['params']:>11,}{r['step_s']:>9.2f}{r['data_s']:>9.3f}{r['rate']:>12.2f}"
              f"{epoch / 60:>15.1f} min{over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
