"""Small generated tracks in MUSDB layout, for tests and for demos when no MUSDB is at hand.

Each track has four stems with the spectral character a separator can learn from: harmonic, vibrato,
phrase-gated "vocals"; noise-burst and click "drums"; a low sine "bass"; sustained chords for "other".
Both layouts are written: MUSDB18 (`<subset>/<track>.stem.mp4`, AAC through stempeg/ffmpeg) and MUSDB18-HQ
(`<subset>/<track>/{mixture,drums,bass,other,vocals}.wav`, 16-bit PCM). Names of musdb's validation tracks are
used for part of the train subset, so that musdb's standard split applies to generated roots too.

    python -m hw2.synth OUT_DIR [--format wav|stem] [--train 6 --valid 2 --test 2 --duration 8]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hw2 import RATE, Hw2Error, OneLineParser, run_cli
from hw2.tracks import STEMS, SYNTH_MARKER

# musdb's validation split is a fixed list of names: using some of them puts generated tracks in it
VALID_NAMES = ("Actions - One Minute Smile", "Clara Berry And Wooldog - Waltz For My Victims",
               "Johnny Lokke - Promises & Lies", "Patrick Talbot - A Reason To Leave",
               "Triviul - Angelsaint", "Alexander Ross - Goodbye Bolero")


def _envelope_gate(rng, n, rate, on_prob=0.7, seg=0.5):
    """A smooth on/off gate of random segments: sources are not always active, as in real music."""
    nseg = int(np.ceil(n / (seg * rate)))
    gate = np.repeat((rng.random(nseg) < on_prob).astype(np.float32), int(seg * rate))[:n]
    k = int(0.02 * rate)
    return np.convolve(gate, np.ones(k, np.float32) / k, mode="same")


def make_stems(seed: int, duration: float = 8.0, rate: int = RATE) -> np.ndarray:
    """float32 (5, nb_samples, 2) in MUSDB stem order: mixture, drums, bass, other, vocals."""
    rng = np.random.default_rng(seed)
    n = int(duration * rate)
    t = np.arange(n) / rate
    pan = lambda x, p: np.stack([x * (1 - p), x * p], 1)  # noqa: E731

    # vocals: harmonic voice, f0 150-400 Hz with vibrato, bright formant-like harmonic weights, gated phrases
    f0 = rng.uniform(150, 400) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    weights = [1.0, 0.6, 0.8, 0.3, 0.5, 0.2, 0.25, 0.1]
    voice = sum(w * np.sin((h + 1) * phase) for h, w in enumerate(weights))
    vocals = pan(0.25 * voice * _envelope_gate(rng, n, rate), rng.uniform(0.4, 0.6))

    # drums: a kick (decaying low sine) and noise-burst snares on a grid
    bpm = rng.uniform(90, 140)
    beat = int(60 / bpm * rate)
    drums_m = np.zeros(n)
    kick_t = np.arange(int(0.15 * rate)) / rate
    kick = np.sin(2 * np.pi * 60 * kick_t) * np.exp(-kick_t * 30)
    snare = rng.standard_normal(int(0.1 * rate)) * np.exp(-np.arange(int(0.1 * rate)) / rate * 40)
    for k, start in enumerate(range(0, n, beat)):
        hit = kick if k % 2 == 0 else 0.5 * snare
        end = min(n, start + len(hit))
        drums_m[start:end] += hit[: end - start]
    drums = pan(0.4 * drums_m, 0.5)

    # bass: low sine following a random root sequence
    roots = rng.choice([41.2, 43.65, 49.0, 55.0, 61.74, 65.41], size=int(np.ceil(n / (2 * beat))))
    fb = np.repeat(roots, 2 * beat)[:n]
    bass = pan(0.3 * np.sin(2 * np.pi * np.cumsum(fb) / rate), 0.5)

    # other: sustained chords (three detuned sawtooth-ish partial sets)
    chord_root = rng.uniform(200, 300)
    other_m = sum(np.sin(2 * np.pi * chord_root * r * t) + 0.3 * np.sin(4 * np.pi * chord_root * r * t)
                  for r in (1.0, 1.26, 1.5))
    other = pan(0.12 * other_m * (0.6 + 0.4 * _envelope_gate(rng, n, rate, 0.8, 1.0)), rng.uniform(0.3, 0.7))

    sources = np.stack([drums, bass, other, vocals]).astype(np.float32)
    mixture = sources.sum(0, keepdims=True)
    stems = np.concatenate([mixture, sources])
    peak = np.abs(stems).max()
    return stems * (0.9 / peak) if peak > 0.9 else stems


def write_track(stems: np.ndarray, folder: Path, name: str, fmt: str, rate: int = RATE) -> Path:
    """Write one track under `folder` (a subset folder) in MUSDB18 ("stem") or MUSDB18-HQ ("wav") layout."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "wav":
        track_dir = folder / name
        track_dir.mkdir(exist_ok=True)
        for stem, audio in zip(STEMS, stems):
            sf.write(track_dir / f"{stem}.wav", audio, rate, subtype="PCM_16")
        return track_dir
    if fmt == "stem":
        import stempeg

        from hw2.tracks import require_ffmpeg
        require_ffmpeg()
        path = folder / f"{name}.stem.mp4"
        stempeg.write_stems(str(path), stems, sample_rate=rate,
                            writer=stempeg.StreamsWriter(codec="aac", bitrate=256000))
        return path
    raise Hw2Error(f"unknown format {fmt!r}: use wav or stem")


def make_musdb(root, fmt: str = "wav", nb_train: int = 6, nb_valid: int = 2, nb_test: int = 2,
               duration: float = 8.0, seed: int = 0) -> Path:
    """A small MUSDB root: `nb_train + nb_valid` tracks in train/ (the valid ones named as musdb's validation
    tracks), `nb_test` in test/. Returns the root."""
    if nb_valid > len(VALID_NAMES):
        raise Hw2Error(f"at most {len(VALID_NAMES)} generated validation tracks")
    root = Path(root)
    names = [("train", f"Synth {i:02d} - Train", seed * 1000 + i) for i in range(nb_train)]
    names += [("train", VALID_NAMES[i], seed * 1000 + 100 + i) for i in range(nb_valid)]
    names += [("test", f"Synth {i:02d} - Test", seed * 1000 + 200 + i) for i in range(nb_test)]
    for subset, name, s in names:
        write_track(make_stems(s, duration), root / subset, name, fmt)
    # results and captions read it to say "generated tracks", never MUSDB18 (hw2.tracks.describe_dataset)
    (root / SYNTH_MARKER).write_text("Tracks generated by `python -m hw2.synth`, not MUSDB18.\n")
    return root


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m hw2.synth", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", help="folder to create the MUSDB root in (train/, test/ and a marker file that labels "
                               "results of these tracks as generated)")
    p.add_argument("--format", choices=("wav", "stem"), default="wav",
                   help="wav: MUSDB18-HQ layout (a folder of 5 WAVs a track); stem: MUSDB18 layout (.stem.mp4, AAC, "
                        "needs ffmpeg)")
    p.add_argument("--train", type=int, default=6, help="tracks in train/ outside musdb's validation split")
    p.add_argument("--valid", type=int, default=2,
                   help=f"tracks in train/ named as musdb's validation tracks (at most {len(VALID_NAMES)})")
    p.add_argument("--test", type=int, default=2, help="tracks in test/")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per track")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated audio (same seed, same tracks)")
    a = p.parse_args(argv)
    return run_cli(lambda: print(f"wrote a {a.format} MUSDB root at "
                                 f"{make_musdb(a.out, a.format, a.train, a.valid, a.test, a.duration, a.seed)}"))


if __name__ == "__main__":
    sys.exit(main())
