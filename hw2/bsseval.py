"""BSSEval v4 with museval 0.4.1's numbers, in memory bounded by a block rather than the track.

`evaluate(references, estimates, win, hop)` returns what `museval.evaluate(references, estimates, win, hop)`
returns (mode v4, images version, no permutation): SDR, ISR, SIR, SAR per frame, shape (nb_sources, nb_frames).
What museval computes, and what is computed here the same way:

- the estimates are zero-padded or truncated to the references' length;
- the 512-tap distortion filters come from whole-track correlations (v4: `framewise_filters=False`): G, the
  references with each other at lags -511..511, and D, the references with each estimate at lags 0..511; they are
  solved as museval solves them, `solve(G + eps I, D)` (LU), with all references (C, for interference) and with
  the true source alone (Cj, for spatial distortion);
- frames start every `hop` samples and are `win` long; only whole frames count, except that a track shorter than
  `win` is one frame; each frame's references (zero outside the frame) go through the filters with the 511-sample
  tail, and the energies of s_true, e_spat, e_interf, e_artif give the four ratios (an energy 0 in a
  denominator is +inf);
- a frame where any reference or any estimate is silent (its channels sum to 0 at every sample) is NaN for every
  source; an estimate with NaN or inf anywhere makes its source NaN on every frame (its filters are NaN).

What differs is only how: museval takes FFTs of the whole track at once (padded to the next power of two, float64:
4 GB for 5 minutes) and one `fftconvolve` per frame, source and channel pair. Here pass 1 accumulates the
correlations' cross-spectra block by block (overlap of 511 samples), and pass 2 takes each batch of frames to the
frequency domain once and reads the four energies there (Parseval), float64 throughout, on any torch device.
On 16-bit audio (MUSDB's stems, generated or real) the two agree to about 1e-7 dB (tests/test_bsseval.py,
bench/score.py). Where G is singular to rounding, for example a source panned exactly in float32 and never
quantised, museval's own numbers move by tenths of a dB when the references move by 1e-13, and no second
implementation can follow them there.
"""
from __future__ import annotations

import numpy as np
import torch

from hw2 import Hw2Error
from hw2.tracks import blocks

FILTERS_LEN = 512


def evaluate(references, estimates, win: int = 44100, hop: int = 44100, device="cpu",
             block: int = 1 << 16, frames_per_batch: int = 8, filters_len: int = FILTERS_LEN):
    """museval.evaluate(references, estimates, win, hop) in bounded memory.

    references, estimates: (nb_sources, nb_samples, nb_channels) arrays, or sequences of nb_sources arrays
    (nb_samples, nb_channels) of any float dtype (read a block at a time, converted to float64 per block, never
    copied whole). Returns (sdr, isr, sir, sar) numpy float64 arrays (nb_sources, nb_frames).
    """
    refs, ests = [np.asarray(r) for r in references], [np.asarray(e) for e in estimates]
    check(refs, ests)
    nsrc, (nsampl, nchan) = len(refs), refs[0].shape
    win, hop, L = int(win), int(hop), filters_len
    device = torch.device(device)

    def read(arrays, start, stop):
        """float64 (nb_sources, nb_channels, stop - start), zero past the references' end."""
        out = np.zeros((len(arrays), nchan, stop - start))
        for j, a in enumerate(arrays):
            part = a[start:min(stop, nsampl)]
            out[j, :, :len(part)] = part.T
        return torch.from_numpy(out).to(device)

    Call, Cj = filters(refs, ests, nsampl, nchan, L, read, block, device)
    bad = ~(torch.isfinite(Call).flatten(1).all(1) & torch.isfinite(Cj).flatten(1).all(1))  # (nb_sources,)

    # pass 2: frames, as museval.metrics.Framing
    n = min(win, nsampl)
    nwin = (nsampl - win + hop) // hop if win < nsampl else 1
    N = fast_len(n + L - 1)
    Hall = torch.fft.rfft(Call, N, dim=2).transpose(2, 3)  # (j, P, c_out, F): filters onto all references
    Hj = torch.fft.rfft(Cj, N, dim=2).transpose(2, 3)  # (j, c_in, c_out, F): onto source j alone
    edge = [0, N // 2] if N % 2 == 0 else [0]  # the bins an rfft holds once, not twice
    out = torch.empty(4, nsrc, nwin, dtype=torch.float64)
    for t0 in range(0, nwin, frames_per_batch):
        t1 = min(t0 + frames_per_batch, nwin)
        start, stop = t0 * hop, (t1 - 1) * hop + n
        r = read(refs, start, stop).unfold(-1, n, hop).permute(2, 0, 1, 3)  # (T, j, c, n)
        e = read(ests, start, stop).unfold(-1, n, hop).permute(2, 0, 1, 3)
        silent = ((r.sum(2) == 0).all(-1).any(-1) | (e.sum(2) == 0).all(-1).any(-1)).cpu()  # (T,)
        X, E = torch.fft.rfft(r, N), torch.fft.rfft(e, N)  # (T, j, c, F)
        Xp = X.flatten(1, 2)  # (T, P, F)
        P_all = sum(Xp[:, p, None, None] * Hall[None, :, p] for p in range(Xp.shape[1]))  # (T, j, c, F)
        P_j = sum(X[:, :, ci, None] * Hj[None, :, ci] for ci in range(nchan))

        def energy(z):  # (T, j, c, F) spectra -> (T, j) energies of their signals (Parseval)
            zz = torch.view_as_real(z).flatten(2)
            edges = z[..., edge].abs().square().sum((-1, -2))
            return (2 * torch.einsum("tjk,tjk->tj", zz, zz) - edges) / N

        s_true = r.square().sum((-1, -2))
        ratios = ((s_true, (e - r).square().sum((-1, -2))),  # SDR: s_true vs e_spat + e_interf + e_artif
                  (s_true, energy(P_j - X)),  # ISR: s_true vs e_spat
                  (energy(P_j), energy(P_all - P_j)),  # SIR: s_true + e_spat vs e_interf
                  (energy(P_all), energy(E - P_all)))  # SAR: s_true + e_spat + e_interf vs e_artif
        for m, (num, den) in enumerate(ratios):
            db = torch.where(den == 0, torch.inf, 10 * torch.log10(num / den)).cpu()
            db[silent] = torch.nan
            out[m, :, t0:t1] = db.T
    out[:, bad.cpu()] = torch.nan
    sdr, isr, sir, sar = out.numpy()
    return sdr, isr, sir, sar


def filters(refs, ests, nsampl, nchan, L, read, block, device):
    """Pass 1: museval's v4 distortion filters from whole-track correlations, accumulated block by block.

    Returns C (j, P, L, c_out), the filters of every reference channel (P = nb_sources * nb_channels) onto
    estimate j, and Cj (j, c_in, L, c_out), those of reference j alone onto estimate j, as
    museval.metrics._compute_projection_filters gives them.
    """
    nsrc = len(refs)
    P = nsrc * nchan
    N = fast_len(block + L - 1)
    B = N - L + 1  # samples per block: with the next L - 1 samples, one block's correlations do not wrap
    S = torch.zeros(P, 2 * P, N // 2 + 1, dtype=torch.complex128, device=device)
    nonzero = np.zeros((2, nsrc), bool)
    for _, start, stop, _ in blocks(nsampl, B):
        x = read(refs, start, stop + L - 1)  # (j, c, stop - start + L - 1)
        y = read(ests, start, stop + L - 1)
        nonzero[0] |= (x[..., :stop - start].sum(1) != 0).any(-1).cpu().numpy()
        nonzero[1] |= (y[..., :stop - start].sum(1) != 0).any(-1).cpu().numpy()
        A = torch.fft.rfft(x[..., :stop - start].reshape(P, -1), N)
        Bq = torch.fft.rfft(torch.cat([x, y]).reshape(2 * P, -1), N)
        S += A.conj()[:, None] * Bq[None]
    if not nonzero.all():
        kind, j = ("reference", "estimate")[int(np.argwhere(~nonzero)[0, 0])], int(np.argwhere(~nonzero)[0, 1])
        raise Hw2Error(f"{kind} source {j} is silent over the whole track: BSSEval is undefined for it (museval "
                       "raises too); leave such tracks out of the evaluation")
    corr = torch.fft.irfft(S, N)[..., :L]  # corr[p, q, k] = sum_t x_p[t] z_q[t + k], z = references then estimates
    del S
    Rrr, Rre = corr[:, :P], corr[:, P:]
    # G[(p, a), (q, b)] = <x_p delayed a, x_q delayed b> = corr_pq[a - b], with corr_pq[-k] = corr_qp[k]
    ext = torch.cat([Rrr.transpose(0, 1).flip(-1)[..., :-1], Rrr], -1)  # lags -(L-1) .. L-1
    lag = torch.arange(L, device=device)
    G = ext[:, :, lag[:, None] - lag[None, :] + L - 1].permute(0, 2, 1, 3).reshape(P * L, P * L)
    D = Rre.permute(0, 2, 1).reshape(P * L, P)  # D[(p, a), (j, c)] = <x_p delayed a, estimate j channel c>
    eps = np.finfo(float).eps
    Call = _solve(G, D, eps).reshape(nsrc, nchan, L, nsrc, nchan).permute(3, 0, 1, 2, 4).reshape(nsrc, P, L, nchan)
    Cj = torch.stack([
        _solve(G[j * nchan * L:(j + 1) * nchan * L, j * nchan * L:(j + 1) * nchan * L],
               D[j * nchan * L:(j + 1) * nchan * L, j * nchan:(j + 1) * nchan], eps).reshape(nchan, L, nchan)
        for j in range(nsrc)])
    return Call, Cj


def _solve(G, D, eps):
    """museval's solve: LU of G + eps I, least squares when it is exactly singular."""
    try:
        return torch.linalg.solve(G + eps * torch.eye(G.shape[0], dtype=G.dtype, device=G.device), D)
    except torch.linalg.LinAlgError:
        C = np.linalg.lstsq(G.cpu().numpy(), D.cpu().numpy())[0]
        return torch.from_numpy(C).to(G.device)


def check(refs, ests) -> None:
    """museval's shape rules as one-line errors (it pads or truncates the estimates' length, nothing else)."""
    if len(refs) != len(ests) or not refs:
        raise Hw2Error(f"{len(ests)} estimates for {len(refs)} references: give one estimate per reference source")
    shapes = {r.shape for r in refs}
    if len(shapes) != 1 or refs[0].ndim != 2 or refs[0].shape[0] == 0:
        raise Hw2Error(f"references of shapes {sorted(shapes)}: each must be (nb_samples, nb_channels), "
                       "all the same, not empty")
    for e in ests:
        if e.ndim != 2 or e.shape[1] != refs[0].shape[1]:
            raise Hw2Error(f"an estimate of shape {e.shape} for references of shape {refs[0].shape}: "
                           "estimates need the references' channel count")


def fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT size pocketfft and cuFFT handle fast."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best
