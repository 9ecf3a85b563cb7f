"""hw2.listening: the page `hw2/infer.py` writes beside its listening WAVs, written by infer on a generated
track and opened in headless Chromium from the folder (file://): every player's file exists and decodes, every
spectrogram image loads, and the console stays clean. The browser test skips where Chromium is not installed
(`.ci/run` installs it)."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import wave
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from hw2 import listening
from tests.test_infer import checkpoint, infer  # noqa: F401  (checkpoint: the tiny trained model fixture)

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


class Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.audio, self.img = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "audio":
            self.audio.append(a.get("src"))
        elif tag == "img":
            self.img.append(a.get("src"))


def test_png_writer_gives_a_valid_png():
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[1, 2] = (255, 10, 20)
    data = listening.png_bytes(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (4, 3)
    idat = data[data.index(b"IDAT") + 4: data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert len(raw) == 3 * (1 + 4 * 3) and raw[13 + 1 + 2 * 3: 13 + 1 + 3 * 3] == bytes((255, 10, 20))


def test_spectrogram_image_is_loud_where_the_tone_is():
    rate = 44100
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1000 * t)[:, None].repeat(2, 1).astype(np.float32)
    img = listening.spectrogram_image(listening.magnitude(tone), rate, fmax=8000, height=160)
    assert img.shape[0] == 160 and img.dtype == np.uint8
    brightness = img.sum(axis=(1, 2))
    row = int(np.argmax(brightness))  # 1 kHz of 0-8 kHz, low frequencies at the bottom
    assert abs(row - 160 * (1 - 1000 / 8000)) < 4


@pytest.fixture(scope="module")
def page(wav_root, checkpoint, tmp_path_factory) -> Path:
    """The page infer writes for one generated valid track with two phase methods and the reference rows."""
    tmp = tmp_path_factory.mktemp("listening")
    proc = infer(["--musdb-root", wav_root, "--subset", "train", "--split", "valid", "--checkpoint", checkpoint,
                  "--phase", "mixture", "griffinlim", "--gl-iters", "2", "--samples", "1", "--max-tracks", "1",
                  "--references", "--jobs", "1", "--out", tmp / "out", "--name", "v"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert "index.html" in proc.stdout
    return tmp / "out" / "v" / "samples" / "index.html"


def test_a_long_tracks_spectrogram_is_computed_in_blocks_and_pooled_to_a_bounded_width():
    """Up to MAX_COLUMNS frames the image has a column per frame, the whole STFT's numbers exactly; beyond, each
    column is the largest of its frames (a 10-minute track gave a 51,700-pixel image and 1.6 GB at once)."""
    import torch

    rng = np.random.default_rng(0)
    for seconds in (7.0, 60.0):
        audio = rng.standard_normal((int(seconds * 44100) + 17, 2)).astype(np.float32)
        x = torch.from_numpy(audio.mean(axis=1))
        whole = torch.stft(x, 2048, 512, window=torch.hann_window(2048), return_complex=True).abs().numpy()
        got = listening.magnitude(audio, block=256)
        group = -(-whole.shape[1] // listening.MAX_COLUMNS)
        assert got.shape == (1025, -(-whole.shape[1] // group)) and got.shape[1] <= listening.MAX_COLUMNS
        assert (group == 1) == (seconds == 7.0)
        for c in (0, got.shape[1] // 2, got.shape[1] - 1):
            np.testing.assert_allclose(got[:, c], whole[:, c * group:(c + 1) * group].max(axis=1), rtol=1e-5,
                                       atol=1e-6)


def test_page_names_every_file_and_each_exists_and_is_a_wav(page):
    text = page.read_text(encoding="utf-8")
    src = Sources()
    src.feed(text)
    # the mixture, the true vocals and accompaniment, and two methods' vocals and accompaniment
    assert len(src.audio) == 1 + 2 + 2 * 2, src.audio
    assert any("true_vocals" in s for s in src.audio) and any("griffinlim_vocals" in s for s in src.audio)
    for s in src.audio:
        with wave.open(str(page.parent / unquote(s))) as w:
            assert w.getnframes() > 0 and w.getnchannels() == 2
    assert len(src.img) == 1 + 1 + 2  # one spectrogram per vocals file (and the mixture)
    for s in src.img:
        assert (page.parent / unquote(s)).read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"-?\d+\.\d\d dB", text)  # a track SDR per method
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from the internet


def test_rows_are_named_in_words_and_spectrograms_have_axes_at_their_own_size(page):
    text = page.read_text(encoding="utf-8")
    labels = re.findall(r"<tr><th>([^<]*)</th>", text)[1:]  # after the header's
    assert labels == ["the mixture (what the model hears)", "the true stems (the reference)",
                      "the model, mixture phase", "the model, Griffin-Lim, random init"], labels
    assert "vocals / mixture" not in text and "(or the mixture)" not in text
    for m in re.finditer(r'<img src="([^"]+)"[^>]* width="(\d+)" height="(\d+)">', text):
        data = (page.parent / unquote(m.group(1))).read_bytes()
        assert struct.unpack(">II", data[16:24]) == (int(m.group(2)), int(m.group(3)))  # shown at its own size
    figures = text.count('<div class="spec">')
    assert figures == 4 and text.count(">kHz<") == figures and text.count(">time (s)<") == figures
    assert re.search(r'<span style="left:0\.00%">0</span><span style="left:[\d.]+%">1</span>', text)  # seconds


def test_ticks_are_round_and_a_long_track_keeps_its_spectrogram_on_the_page():
    assert listening.ticks(7.0) == [0, 1, 2, 3, 4, 5, 6, 7] and listening.ticks(8000, 4) == [0, 2000, 4000, 6000, 8000]
    assert listening.ticks(240)[:3] == [0, 50, 100]
    mag = np.ones((1025, 20000))  # a few minutes of frames
    assert listening.spectrogram_image(mag, width=480).shape == (160, 480, 3)
    assert listening.spectrogram_image(mag[:, :300], width=480).shape == (160, 300, 3)


CHECK = """<script>
window.__errs = [];
window.addEventListener('error', e => window.__errs.push(e.message || ('load failed: ' +
  (e.target && (e.target.currentSrc || e.target.src)))), true);
const __ce = console.error;
console.error = (...a) => { window.__errs.push(a.join(' ')); __ce(...a); };
window.addEventListener('load', () => {
  const t0 = Date.now();
  const poll = () => {
    const audio = [...document.querySelectorAll('audio')];
    const pending = audio.filter(a => a.readyState < 1 && !a.error);
    if (pending.length && Date.now() - t0 < 15000) { setTimeout(poll, 100); return; }
    const out = {audio: audio.map(a => ({src: a.getAttribute('src'), ready: a.readyState, duration: a.duration,
                                          error: a.error ? a.error.code : null})),
                 img: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
                 errors: window.__errs};
    const pre = document.createElement('pre');
    pre.id = 'hw2-check';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  };
  poll();
});
</script>"""


def browse(page, tmp_path) -> dict:
    """What a headless Chromium finds on `page` opened from its folder: its players (source, error, readiness,
    duration), its images and its script errors, as CHECK reports them."""
    import html

    check = page.with_name("check.html")  # beside the page: the same relative links
    check.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom",
                           check.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="hw2-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.skipif(BROWSER is None, reason="needs a headless Chromium (apt-get install -y chromium)")
def test_page_plays_in_a_headless_browser_from_the_folder(page, tmp_path):
    out = browse(page, tmp_path)
    assert len(out["audio"]) == 7
    for a in out["audio"]:
        assert a["error"] is None and a["ready"] >= 1 and a["duration"] > 1, a  # decoded: it knows its length
    assert out["img"] and all(i["ok"] for i in out["img"]), out["img"]
    assert out["errors"] == []


def tone_wav(path: Path, freq: float, seconds: float = 1.0, level: float = 0.5) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 44100)) / 44100
    sf.write(path, level * np.sin(2 * np.pi * freq * t)[:, None].repeat(2, 1), 44100)
    return path


@pytest.fixture
def reads(monkeypatch) -> list:
    """Every file `listening.read_mono` reads, in order."""
    seen, read = [], listening.read_mono
    monkeypatch.setattr(listening, "read_mono", lambda path: seen.append(Path(path).name) or read(path))
    return seen


def scored_page(tmp_path: Path) -> Path:
    """The scored page of one track: the mixture and one row's estimates, no scores file."""
    for name, freq in (("mixture", 220), ("m-mixture_vocals", 440), ("m-mixture_accompaniment", 110)):
        tone_wav(tmp_path / "samples" / "track" / f"{name}.wav", freq)
    row = {"label": "m / mixture", "method": "mixture", "checkpoint": "m.pt", "name": "m"}
    return listening.write_page(tmp_path / "samples", [row], lambda r, t: tmp_path / "none.json")


def song_page(folder: Path) -> tuple[Path, list]:
    songs = []
    for k, name in enumerate(("one", "two")):
        voc, acc = tone_wav(folder / name / "vocals.wav", 440 * (k + 1)), tone_wav(folder / name / "accomp.wav", 110)
        songs.append((name, folder.parent / f"{name}.mp3", [("m / mixture", voc, acc)]))
    return listening.write_song_page(folder, songs), songs


def test_each_file_is_read_once_and_only_stale_spectrograms_are_drawn_again(tmp_path, reads):
    """Per section a file is read and transformed once (a file both drawn and the dB reference was read twice); a
    page rebuilt over the same files reads none of them and keeps their images; a WAV written again redraws its
    song's images (its reference changed too) and no other song's."""
    scored_page(tmp_path)
    assert sorted(reads) == ["m-mixture_vocals.wav", "mixture.wav"]

    reads.clear()
    page, songs = song_page(tmp_path / "songs")
    assert sorted(reads) == ["accomp.wav", "accomp.wav", "vocals.wav", "vocals.wav"]
    pngs = {s[0]: (tmp_path / "songs" / s[0] / "vocals.png") for s in songs}
    made = {k: (p.read_bytes(), p.stat().st_mtime_ns) for k, p in pngs.items()}
    text = page.read_text(encoding="utf-8")
    reads.clear()
    assert listening.write_song_page(tmp_path / "songs", songs).read_text(encoding="utf-8") == text
    assert reads == [] and {k: (p.read_bytes(), p.stat().st_mtime_ns) for k, p in pngs.items()} == made
    tone_wav(tmp_path / "songs" / "two" / "accomp.wav", 110, level=0.9)  # louder: two's reference changes
    reads.clear()
    listening.write_song_page(tmp_path / "songs", songs)
    assert sorted(reads) == ["accomp.wav", "vocals.wav"]
    assert pngs["one"].read_bytes() == made["one"][0] and pngs["two"].read_bytes() != made["two"][0]


def test_the_spectrogram_column_names_what_it_draws(tmp_path):
    """The scored page draws the mixture in its row and says so; a song's input is not drawn (it lies outside
    the page's folder, in any format), so the song page's header does not mention it."""
    scored = scored_page(tmp_path).read_text(encoding="utf-8")
    assert "spectrogram of the vocals (the mixture's in its row), dB from the mixture's peak" in scored
    assert scored.count("<img ") == 2
    songs = song_page(tmp_path / "songs")[0].read_text(encoding="utf-8")
    assert "spectrogram of the vocals, dB from the loudest estimate's peak" in songs and "mixture's" not in songs
    assert songs.count("<img ") == 2
