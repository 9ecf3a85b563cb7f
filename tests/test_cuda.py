"""The CUDA path: float16 autocast with a GradScaler trains and resumes exactly on the GPU, and separation on the GPU
equals the CPU result. Marked `cuda`; skipped where torch sees no CUDA GPU (CI runs the same mixed-precision code
on the CPU in bfloat16: tests/test_train.py::test_mixed_precision_on_cpu_resumes_exactly).

    python -m pytest tests/test_cuda.py -o addopts=""      # on a machine with a GPU
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hw2.model import OpenUnmix
from hw2.separate import Separator
from hw2.synth import make_stems
from hw2.checkpoint import load_checkpoint
from hw2.train import precision, train
from test_train import tiny

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def deterministic():
    """cuDNN picks among kernels by speed unless told not to; exact resume needs the same kernels every step."""
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def test_amp_training_on_cuda_resumes_exactly(wav_root, wav_cache, tmp_path, deterministic):
    """One LSTM layer, so no dropout. With two or more, cuDNN draws the dropout masks from a state of its own,
    seeded from the CUDA generator when a process first uses it (and when the generator is re-seeded), then
    advancing by itself, outside the RNG state a checkpoint saves: a resumed run starts it afresh, so its masks
    differ from an uninterrupted run's (read from torch's aten/src/ATen/native/cudnn/RNN.cpp; not measured, for
    want of a GPU)."""
    dtype, scaler = precision("auto", torch.device("cuda"))
    assert dtype == torch.float16 and scaler.is_enabled()
    cfg = dict(device="cuda", amp="auto", nb_layers=1)
    a = train(tiny(wav_root, tmp_path / "A", wav_cache, **cfg), log=lambda m: None)
    logs = []
    b = tiny(wav_root, tmp_path / "B", wav_cache, **cfg)
    assert train(replace(b, max_minutes=1e-9), log=logs.append)["stopped"] == "time-limit"
    assert train(b, log=logs.append)["epochs_done"] == a["epochs_done"] == 2
    assert "torch.float16 autocast" in logs[0] and any("epoch 1, step 1" in m for m in logs)
    ca, cb = (load_checkpoint(tmp_path / run / "last.pt") for run in "AB")
    assert ca["scaler"]["scale"] > 0 and ca["scaler"] == cb["scaler"]  # the loss scale was saved and restored
    for k in ca["model"]:
        torch.testing.assert_close(cb["model"][k], ca["model"][k], atol=1e-6, rtol=0, msg=k)  # as on the CPU
    assert cb["state"]["history"][-1]["valid_loss"] == pytest.approx(ca["state"]["history"][-1]["valid_loss"],
                                                                      rel=1e-6)


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2)))


def test_separation_on_cuda_equals_cpu(tmp_path):
    """The default model (random weights, real input statistics) separates a 40-s track in 30-s blocks on both
    devices. Tolerance: both run float32, but cuFFT and pocketfft, and cuDNN's and the CPU's LSTM and matmul
    kernels, sum in different orders: about 1e-6 relative per operation, a few 1e-6 after the encoder, three
    LSTM layers, decoder and inverse STFT. 1e-4 of the peak leaves a 10x margin and still fails on any real
    difference (a wrong block, a wrong phase, float16 sneaking in: those are 1e-2 and up). TF32 is switched off:
    with it (Ampere and later) matmuls round to 10-bit mantissas, about 1e-3; the T4 has no TF32. An error
    1e-4 of the peak moves an SDR by far less than 0.01 dB. (Griffin-Lim is left out: 32 iterations from a random
    phase amplify rounding differences by an amount no bound here was measured for.)"""
    stems = make_stems(3, 40.0)
    mix, vocals = stems[0], stems[4]
    torch.manual_seed(0)
    model = OpenUnmix().eval()
    spec = model.magnitude(torch.as_tensor(mix.T[None].copy()))[1].mean(1)[0]
    model.set_input_stats(spec.mean(-1), spec.std(-1).clamp_min(1e-4))
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = Separator(model, "cpu").separate(mix, ("mixture",))
        gpu = Separator(model, "cuda").separate(mix, ("mixture",))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    ref = {"vocals": vocals, "accompaniment": stems[1] + stems[2] + stems[3]}
    for method in cpu:
        for target, est in cpu[method].items():
            diff = np.abs(gpu[method][target] - est).max()
            assert diff <= 1e-4 * np.abs(est).max(), (method, target, diff)
            assert abs(sdr(ref[target], gpu[method][target]) - sdr(ref[target], est)) <= 0.01, (method, target)
