"""Any song separated, `python hw2/infer.py --input FILE_OR_FOLDER` (hw2/songs.py): a mono 48 kHz MP3 and a folder
of WAVs give vocals.wav and accompaniment.wav of the input's length, rate and channels; every phase method that
needs no true stems runs; a 90 s file runs block by block from int16; bad inputs are one error line with nothing
written; `Separator.separate` takes mono and refuses other rates; the page without scores plays in a browser.

The checkpoints are built here, not trained: `half` is an Open-Unmix whose mask is 0.5 everywhere (its output
scale 0, its output mean 0.5), so with the mixture's phase each estimate is exactly half the mixture: any error in
length, alignment, level, rate or channels shows as a difference from half the decoded input.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hw2 import Hw2Error
from hw2.checkpoint import CHECKPOINT_FORMAT
from hw2.config import TrainConfig
from hw2.infer import main
from hw2.model import OpenUnmix, build_model
from hw2.separate import METHODS, Separator
from hw2.songs import read_song
from hw2.synth import make_stems
from tests.test_infer import INFER, assert_one_error_line, env
from tests.test_listening import BROWSER, Sources, browse

RATE = 44100
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def save(model, cfg: TrainConfig, path: Path) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "model": model.state_dict(), "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def half(tmp_path_factory) -> Path:
    """A vocals checkpoint whose estimates are each half the mixture (mixture phase)."""
    cfg = TrainConfig(hidden_size=16, nb_layers=1)
    torch.manual_seed(0)
    model = OpenUnmix(cfg.model_config()).eval()
    with torch.no_grad():
        model.output_scale.zero_()
        model.output_mean.fill_(0.5)
    return save(model, cfg, tmp_path_factory.mktemp("ckpt") / "half.pt")


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """float32 (n, 2) generated music (hw2.synth), below full scale."""
    return 0.8 * make_stems(seed=seed, duration=seconds)[0]


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def decoded(path: Path, channels: int) -> np.ndarray:
    """float (n, channels) of what ffmpeg decodes from `path` at its own rate."""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "pipe:1"], capture_output=True,
                         check=True).stdout
    return np.frombuffer(pcm, "<i2").reshape(-1, channels) / 32768


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-20)))


def written(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# ------------------------------------------------------------------------------------------------ separating
def test_a_mono_48k_mp3_gives_mono_48k_wavs_of_its_length(half, tmp_path, capsys):
    wav = tmp_path / "src.wav"
    sf.write(wav, music(4.0).mean(axis=1), RATE)
    mp3 = tmp_path / "my song.mp3"
    ffmpeg("-i", wav, "-ar", 48000, "-ac", 1, mp3)
    out = tmp_path / "out"
    assert main(["--input", str(mp3), "--checkpoint", str(half), "--out", str(out)]) == 0
    folder = out / "songs" / "my song"
    mixture = decoded(mp3, 1)
    for target in ("vocals", "accompaniment"):
        info = sf.info(folder / f"{target}.wav")
        assert (info.samplerate, info.channels, info.frames) == (48000, 1, len(mixture))
        audio, _ = sf.read(folder / f"{target}.wav", always_2d=True)
        assert snr(0.5 * mixture, audio) > 50  # resampled to 44.1 kHz and back, in place, at half the level
    meta = json.loads((folder / "separation.json").read_text())
    assert meta["input"] == str(mp3) and (meta["rate"], meta["channels"]) == (48000, 1)
    page = out / "songs" / "index.html"
    assert str(page) in capsys.readouterr().out.strip().splitlines()[-1]
    src = Sources()
    src.feed(page.read_text(encoding="utf-8"))
    assert src.audio == ["../../my%20song.mp3", "my%20song/vocals.wav", "my%20song/accompaniment.wav"]
    assert src.img == ["my%20song/vocals.png"] and "SDR" not in page.read_text(encoding="utf-8")


def test_mono_reaches_the_separator_mono_and_each_file_is_decoded_once(half, tmp_path, monkeypatch):
    """Mono goes to `Separator.separate` as (n, 1), which separates it as the channel twice and gives it back mono
    (songs upmixed and downmixed it again itself); a compressed file at another rate is decoded by one ffmpeg run,
    which also counts its samples at its own rate (a second decode counted them)."""
    import hw2.songs

    seen, decodes = [], []
    separate, pcm = Separator.separate, hw2.songs._ffmpeg_pcm
    monkeypatch.setattr(Separator, "separate",
                        lambda self, mixture, *a, **kw: seen.append(mixture.shape) or separate(self, mixture, *a, **kw))
    monkeypatch.setattr(hw2.songs, "_ffmpeg_pcm", lambda *a, **kw: decodes.append(a[0]) or pcm(*a, **kw))
    wav = tmp_path / "mono.wav"
    sf.write(wav, music(2.0).mean(axis=1), RATE)
    mp3 = tmp_path / "low.mp3"
    ffmpeg("-i", wav, "-ar", 32000, mp3)
    assert read_song(wav).shape == (2 * RATE, 1)
    out = tmp_path / "out"
    assert main(["--input", str(wav), str(mp3), "--checkpoint", str(half), "--out", str(out)]) == 0
    assert seen[0] == (2 * RATE, 1) and seen[1][1] == 1 and len(seen) == 2
    assert decodes == [mp3]
    for name, rate, n in (("mono", RATE, 2 * RATE), ("low", 32000, len(decoded(mp3, 1)))):
        info = sf.info(out / "songs" / name / "vocals.wav")
        assert (info.channels, info.samplerate, info.frames) == (1, rate, n), name


def test_a_folder_of_wavs_in_every_sample_format(half, tmp_path):
    """16-bit, 24-bit and float WAVs at 44.1 kHz (read through soundfile) and a 22.05 kHz one (through ffmpeg) in
    a folder beside a file that is not audio: one output folder each, stereo, each at its input's rate and length,
    and a float WAV at its level (read as int16 it would be silence)."""
    folder = tmp_path / "in"
    folder.mkdir()
    pcm = np.round(music(3.0, seed=4) * 32767).astype(np.int16)  # the same samples in every format
    sf.write(folder / "pcm16.wav", pcm, RATE, subtype="PCM_16")
    sf.write(folder / "pcm24.wav", pcm.astype(np.int32) << 16, RATE, subtype="PCM_24")
    sf.write(folder / "float.wav", pcm / np.float32(32768), RATE, subtype="FLOAT")
    sf.write(folder / "low.wav", pcm[::2], RATE // 2, subtype="PCM_16")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    assert main(["--input", str(folder), "--checkpoint", str(half), "--out", str(out), "--name", "mine"]) == 0
    assert sorted(p.name for p in (out / "mine").iterdir() if p.is_dir()) == ["float", "low", "pcm16", "pcm24"]
    for name in ("pcm16", "pcm24", "float", "low"):
        src, rate = sf.read(folder / f"{name}.wav", always_2d=True)
        for target in ("vocals", "accompaniment"):
            est, est_rate = sf.read(out / "mine" / name / f"{target}.wav", always_2d=True)
            assert est_rate == rate and est.shape == src.shape, name
            assert snr(0.5 * src, est) > (35 if name == "low" else 60), name
    for name in ("pcm24", "float"):
        assert np.array_equal(read_song(folder / f"{name}.wav"), pcm), name


def test_every_phase_method_that_needs_no_true_stems(tmp_path):
    """A tiny complex (TFC-TDF) checkpoint and a tiny vocoder: all eight methods in one run, one subfolder each."""
    from hw2.vocoder import CHECKPOINT_FORMAT as VOCODER_FORMAT, Vocoder, VocoderConfig

    cfg = TrainConfig(arch="tfctdf", hidden_size=8, nb_layers=2, bandwidth=5600.0, tfc_layers=1, tdf_bottleneck=4)
    torch.manual_seed(0)
    ckpt = save(build_model(cfg.model_config()).eval(), cfg, tmp_path / "complex.pt")
    vocoder = Vocoder(VocoderConfig(dim=8, nb_layers=1, kernel=3))
    torch.save({"format": VOCODER_FORMAT, "config": asdict(vocoder.cfg), "model": vocoder.state_dict()},
               tmp_path / "vocoder.pt")
    wav = tmp_path / "song.wav"
    sf.write(wav, music(2.0), RATE)
    out = tmp_path / "out"
    assert main(["--input", str(wav), "--checkpoint", str(ckpt), "--phase", *METHODS, "--vocoder",
                 str(tmp_path / "vocoder.pt"), "--gl-iters", "2", "--misi-iters", "2", "--mel-iters", "2",
                 "--out", str(out)]) == 0
    for method in METHODS:
        for target in ("vocals", "accompaniment"):
            est, rate = sf.read(out / "songs" / "song" / f"complex-{method}" / f"{target}.wav", always_2d=True)
            assert rate == RATE and est.shape == (2 * RATE, 2) and np.isfinite(est).all(), method
    files = json.loads((out / "songs" / "song" / "separation.json").read_text())["files"]
    assert list(files) == [f"complex / {m}" for m in METHODS]


def test_a_90_second_file_runs_block_by_block_from_int16(half, tmp_path, monkeypatch):
    """The song reaches the separator as int16 (a float64 copy would be 4 times its size) and runs in windows of
    at most one block plus its context, as MUSDB tracks do."""
    seen, windows = [], []
    separate, window = Separator.separate, Separator._window

    def spy_separate(self, mixture, *a, **kw):
        seen.append((mixture.dtype, mixture.shape))
        return separate(self, mixture, *a, **kw)

    def spy_window(self, audio, *a, **kw):
        windows.append(audio.shape[-1])
        return window(self, audio, *a, **kw)

    monkeypatch.setattr(Separator, "separate", spy_separate)
    monkeypatch.setattr(Separator, "_window", spy_window)
    wav = tmp_path / "long.wav"
    sf.write(wav, np.tile(music(5.0, seed=2), (18, 1)), RATE)  # 90 s
    out = tmp_path / "out"
    assert main(["--input", str(wav), "--checkpoint", str(half), "--out", str(out)]) == 0
    assert seen == [(np.int16, (90 * RATE, 2))]
    sep = Separator.from_checkpoint(half)
    limit = (sep.chunk_frames + 2 * sep.context_frames) * sep.stft.n_hop
    assert len(windows) == 4 and max(windows) <= limit  # 27.9 s blocks
    assert sf.info(out / "songs" / "long" / "vocals.wav").frames == 90 * RATE


# ---------------------------------------------------------------------------------------------------- errors
def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """{case: (--input and other arguments, what its error line says)}."""
    video = tmp / "silent.mp4"  # a video stream, no audio stream
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=32x32:d=1", "-c:v", "mpeg4", video)
    (tmp / "text.mp3").write_text("not audio at all")
    (tmp / "empty").mkdir()
    (tmp / "empty" / "readme.txt").write_text("no audio here")
    wav = tmp / "ok.wav"
    sf.write(wav, np.zeros((RATE, 2)), RATE)
    sf.write(tmp / "surround.wav", np.zeros((RATE, 6)), 48000)
    sf.write(tmp / "click.wav", np.zeros((400, 2)), RATE)
    return {"missing": (["--input", str(tmp / "nope.mp3")], "no such file or folder"),
            "no-audio-stream": (["--input", str(video)], "no audio stream (video only)"),
            "not-audio": (["--input", str(tmp / "text.mp3")], "ffmpeg cannot read it"),
            "no-audio-files": (["--input", str(tmp / "empty")], "no audio files in this folder"),
            "six-channels": (["--input", str(tmp / "surround.wav")], "6 audio channels"),
            "too-short": (["--input", str(tmp / "click.wav")], "too short to separate"),
            "with-musdb-root": (["--input", str(wav), "--musdb-root", str(tmp)], "--input and --musdb-root"),
            "with-references": (["--input", str(wav), "--references"], "--references needs")}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("bad")
    return tmp, bad_inputs(tmp)


@pytest.mark.parametrize("case", ["missing", "no-audio-stream", "not-audio", "no-audio-files", "six-channels",
                                  "too-short", "with-musdb-root", "with-references"])
def test_bad_input_is_one_error_line_and_nothing_written(case, bad, half, tmp_path, capsys):
    argv, says = bad[1][case]
    out = tmp_path / "out"
    assert main([*argv, "--checkpoint", str(half), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert says in err
    assert written(out) == []


def test_every_bad_input_is_named_before_any_work(bad, half, tmp_path, capsys):
    tmp, cases = bad
    out = tmp_path / "out"
    args = ["--input", str(tmp / "ok.wav"), str(tmp / "nope.mp3"), str(tmp / "empty"), str(tmp / "silent.mp4")]
    assert main([*args, "--checkpoint", str(half), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: 3 tracks cannot be read; nothing was run:" and len(lines) == 4
    assert written(out) == []


def test_bad_input_in_a_real_process(bad, half, tmp_path):
    argv, says = bad[1]["no-audio-stream"]
    r = subprocess.run([sys.executable, str(INFER), *argv, "--checkpoint", str(half), "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------- API
def test_separate_takes_mono_and_gives_it_back_mono(half):
    sep = Separator.from_checkpoint(half)
    mono = music(2.0)[:, 0]
    out = sep.separate(mono, ["mixture"])["mixture"]
    column = sep.separate(mono[:, None], ["mixture"])["mixture"]
    stereo = sep.separate(np.stack([mono, mono], axis=1), ["mixture"])["mixture"]
    for target in ("vocals", "accompaniment"):
        assert out[target].shape == mono.shape and column[target].shape == (len(mono), 1)
        assert np.allclose(out[target], stereo[target].mean(axis=1), atol=1e-6)
        assert np.allclose(out[target], 0.5 * mono, atol=1e-4)


@pytest.mark.parametrize("case", ["48k", "channels-first", "too-short"])
def test_separate_refuses_what_it_cannot_separate_in_one_line(case, half):
    sep = Separator.from_checkpoint(half)
    audio, kw, says = {"48k": (music(1.0), {"rate": 48000}, "audio at 48000 Hz"),
                       "channels-first": (music(1.0).T, {}, "its transpose"),
                       "too-short": (music(1.0)[:100], {}, "a mixture of 100 samples")}[case]
    with pytest.raises(Hw2Error, match=re.escape(says)) as e:
        sep.separate(audio, ["mixture"], **kw)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------------- page
@pytest.mark.skipif(BROWSER is None, reason="needs a headless Chromium (apt-get install -y chromium)")
def test_song_page_plays_in_a_headless_browser(half, tmp_path):
    """The input (an MP3 outside the results folder, linked relatively) and both estimates load and decode."""
    wav = tmp_path / "src.wav"
    sf.write(wav, music(3.0), RATE)
    mp3 = tmp_path / "music" / "song.mp3"
    mp3.parent.mkdir()
    ffmpeg("-i", wav, mp3)
    out = tmp_path / "results"
    assert main(["--input", str(mp3), "--checkpoint", str(half), "--out", str(out)]) == 0
    result = browse(out / "songs" / "index.html", tmp_path)
    assert [a["src"] for a in result["audio"]] == ["../../music/song.mp3", "song/vocals.wav", "song/accompaniment.wav"]
    for a in result["audio"]:
        assert a["error"] is None and a["ready"] >= 1 and a["duration"] > 2, a
    assert result["img"] and all(i["ok"] for i in result["img"]) and result["errors"] == []
