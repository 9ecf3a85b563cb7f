"""Phase reconstruction: a magnitude (and the mixture) in, a complex spectrogram or a waveform out.

The algorithms the `Separator` (`hw2.separate`) calls per block window, and the phase sweep (`hw2.phase`) calls
directly: Griffin-Lim (Griffin & Lim 1984, with fast Griffin-Lim's momentum, Perraudin et al. 2013), MISI
(Gunawardana & Sejdinovic 2005), mel inversion (librosa's mel_to_audio, in torch) and the multichannel Wiener
post-filter (one EM iteration, as Open-Unmix with norbert). Shapes use Open-Unmix's names: a magnitude is
(nb_samples, nb_channels, nb_bins, nb_frames) unless a docstring says otherwise.
"""
from __future__ import annotations

import numpy as np
import torch

from hw2.model import STFT
from hw2.tracks import blocks


def griffinlim(mag: torch.Tensor, stft: STFT, length: int, n_iter: int = 32, momentum: float = 0.99,
               init: torch.Tensor | None = None, generator: torch.Generator | None = None,
               snapshots: dict | None = None) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013), as librosa.griffinlim.

    mag: magnitude (nb_bins, nb_frames), not power. init: complex (nb_bins, nb_frames) whose phase starts the
    iterations, or None for a uniformly random phase. Returns the waveform (length,). snapshots: {iterations:
    None}, filled with the waveform after that many iterations (one run gives a whole iteration sweep).
    """
    if init is None:
        phase = torch.rand(mag.shape, generator=generator, device="cpu").to(mag.device) * (2 * np.pi)
        angles = torch.polar(torch.ones_like(mag), phase)
    else:
        angles = init / (init.abs() + 1e-16)
    tprev = None
    for i in range(n_iter):
        if snapshots is not None and i in snapshots:
            snapshots[i] = stft.inverse(mag * angles, length)
        rebuilt = stft(stft.inverse(mag * angles, length))
        angles = rebuilt - (momentum / (1 + momentum)) * tprev if tprev is not None else rebuilt
        angles = angles / (angles.abs() + 1e-16)
        tprev = rebuilt
    wave = stft.inverse(mag * angles, length)
    if snapshots is not None and n_iter in snapshots:
        snapshots[n_iter] = wave
    return wave


def misi(mags: torch.Tensor, mix: torch.Tensor, stft: STFT, length: int, n_iter: int = 8,
         refine: bool = True, snapshots: dict | None = None, init: torch.Tensor | None = None) -> torch.Tensor:
    """Multiple-input spectrogram inversion (Gunawardana & Sejdinovic 2005; Magron et al. 2015), from the mixture's
    phase. Each iteration takes every source's waveform s_j = iSTFT(|S_j| e^{i phi_j}), shares the mixture's error
    e = x - sum_k s_k equally (s_j + e / J), and keeps the phase of that signal's STFT under the magnitude |S_j|.

    mags: (nb_sources, nb_bins, nb_frames) magnitudes; mix: complex (nb_bins, nb_frames), the mixture's STFT.
    Returns the waveforms (nb_sources, length). refine=True returns s_j + e / J, whose magnitudes the last error
    share has refined and which add up to iSTFT(mix) exactly; refine=False returns s_j, with the magnitudes as
    given. n_iter=0 with refine=False is the mixture phase. snapshots: {iterations: None}, filled with the pair
    (refined, fixed) of waveforms after that many iterations. init: complex (nb_sources, nb_bins, nb_frames) whose
    phases start the iterations instead of the mixture's (a complex model's own estimates).
    """
    x = stft.inverse(mix, length)
    angles = torch.exp(1j * (mix if init is None else init).angle())
    nb_sources = mags.shape[0]
    for i in range(n_iter + 1):
        s = stft.inverse(mags * angles, length)  # (J, length)
        e = (x - s.sum(0)) / nb_sources
        if snapshots is not None and i in snapshots:
            snapshots[i] = (s + e, s)
        if i < n_iter:
            rebuilt = stft(s + e)
            angles = rebuilt / (rebuilt.abs() + 1e-16)
    return s + e if refine else s


# Slaney's mel scale, as librosa.filters.mel (htk=False): linear below 1 kHz, logarithmic above
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-10) / 1000) / (np.log(6.4) / 27), f / (200 / 3))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * (200 / 3))


def mel_filters(rate: int, n_fft: int, n_mels: int = 128) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters from 0 Hz to rate / 2, Slaney's scale and area normalisation:
    librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)."""
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(0)), _hz_to_mel(np.float64(rate / 2)), n_mels + 2))
    ramps, width = edges[:, None] - freqs[None], np.diff(edges)[:, None]
    fb = np.maximum(0, np.minimum(-ramps[:-2] / width[:-1], ramps[2:] / width[1:]))
    return torch.from_numpy((fb * (2 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32))


def mel_to_magnitude(mel: torch.Tensor, fb: torch.Tensor, n_iter: int = 30,
                     pinv: torch.Tensor | None = None) -> torch.Tensor:
    """librosa.feature.inverse.mel_to_stft: the magnitude (nb_bins, nb_frames) whose power best gives the mel power
    spectrogram mel (n_mels, nb_frames) through fb (n_mels, nb_bins), by non-negative least squares.

    librosa starts from the filterbank's pseudo-inverse clipped at 0 and refines it with L-BFGS-B (a memory of
    2049 corrections per frame at n_fft 4096: gigabytes for a few seconds of audio), and stops at its start when
    the spectrogram is quiet (its tolerance is absolute). Here: the same start, then n_iter steps of accelerated
    projected gradient (FISTA), which do not depend on the level and reach librosa's distance to the true
    magnitude in about 30 steps (tests/test_phase.py). Each bin lies under at most two mel filters, so the
    filterbank is applied as a sparse matrix. pinv: fb's pseudo-inverse, if already at hand.
    """
    pinv = torch.linalg.pinv(fb.double()).float() if pinv is None else pinv
    A, At = fb.to_sparse(), fb.T.to_sparse()
    v = torch.ones(fb.shape[1], 1, dtype=fb.dtype, device=fb.device)
    for _ in range(30):  # power iteration: the step 1 / ||fb||_2^2 (an SVD of fb costs more than the NNLS)
        v = At @ (A @ v)
        v = v / v.norm()
    step = 0.99 / float((A @ v).norm()) ** 2
    x = (pinv @ mel).clamp_min(0)
    y, t = x, 1.0
    for _ in range(n_iter):
        x_next = (y - step * (At @ (A @ y - mel))).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y, x, t = x_next + ((t - 1) / t_next) * (x_next - x), x_next, t_next
    return x.sqrt()


def mel_inverse(mag: torch.Tensor, stft: STFT, length: int, fb: torch.Tensor, n_iter: int = 32,
                generator: torch.Generator | None = None, snapshots: dict | None = None,
                pinv: torch.Tensor | None = None) -> torch.Tensor:
    """librosa.feature.inverse.mel_to_audio of the mel power spectrogram fb @ mag**2, with our STFT: the magnitude
    back by `mel_to_magnitude`, then Griffin-Lim from a random phase (librosa's default init).

    mag: (nb_bins, nb_frames) magnitude; fb: (n_mels, nb_bins) from `mel_filters`, pinv its pseudo-inverse (or
    None). Returns (length,); snapshots as `griffinlim`'s.
    """
    fb = fb.to(mag.device)
    return griffinlim(mel_to_magnitude(fb @ mag.square(), fb, pinv=pinv), stft, length, n_iter,
                      generator=generator, snapshots=snapshots)


def wiener(mags: torch.Tensor, mix: torch.Tensor, iterations: int = 1, eps: float = 1e-10,
           frames_per_block: int = 256, init: torch.Tensor | None = None) -> torch.Tensor:
    """Multichannel Wiener filter by expectation-maximisation (Open-Unmix / norbert).

    mags: (nb_sources, nb_channels, nb_bins, nb_frames) magnitude estimates; mix: complex
    (nb_channels, nb_bins, nb_frames). Returns complex estimates (nb_sources, nb_channels, nb_bins, nb_frames).
    init: complex estimates of the mags' shape to start from instead of the mags with the mixture's phase (a
    complex model's own).
    """
    y = mags * torch.exp(1j * mix.angle())[None] if init is None else init
    if iterations == 0:
        return y
    scale = max(1.0, float(mix.abs().max()) / 10)  # norbert's scaling (max |X| / 10), for numerical stability
    mix, y = mix / scale, y / scale
    nb_channels = mix.shape[0]
    # the 2x2 systems are solved in double precision: where one source dominates, Cxx is nearly rank 1 and in
    # single precision its rounding exceeds the sqrt(eps) regularisation (a singular-matrix error, or huge gains)
    c128 = torch.complex128
    eye = torch.eye(nb_channels, dtype=c128, device=mix.device)
    for _ in range(iterations):
        v = (y.abs() ** 2).mean(1)  # (J, F, T) power spectral densities
        R = torch.einsum("jaft,jbft->jfab", y, y.conj()) / (v.sum(-1)[..., None, None] + eps)  # (J, F, C, C)
        R = R.to(c128)
        out = torch.empty_like(y)
        for _, a, b, _ in blocks(mix.shape[-1], frames_per_block):
            vt = v[..., a:b].to(c128)  # (J, F, Tb)
            cxx = torch.einsum("jft,jfab->ftab", vt, R) + np.sqrt(eps) * eye
            inv = torch.linalg.inv(cxx)
            x = mix[..., a:b].to(c128)
            for j in range(y.shape[0]):
                gain = vt[j][..., None, None] * (R[j][:, None] @ inv)  # (F, Tb, C, C)
                out[j, ..., a:b] = torch.einsum("ftab,bft->aft", gain, x)
        y = out
    return y * scale
