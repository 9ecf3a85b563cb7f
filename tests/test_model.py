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


# ------------------------------------------------------------------------------------------ TFC-TDF (complex)
TINY_TFCTDF = dict(arch="tfctdf", n_fft=1024, n_hop=256, hidden_size=4, nb_layers=2, bandwidth=8000.0,
                   tfc_layers=1, tdf_bottleneck=2)


def test_tfctdf_maps_a_complex_spectrogram_to_one_of_the_same_shape():
    from hw2.model import TFCTDFNet

    torch.manual_seed(0)
    model = TFCTDFNet(ModelConfig(**TINY_TFCTDF)).eval()
    assert model.complex_output and model.nb_bins == 184  # 186 bins up to 8 kHz, cut to a multiple of 4
    spec = torch.randn(3, 2, 513, 37, dtype=torch.complex64)  # 37 frames: not a multiple of 2**nb_layers
    out = model(spec)
    assert out.shape == spec.shape and out.dtype == torch.complex64
    assert out[:, :, :184].abs().sum() > 0 and out[:, :, 184:].abs().sum() == 0  # nothing above the band
    vocals, accompaniment = model.targets(spec)
    torch.testing.assert_close(vocals + accompaniment, spec)


def test_tfctdf_complex_identity_through_the_stft_and_back(monkeypatch):
    """With the U-Net replaced by the identity, the packing into real and imaginary channels, the bin scaling and
    the unpacking give back the mixture's spectrogram in the band, and the waveform through the STFT and back."""
    from hw2.model import TFCTDFNet

    cfg = ModelConfig(**{**TINY_TFCTDF, "bandwidth": 22050.0})  # all 512 bins below Nyquist
    model = TFCTDFNet(cfg).eval()
    model.set_input_stats(torch.zeros(513), torch.rand(513) + 0.5)
    monkeypatch.setattr(model, "body", lambda x: x)
    audio = torch.randn(2, 2, 44100) * 0.1
    spec = model.stft(audio)
    out = model(spec)
    torch.testing.assert_close(out[:, :, :512], spec[:, :, :512], rtol=1e-5, atol=1e-5)
    back = model.stft.inverse(out + torch.nn.functional.pad(spec[:, :, 512:], (0, 0, 512, 0)), audio.shape[-1])
    torch.testing.assert_close(back, audio, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "wave-l1"])
def test_tfctdf_one_gradient_step_reaches_every_parameter_and_lowers_the_loss(loss):
    from hw2.model import TFCTDFNet
    from hw2.train import precision, spectral_loss, train_step

    torch.manual_seed(0)
    model = TFCTDFNet(ModelConfig(**TINY_TFCTDF)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _, scaler = precision("off", "cpu")
    mix = torch.randn(2, 2, 8192) * 0.1
    tgt = 0.5 * mix
    before = spectral_loss(model, mix, tgt, loss).item()
    train_step(model, opt, scaler, mix, tgt, "cpu", None, loss)
    grads = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not grads, grads
    for _ in range(4):
        train_step(model, opt, scaler, mix, tgt, "cpu", None, loss)
    assert spectral_loss(model, mix, tgt, loss).item() < before


def test_tfctdf_presets_are_mdx_net_sized_and_under_the_limit():
    """The GPU preset is MDX-Net's vocals model on our STFT (about 7.4 M parameters, as the paper's); the CPU
    preset is the small one the README and the model table describe."""
    from hw2.config import preset_config
    from hw2.model import build_model

    gpu, cpu = (count_parameters(build_model(preset_config(p).model_config())) for p in ("tfctdf", "tfctdf-cpu"))
    assert gpu == 7_420_677 and cpu == 469_653
    assert max(gpu, cpu) < MAX_PARAMS


def test_a_magnitude_model_refuses_a_waveform_loss(tmp_path):
    from hw2 import Hw2Error
    from hw2.train import train

    with pytest.raises(Hw2Error, match="needs a complex model"):
        train(TrainConfig(musdb_root=str(tmp_path), out=str(tmp_path / "run"), loss="wave-l1"))
