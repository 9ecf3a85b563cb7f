"""Separation and scoring: the phase methods rebuild sources from true magnitudes, the reference rows order as they
must, `Separator` returns exact shapes for every method, and the museval aggregation and results files behave.

Everything runs on short generated tracks (hw2.synth.make_stems) with stand-in or tiny untrained models, so no
training and no MUSDB is needed here; the checkpoint -> CLI path is tested in test_infer.py.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from hw2 import Hw2Error
from hw2.evaluate import (METRICS, markdown_table, median_of_medians, score_track, track_medians,
                          write_results)
from hw2.model import STFT, ModelConfig, SpectrogramModel
from hw2.reconstruct import griffinlim, wiener
from hw2.separate import METHODS, REFERENCES, Separator, references
from hw2.synth import make_stems
from hw2.tracks import blocks
from conftest import separation_track
from hw2.checkpoint import CHECKPOINT_FORMAT
from hw2.config import TrainConfig
from hw2.vocoder import Vocoder, VocoderConfig

RATE = 44100
HOP = 1024


# ------------------------------------------------------------------------------------------------------ helpers
def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Plain signal-to-distortion ratio in dB over the whole signal (no BSSEval filtering)."""
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30)))


def spectral_convergence(y: torch.Tensor, mag: torch.Tensor, stft: STFT) -> float:
    """|| |STFT(y)| - S || / ||S||: 0 when y has exactly the magnitude S."""
    return float((stft(y).abs() - mag).norm() / mag.norm())


def tensor(a: np.ndarray) -> torch.Tensor:
    """(nb_timesteps, nb_channels) array -> (nb_channels, nb_timesteps) float32 tensor."""
    return torch.as_tensor(np.ascontiguousarray(a.T), dtype=torch.float32)


class Passthrough(nn.Module):
    """Stands in for Open-Unmix: returns the mixture magnitude it is given. On a track whose accompaniment is
    silent (mixture == vocals) that is the true vocals magnitude. Records the frames of every call."""

    def __init__(self):
        super().__init__()
        self.cfg = ModelConfig()
        self.stft = STFT(self.cfg.n_fft, self.cfg.n_hop)
        self.calls: list[int] = []

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        self.calls.append(mag.shape[-1])
        return mag.clone()

    targets = SpectrogramModel.targets  # the Separator asks every model for (vocals, accompaniment)


@pytest.fixture(scope="module")
def track() -> dict:
    """A 3 s generated stereo track whose length is not a whole number of hops: mixture, vocals, accompaniment,
    each float32 (nb_timesteps, 2), mixture == vocals + accompaniment."""
    return separation_track(seed=7, duration=3.0, length=3 * RATE - 333)


# ------------------------------------------------------------------------------------------------ mixture phase
def test_mixture_phase_rebuilds_the_source_from_its_true_magnitude(track):
    vocals = track["vocals"]  # a mixture with silent accompaniment: the mixture is the vocals
    out = Separator(Passthrough()).separate(vocals, ["mixture"])["mixture"]
    assert out["vocals"].shape == vocals.shape and out["vocals"].dtype == np.float32
    assert sdr(vocals, out["vocals"]) > 40
    assert np.abs(out["accompaniment"]).max() < 1e-6  # |X| - V = 0 everywhere


def test_chunked_model_pass_keeps_exact_length_and_reconstruction():
    vocals = make_stems(seed=8, duration=12.0)[4][: 12 * RATE - 517]
    stub = Passthrough()
    sep = Separator(stub, chunk_dur=2.0, context_dur=0.5)
    out = sep.separate(vocals, ["mixture"])["mixture"]
    windows = list(blocks(len(vocals), sep.chunk_frames * HOP, sep.context_frames * HOP, min_size=4096))
    assert len(stub.calls) == len(windows) > 1  # really in blocks
    assert max(stub.calls) <= sep.chunk_frames + 2 * sep.context_frames + 1
    assert out["vocals"].shape == vocals.shape
    assert sdr(vocals, out["vocals"]) > 40  # a misplaced block would shift frames and fail this

    short = Passthrough()  # a track shorter than one block runs in one pass
    Separator(short, chunk_dur=30.0).separate(vocals[: 2 * RATE], ["mixture"])
    assert len(short.calls) == 1


class Scaled(Passthrough):
    """A frame-by-frame stand-in model (0.6 |X|): blocks cannot change what it returns."""

    def forward(self, mag):
        return 0.6 * super().forward(mag)


@pytest.mark.parametrize("method", ["mixture", "wiener"])
def test_blocks_give_the_full_track_result(method):
    """Blocks start on the hop grid, their context covers n_fft and the 300-frame Wiener windows: with a
    frame-wise model, a track in 5 blocks equals the same track in one window."""
    stems = make_stems(seed=9, duration=30.0)[:, : 30 * RATE - 77]
    mixture = stems[1:].sum(0)
    one = Separator(Scaled(), chunk_dur=60.0).separate(mixture, [method])[method]
    sep = Separator(Scaled(), chunk_dur=300 * HOP / RATE, context_dur=310 * HOP / RATE)
    blocked = sep.separate(mixture, [method])[method]
    assert len(list(blocks(len(mixture), sep.chunk_frames * HOP, 1))) == 5
    for t in ("vocals", "accompaniment"):
        assert sdr(one[t], blocked[t]) > 60, (t, sdr(one[t], blocked[t]))


def test_griffinlim_in_blocks_lands_every_block_in_place():
    """Griffin-Lim runs on each block's kept frames plus a margin: from the true phase and magnitude (a fixed
    point) the blocked result is the signal itself, so a misplaced or missing block would show."""
    mixture = make_stems(seed=9, duration=30.0)[4][: 30 * RATE - 77]
    sep = Separator(Passthrough(), chunk_dur=300 * HOP / RATE, context_dur=310 * HOP / RATE, gl_iters=4)
    out = sep.separate(mixture, ["griffinlim-mix"])["griffinlim-mix"]
    assert out["vocals"].shape == mixture.shape
    assert sdr(mixture, out["vocals"]) > 30


def test_int16_mixture_gives_the_float_result(track):
    pcm = np.round(track["mixture"] * 16000).astype(np.int16)
    a = Separator(Scaled()).separate(pcm, ["mixture"])["mixture"]
    b = Separator(Scaled()).separate(pcm.astype(np.float32) / 32768, ["mixture"])["mixture"]
    assert np.array_equal(a["vocals"], b["vocals"])


# -------------------------------------------------------------------------------------------------- Griffin-Lim
@pytest.fixture(scope="module")
def vocals_mag(track):
    """(mono vocals waveform, its magnitude, the STFT)."""
    stft = STFT()
    y = tensor(track["vocals"])[0]
    return y, stft(y).abs(), stft


def test_griffinlim_beats_random_phase(vocals_mag):
    y, mag, stft = vocals_mag
    n = y.shape[-1]
    gl = griffinlim(mag, stft, n, n_iter=32, generator=torch.Generator().manual_seed(0))
    phase = torch.rand(mag.shape, generator=torch.Generator().manual_seed(1)) * (2 * np.pi)
    rand = stft.inverse(torch.polar(mag, phase), n)
    assert gl.shape == (n,)
    sc_gl, sc_rand = spectral_convergence(gl, mag, stft), spectral_convergence(rand, mag, stft)
    assert sc_gl < 0.5 * sc_rand, (sc_gl, sc_rand)


def test_griffinlim_matches_librosa_quality_and_length(vocals_mag):
    librosa = pytest.importorskip("librosa")
    y, mag, stft = vocals_mag
    n = y.shape[-1]
    ours = griffinlim(mag, stft, n, n_iter=32, momentum=0.99, generator=torch.Generator().manual_seed(0))
    ref = librosa.griffinlim(mag.numpy(), n_iter=32, hop_length=HOP, n_fft=4096, window="hann", center=True,
                             length=n, momentum=0.99, init="random", random_state=0)
    assert len(ref) == n
    sc_ours = spectral_convergence(ours, mag, stft)
    sc_ref = spectral_convergence(torch.as_tensor(ref, dtype=torch.float32), mag, stft)
    assert sc_ours < 1.5 * sc_ref, (sc_ours, sc_ref)
    for length in (n - 700, n + 1):  # any requested length, exactly
        assert griffinlim(mag, stft, length, n_iter=2).shape == (length,)


def test_griffinlim_from_the_true_phase_reproduces_the_source(vocals_mag, track):
    y, mag, stft = vocals_mag
    out = griffinlim(mag, stft, y.shape[-1], n_iter=32, init=stft(y))
    assert sdr(y.numpy(), out.numpy()) > 40
    # griffinlim-mix starts from the mixture's phase: with mixture == vocals that is the true phase
    sep = Separator(Passthrough(), gl_iters=8)
    est = sep.separate(track["vocals"], ["griffinlim-mix"])["griffinlim-mix"]
    assert est["vocals"].shape == track["vocals"].shape
    assert sdr(track["vocals"], est["vocals"]) > 40


# ------------------------------------------------------------------------------------------------------- Wiener
def true_spectrograms(track):
    stft = STFT()
    X = stft(tensor(track["mixture"]))
    V, A = stft(tensor(track["vocals"])).abs(), stft(tensor(track["accompaniment"])).abs()
    return stft, X, V, A


def test_wiener_with_true_magnitudes_is_at_least_as_good_as_the_mixture_phase(track):
    stft, X, V, A = true_spectrograms(track)
    n = track["mixture"].shape[0]
    y = wiener(torch.stack([V, A]), X)
    assert y.shape == (2, *X.shape) and y.dtype == X.dtype and torch.isfinite(y).all()
    phase = torch.exp(1j * X.angle())
    for j, (name, S) in enumerate((("vocals", V), ("accompaniment", A))):
        ref = track[name]
        plain = sdr(ref, stft.inverse(S * phase, n).T.numpy())
        filtered = sdr(ref, stft.inverse(y[j], n).T.numpy())
        assert filtered > plain - 0.5, (name, filtered, plain)
    # a Wiener filter is conservative: the estimates add up to the mixture
    assert float((y.sum(0) - X).abs().norm() / X.abs().norm()) < 0.1
    # no iteration: the magnitudes with the mixture's phase
    y0 = wiener(torch.stack([V, A]), X, iterations=0)
    assert torch.allclose(y0[0], V * phase)


def test_wiener_is_scale_invariant_and_survives_nearly_singular_covariances(track):
    """Regression: with single-precision 2x2 solves and a sqrt(|X|) scaling, a loud mixture or an over-estimated
    vocals magnitude made torch.linalg.inv raise on (nearly) rank-1 covariances."""
    _, X, V, A = true_spectrograms(track)
    mags = torch.stack([3 * V, A])  # a model that over-estimates the vocals
    quiet = wiener(mags, X)
    loud = wiener(10 * mags, 10 * X)  # peak |X| near the largest a full-scale signal gives
    assert torch.isfinite(quiet).all() and torch.isfinite(loud).all()
    assert float((loud / 10 - quiet).abs().norm() / quiet.abs().norm()) < 1e-3


# --------------------------------------------------------------------------------------------------- references
def test_reference_rows(track):
    refs = references(track["mixture"], track["vocals"], track["accompaniment"])
    assert set(refs) == set(REFERENCES)
    for row in refs.values():
        for target in ("vocals", "accompaniment"):
            assert row[target].shape == track["mixture"].shape
    assert np.array_equal(refs["mix-as-estimate"]["vocals"], track["mixture"])
    irm = refs["oracle-irm"]
    assert np.abs(irm["vocals"] + irm["accompaniment"] - track["mixture"]).max() < 1e-4  # masks add up to one

    truth = {t: track[t] for t in ("vocals", "accompaniment")}
    medians = {row: track_medians(score_track("synth", truth, refs[row])) for row in REFERENCES}
    assert medians["oracle-irm"]["vocals"]["SDR"] > medians["mix-as-estimate"]["vocals"]["SDR"] + 3
    assert medians["oracle-irm"]["accompaniment"]["SDR"] > medians["mix-as-estimate"]["accompaniment"]["SDR"] + 3


# ---------------------------------------------------------------------------------------------------- Separator
@pytest.mark.parametrize("complex_model", [False, True], ids=["magnitude", "complex"])
def test_separator_every_method_has_exact_shapes(track, tiny_model, tiny_complex_model, complex_model):
    sep = Separator(tiny_complex_model if complex_model else tiny_model, gl_iters=4)
    sep.vocoder = Vocoder(VocoderConfig(dim=8, nb_layers=1)).eval()  # untrained: shapes only
    mixture = track["mixture"]
    methods = METHODS if complex_model else tuple(m for m in METHODS if m != "network")
    out = sep.separate(mixture, methods, key="t")
    assert set(out) == set(methods)
    for method, est in out.items():
        assert set(est) == {"vocals", "accompaniment"}
        for target, audio in est.items():
            assert audio.shape == mixture.shape, (method, target)
            assert audio.dtype == np.float32 and np.isfinite(audio).all(), (method, target)


def test_network_phase_of_a_complex_model_adds_up_to_the_mixture(track, tiny_complex_model):
    """The network's own estimates are the vocals and the mixture minus them: inverted as they are, they add up to
    the mixture, in blocks too; the mixture phase puts the mixture's phase on the same magnitudes, so it does not."""
    mixture = track["mixture"]
    out = Separator(tiny_complex_model, chunk_dur=1.0, context_dur=0.5).separate(mixture, ("network", "mixture"))
    total = out["network"]["vocals"] + out["network"]["accompaniment"]
    np.testing.assert_allclose(total, mixture, atol=1e-4)
    assert np.abs(out["mixture"]["vocals"] + out["mixture"]["accompaniment"] - mixture).max() > 1e-2
    whole = Separator(tiny_complex_model, chunk_dur=100.0).separate(mixture, ("network",))["network"]
    np.testing.assert_allclose(out["network"]["vocals"], whole["vocals"], atol=1e-4)


def test_a_complex_models_magnitude_methods_run_without_holding_its_complex_estimates(track, tiny_complex_model,
                                                                                      monkeypatch):
    """The mixture phase alone drops the complex estimates (a block's largest arrays) as soon as their magnitudes
    are taken, and gives the same audio as when the network phase is asked for beside it."""
    import hw2.separate as separate

    kept = []
    real = separate.estimates
    monkeypatch.setattr(separate, "estimates", lambda *a, **k: kept.append(real(*a, **k)[2]) or real(*a, **k))
    mixture = track["mixture"]
    alone = Separator(tiny_complex_model).separate(mixture, ("mixture",))["mixture"]
    assert kept and all(c is None for c in kept)
    both = Separator(tiny_complex_model).separate(mixture, ("network", "mixture"))["mixture"]
    assert kept[-1] is not None
    np.testing.assert_array_equal(alone["vocals"], both["vocals"])


def test_network_phase_needs_a_complex_model(track, tiny_model):
    with pytest.raises(Hw2Error, match="network phase method needs a complex model"):
        Separator(tiny_model).separate(track["mixture"], ["network"])


def test_separator_rejects_an_unknown_method(track, tiny_model):
    with pytest.raises(Hw2Error, match="unknown phase method 'magic'"):
        Separator(tiny_model).separate(track["mixture"], ["mixture", "magic"])


def test_griffinlim_phases_depend_only_on_seed_and_key(track, tiny_model):
    mixture = track["mixture"][: RATE]
    sep = Separator(tiny_model, gl_iters=2)
    a = sep.separate(mixture, ["griffinlim"], key="track A")["griffinlim"]
    again = Separator(tiny_model, gl_iters=2).separate(mixture, ["griffinlim"], key="track A")["griffinlim"]
    other = sep.separate(mixture, ["griffinlim"], key="track B")["griffinlim"]
    reseeded = Separator(tiny_model, gl_iters=2, seed=1).separate(mixture, ["griffinlim"], key="track A")
    for target in ("vocals", "accompaniment"):
        assert np.array_equal(a[target], again[target])
        assert not np.allclose(a[target], other[target])
        assert not np.allclose(a[target], reseeded["griffinlim"][target])


def test_separator_from_checkpoint(tmp_path, tiny_model):
    cfg = TrainConfig(hidden_size=16, nb_layers=1)
    path = tmp_path / "epoch007.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "model": tiny_model.state_dict(), "epoch": 7},
               path)
    sep = Separator.from_checkpoint(path, gl_iters=3)
    assert (sep.name, sep.epoch, sep.gl_iters) == ("epoch007", 7, 3)
    other = tmp_path / "bass.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(TrainConfig(hidden_size=16, nb_layers=1, target="bass")),
                "model": tiny_model.state_dict(), "epoch": 1}, other)
    with pytest.raises(Hw2Error, match="needs a vocals model"):
        Separator.from_checkpoint(other)


# ----------------------------------------------------------------------------------------------------- evaluate
def museval_like(values: dict) -> dict:
    """A per-track dict as museval writes it, from {target: [SDR of each frame]} (other metrics = SDR + 1)."""
    return {"name": "t", "targets": [
        {"name": t, "frames": [{"time": float(i), "duration": 1.0,
                                "metrics": {m: (v if m == "SDR" or v is None else v + 1) for m in METRICS}}
                               for i, v in enumerate(vals)]}
        for t, vals in values.items()]}


def test_track_medians_ignore_nan_frames():
    med = track_medians(museval_like({"vocals": [1.0, float("nan"), 5.0, 2.0, None],
                                      "accompaniment": [float("nan"), float("nan")]}))
    assert med["vocals"]["SDR"] == 2.0 and med["vocals"]["SIR"] == 3.0
    assert med["accompaniment"]["SDR"] is None  # silent all along: no number, not NaN


def test_median_of_medians():
    def t(v, a):
        return {"vocals": {m: v for m in METRICS}, "accompaniment": {m: a for m in METRICS}}
    per_track = [t(1.0, 10.0), t(3.0, float("nan")), t(10.0, 20.0), t(None, 30.0)]
    out = median_of_medians(per_track)
    assert out["vocals"] == {m: 3.0 for m in METRICS}  # median of 1, 3, 10; None ignored
    assert out["accompaniment"] == {m: 20.0 for m in METRICS}  # median of 10, 20, 30; NaN ignored
    assert median_of_medians([])["vocals"]["SDR"] is None


def rows():
    scores = lambda v, a: {"vocals": {m: v for m in METRICS}, "accompaniment": {m: a for m in METRICS}}  # noqa: E731
    return [{"label": "vocals / mixture", "checkpoint": "checkpoints/vocals.pt", "epoch": 150, "method": "mixture",
             "scores": scores(6.318, -1.0), "nb_tracks": 2},
            {"label": "reference / oracle-irm", "checkpoint": None, "epoch": None, "method": "oracle-irm",
             "scores": scores(None, 12.0), "nb_tracks": 2}]


def test_markdown_table():
    lines = markdown_table(rows()).splitlines()
    assert lines == ["| row | epoch | vocals SDR | accompaniment SDR |",
                     "|---|---:|---:|---:|",
                     "| vocals / mixture | 150 | 6.32 | -1.00 |",
                     "| reference / oracle-irm | - | n/a | 12.00 |"]
    wide = markdown_table(rows(), METRICS).splitlines()
    assert wide[0].count("|") == 2 + 2 * len(METRICS) + 1 and "accompaniment SAR" in wide[0]


def test_write_results_is_atomic_and_complete(tmp_path):
    data = {"root": "/data/musdb", "subset": "train", "split": "valid", "nb_tracks": 2, "format": "stem"}
    json_path, md_path = write_results(tmp_path / "res", "train-valid", rows(), data, "python hw2/infer.py --x")
    assert (json_path.name, md_path.name) == ("train-valid.json", "train-valid.md")
    doc = json.loads(json_path.read_text())
    assert doc["rows"] == rows() and doc["data"] == data and doc["command"] == "python hw2/infer.py --x"
    assert doc["title"] == "museval SDR on train/valid"
    md = md_path.read_text()
    assert md.startswith("# museval SDR on train/valid") and "| vocals / mixture | 150 | 6.32 |" in md
    assert "`python hw2/infer.py --x`" in md
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["train-valid.json", "train-valid.md"]


def test_write_results_to_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(Hw2Error, match="cannot write results here") as e:
        write_results(blocker / "res", "test", rows(), {"subset": "test"}, "cmd")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_each_separation_hands_the_kept_block_memory_back(track, monkeypatch):
    """`keep_freed_memory` keeps a block's working set in the heap for the next block; `separate` trims it before
    the first block (what decoding left) and once the track is done, whatever the methods, and, before an
    iterative method's iterations, after each block's model pass (bench/ta_command.py measures what that saves)."""
    import hw2.separate as separate_module

    calls = []
    monkeypatch.setattr(separate_module, "release_freed_memory", lambda: calls.append(1))
    sep = Separator(Passthrough(), chunk_dur=1.0, context_dur=0.2)
    blocks = []
    sep.separate(track["mixture"], ["mixture", "griffinlim"], key="t", progress=blocks.append)
    assert len(blocks) > 1 and len(calls) == 2 + len(blocks)
    calls.clear()
    sep.separate(track["mixture"], ["mixture"], key="t")
    assert calls == [1, 1]
