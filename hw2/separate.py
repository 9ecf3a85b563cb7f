"""Checkpoint to estimates: vocals and accompaniment (non-vocals) of a full track, with a choice of phase.

The model estimates the vocals magnitude V, or, a complex model (`hw2.model.TFCTDFNet`), the vocals' complex
spectrogram, whose magnitude is then V and whose accompaniment is the mixture minus it. The accompaniment magnitude is what is left of the mixture,
A = max(|X| - V, 0), or a network's own estimate in a blend with an accompaniment member (`hw2.blend`). Each
method then gives both magnitudes a phase:

    network         a complex model's own estimates, inverted as they are: the phase is the network's
    mixture         the mixture's phase (Open-Unmix's default)
    griffinlim      Griffin-Lim from a random phase (the assignment's Task 2)
    griffinlim-mix  Griffin-Lim started from the mixture's phase
    wiener          a multichannel Wiener post-filter over (V, A), one EM iteration in 300-frame windows, as Open-Unmix
                    (started from a complex model's own estimates)
    misi            multiple-input spectrogram inversion (Gunawardana & Sejdinovic 2005): Griffin-Lim over V and A
                    jointly, from the mixture's phase, with the mixture's error shared equally between them, so
                    that the estimates add up to the mixture (a complex model: from its own phases)
    mel             each magnitude through a mel power spectrogram and back (librosa's mel_to_audio: non-negative
                    least squares through the mel filterbank, then Griffin-Lim from a random phase), in torch
    vocoder         a phase from the magnitude alone, by a vocoder trained from scratch (`hw2.vocoder`), per channel

and two reference rows need the true stems rather than a model:

    mix-as-estimate the mixture itself as both estimates (the floor)
    oracle-irm      the ideal ratio mask |S_j| / (|V| + |A|) of the true magnitudes, with the mixture's phase

Tracks run in blocks of about 28 s with 7.4 s of context (`Separator`), so memory does not grow with the track.
Griffin-Lim runs per block window, each channel on its own, with the model's STFT settings, 32 iterations,
momentum 0.99 (librosa's fast Griffin-Lim) and the exact length (no power/magnitude mix-up). The Wiener filter
estimates its statistics over windows of 300 frames (7 s), as Open-Unmix's `Separator` does with norbert.
Audio arrays here are numpy (nb_timesteps, nb_channels), musdb's layout.
"""
from __future__ import annotations

import ctypes
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from hw2 import RATE, Hw2Error
from hw2.checkpoint import load_checkpoint, model_from_checkpoint
from hw2.model import STFT, SpectrogramModel
from hw2.reconstruct import griffinlim, mel_filters, mel_inverse, misi, wiener
from hw2.tracks import TARGETS, blocks

METHODS = ("network", "mixture", "griffinlim", "griffinlim-mix", "wiener", "misi", "mel", "vocoder")
REFERENCES = ("mix-as-estimate", "oracle-irm")
# each method and reference row in words, for the report's tables and the listening page
METHOD_NAMES = {"network": "the model's own phase (complex output)", "mixture": "mixture phase",
                "griffinlim": "Griffin-Lim, random init", "griffinlim-mix": "Griffin-Lim, mixture-phase init",
                "wiener": "Wiener post-filter", "misi": "MISI, mixture-phase init",
                "mel": "mel inversion (mel_to_audio)", "vocoder": "vocoder (ours, from scratch)",
                "mix-as-estimate": "reference: mixture as estimate", "oracle-irm": "reference: oracle ratio mask",
                "oracle-vocoder": "reference: vocoder on the true magnitudes"}


MMAP_THRESHOLD = 64 << 20  # above: full-track arrays, mapped and returned on free; below: per-block arrays


def _tunable_glibc():
    """glibc, where the allocator may be tuned (Linux, HW2_MALLOC_TUNING not 0); else None."""
    if os.environ.get("HW2_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed per-block arrays for reuse instead of handing them back to the OS at once.

    Separation allocates the same block-size spectrograms (up to 60 MB) again and again, Griffin-Lim on every
    iteration. By default glibc unmaps every freed block above 32 MB and the next allocation page-faults it back
    in, which on CPU cost more than the arithmetic (`python bench/separate.py --malloc-baseline` measures both).
    Allocations above MMAP_THRESHOLD (a long track's full-length arrays) are still mapped and returned when freed,
    so what the heap keeps is bounded by one block's working set, not by the track; `release_freed_memory` hands
    that back once a track is separated. A lower threshold that also returns a block's complex spectrograms
    (57.5 MiB) cut a complex blend's peak on a 10-minute track by 190 MiB, but cost it 5-17 % of its speed, which
    is already near 0.1 times real time on one core: what a complex model holds is cut where it is made instead
    (`hw2.model.phase_ratio`, `estimates(keep_complex=False)`).
    HW2_MALLOC_TUNING=0 leaves the allocator alone. Returns whether the setting was applied (glibc only).
    """
    libc = _tunable_glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def release_freed_memory() -> None:
    """Hand the block working set that `keep_freed_memory` kept back to the OS (glibc's malloc_trim), once a
    whole track is separated: the caller scores next, and its full-track references would otherwise sit on top
    of a heap that Griffin-Lim left holding a block's spectrograms. Same switch as `keep_freed_memory`."""
    libc = _tunable_glibc()
    if libc is not None:
        libc.malloc_trim(0)


class Separator:
    """A trained model plus the phase methods. `separate(mixture)` -> {method: {target: (nb_timesteps, nb_ch)}}.

    Whole tracks run block by block, so memory is bounded by the block, not the track: the mixture is cut into
    blocks of `chunk_frames` STFT frames, each with `context_frames` of audio context on both sides; the block's
    window goes through STFT, model, phase method and inverse STFT, and only the block's own samples are kept.
    Blocks start on the hop grid and the context exceeds n_fft, so the kept samples see exactly the frames of a
    full-track STFT (no padding); the bidirectional LSTM sees the context, and the Wiener windows of `wiener_win`
    frames (Open-Unmix's 300) lie on the same global frame grid whichever block computes them. A track shorter
    than one block is one window: identical to a full-track pass. Griffin-Lim runs per window, so its random
    phases restart at each block boundary (every 27.9 s by default).

    Per block, with W window frames (default at most 1840, 43 s) and 2049 bins: the complex mixture STFT
    (2 channels x 2049 x W x 8 bytes = 60 MB) and a few magnitude-sized arrays; the whole track only as its
    input and its outputs (one float32 (nb_timesteps, 2) array per target and method).
    """

    def __init__(self, model: SpectrogramModel, device="cpu", chunk_dur: float = 27.86, context_dur: float = 7.43,
                 gl_iters: int = 32, seed: int = 0, name: str = "model", wiener_win: int = 300,
                 misi_iters: int = 8, misi_refine: bool = True, n_mels: int = 128, mel_iters: int = 32):
        keep_freed_memory()
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        n_fft, hop, rate = model.cfg.n_fft, model.cfg.n_hop, model.cfg.rate
        self.chunk_frames = max(1, round(chunk_dur * rate / hop))  # default 1200 = 4 Wiener windows
        # at least n_fft of context: the kept samples must not see the window's reflect padding
        self.context_frames = max(-(-n_fft // hop), round(context_dur * rate / hop))  # default 320
        self.gl_iters, self.seed, self.name, self.wiener_win = gl_iters, seed, name, wiener_win
        self.misi_iters, self.misi_refine, self.n_mels, self.mel_iters = misi_iters, misi_refine, n_mels, mel_iters
        self.epoch = None
        self.vocoder = None  # an hw2.vocoder.Vocoder for the "vocoder" method (`load_vocoder`)

    def load_vocoder(self, path) -> None:
        """Load the vocoder of the "vocoder" method; one trained with other STFT settings is refused."""
        from hw2.vocoder import load_vocoder
        cfg = self.model.cfg
        self.vocoder = load_vocoder(path, cfg.n_fft, cfg.n_hop, cfg.rate).to(self.device)

    @classmethod
    def from_checkpoint(cls, path, device="cpu", **kw) -> "Separator":
        ckpt = load_checkpoint(path)
        model, cfg = model_from_checkpoint(ckpt, path)
        if cfg.target != "vocals":
            raise Hw2Error(f"{path}: a {cfg.target} model; vocals / accompaniment separation needs a vocals model")
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise Hw2Error(f"{path}: weights hold NaN or infinite values ({bad[0]}); training diverged: use an "
                           "earlier checkpoint (best.pt or an epochNNN.pt) or train again with a lower --lr")
        sep = cls(model, device, name=Path(path).stem, **kw)
        sep.epoch = ckpt.get("epoch")
        sep.config = cfg
        return sep

    # the attribute holding each iterative method's number of iterations (`hw2.evaluate.iteration_sweep`)
    ITERATIONS = {"griffinlim": "gl_iters", "griffinlim-mix": "gl_iters", "misi": "misi_iters", "mel": "mel_iters"}
    # the methods that use a complex model's own estimates (`network` inverts them, Wiener and MISI start from them)
    COMPLEX_INIT = ("network", "wiener", "misi")

    def settings(self, method: str) -> dict:
        """What a method's output depends on besides the checkpoint, the seed and the blocks."""
        return {"misi": {"misi_iters": self.misi_iters, "misi_refine": self.misi_refine},
                "mel": {"n_mels": self.n_mels, "mel_iters": self.mel_iters}}.get(method, {})

    @property
    def stft(self) -> STFT:
        return self.model.stft

    def _generator(self, key: str) -> torch.Generator:
        """Random Griffin-Lim phases depend only on (seed, key): reruns and parallel runs agree."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(key.encode()))

    def available_methods(self) -> list[str]:
        """The phase methods this separator can run: `network` only for a complex model, `vocoder` only with a
        vocoder loaded."""
        return [m for m in METHODS if (m != "network" or getattr(self.model, "complex_output", False))
                and (m != "vocoder" or self.vocoder is not None)]

    def check_methods(self, methods) -> None:
        """Refuse, with one line, a method this separator cannot run: callers check before any work."""
        for m in methods:
            if m not in METHODS:
                raise Hw2Error(f"unknown phase method {m!r}: use one or more of {', '.join(METHODS)}")
        if "network" in methods and not getattr(self.model, "complex_output", False):
            raise Hw2Error(f"{self.name}: the network phase method needs a complex model (python -m hw2.train "
                           "--arch tfctdf); this one estimates magnitudes, so use --phase mixture")
        if "vocoder" in methods and self.vocoder is None:
            raise Hw2Error("the vocoder method needs a vocoder: pass --vocoder PATH (train one with "
                           "`python -m hw2.vocoder`)")

    @torch.no_grad()
    def separate(self, mixture: np.ndarray, methods=("mixture",), key: str = "", rate: int = RATE,
                 progress=None) -> dict:
        """mixture: (nb_timesteps, nb_channels), float in [-1, 1] or int16 PCM, at `rate` Hz ->
        {method: {"vocals": arr, "accompaniment": arr}}, float32 of the mixture's shape each.

        Stereo is what the models learnt from (MUSDB): a mono mixture, (nb_timesteps, 1) or (nb_timesteps,), is
        separated as its own channel twice and each estimate given back mono, in the mixture's shape (the mean
        of its two channels). The model's rate (44.1 kHz) is the only one accepted: other rates are refused,
        not guessed at (`hw2.songs.read_song` decodes any file to int16 at 44.1 kHz in its own channels).
        All methods share one model pass per block; to hold one method's outputs at a time on a long track, call
        it once per method. `progress(nb_samples)`, if given, is called as each block is done."""
        self.check_methods(methods)
        if int(rate) != self.model.cfg.rate:
            raise Hw2Error(f"audio at {rate} Hz; {self.name} works at {self.model.cfg.rate} Hz: resample it first "
                           "(hw2.songs.read_song(path) decodes any file to 44.1 kHz, or ffmpeg -ar 44100)")
        shape = np.shape(mixture)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] not in (1, 2)):
            raise Hw2Error(f"a mixture of shape {shape}: pass (nb_timesteps, 2) or (nb_timesteps, 1) audio "
                           "(a (2, nb_timesteps) array: its transpose)")
        if len(shape) == 1 or shape[1] == 1:  # the channel twice: int16 of a 10-minute song, 0.1 GB
            mixture = np.repeat(np.reshape(mixture, (-1, 1)), 2, axis=1)
        if len(mixture) <= self.stft.n_fft // 2:  # the STFT's reflect padding needs more
            raise Hw2Error(f"a mixture of {len(mixture)} samples; separation needs more than "
                           f"{self.stft.n_fft // 2} ({self.stft.n_fft / 2 / self.model.cfg.rate:.3f} s)")
        length, nb_channels = mixture.shape
        hop = self.stft.n_hop
        # what decoding the track freed (its blocks stay in the heap that `keep_freed_memory` keeps) goes back
        # first: the TA's command peaked 1,781 to 2,013 MiB on one 10-minute track with it kept, by how the
        # blocks fell into that heap
        release_freed_memory()
        out = {m: {t: np.empty((length, nb_channels), np.float32) for t in TARGETS} for m in methods}
        gens = {(m, t): self._generator(f"{key}|{t}") for m in methods for t in TARGETS}
        for lo, a, b, hi in blocks(length, self.chunk_frames * hop, self.context_frames * hop,
                                   min_size=self.stft.n_fft):
            audio = torch.from_numpy(np.ascontiguousarray(mixture[lo:hi].T, dtype=np.float32))
            if mixture.dtype == np.int16:
                audio *= 1.0 / 32768
            for m, est in self._window(audio.to(self.device), methods, lo // hop, gens, (a - lo, b - lo)).items():
                for t, wave in est.items():
                    out[m][t][a:b] = _to_numpy(wave[:, a - lo:b - lo])
            if progress is not None:
                progress(b - a)
        if shape != mixture.shape:  # mono in, mono out
            out = {m: {t: est.mean(axis=1).reshape(shape) for t, est in ests.items()} for m, ests in out.items()}
        release_freed_memory()
        return out

    def _window(self, audio: torch.Tensor, methods, first_frame: int, gens: dict, keep: tuple) -> dict:
        """One window (nb_channels, nb_timesteps) -> {method: {target: (nb_channels, nb_timesteps) tensor}}; only
        the samples in `keep` (a range of the window) are used."""
        length, hop = audio.shape[-1], self.stft.n_hop
        X = self.stft(audio)  # (nb_channels, nb_bins, nb_frames) complex
        V, A, Vc, Ac = estimates(self.model, X, keep_complex=bool(set(self.COMPLEX_INIT) & set(methods)))
        if set(self.ITERATIONS) & set(methods):
            # an iterative method builds its own working set next: hand back what the model pass freed first, or
            # the two pile up in the heap block after block (a complex blend's Griffin-Lim on a 5-minute track:
            # 1,550 to 1,473 MiB); its iterations cost far more than the pages faulted back in
            release_freed_memory()
        # Griffin-Lim needs no context (the model had it): it runs on the kept frames plus a margin beyond n_fft,
        # not on the whole window (1.5 times the work); the output lands at sample f0 * hop of the window
        margin = self.stft.n_fft // hop + 1
        f0, f1 = max(0, keep[0] // hop - margin), min(X.shape[-1], -(-keep[1] // hop) + margin)
        gl_length = length - f0 * hop if f1 == X.shape[-1] else (f1 - f0 - 1) * hop
        out = {m: {} for m in methods}
        if "network" in methods:
            out["network"] = {"vocals": self.stft.inverse(Vc, length), "accompaniment": self.stft.inverse(Ac, length)}
        if "wiener" in methods:  # joint over channels and targets
            y = torch.empty((2, *X.shape), dtype=X.dtype, device=X.device)
            for s, e in _grid(first_frame, X.shape[-1], self.wiener_win):
                y[..., s:e] = wiener(torch.stack([V[..., s:e], A[..., s:e]]), X[..., s:e],
                                     init=None if Vc is None else torch.stack([Vc[..., s:e], Ac[..., s:e]]))
            out["wiener"] = {t: self.stft.inverse(y[j], length) for j, t in enumerate(TARGETS)}
            del y
        if "misi" in methods:  # joint over targets, one channel at a time, on Griffin-Lim's frames
            waves = torch.zeros((X.shape[0], 2, length), device=X.device)
            for ch in range(X.shape[0]):
                waves[ch, :, f0 * hop:f0 * hop + gl_length] = misi(
                    torch.stack([V[ch, :, f0:f1], A[ch, :, f0:f1]]), X[ch, :, f0:f1], self.stft, gl_length,
                    self.misi_iters, self.misi_refine,
                    init=None if Vc is None else torch.stack([Vc[ch, :, f0:f1], Ac[ch, :, f0:f1]]))
            out["misi"] = {t: waves[:, j] for j, t in enumerate(TARGETS)}
        if "mel" in methods:
            fb = mel_filters(self.model.cfg.rate, self.stft.n_fft, self.n_mels).to(X.device)
            fb_pinv = torch.linalg.pinv(fb.double()).float()
        # everything else one target and one channel at a time, so that few window-size arrays live at once
        for target in TARGETS:
            chans = {m: [] for m in methods if m not in ("wiener", "misi", "network")}
            for ch in range(X.shape[0]):
                S = V[ch] if target == "vocals" else A[ch]
                for m in chans:
                    if m == "mixture":
                        wave = self.stft.inverse(torch.polar(S, X[ch].angle()), length)
                    elif m == "vocoder":  # the magnitude alone: the vocoder never sees the mixture's phase
                        wave = self.vocoder(S, length)
                    elif m == "mel":
                        wave = torch.zeros(length, device=S.device)
                        wave[f0 * hop:f0 * hop + gl_length] = mel_inverse(
                            S[:, f0:f1], self.stft, gl_length, fb, self.mel_iters, generator=gens[m, target],
                            pinv=fb_pinv)
                    else:
                        wave = torch.zeros(length, device=S.device)
                        wave[f0 * hop:f0 * hop + gl_length] = griffinlim(
                            S[:, f0:f1], self.stft, gl_length, self.gl_iters,
                            init=X[ch, :, f0:f1] if m == "griffinlim-mix" else None, generator=gens[m, target])
                    chans[m].append(wave)
            for m, waves in chans.items():
                out[m][target] = torch.stack(waves)
        return out


def estimates(model, X: torch.Tensor, keep_complex: bool = True):
    """A model's (vocals, accompaniment) for one mixture spectrogram X (nb_channels, nb_bins, nb_frames): the
    magnitudes (V, A) and, from a complex model (its own phase) when `keep_complex`, the complex estimates
    (Vc, Ac), else None, None. Methods that use magnitudes alone pass keep_complex=False: the two complex
    estimates are a block's largest arrays (120 MB together), and holding them through the phase method was most
    of what a complex blend's separation held beyond a magnitude blend's."""
    if getattr(model, "complex_output", False):
        Vc, Ac = (e[0] for e in model.targets(X[None]))
        return (Vc.abs(), Ac.abs(), Vc, Ac) if keep_complex else (Vc.abs(), Ac.abs(), None, None)
    V, A = (e[0] for e in model.targets(X.abs()[None]))
    return V, A, None, None


def _grid(first: int, nb_frames: int, size: int):
    """Frame ranges [s, e) of a window starting at global frame `first`, cut where the global frame index is a
    multiple of `size` (0: one range)."""
    if size <= 0:
        yield 0, nb_frames
        return
    s = 0
    while s < nb_frames:
        e = min(nb_frames, (first + s) // size * size + size - first)
        yield s, e
        s = e


def references(mixture: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, stft: STFT | None = None,
               rows=REFERENCES, vocoder=None) -> dict:
    """Reference rows from the true stems; arrays (nb_timesteps, nb_channels). With an `hw2.vocoder.Vocoder`, the
    row "oracle-vocoder" is the vocoder alone: the true magnitudes vocoded, channel by channel, whole track."""
    out = {}
    if "oracle-vocoder" in rows:
        with torch.no_grad():
            out["oracle-vocoder"] = {name: _to_numpy(vocoder(vocoder.stft(torch.as_tensor(
                np.ascontiguousarray(a.T), dtype=torch.float32)).abs(), len(a))) for name, a in
                (("vocals", vocals), ("accompaniment", accompaniment))}
    if "mix-as-estimate" in rows:
        out["mix-as-estimate"] = {"vocals": mixture.copy(), "accompaniment": mixture.copy()}
    if "oracle-irm" in rows:
        stft = stft or STFT()
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a.T), dtype=torch.float32)  # noqa: E731
        X, V, A = stft(t(mixture)), stft(t(vocals)).abs(), stft(t(accompaniment)).abs()
        total = V + A + 1e-10
        out["oracle-irm"] = {name: _to_numpy(stft.inverse(X * (S / total), mixture.shape[0]))
                             for name, S in (("vocals", V), ("accompaniment", A))}
    return out


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    """(nb_channels, nb_timesteps) tensor -> (nb_timesteps, nb_channels) float32 array."""
    return x.detach().cpu().numpy().T.astype(np.float32, copy=False)
