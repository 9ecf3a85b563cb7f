"""Shared fixtures: small generated MUSDB roots in both layouts, each with its own decoded cache, and the real
MUSDB root from $MUSDB_ROOT for the `integration` tests (skipped when it is unset).

No test needs /work/shared or writes to ~/.cache: $HW2_CACHE points at a session temporary folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hw2.synth import make_musdb

# the caller's $HW2_CACHE (for example a cache of the real data already decoded), before the session replaces it
USER_CACHE = os.environ.get("HW2_CACHE")

# the tests run their models in this process on a shared CPU: one thread avoids oversubscription stalls
torch.set_num_threads(1)

NB_TRAIN, NB_VALID, NB_TEST, DURATION = 4, 2, 1, 5.0


@pytest.fixture(scope="session")
def synth_sizes() -> tuple[int, int, int]:
    """(train, valid, test) tracks in each generated root."""
    return NB_TRAIN, NB_VALID, NB_TEST


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """$HW2_CACHE for the whole session (subprocesses inherit it): nothing is written to ~/.cache."""
    path = tmp_path_factory.mktemp("hw2_cache")
    old = os.environ.get("HW2_CACHE")
    os.environ["HW2_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HW2_CACHE", None)
    else:
        os.environ["HW2_CACHE"] = old


@pytest.fixture(scope="session")
def wav_root(tmp_path_factory) -> Path:
    """MUSDB18-HQ layout: 4 train + 2 valid (musdb's validation names) + 1 test tracks of 5 s."""
    return make_musdb(tmp_path_factory.mktemp("musdb_wav"), "wav", NB_TRAIN, NB_VALID, NB_TEST, DURATION, seed=1)


@pytest.fixture(scope="session")
def stem_root(tmp_path_factory) -> Path:
    """MUSDB18 layout (.stem.mp4, AAC): 4 train + 2 valid + 1 test tracks of 5 s."""
    return make_musdb(tmp_path_factory.mktemp("musdb_stem"), "stem", NB_TRAIN, NB_VALID, NB_TEST, DURATION, seed=2)


@pytest.fixture(scope="session")
def wav_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache_wav")


@pytest.fixture(scope="session")
def stem_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache_stem")


@pytest.fixture(params=["wav", "stem"])
def synth(request) -> tuple[str, Path, Path]:
    """(format, root, cache dir) for each generated layout in turn."""
    fmt = request.param
    return fmt, request.getfixturevalue(f"{fmt}_root"), request.getfixturevalue(f"{fmt}_cache")


@pytest.fixture(scope="session")
def musdb_root() -> Path:
    """The real MUSDB root from $MUSDB_ROOT; the test is skipped when it is unset."""
    root = os.environ.get("MUSDB_ROOT")
    if not root:
        pytest.skip("set MUSDB_ROOT to a MUSDB18 root to run the integration tests")
    return Path(root)


@pytest.fixture(scope="session")
def real_cache_dir(tmp_path_factory) -> Path:
    """The caller's $HW2_CACHE when set (reuses a decoded cache of the real data), else a temporary folder."""
    return Path(USER_CACHE) if USER_CACHE else tmp_path_factory.mktemp("cache_real")


def separation_track(seed: int, duration: float, length: int) -> dict:
    """A generated track of `duration` seconds (hw2.synth.make_stems) cut to `length` samples: mixture, vocals, accompaniment, each float32
    (nb_timesteps, 2), mixture == vocals + accompaniment (the phase and separation tests' input)."""
    from hw2.synth import make_stems

    stems = make_stems(seed=seed, duration=duration)[:, :length]
    vocals, accompaniment = stems[4], stems[1] + stems[2] + stems[3]
    return {"mixture": vocals + accompaniment, "vocals": vocals, "accompaniment": accompaniment}


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained tiny Open-Unmix (hidden 16, one LSTM layer), the same weights in every module."""
    import torch

    from hw2.model import ModelConfig, OpenUnmix

    torch.manual_seed(0)
    return OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1)).eval()


@pytest.fixture(scope="module")
def tiny_complex_model():
    """An untrained tiny TFC-TDF U-Net (complex output) on the separator's STFT: 2 levels of 4 channels more, one
    convolution per block, the band up to 8 kHz."""
    import torch

    from hw2.model import ModelConfig, TFCTDFNet

    torch.manual_seed(0)
    return TFCTDFNet(ModelConfig(arch="tfctdf", hidden_size=4, nb_layers=2, bandwidth=8000.0, tfc_layers=1,
                                 tdf_bottleneck=4)).eval()
