"""Open-Unmix: shapes, the STFT round trip and the assignment's 10M parameter limit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hw2.model import STFT, ModelConfig, OpenUnmix, bandwidth_to_max_bin, count_parameters
from hw2.checkpoint import MAX_PARAMS, load_checkpoint, model_from_checkpoint
from hw2.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("nb_channels,unidirectional,bandwidth,n_fft",
                         [(2, False, 16000.0, 1024), (1, False, 16000.0, 1024), (2, True, 8000.0, 512),
                          (1, True, 22050.0, 512), (2, False, 16000.0, 4096)])
def test_tiny_model_shapes(nb_channels, unidirectional, bandwidth, n_fft):
    torch.manual_seed(0)
    cfg = ModelConfig(n_fft=n_fft, n_hop=n_fft // 4, hidden_size=16, nb_layers=2, bandwidth=bandwidth,
                      nb_channels=nb_channels, unidirectional=unidirectional)
    model = OpenUnmix(cfg).eval()
    assert model.nb_output_bins == n_fft // 2 + 1
    assert model.nb_bins == min(bandwidth_to_max_bin(44100, n_fft, bandwidth), n_fft // 2 + 1)
    assert model.nb_bins < model.nb_output_bins or bandwidth >= 22050
    audio = torch.randn(3, 2, 8000)  # the model always takes and returns the stereo mixture
    spec, mag = model.magnitude(audio)
    nb_frames = 8000 // (n_fft // 4) + 1
    assert spec.shape == mag.shape == (3, 2, n_fft // 2 + 1, nb_frames)
    assert spec.is_complex() and not mag.is_complex()
    est = model(mag)
    assert est.shape == mag.shape and est.dtype == torch.float32
    assert (est >= 0).all() and torch.isfinite(est).all()
    # the output is a mask times the mixture: zero wherever the mixture is zero
    silent = mag.clone()
    silent[:, :, 100:200] = 0
    assert (model(silent)[:, :, 100:200] == 0).all()
    assert model.fc1.in_features == model.nb_bins * nb_channels
    assert model.lstm.bidirectional == (not unidirectional)


def test_mono_model_masks_both_channels_alike():
    torch.manual_seed(0)
    model = OpenUnmix(ModelConfig(n_fft=512, n_hop=128, hidden_size=16, nb_layers=1, nb_channels=1)).eval()
    mag = model.magnitude(torch.randn(2, 2, 4000))[1]
    est = model(mag)
    mask = est / mag.clamp_min(1e-12)
    torch.testing.assert_close(mask[:, 0], mask[:, 1], atol=1e-4, rtol=1e-4)


def test_model_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = OpenUnmix(ModelConfig(n_fft=512, n_hop=128, hidden_size=16, nb_layers=2))
    mag = model.magnitude(torch.randn(2, 2, 4000))[1]
    model(mag).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_input_stats_are_applied():
    model = OpenUnmix(ModelConfig(n_fft=512, n_hop=128, hidden_size=16, nb_layers=1, bandwidth=8000.0))
    mean, std = torch.rand(257) + 1, torch.rand(257) + 0.5
    model.set_input_stats(mean, std)
    torch.testing.assert_close(model.input_mean.data, -mean[: model.nb_bins])
    torch.testing.assert_close(model.input_scale.data, 1 / std[: model.nb_bins])


@pytest.mark.parametrize("n_fft,n_hop,length", [(4096, 1024, 44100), (1024, 256, 12345), (512, 128, 1000)])
def test_stft_inverse_reconstructs(n_fft, n_hop, length):
    torch.manual_seed(0)
    stft = STFT(n_fft, n_hop)
    x = torch.randn(2, 2, length)
    spec = stft(x)
    assert spec.shape == (2, 2, n_fft // 2 + 1, length // n_hop + 1)
    y = stft.inverse(spec, length)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    assert stft.inverse(spec, length - 7).shape[-1] == length - 7  # `length` trims exactly


def test_default_model_under_the_limit():
    n = count_parameters(OpenUnmix(ModelConfig()))
    assert n < MAX_PARAMS == 10_000_000
    assert 8.8e6 < n < 9.0e6  # Open-Unmix umxhq-like, 16 kHz bandwidth: about 8.9M
    # the training defaults build that same model
    assert count_parameters(OpenUnmix(TrainConfig().model_config())) == n


def test_every_shipped_checkpoint_under_the_limit():
    """Separators one by one, and the vocoder together with the shipped separator (used together by
    `--phase vocoder`), stay under the assignment's 10M parameters."""
    from hw2.vocoder import load_vocoder

    paths = sorted((REPO / "checkpoints").glob("*.pt"))
    if not paths:
        pytest.skip("no checkpoints/*.pt in the repository")
    sizes = {}
    for path in paths:
        if path.name == "vocoder.pt":
            sizes[path.name] = count_parameters(load_vocoder(path))
            continue
        ckpt = load_checkpoint(path)
        model, cfg = model_from_checkpoint(ckpt, path)
        n = sizes[path.name] = count_parameters(model)
        assert n < MAX_PARAMS, f"{path.name}: {n:,} parameters"
        if "nb_params" in ckpt:
            assert ckpt["nb_params"] == n
    if "vocoder.pt" in sizes and "vocals.pt" in sizes:
        assert sizes["vocoder.pt"] + sizes["vocals.pt"] < MAX_PARAMS


@pytest.mark.parametrize("arch", ["openunmix", "unet"])
def test_model_card_names_the_shipped_architecture(tmp_path, arch):
    """The card is written from the run's config: a shipped U-Net must not be described as Open-Unmix."""
    import json
    from dataclasses import asdict

    from hw2.card import model_card
    from hw2.config import TrainConfig

    cfg = TrainConfig(arch=arch, hidden_size=64, nb_layers=6)
    (tmp_path / "config.json").write_text(json.dumps(asdict(cfg)))
    (tmp_path / "history.json").write_text(json.dumps([{"epoch": 1, "seconds": 60.0}]))
    card = model_card(tmp_path, None, {"nb_params": 123, "epoch": 1, "valid_loss": 1.0, "device": "cpu"})
    model_line = next(line for line in card.splitlines() if line.startswith("| model |"))
    if arch == "unet":
        assert "U-Net" in card.splitlines()[0] and "6 levels, 8-256 channels" in model_line
        assert "LSTM" not in model_line
    else:
        assert "Open-Unmix, hidden 64, 6 bidirectional LSTM layers" in model_line
