"""hw2.bsseval gives museval's numbers: frame by frame against museval.evaluate on generated signals (lengths with a
partial last second and shorter than a frame, mono and stereo, silent frames, padded and truncated estimates,
overlapping frames, NaN and inf estimates, small blocks so that every block boundary is crossed), the bad inputs,
and, with $MUSDB_ROOT, real tracks separated by the shipped checkpoint.

References are on the 16-bit grid, as MUSDB's decoded stems are: where a reference has a component below float32
rounding (a source panned exactly in float32), G is singular to rounding and museval's own numbers move by tenths
of a dB under a 1e-13 perturbation, so no second implementation can match it there (see hw2.bsseval).
"""
from __future__ import annotations

import numpy as np
import pytest

from hw2 import Hw2Error, bsseval

museval = pytest.importorskip("museval")
RATE = 44100
TOL = 0.01  # dB


def signals(seconds: float, nchan: int = 2, seed: int = 0):
    """references (2, n, nchan) on the 16-bit grid, estimates (2, n, nchan) with leakage, filtering and noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    voice = np.sin(2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 5 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    voice = voice[:, None] * rng.uniform(0.3, 0.7, nchan) + 0.02 * rng.standard_normal((n, nchan))
    band = np.convolve(rng.standard_normal(n + 63), np.hanning(64) / 32, "valid")
    accomp = band[:, None] * rng.uniform(0.5, 1, nchan) + 0.05 * rng.standard_normal((n, nchan))
    refs = np.round(np.stack([voice, accomp]) * 0.3 * 32768) / 32768
    smear = lambda x: np.apply_along_axis(lambda c: np.convolve(c, [0.6, 0.3, 0.1])[:n], 0, x)  # noqa: E731
    ests = np.stack([smear(refs[0]) + 0.2 * refs[1], 0.9 * refs[1] + 0.1 * refs[0]])
    ests += 0.01 * rng.standard_normal(ests.shape)
    return refs, ests.astype(np.float32)


def assert_same(ours, theirs, tol=TOL):
    for name, a, b in zip(("SDR", "ISR", "SIR", "SAR"), ours, theirs):
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN frames differ")
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=f"{name}: inf frames differ")
        ok = np.isfinite(b)
        assert np.abs(a[ok] - b[ok]).max(initial=0) < tol, f"{name}: {np.abs(a[ok] - b[ok]).max()} dB"


def compare(refs, ests, win=RATE, hop=RATE, **kw):
    ours = bsseval.evaluate(refs, ests, win, hop, **kw)
    theirs = museval.evaluate(refs, ests, win=win, hop=hop)
    assert_same(ours, theirs)
    return ours


@pytest.mark.parametrize("seconds,nchan", [(3.5, 2), (0.6, 2), (2.2, 1), (2.0, 2)])
def test_frames_match_museval(seconds, nchan):
    """A partial last second is left out as museval does; a track shorter than 1 s is one frame."""
    refs, ests = signals(seconds, nchan)
    sdr = compare(refs, ests, block=5000, frames_per_batch=2)[0]
    assert sdr.shape == (2, max(1, int(seconds)))
    assert np.isfinite(sdr).all()


def test_blocks_and_batches_do_not_change_the_numbers():
    refs, ests = signals(3.0)
    a = np.stack(bsseval.evaluate(refs, ests, block=3000, frames_per_batch=1))
    b = np.stack(bsseval.evaluate(list(refs), list(ests)))  # sequences of (n, nchan) arrays are fine too
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_overlapping_frames_match_museval():
    refs, ests = signals(2.5)
    compare(refs, ests, win=RATE, hop=RATE // 2, block=7000, frames_per_batch=3)


def test_silent_frames_are_nan_for_every_source():
    refs, ests = signals(4.0)
    refs[0, RATE:2 * RATE] = 0  # vocals silent in the second frame
    ests[1, 3 * RATE:] = 0  # an accompaniment estimate silent in the last frame
    refs[0, int(2.5 * RATE):int(2.6 * RATE)] = 0  # part of a frame silent: not NaN
    sdr = compare(refs, ests)[0]
    assert np.isnan(sdr[:, 1]).all() and np.isnan(sdr[:, 3]).all() and np.isfinite(sdr[:, [0, 2]]).all()


def test_opposite_channels_count_as_silent():
    """museval sums the channels before testing for silence: L = -R is a silent frame."""
    refs, ests = signals(2.0)
    refs[1, :RATE, 1] = -refs[1, :RATE, 0]
    assert np.isnan(compare(refs, ests)[0][:, 0]).all()


@pytest.mark.parametrize("delta", [-3000, 5000])
def test_estimates_of_another_length_are_padded_or_truncated(delta):
    refs, ests = signals(2.5)
    if delta < 0:
        ests = ests[:, :delta]
    else:
        ests = np.concatenate([ests, np.ones((2, delta, 2), np.float32)], 1)
    compare(refs, ests, block=4000)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_estimate_is_nan_for_its_source(bad):
    refs, ests = signals(3.0)
    ests[0, 1000, 1] = bad
    ours = compare(refs, ests)
    assert np.isnan(np.stack(ours)[:, 0]).all() and np.isfinite(np.stack(ours)[:, 1]).all()


def test_silent_reference_or_estimate_track_is_one_clear_error():
    refs, ests = signals(2.0)
    silent = refs.copy()
    silent[0] = 0
    with pytest.raises(ValueError):
        museval.evaluate(silent, ests)
    with pytest.raises(Hw2Error, match="reference source 0 is silent over the whole track"):
        bsseval.evaluate(silent, ests)
    silent = ests.copy()
    silent[1] = 0
    with pytest.raises(Hw2Error, match="estimate source 1 is silent"):
        bsseval.evaluate(refs, silent)


def test_mismatched_shapes_are_one_clear_error():
    refs, ests = signals(1.5)
    with pytest.raises(Hw2Error, match="channel count"):
        bsseval.evaluate(refs, ests[..., :1])
    with pytest.raises(Hw2Error, match="one estimate per reference"):
        bsseval.evaluate(refs, ests[:1])


def test_score_track_json_matches_museval():
    from hw2.evaluate import score_track
    from hw2.tracks import TARGETS

    refs, ests = signals(3.0)
    refs[0, :RATE] = 0
    r = {t: refs[i] for i, t in enumerate(TARGETS)}
    e = {t: ests[i] for i, t in enumerate(TARGETS)}
    ours, theirs = score_track("x", r, e, scorer="hw2"), score_track("x", r, e, scorer="museval")
    assert ours.keys() >= {"targets"} and [t["name"] for t in ours["targets"]] == list(TARGETS)
    for a, b in zip(ours["targets"], theirs["targets"]):
        assert [f["time"] for f in a["frames"]] == [f["time"] for f in b["frames"]] == [0, 1, 2]
        for fa, fb in zip(a["frames"], b["frames"]):
            for m, v in fb["metrics"].items():
                assert (np.isnan(v) and np.isnan(fa["metrics"][m])) or abs(v - fa["metrics"][m]) < TOL
    with pytest.raises(Hw2Error, match="unknown scorer"):
        score_track("x", r, e, scorer="fast")


@pytest.mark.integration
def test_real_tracks_match_museval(musdb_root):
    """Two real tracks, separated by the shipped checkpoint (mixture phase), and infer's reference rows: every frame
    within 0.01 dB."""
    from pathlib import Path

    from hw2.cache import CachedTrack
    from hw2.separate import Separator, references
    from hw2.tracks import decode, open_tracks

    checkpoint = Path(__file__).resolve().parents[1] / "checkpoints" / "vocals.pt"
    sep = Separator.from_checkpoint(checkpoint)
    for track in open_tracks(musdb_root, "train", "valid")[:2]:
        cached = CachedTrack(track.name, decode(track))
        mixture = cached.stem("mixture").T
        refs = np.stack([cached.target("vocals").T, cached.target("accompaniment").T])
        rows = {"model": sep.separate(mixture, ("mixture",), key=track.name)["mixture"],
                **references(mixture, refs[0], refs[1])}  # mix-as-estimate and oracle-irm, as infer --references
        for est in rows.values():
            compare(refs, np.stack([est["vocals"], est["accompaniment"]]))
