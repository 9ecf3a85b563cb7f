"""The phase methods beyond Griffin-Lim (MISI, mel inversion), the phase-blind distances, and the --phase CLI for
them, on short generated tracks (hw2.synth) with stand-in or tiny models."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hw2.evaluate import (MAGNITUDE_METRICS, _score_job, magnitude_distances, median_of_medians, track_medians)
from hw2.model import STFT, ModelConfig, OpenUnmix
from hw2.reconstruct import mel_filters, mel_inverse, mel_to_magnitude, misi
from hw2.separate import Separator
from conftest import separation_track

RATE = 44100


def sdr(ref, est) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30)))


@pytest.fixture(scope="module")
def track() -> dict:
    """2.5 s of a generated stereo track, not a whole number of hops: float32 (nb_timesteps, 2) each."""
    return separation_track(seed=11, duration=3.0, length=int(2.5 * RATE) - 123)


def mono(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a[:, 0]))


# ------------------------------------------------------------------------------------------------------- MISI
def test_misi_estimates_add_up_to_the_mixture(track):
    stft = STFT()
    x = mono(track["mixture"])
    X = stft(x)
    mags = torch.stack([stft(mono(track["vocals"])).abs() * 1.3, stft(mono(track["accompaniment"])).abs() * 0.7])
    refined = misi(mags, X, stft, len(x), n_iter=4)
    assert refined.shape == (2, len(x))
    assert sdr(x, refined.sum(0)) > 60  # exact up to float rounding
    fixed = misi(mags, X, stft, len(x), n_iter=4, refine=False)
    assert sdr(x, fixed.sum(0)) < 40  # the given (wrong) magnitudes cannot add up to the mixture
    mixture_phase = stft.inverse(mags * torch.exp(1j * X.angle()), len(x))
    assert torch.allclose(misi(mags, X, stft, len(x), n_iter=0, refine=False), mixture_phase)


def test_misi_with_true_magnitudes_improves_on_the_mixture_phase(track):
    """The textbook case: with the sources' true magnitudes, MISI moves the phases toward the sources'."""
    stft = STFT()
    x, v = mono(track["mixture"]), mono(track["vocals"])
    X = stft(x)
    mags = torch.stack([stft(v).abs(), stft(mono(track["accompaniment"])).abs()])
    start = stft.inverse(mags[0] * torch.exp(1j * X.angle()), len(x))
    after = misi(mags, X, stft, len(x), n_iter=16)[0]
    assert sdr(v, after) > sdr(v, start) + 1, (sdr(v, after), sdr(v, start))


def test_misi_snapshots_are_the_shorter_runs(track):
    stft = STFT()
    x = mono(track["mixture"])[: RATE]
    X = stft(x)
    mags = torch.stack([X.abs() * 0.5, X.abs() * 0.6])
    snaps = dict.fromkeys((0, 3))
    misi(mags, X, stft, len(x), n_iter=5, snapshots=snaps)
    assert torch.allclose(snaps[3][0], misi(mags, X, stft, len(x), n_iter=3), atol=1e-6)
    assert torch.allclose(snaps[3][1], misi(mags, X, stft, len(x), n_iter=3, refine=False), atol=1e-6)


@pytest.mark.parametrize("method", ["misi", "mel"])
def test_new_methods_in_blocks_have_exact_shapes(track, tiny_model, method):
    """Several blocks (chunks of 0.5 s): every sample of both targets is written, at the track's exact length."""
    mixture = track["mixture"]
    sep = Separator(tiny_model, chunk_dur=0.5, context_dur=0.2, misi_iters=2, mel_iters=2, n_mels=32)
    out = sep.separate(mixture, [method], key="t")[method]
    for target in ("vocals", "accompaniment"):
        assert out[target].shape == mixture.shape and out[target].dtype == np.float32
        assert np.isfinite(out[target]).all()
        assert (np.abs(out[target][-2048:]).max() > 0) and (np.abs(out[target][:2048]).max() > 0)


def test_separator_misi_adds_up_to_the_mixture_in_blocks(track, tiny_model):
    mixture = track["mixture"]
    out = Separator(tiny_model, chunk_dur=0.5, context_dur=0.2, misi_iters=3).separate(mixture, ["misi"])["misi"]
    assert sdr(mixture, out["vocals"] + out["accompaniment"]) > 60


def test_the_sweep_starts_from_the_models_own_estimates(track):
    """The iteration sweep's 0-iteration rows are the mixture phase of the model's (vocals, accompaniment):
    with a blend's accompaniment network, not the residual."""
    from hw2.model import Blend, UNet
    from hw2.phase import track_sweep

    torch.manual_seed(0)
    cfg = ModelConfig(arch="unet", hidden_size=8, nb_layers=2)
    blend = Blend([OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1)).eval()], [1.0], UNet(cfg).eval(), 0.5).eval()
    mixture = track["mixture"]
    sep = Separator(blend, chunk_dur=60.0)
    want = sep.separate(mixture, ["mixture"], key="t")["mixture"]
    got = track_sweep(sep, mixture, "t", iterations=(0,), mel_bands=(), mel_iterations=(0,))[("griffinlim-mix", 0)]
    residual = track_sweep(Separator(blend.members[0], chunk_dur=60.0), mixture, "t", iterations=(0,), mel_bands=(),
                           mel_iterations=(0,))[("griffinlim-mix", 0)]
    for target in ("vocals", "accompaniment"):
        assert sdr(want[target], got[target]) > 60
    assert sdr(want["accompaniment"], residual["accompaniment"]) < 40  # the check can tell the two apart


# ----------------------------------------------------------------------------------------------- mel inversion
@pytest.mark.parametrize("n_mels", [32, 128, 512])
def test_mel_filters_are_librosas(n_mels):
    librosa = pytest.importorskip("librosa")
    ours = mel_filters(RATE, 4096, n_mels).numpy()
    theirs = librosa.filters.mel(sr=RATE, n_fft=4096, n_mels=n_mels)
    assert ours.shape == theirs.shape == (n_mels, 2049)
    assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scale", [1.0, 0.03])
def test_mel_to_magnitude_is_as_close_as_librosas_mel_to_stft(track, scale):
    """librosa's NNLS (L-BFGS-B with a memory of 2049 corrections: a few frames only) refines the clipped
    pseudo-inverse on loud input and returns it on quiet input; ours comes as close at any level."""
    librosa = pytest.importorskip("librosa")
    stft = STFT()
    mag = stft(mono(track["vocals"])).abs()[:, 20:26] * scale
    fb = mel_filters(RATE, 4096, 128)
    mel = fb @ mag.square()
    theirs = torch.from_numpy(librosa.feature.inverse.mel_to_stft(mel.numpy(), sr=RATE, n_fft=4096))
    ours = mel_to_magnitude(mel, fb)
    sc = lambda m: float((m - mag).norm() / mag.norm())  # noqa: E731
    assert sc(ours) < sc(theirs) + 0.02, (sc(ours), sc(theirs))
    assert sc(ours) < 0.3


def test_mel_inversion_of_a_known_signal():
    """A vowel-like harmonic tone through 256 mel bands and back: exact length, its magnitudes close (spectral
    convergence), its energy kept, far better than a random-phase start."""
    stft = STFT()
    t = torch.arange(2 * RATE) / RATE
    y = sum(torch.sin(2 * math.pi * 220 * k * t) / k for k in range(1, 8)) * 0.1
    mag = stft(y).abs()
    fb = mel_filters(RATE, 4096, 256)
    out = mel_inverse(mag, stft, len(y), fb, n_iter=32, generator=torch.Generator().manual_seed(0))
    assert out.shape == y.shape
    sc = float((stft(out).abs() - mag).norm() / mag.norm())
    start = float((stft(mel_inverse(mag, stft, len(y), fb, 0, generator=torch.Generator().manual_seed(0))).abs()
                   - mag).norm() / mag.norm())
    assert sc < 0.35 and sc < start - 0.1, (sc, start)
    assert 0.7 < float(out.norm() / y.norm()) < 1.3


# ----------------------------------------------------------------------------------------- phase-blind measures
def test_magnitude_distances_of_identical_and_scaled_signals():
    rng = np.random.default_rng(0)
    ref = (0.3 * rng.standard_normal((RATE, 2))).astype(np.float32)  # every bin far above the log floor
    same = magnitude_distances(ref, ref)
    assert same == {"SC": 0.0, "MRSTFT": 0.0}
    for a in (0.5, 2.0):
        d = magnitude_distances(ref, a * ref)
        assert d["SC"] == pytest.approx(abs(1 - a), rel=1e-6)
        assert d["MRSTFT"] == pytest.approx(abs(1 - a) + abs(math.log(a)), rel=1e-3)
    # a tone delayed by 300 samples: the same magnitudes, so SC is near 0, while its SDR is very poor
    t = np.arange(RATE) / RATE
    tone = np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 550 * t)], 1).astype(np.float32)
    delayed = np.roll(tone, 300, axis=0)
    assert magnitude_distances(tone, delayed)["SC"] < 0.02 and sdr(tone, delayed) < 0
    assert magnitude_distances(ref, ref[:-1000])["SC"] > 0  # a shorter estimate is zero-padded
    assert math.isnan(magnitude_distances(np.zeros((RATE, 2)), ref)["SC"])


def test_magnitude_distances_do_not_depend_on_the_block_size():
    rng = np.random.default_rng(1)
    ref, est = rng.standard_normal((2, 3 * RATE + 77, 2)).astype(np.float32)
    a, b = magnitude_distances(ref, est), magnitude_distances(ref, est, block_frames=7)
    assert a["SC"] == pytest.approx(b["SC"], rel=1e-9) and a["MRSTFT"] == pytest.approx(b["MRSTFT"], rel=1e-9)


def test_scored_tracks_carry_the_phase_blind_measures(track, tmp_path):
    refs = {t: track[t] for t in ("vocals", "accompaniment")}
    est = {"vocals": 0.5 * track["vocals"], "accompaniment": track["accompaniment"]}
    medians = _score_job("t", refs, est, tmp_path / "t.json", {"method": "x"})
    saved = json.loads((tmp_path / "t.json").read_text())
    assert set(saved["magnitude"]["vocals"]) == set(MAGNITUDE_METRICS)
    assert track_medians(saved) == medians
    assert medians["vocals"]["SC"] == pytest.approx(0.5, rel=1e-6) and medians["accompaniment"]["SC"] == 0.0
    rows = median_of_medians([medians, medians])
    assert rows["vocals"]["SC"] == pytest.approx(0.5, rel=1e-6) and "SDR" in rows["vocals"]


# ------------------------------------------------------------------------------------------------------- CLI
def test_infer_runs_the_new_methods_with_their_settings(wav_root, tmp_path):
    """`--phase misi mel` on the generated valid tracks: rows with museval's metrics and the phase-blind ones;
    the per-track JSON records each method's settings, so a rerun with other settings does not reuse them."""
    from dataclasses import asdict

    from hw2.infer import main
    from hw2.checkpoint import CHECKPOINT_FORMAT
    from hw2.config import TrainConfig

    torch.manual_seed(0)
    model = OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1)).eval()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(TrainConfig(hidden_size=16, nb_layers=1)),
                "model": model.state_dict(), "epoch": 1}, ckpt)
    out = tmp_path / "out"
    args = ["--musdb-root", str(wav_root), "--subset", "train", "--split", "valid", "--checkpoint", str(ckpt),
            "--misi-iters", "2", "--mel-iters", "2", "--n-mels", "64", "--samples", "1",
            "--jobs", "1", "--out", str(out), "--name", "phase", "--max-tracks", "1", "--phase"]
    assert main(args + ["mel"]) == 0
    assert main(args + ["misi", "mel"]) == 0  # mel resumed from the first run: the rows keep the order asked
    doc = json.loads((out / "phase.json").read_text())
    assert [r["method"] for r in doc["rows"]] == ["misi", "mel"]
    for r in doc["rows"]:
        assert set(r["scores"]["vocals"]) == {"SDR", "SIR", "ISR", "SAR", "SC", "MRSTFT"}
    per_track = next((out / "phase" / "tiny-mel" / "train").glob("*.json"))
    assert json.loads(per_track.read_text())["hw2"]["n_mels"] == 64
    assert "vocals SC" in (out / "phase.md").read_text()
    track = next(d for d in (out / "phase" / "samples").iterdir() if d.is_dir())
    assert sorted(p.name for p in track.glob("*.wav")) == [
        "mixture.wav", "tiny-mel_accompaniment.wav", "tiny-mel_vocals.wav", "tiny-misi_accompaniment.wav",
        "tiny-misi_vocals.wav", "true_accompaniment.wav", "true_vocals.wav"]


# ------------------------------------------------------------------------------------ a predicted phase, moved
def test_phase_from_keeps_the_magnitudes_and_takes_the_donors_phase(track, tiny_model, tiny_complex_model):
    """PhaseFrom: the magnitude model's |V| and |A|, the donor's phase inside its band, the mixture's above it."""
    from hw2.phase import PhaseFrom

    X = STFT()(torch.from_numpy(np.ascontiguousarray(track["mixture"].T)))[None]
    v, a = PhaseFrom(tiny_model, tiny_complex_model).targets(X)
    V, A = tiny_model.targets(X.abs())
    vd, ad = tiny_complex_model.targets(X)
    assert torch.allclose(v.abs(), V, atol=1e-5) and torch.allclose(a.abs(), A, atol=1e-5)
    inside, above = vd.abs() > 1e-3, vd.abs() == 0
    assert inside.any() and above.any()
    turn = lambda x, y: (x * y.conj()).angle().abs()  # noqa: E731
    loud = inside & (V > 1e-3)
    assert turn(v, vd)[loud].max() < 1e-3 and turn(v, X)[above & (V > 1e-3)].max() < 1e-3
    assert turn(v, X)[loud].median() > 0.1  # the donor's phase is not the mixture's: the check can fail
    with pytest.raises(Exception, match="complex model"):
        PhaseFrom(tiny_complex_model, tiny_model)


def test_phase_transfer_table(wav_root, tmp_path, tiny_model, tiny_complex_model):
    """`python -m hw2.phase --phase-from CKPT`: three rows on the valid tracks, the donor alone scored as
    `hw2/infer.py --phase network` scores it, and a magnitude checkpoint as the donor refused in one line."""
    from dataclasses import asdict

    from hw2.checkpoint import CHECKPOINT_FORMAT
    from hw2.config import TrainConfig
    from hw2.phase import main

    paths = {}
    for name, model, cfg in (("mag", tiny_model, TrainConfig(hidden_size=16, nb_layers=1)),
                             ("cpx", tiny_complex_model, TrainConfig(arch="tfctdf", hidden_size=4, nb_layers=2,
                                                                     bandwidth=8000.0, tfc_layers=1, tdf_bottleneck=4))):
        paths[name] = tmp_path / f"{name}.pt"
        torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "model": model.state_dict(), "epoch": 1},
                   paths[name])
    out = tmp_path / "results"
    args = ["--musdb-root", str(wav_root), "--checkpoint", str(paths["mag"]), "--out", str(out)]
    assert main(args + ["--phase-from", str(paths["cpx"])]) == 0
    doc = json.loads((out / "phase-transfer.json").read_text())
    assert [r["phase"] for r in doc["rows"]] == ["mixture", "network", "donor"]
    assert doc["data"]["split"] == "valid" and doc["data"]["nb_tracks"] >= 1
    from hw2.cache import open_cached
    from hw2.evaluate import score_model
    alone = score_model(tiny_complex_model, open_cached(wav_root, "train", "valid"))
    assert doc["rows"][2]["scores"] == alone
    assert "`" + str(paths["cpx"]) + "`'s phase" in (out / "phase-transfer.md").read_text()
    (out / "phase-transfer.json").unlink()
    assert main(args + ["--phase-from", str(paths["mag"])]) != 0
    assert not (out / "phase-transfer.json").exists()
