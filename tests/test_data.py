"""The data pipeline: opening a MUSDB root in either format, musdb's split, the decoded cache, the sampling
strategies and the excerpt sampler (mixing and augmentations)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hw2 import RATE, Hw2Error
from hw2.cache import CACHE_VERSION, CachedTrack, cache_folder, cache_key, load_cached, open_cached
from hw2.sampling import STRATEGIES, EpochBatches, ExcerptSampler, plan_epoch, read_excerpt
from hw2.synth import VALID_NAMES
from hw2.tracks import SOURCES, STEMS, detect_format, open_tracks, read_stems

NB_TRAIN, NB_VALID, NB_TEST = 4, 2, 1  # the generated roots' sizes (tests/conftest.py)


def leftovers(cache: Path) -> list[str]:
    """Temporary files a failed or interrupted cache write could leave behind."""
    return sorted(p.name for p in cache.rglob("*") if ".tmp" in p.name or p.name.startswith("."))


def entries(cache: Path) -> list[Path]:
    """The cache's track entries (folders) of the current layout."""
    return sorted((cache / f"v{CACHE_VERSION}").iterdir()) if (cache / f"v{CACHE_VERSION}").is_dir() else []


def pcm_of(c: CachedTrack) -> np.ndarray:
    """int16 (5, 2, nb_samples) of a cached track holding all five stems, to compare with `musdb_pcm`."""
    return np.stack([np.asarray(c.stems[s]).T for s in STEMS])


def musdb_pcm(track) -> np.ndarray:
    """int16 (5, 2, nb_samples) straight from musdb, decoded now (the reference the cache must equal)."""
    stems = np.asarray(track.stems)
    return np.clip(np.round(stems * 32768.0), -32768, 32767).astype(np.int16).transpose(0, 2, 1)


# ---------------------------------------------------------------------------------------------- format detection
def test_detect_format(wav_root, stem_root):
    assert detect_format(wav_root) is True
    assert detect_format(stem_root) is False


def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(Hw2Error, match="nowhere: no such folder"):
        detect_format(missing)
    with pytest.raises(Hw2Error, match="nowhere"):
        open_cached(missing, cache_dir=tmp_path / "cache")


def test_not_a_musdb_folder(tmp_path):
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(Hw2Error, match=re.escape(f"{tmp_path / 'other'}: not a MUSDB root (no train/ or test/")):
        detect_format(tmp_path / "other")
    (tmp_path / "fake" / "train" / "some track").mkdir(parents=True)
    (tmp_path / "fake" / "train" / "notes.txt").write_text("hi")
    with pytest.raises(Hw2Error, match=re.escape(f"{tmp_path / 'fake'}: not a MUSDB root")):
        open_tracks(tmp_path / "fake")


def test_empty_subset_and_split(wav_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(wav_root / "train" / "Synth 00 - Train", root / "train" / "Synth 00 - Train")
    (root / "test").mkdir()
    assert len(open_tracks(root, "train")) == 1
    with pytest.raises(Hw2Error, match=re.escape(f"{root / 'test'}: no tracks")):
        open_tracks(root, "test")
    with pytest.raises(Hw2Error, match=re.escape(f"{root / 'train'} (musdb's valid split): no tracks")):
        open_tracks(root, "train", "valid")


def test_bad_subset_and_split(wav_root):
    with pytest.raises(Hw2Error, match="unknown subset"):
        open_tracks(wav_root, "valid")
    with pytest.raises(Hw2Error, match="unknown split"):
        open_tracks(wav_root, "train", "test")
    with pytest.raises(Hw2Error, match="only exists inside the train subset"):
        open_tracks(wav_root, "test", "valid")


def test_missing_stem_in_wav_track(wav_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(wav_root / "train" / "Synth 01 - Train", root / "train" / "Synth 01 - Train")
    (root / "train" / "Synth 01 - Train" / "bass.wav").unlink()
    with pytest.raises(Hw2Error, match=r"Synth 01 - Train: missing bass\.wav"):
        open_tracks(root, "train")


# ------------------------------------------------------------------------------------------------------- split
def test_standard_split_on_generated_roots(synth, synth_sizes):
    assert synth_sizes == (NB_TRAIN, NB_VALID, NB_TEST)
    fmt, root, _ = synth
    train = [t.name for t in open_tracks(root, "train", "train")]
    valid = [t.name for t in open_tracks(root, "train", "valid")]
    assert train == [f"Synth {i:02d} - Train" for i in range(NB_TRAIN)]
    assert sorted(valid) == sorted(VALID_NAMES[:NB_VALID])
    assert len(open_tracks(root, "train")) == NB_TRAIN + NB_VALID
    assert len(open_tracks(root, "test")) == NB_TEST
    assert all(t.is_wav == (fmt == "wav") for t in open_tracks(root, "test"))


@pytest.mark.integration
def test_standard_split_on_real_musdb(musdb_root):
    import musdb
    import yaml

    setup = yaml.safe_load((Path(musdb.__file__).parent / "configs" / "mus.yaml").read_text())
    every = {t.name for t in open_tracks(musdb_root, "train")}
    train = open_tracks(musdb_root, "train", "train")
    valid = open_tracks(musdb_root, "train", "valid")
    assert {t.name for t in valid} == every & set(setup["validation_tracks"]) and valid  # counts from the data
    assert {t.name for t in train} == every - set(setup["validation_tracks"]) and train


@pytest.mark.integration
def test_real_cache_equals_fresh_decode(musdb_root, real_cache_dir):
    tracks = open_tracks(musdb_root, "train", "valid")[:2]
    for track, cached in zip(tracks, load_cached(tracks, real_cache_dir, progress=False)):
        assert cached.name == track.name
        np.testing.assert_array_equal(pcm_of(cached), musdb_pcm(track))


# ------------------------------------------------------------------------------------------------------- cache
def test_cache_equals_fresh_decode(synth):
    fmt, root, cache = synth
    tracks = open_tracks(root, "train")
    cached = load_cached(tracks, cache, progress=False)
    assert len(cached) == len(tracks) == NB_TRAIN + NB_VALID
    assert len(entries(cache)) >= len(tracks)
    for track, c in list(zip(tracks, cached))[:2]:
        assert c.name == track.name and set(c.stems) == set(STEMS)
        for s in STEMS:
            assert c.stems[s].dtype == np.int16 and c.stems[s].shape == (c.nb_samples, 2)
            assert isinstance(c.stems[s], np.memmap) and c.stems[s].flags.c_contiguous  # one excerpt: one read
        assert abs(c.nb_samples - 5.0 * RATE) < 0.1 * RATE  # AAC may pad a little
        np.testing.assert_array_equal(pcm_of(c), musdb_pcm(track))
        # float views: stem scale and targets are sums of their sources
        np.testing.assert_allclose(c.stem("vocals"), musdb_pcm(track)[4] / 32768.0, atol=1e-7)
        np.testing.assert_allclose(c.target("accompaniment"),
                                   c.stem("drums") + c.stem("bass") + c.stem("other"), atol=1e-6)
    assert not leftovers(cache)


def test_training_cache_holds_the_sources_only(wav_root, tmp_path):
    """Training reads four sources: its entries hold those (4 x 176,400 bytes per second of audio plus .npy
    headers), equal to read_stems; a later use that needs the mixture adds only the mixture's file."""
    root, cache = tmp_path / "root", tmp_path / "cache"
    shutil.copytree(wav_root / "train" / "Synth 00 - Train", root / "train" / "Synth 00 - Train")
    (track,) = open_tracks(root, "train")
    (c,) = load_cached([track], cache, progress=False, stems=SOURCES)
    (entry,) = entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == sorted(f"{s}.npy" for s in SOURCES)
    size = sum(p.stat().st_size for p in entry.iterdir())
    assert size <= 4 * 4 * c.nb_samples + 4 * 256
    ref = read_stems(track, SOURCES)
    for s in SOURCES:
        np.testing.assert_array_equal(np.asarray(c.stems[s]), ref[s])
    with pytest.raises(Hw2Error, match="mixture stem was not cached"):
        c.stem("mixture")
    mtimes = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    (full,) = load_cached([track], cache, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir() if p.name in mtimes} == mtimes
    np.testing.assert_array_equal(pcm_of(full), musdb_pcm(track))


def test_cache_is_reused(wav_root, wav_cache):
    tracks = open_tracks(wav_root, "train", "train")
    load_cached(tracks, wav_cache, progress=False)
    files = {p: p.stat().st_mtime_ns for p in wav_cache.rglob("*.npy")}
    load_cached(open_tracks(wav_root, "train", "train"), wav_cache, progress=False)
    assert {p: p.stat().st_mtime_ns for p in wav_cache.rglob("*.npy")} == files


def test_cache_survives_a_copied_root_and_sees_new_content(wav_root, tmp_path):
    """A root copied to a new path with new modification times (a new Colab session, a Drive sync) reuses the
    cache; a file whose content changes (same size) is decoded again, and only its track."""
    root, cache = tmp_path / "root", tmp_path / "cache"
    for name in ("Synth 00 - Train", "Synth 01 - Train"):
        shutil.copytree(wav_root / "train" / name, root / "train" / name)
    tracks = open_tracks(root, "train")
    before = load_cached(tracks, cache, progress=False)
    assert len(entries(cache)) == 2
    assert np.abs(np.asarray(before[0].stems["vocals"])).max() > 0
    keys = [cache_key(t) for t in tracks]
    other = entries(cache)[1] / "drums.npy"
    other_mtime = other.stat().st_mtime_ns

    moved = tmp_path / "elsewhere" / "root"
    shutil.copytree(root, moved, copy_function=shutil.copyfile)  # new path, new mtimes
    assert [cache_key(t) for t in open_tracks(moved, "train")] == keys
    load_cached(open_tracks(moved, "train"), cache, progress=False)
    assert len(entries(cache)) == 2

    vocals = root / "train" / "Synth 00 - Train" / "vocals.wav"
    audio, rate = sf.read(vocals, dtype="int16")
    sf.write(vocals, np.zeros_like(audio), rate, subtype="PCM_16")
    tracks = open_tracks(root, "train")
    after = load_cached(tracks, cache, progress=False)
    assert cache_key(tracks[0]) != keys[0] and cache_key(tracks[1]) == keys[1]
    assert len(entries(cache)) == 3  # one more entry: the changed track, decoded again
    assert np.abs(np.asarray(after[0].stems["vocals"])).max() == 0
    np.testing.assert_array_equal(np.asarray(after[0].stems["drums"]), np.asarray(before[0].stems["drums"]))
    assert other.stat().st_mtime_ns == other_mtime  # the unchanged track was not decoded again


def test_unreadable_cache_entry_is_decoded_again(wav_root, tmp_path):
    root, cache = tmp_path / "root", tmp_path / "cache"
    shutil.copytree(wav_root / "train" / "Synth 02 - Train", root / "train" / "Synth 02 - Train")
    tracks = open_tracks(root, "train")
    good = pcm_of(load_cached(tracks, cache, progress=False)[0]).copy()
    (entries(cache)[0] / "bass.npy").write_bytes(b"garbage, not an npy file")
    (entries(cache)[0] / "drums.npy").unlink()  # an entry a crash left without some stems
    np.testing.assert_array_equal(pcm_of(load_cached(tracks, cache, progress=False)[0]), good)


def test_old_cache_layout_is_named_once_and_not_read(wav_root, tmp_path, capsys):
    root, cache = tmp_path / "root", tmp_path / "cache"
    shutil.copytree(wav_root / "train" / "Synth 02 - Train", root / "train" / "Synth 02 - Train")
    cache.mkdir()
    old = cache / f"Synth_02_-_Train.{'0' * 16}.npy"  # version 1: one (5, 2, n) file per track
    np.save(old, np.ones((5, 2, 100), np.int16))
    tracks = open_tracks(root, "train")
    (c,) = load_cached(tracks, cache, progress=False)
    load_cached(tracks, cache, progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "older hw2 cache layout" in lines[0] and f"rm -r {cache}/*.npy" in lines[0], lines
    np.testing.assert_array_equal(pcm_of(c), musdb_pcm(tracks[0]))
    assert old.exists()  # the user's to delete


def test_disk_full_is_one_line_and_leaves_nothing(wav_root, tmp_path, monkeypatch):
    root, cache = tmp_path / "root", tmp_path / "cache"
    shutil.copytree(wav_root / "train" / "Synth 03 - Train", root / "train" / "Synth 03 - Train")
    real_save = np.save

    def full_disk(f, arr, *a, **k):
        f.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(Hw2Error, match=re.escape(str(cache / f"v{CACHE_VERSION}")) + ": not enough disk space.*"
                       "set --cache-dir / \\$HW2_CACHE"):
        open_cached(root, "train", cache_dir=cache, progress=False)
    assert not leftovers(cache) and not list(cache.rglob("*.npy"))
    # too little free space is refused before decoding anything
    monkeypatch.setattr(np, "save", real_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(Hw2Error, match="not enough disk space .*GB more needed"):
        open_cached(root, "train", cache_dir=cache, progress=False)
    assert not list(cache.rglob("*.npy"))


def test_cache_dir_on_a_missing_drive_is_one_line(wav_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HW2_DRIVE_MOUNT", str(tmp_path / "drive"))  # stands in for Colab's /content/drive
    drive = tmp_path / "drive" / "MyDrive" / "hw2-cache"  # Drive not mounted
    with pytest.raises(Hw2Error, match=re.escape(f"{drive}: Google Drive is not mounted at {tmp_path / 'drive'}")
                       + ".*drive.mount"):
        open_cached(wav_root, "train", "valid", cache_dir=drive, progress=False)
    assert not (tmp_path / "drive").exists()
    r = run_cli("-m", "hw2.train", "--musdb-root", str(wav_root), "--out", str(tmp_path / "run"),
                "--cache-dir", str(drive), "--device", "cpu")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Google Drive is not mounted" in lines[0], r.stderr
    nested = tmp_path / "new" / "deep" / "cache"  # any other missing folder is created, parents and all
    open_cached(wav_root, "train", "valid", cache_dir=nested, progress=False)
    assert (nested / "v2").is_dir()


def test_empty_and_none_cache_dir_are_both_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HW2_CACHE", str(tmp_path / "default"))
    assert cache_folder("") == cache_folder(None) == cache_folder() == tmp_path / "default" / f"v{CACHE_VERSION}"


def test_decode_failure_leaves_no_cache_file_wav(wav_root, tmp_path):
    root, cache = tmp_path / "root", tmp_path / "cache"
    for name in ("Synth 00 - Train", "Synth 01 - Train"):
        shutil.copytree(wav_root / "train" / name, root / "train" / name)
    bad = root / "train" / "Synth 01 - Train" / "vocals.wav"
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated: its length no longer matches the other stems
    with pytest.raises(Hw2Error, match="Synth 01 - Train.*(cannot decode|cannot read|different lengths)"):
        open_cached(root, "train", cache_dir=cache, progress=False)
    assert not list(cache.rglob("Synth_01*/*.npy"))
    assert not leftovers(cache)


def test_truncated_files_are_refused_before_anything_is_cached(wav_root, tmp_path):
    """Every WAV of a track cut at the same byte (their lengths still agree) and a MUSDB18 file cut to 400 KB
    (its index whole): one line each naming the file, and nothing decoded into the cache."""
    import stempeg

    root, cache = tmp_path / "root", tmp_path / "cache"
    shutil.copytree(wav_root / "train" / "Synth 00 - Train", root / "train" / "Synth 00 - Train")
    for f in (root / "train" / "Synth 00 - Train").glob("*.wav"):
        f.write_bytes(f.read_bytes()[:200_000])
    with pytest.raises(Hw2Error) as e:
        open_cached(root, "train", cache_dir=cache, progress=False)
    size = (wav_root / "train" / "Synth 00 - Train" / "mixture.wav").stat().st_size
    assert str(e.value) == (f"{root / 'train' / 'Synth 00 - Train'}: mixture.wav is truncated: the file has 200,000 "
                            f"bytes where its header promises {size:,} (an interrupted download or copy): download or "
                            "copy it again")
    shutil.rmtree(root / "train" / "Synth 00 - Train")
    (root / "train" / "Cut - Track.stem.mp4").write_bytes(Path(stempeg.example_stem_path()).read_bytes()[:400_000])
    with pytest.raises(Hw2Error, match=r"Cut - Track.stem.mp4: truncated: the file has 400,000 bytes where its "
                                       r"header promises 950,650"):
        open_cached(root, "train", cache_dir=cache, stems=SOURCES, progress=False)
    assert not list(cache.rglob("*.npy")) and not leftovers(cache)


def test_corrupt_stem_file_is_named(tmp_path, stem_root):
    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "train").mkdir(parents=True)
    shutil.copy(stem_root / "train" / "Synth 00 - Train.stem.mp4", root / "train")
    bad = root / "train" / "Broken - Track.stem.mp4"
    bad.write_bytes(os.urandom(5000))
    with pytest.raises(Hw2Error, match="Broken - Track.stem.mp4: cannot"):
        open_cached(root, "train", cache_dir=cache, progress=False)
    assert not cache.exists() or not list(cache.rglob("*.npy"))  # nothing decoded, nothing half-written


def test_interrupted_cache_write_leaves_nothing(wav_root, tmp_path, monkeypatch):
    """A crash while writing the .npy (disk full, kill) must not leave a half-written entry that a later run
    would trust."""
    root, cache = tmp_path / "root", tmp_path / "cache"
    shutil.copytree(wav_root / "train" / "Synth 03 - Train", root / "train" / "Synth 03 - Train")

    class Crash(Exception):
        pass

    real_save = np.save

    def half_save(f, arr, *a, **k):
        f.write(b"\x93NUMPY partial")
        raise Crash()

    monkeypatch.setattr(np, "save", half_save)
    with pytest.raises(Crash):
        open_cached(root, "train", cache_dir=cache, progress=False)
    assert not [p for p in cache.rglob("*") if p.is_file()]
    monkeypatch.setattr(np, "save", real_save)
    (c,) = open_cached(root, "train", cache_dir=cache, progress=False)
    np.testing.assert_array_equal(pcm_of(c), musdb_pcm(open_tracks(root, "train")[0]))


# --------------------------------------------------------------------------------------------- sample formats
def _formatted_copy(src: Path, dst: Path, subtype: str) -> Path:
    """The MUSDB18-HQ track folder `src` written to `dst` (same track name) with every WAV as `subtype`."""
    for f in src.glob("*.wav"):
        audio, rate = sf.read(str(f), dtype="float64")
        (dst / src.name).mkdir(parents=True, exist_ok=True)
        sf.write(str(dst / src.name / f.name), audio, rate, subtype=subtype)
    return dst


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_sample_format_reads_as_its_16_bit_twin(wav_root, tmp_path, subtype):
    """16/24/32-bit PCM and 32/64-bit float copies of a 16-bit track give its int16 samples, read for inference
    (hw2.tracks) and through the decoded cache (training). An int16 read of a float file gave -1, 0 and 1."""
    src = wav_root / "train" / "Synth 00 - Train"
    root = _formatted_copy(src, tmp_path / "root" / "train", subtype).parent
    (track,) = open_tracks(root, "train")
    assert sf.info(str(Path(track.path).parent / "vocals.wav")).subtype == subtype
    twin = read_stems(next(t for t in open_tracks(wav_root, "train") if t.name == src.name))
    got = read_stems(track)
    for s in STEMS:
        np.testing.assert_array_equal(got[s], twin[s], err_msg=s)
    (cached,) = load_cached([track], tmp_path / "cache", progress=False, stems=SOURCES)
    for s in SOURCES:
        np.testing.assert_array_equal(np.asarray(cached.stems[s]), twin[s], err_msg=s)


def test_float_samples_are_converted_as_pcm_is(tmp_path):
    """24-bit PCM reads as its top 16 bits (soundfile's int16 read: floor(v / 256)); the same values as 32-bit
    float read alike (floor(x * 32768)), so one audio gives one int16 whatever its format; float overs are clipped
    as 16-bit conversion clips them; 8-bit and u-law WAVs read as the audio they hold (soundfile's int16 read)."""
    from hw2.tracks import read_stem

    rng = np.random.default_rng(0)
    v24 = np.clip(rng.normal(0, 2 ** 21, (RATE, 2)), -2 ** 23, 2 ** 23 - 1).astype(np.int32)
    v24[2:6] = [[2 ** 23 - 1, -2 ** 23], [255, -1], [-255, 256], [-257, 0]]
    tracks = {}
    for kind in ("PCM_24", "FLOAT", "overs", "PCM_U8", "ULAW"):
        folder = tmp_path / kind / "test" / "A - B"
        folder.mkdir(parents=True)
        x = v24 / 2.0 ** 23
        if kind == "overs":
            x[:2] = [[1.5, -1.7], [1.0, -1.0]]
        for s in STEMS:
            sf.write(str(folder / f"{s}.wav"), x, RATE, subtype="FLOAT" if kind == "overs" else kind)
        (tracks[kind],) = open_tracks(tmp_path / kind, "test")
    pcm24 = read_stem(tracks["PCM_24"], "vocals")
    np.testing.assert_array_equal(pcm24, sf.read(str(tmp_path / "PCM_24/test/A - B/vocals.wav"), dtype="int16")[0])
    np.testing.assert_array_equal(pcm24, (v24 >> 8).astype(np.int16))
    np.testing.assert_array_equal(read_stem(tracks["FLOAT"], "vocals"), pcm24)
    overs = read_stem(tracks["overs"], "vocals")
    np.testing.assert_array_equal(overs[:2], [[32767, -32768], [32767, -32768]])
    np.testing.assert_array_equal(overs[2:], pcm24[2:])
    for kind in ("PCM_U8", "ULAW"):
        held = sf.read(str(tmp_path / kind / "test" / "A - B" / "vocals.wav"), dtype="int16")[0]
        np.testing.assert_array_equal(read_stem(tracks[kind], "vocals"), held)
        assert np.abs(held.astype(int) - pcm24).max() < 1500  # lossy, but the audio: no -1 / 0 / 1 collapse


# ---------------------------------------------------------------------------------------------- plan_epoch
L = 100  # excerpt length (samples) for the plan tests
LENGTHS = [10 * L, 7 * L + 33, 3 * L, 12 * L + 1, L]


def grid(lengths, excerpt_len, hop):
    return {(t, s) for t, n in enumerate(lengths) for s in range(0, n - excerpt_len + 1, hop)}


def pairs_of(batches):
    return [tuple(map(int, p)) for b in batches for p in b]


@pytest.mark.parametrize("hop", [L, L // 2, 37])
def test_exhaustive_sees_every_excerpt_once(hop):
    batches = plan_epoch("exhaustive", LENGTHS, L, batch_size=4, hop=hop, seed=3, epoch=1)
    pairs = pairs_of(batches)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == grid(LENGTHS, L, hop)
    assert all(len(b) == 4 for b in batches[:-1]) and 1 <= len(batches[-1]) <= 4
    again = pairs_of(plan_epoch("exhaustive", LENGTHS, L, batch_size=4, hop=hop, seed=3, epoch=2))
    assert set(again) == set(pairs) and again != pairs  # reshuffled each epoch


@pytest.mark.parametrize("batch_size", [2, 3, 5, 8])
def test_roundrobin_no_track_twice_in_a_batch(batch_size):
    batches = plan_epoch("roundrobin", LENGTHS, L, batch_size=batch_size, hop=L // 2, seed=0, epoch=0)
    for b in batches:
        assert len(b) <= batch_size
        assert len(set(b[:, 0].tolist())) == len(b), f"track repeated in batch {b.tolist()}"
    pairs = pairs_of(batches)
    assert len(pairs) == len(set(pairs)) and set(pairs) == grid(LENGTHS, L, L // 2)
    # batches are full while at least batch_size tracks still have excerpts left
    assert len(batches[0]) == min(batch_size, len(LENGTHS))


@pytest.mark.parametrize("spt", [1, 3, 8])
def test_balanced_gives_each_track_n(spt):
    for epoch in range(3):
        batches = plan_epoch("balanced", LENGTHS, L, batch_size=4, samples_per_track=spt, seed=5, epoch=epoch)
        pairs = np.array(pairs_of(batches))
        assert Counter(pairs[:, 0].tolist()) == {t: spt for t in range(len(LENGTHS))}
        room = np.array(LENGTHS)[pairs[:, 0]] - L + 1
        assert (pairs[:, 1] >= 0).all() and (pairs[:, 1] < room).all()
    a = pairs_of(plan_epoch("balanced", LENGTHS, L, batch_size=4, samples_per_track=8, seed=5, epoch=0))
    b = pairs_of(plan_epoch("balanced", LENGTHS, L, batch_size=4, samples_per_track=8, seed=5, epoch=1))
    assert a != b


def test_sequential_in_order_and_fixed():
    ref = pairs_of(plan_epoch("sequential", LENGTHS, L, batch_size=3, hop=L // 2, seed=0, epoch=0))
    assert ref == sorted(grid(LENGTHS, L, L // 2))
    for seed, epoch in [(0, 5), (9, 0), (123, 77)]:
        assert pairs_of(plan_epoch("sequential", LENGTHS, L, batch_size=3, hop=L // 2, seed=seed, epoch=epoch)) == ref


def test_random_count_and_range():
    batches = plan_epoch("random", LENGTHS, L, batch_size=6, samples_per_track=7, seed=1, epoch=0)
    pairs = np.array(pairs_of(batches))
    assert len(pairs) == 7 * len(LENGTHS)
    assert [len(b) for b in batches] == [6] * 5 + [5]
    assert ((pairs[:, 0] >= 0) & (pairs[:, 0] < len(LENGTHS))).all()
    assert (pairs[:, 1] <= np.array(LENGTHS)[pairs[:, 0]] - L).all()
    assert len(set(pairs[:, 0].tolist())) > 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_too_short_track(strategy):
    with pytest.raises(Hw2Error, match="track #2 .* shorter than"):
        plan_epoch(strategy, [5 * L, 2 * L, L - 1], L, batch_size=2)


def test_unknown_strategy():
    with pytest.raises(Hw2Error, match="unknown sampling strategy 'foo'"):
        plan_epoch("foo", LENGTHS, L, batch_size=2)


# -------------------------------------------------------------------------------------------- ExcerptSampler
N = 1000  # excerpt length in samples
SEQ = N / RATE


def fake_tracks(lengths=(3000, 4000, 5000, 2500, 6000), seed=0) -> list[CachedTrack]:
    """Cached tracks of random int16 audio: the four sources, all the sampler reads."""
    rng = np.random.default_rng(seed)
    return [CachedTrack(f"t{i}", {s: rng.integers(-20000, 20000, (n, 2), dtype=np.int16) for s in SOURCES})
            for i, n in enumerate(lengths)]


def expected_batch(sampler: ExcerptSampler, epoch: int, step: int):
    """The batch recomputed from the sampler's recorded random choices, independently of its mixing code."""
    d = sampler.draw(epoch, step)
    b = len(d["tracks"])
    mix = np.zeros((b, 2, N))
    tgt = np.zeros((b, len(sampler.targets), 2, N))
    from hw2.tracks import TARGET_SOURCES
    for i in range(b):
        for j, source in enumerate(SOURCES):
            t, s, k = d["tracks"][i, j], d["starts"][i, j], d["variants"][i, j]
            track = sampler.tracks[t]
            pcm = track.stems[source] if k == 0 else track.variants[sampler.variants[k - 1]][source]
            x = pcm[s:s + N].T.astype(np.float64) / 32768.0
            if d["swaps"][i, j]:
                x = x[::-1]
            x = x * d["gains"][i, j]
            mix[i] += x
            for k, target in enumerate(sampler.targets):
                if source in TARGET_SOURCES[target]:
                    tgt[i, k] += x
    return mix, tgt


@pytest.mark.parametrize("mixing", ["incoherent", "coherent"])
@pytest.mark.parametrize("targets", [("vocals",), ("vocals", "accompaniment"), ("accompaniment",)])
def test_batch_is_the_mix_of_its_draw(mixing, targets):
    s = ExcerptSampler(fake_tracks(), SEQ, targets, "balanced", 4, 3, mixing=mixing, seed=7)
    for step in (0, s.nb_batches(0) - 1):
        mix, tgt = s.batch(0, step)
        exp_mix, exp_tgt = expected_batch(s, 0, step)
        assert mix.dtype == tgt.dtype == torch.float32
        assert mix.shape == (len(exp_mix), 2, N)
        assert tgt.shape == ((len(exp_mix), 2, N) if len(targets) == 1 else (len(exp_mix), len(targets), 2, N))
        np.testing.assert_allclose(mix.numpy(), exp_mix, atol=1e-5)
        np.testing.assert_allclose(tgt.numpy(), exp_tgt[:, 0] if len(targets) == 1 else exp_tgt, atol=1e-5)
    assert s.nb_batches(0) == 4  # 5 tracks x 3 excerpts in batches of 4
    assert len(s.batch(0, 3)[0]) == 3


def test_targets_sum_to_the_mixture():
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals", "accompaniment"), "balanced", 8, 4, seed=1)
    for step in range(s.nb_batches(0)):
        mix, tgt = s.batch(0, step)
        torch.testing.assert_close(tgt.sum(1), mix, atol=1e-6, rtol=0)
        assert mix.abs().max() > 0.05


def test_augmentation_ranges():
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 16, 64, seed=3)
    draws = [s.draw(0, k) for k in range(s.nb_batches(0))]
    gains = np.concatenate([d["gains"].ravel() for d in draws])
    swaps = np.concatenate([d["swaps"].ravel() for d in draws])
    assert len(gains) == 5 * 64 * 4
    assert gains.min() >= 0.25 and gains.max() <= 1.25
    assert gains.min() < 0.3 and gains.max() > 1.2 and 0.65 < gains.mean() < 0.85  # spread over the range
    assert 0.45 < swaps.mean() < 0.55
    off = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 16, 8, gain=None, swap=False, seed=3)
    d = off.draw(0, 0)
    assert (d["gains"] == 1).all() and not d["swaps"].any()
    # without augmentation the batch is still the plain sum of its sources
    mix, _ = off.batch(0, 0)
    exp, _ = expected_batch(off, 0, 0)
    np.testing.assert_allclose(mix.numpy(), exp, atol=1e-5)


def test_new_options_leave_the_other_draws_alone():
    """Fixed offsets and sign flips change only their own part of a draw: the default's stream stays as it was."""
    base = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 8, 8, seed=5)
    fixed = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 8, 8, seed=5, offsets="fixed")
    flip = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 8, 8, seed=5, sign_flip=True)
    for step in range(base.nb_batches(0)):
        d, f, g = base.draw(0, step), fixed.draw(0, step), flip.draw(0, step)
        assert (d["gains"] > 0).all() and (d["variants"] == 0).all()
        assert (f["starts"] == 0).all() and (f["starts"] != d["starts"]).any()
        for k in ("tracks", "gains", "swaps"):
            np.testing.assert_array_equal(f[k], d[k])
        for k in ("tracks", "starts", "swaps"):
            np.testing.assert_array_equal(g[k], d[k])
        np.testing.assert_array_equal(np.abs(g["gains"]), d["gains"])
    with pytest.raises(Hw2Error, match="unknown offsets 'middle'"):
        ExcerptSampler(fake_tracks(), SEQ, offsets="middle")


@pytest.mark.parametrize("mixing", ["incoherent", "coherent"])
def test_fixed_offsets_read_every_track_from_its_start(mixing):
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals", "accompaniment"), "balanced", 4, 3, mixing=mixing, seed=7,
                       offsets="fixed")
    for step in range(s.nb_batches(0)):
        mix, tgt = s.batch(0, step)
        exp_mix, exp_tgt = expected_batch(s, 0, step)
        np.testing.assert_allclose(mix.numpy(), exp_mix, atol=1e-5)
        np.testing.assert_allclose(tgt.numpy(), exp_tgt, atol=1e-5)
    # the same plan twice: identical excerpts, where random offsets would differ
    one = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 5, 2, mixing="coherent", gain=None,
                         swap=False, offsets="fixed", seed=1)
    mix = torch.cat([one.batch(0, k)[0] for k in range(one.nb_batches(0))])
    tracks = np.concatenate(one.plan(0))[:, 0]
    for t in range(5):
        same = mix[torch.from_numpy(tracks == t)]
        assert len(same) == 2 and torch.equal(same[0], same[1])


def test_sign_flip_mixes_signed_sources():
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals", "accompaniment"), "balanced", 16, 16, seed=4, sign_flip=True)
    draws = [s.draw(0, k) for k in range(s.nb_batches(0))]
    negative = np.concatenate([d["gains"].ravel() < 0 for d in draws])
    assert 0.4 < negative.mean() < 0.6
    for step in (0, 1):
        mix, tgt = s.batch(0, step)
        exp_mix, exp_tgt = expected_batch(s, 0, step)
        np.testing.assert_allclose(mix.numpy(), exp_mix, atol=1e-5)
        np.testing.assert_allclose(tgt.numpy(), exp_tgt, atol=1e-5)
        torch.testing.assert_close(tgt.sum(1), mix, atol=1e-6, rtol=0)


def test_variants_are_drawn_at_the_same_relative_position():
    """Variants (here stand-ins of other lengths, like a stretch) are picked uniformly with the original; the
    batch reads each at its own scaled start and stays the sum of its draw."""
    tracks = fake_tracks()
    rng = np.random.default_rng(9)
    for t in tracks:
        t.variants = {v: {s: rng.integers(-9000, 9000, (int(t.nb_samples * f), 2), dtype=np.int16) for s in SOURCES}
                      for v, f in (("stretch0.9", 0.9), ("stretch1.1", 1.1))}
    s = ExcerptSampler(tracks, SEQ, ("vocals",), "balanced", 16, 16, seed=2, variants=("stretch0.9", "stretch1.1"))
    picks = np.concatenate([s.draw(0, k)["variants"].ravel() for k in range(s.nb_batches(0))])
    assert set(picks) == {0, 1, 2} and all(0.27 < (picks == k).mean() < 0.4 for k in range(3))
    for step in range(s.nb_batches(0)):
        d = s.draw(0, step)
        lengths = s._vlengths[d["tracks"], d["variants"], np.arange(len(SOURCES))]
        assert (d["starts"] >= 0).all() and (d["starts"] + N <= lengths).all()
    mix, _ = s.batch(0, 0)
    np.testing.assert_allclose(mix.numpy(), expected_batch(s, 0, 0)[0], atol=1e-5)
    plain = ExcerptSampler(tracks, SEQ, ("vocals",), "balanced", 16, 16, seed=2)
    np.testing.assert_array_equal(s.draw(0, 0)["tracks"], plain.draw(0, 0)["tracks"])
    with pytest.raises(Hw2Error, match="no cached pitch\\+1 variant"):
        ExcerptSampler(tracks, SEQ, variants=("pitch+1",))
    with pytest.raises(Hw2Error, match="stretched variant is shorter"):
        ExcerptSampler(tracks, 2.9 / 3 * 2500 / RATE, variants=("stretch0.9",))


def test_pitch_and_stretch_variants_in_the_cache(wav_root, tmp_path):
    """Made once per source from the decoded stems, deterministic, beside the stems without disturbing them."""
    from hw2.cache import make_variant, variant_names

    names = variant_names(1.0, 0.1)
    assert names == ("pitch-1", "pitch+1", "stretch0.9", "stretch1.1") and variant_names() == ()
    tracks = open_tracks(wav_root, "train", "train")[:2]
    cached = load_cached(tracks, tmp_path, False, SOURCES, variants=names)
    for c in cached:
        n = c.nb_samples
        assert set(c.variants) == set(names) and all(set(v) == set(SOURCES) for v in c.variants.values())
        for name, f in zip(names, (1, 1, 0.9, 1.1)):
            v = c.variants[name]["vocals"]
            assert v.dtype == np.int16 and v.shape[1] == 2 and abs(len(v) - f * n) <= 1024
            level = [np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))) for a in (v, c.stems["vocals"])]
            assert abs(20 * np.log10(level[0] / level[1])) < 0.1  # same loudness (the vocoder alone loses ~3 dB)
        # a shift moves the spectrum: the vocals' spectral centroid rises a semitone up, falls a semitone down
        cent = {k: _centroid(np.asarray(c.variants[k]["vocals"] if k else c.stems["vocals"])) for k in
                ("pitch-1", None, "pitch+1")}
        assert cent["pitch-1"] < cent[None] < cent["pitch+1"]
    files = sorted((e.name, p.name) for e in entries(tmp_path) for p in e.glob("*.npy"))
    assert len(files) == 2 * 4 * 5 and not leftovers(tmp_path)
    stamp = {p: p.stat().st_mtime_ns for e in entries(tmp_path) for p in e.glob("*.*.npy")}
    again = load_cached(tracks, tmp_path, False, SOURCES, variants=names)  # made once: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    np.testing.assert_array_equal(again[0].variants["pitch+1"]["bass"], make_variant(cached[0].stems["bass"], "pitch+1"))
    assert load_cached(tracks, tmp_path, False, SOURCES)[0].nb_samples == cached[0].nb_samples  # stems untouched
    # a stem decoded again beside stretched copies more than a second longer: they are not taken for stems
    load_cached(tracks, tmp_path, False, SOURCES, variants=("stretch1.3",))
    (entries(tmp_path)[0] / "drums.npy").unlink()
    assert load_cached(tracks, tmp_path, False, SOURCES)[0].nb_samples == cached[0].nb_samples
    s = ExcerptSampler(again, 1.0, ("vocals",), "balanced", 8, 8, seed=0, variants=names)
    assert set(np.concatenate([s.draw(0, k)["variants"].ravel() for k in range(s.nb_batches(0))])) == set(range(5))
    mix, tgt = s.batch(0, 0)
    assert mix.shape == (8, 2, RATE) and torch.isfinite(mix).all() and tgt.abs().max() > 0


def _centroid(pcm: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(pcm[:, 0].astype(np.float64)))
    return float((spec * np.arange(len(spec))).sum() / spec.sum())


def test_coherent_uses_one_track_and_start():
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 8, 8, mixing="coherent", seed=2)
    for step in range(s.nb_batches(0)):
        d, plan = s.draw(0, step), s.plan(0)[step]
        assert (d["tracks"] == plan[:, :1]).all() and (d["starts"] == plan[:, 1:]).all()


def test_incoherent_uses_different_tracks():
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 8, 8, mixing="incoherent", seed=2)
    anchor = SOURCES.index("vocals")
    differ, total = 0, 0
    for step in range(s.nb_batches(0)):
        d, plan = s.draw(0, step), s.plan(0)[step]
        assert (d["tracks"][:, anchor] == plan[:, 0]).all() and (d["starts"][:, anchor] == plan[:, 1]).all()
        others = np.delete(d["tracks"], anchor, axis=1)
        differ += (others != plan[:, :1]).sum()
        total += others.size
        room = s.lengths[d["tracks"]] - N
        assert (d["starts"] >= 0).all() and (d["starts"] <= room).all()
    assert differ / total > 0.6  # 5 tracks: a random other source is from the anchor's track 1 time in 5


def test_anchor_is_the_first_target():
    s = ExcerptSampler(fake_tracks(), SEQ, ("accompaniment",), "balanced", 8, 2, seed=2)
    d, plan = s.draw(0, 0), s.plan(0)[0]
    assert (d["tracks"][:, SOURCES.index("drums")] == plan[:, 0]).all()


def test_reproducible_from_seed_epoch_step():
    tracks = fake_tracks()
    a = ExcerptSampler(tracks, SEQ, ("vocals",), "balanced", 4, 4, seed=11)
    b = ExcerptSampler(tracks, SEQ, ("vocals",), "balanced", 4, 4, seed=11)
    c = ExcerptSampler(tracks, SEQ, ("vocals",), "balanced", 4, 4, seed=12)
    for step in range(a.nb_batches(0)):
        assert all(torch.equal(x, y) for x, y in zip(a.batch(0, step), b.batch(0, step)))
    assert not torch.equal(a.batch(0, 0)[0], c.batch(0, 0)[0])
    assert not torch.equal(a.batch(0, 0)[0], a.batch(1, 0)[0])
    assert not torch.equal(a.batch(0, 0)[0], a.batch(0, 1)[0])
    # independent of call order (and of which epoch's plan was computed last)
    order1 = [(1, 2), (0, 1), (1, 0), (2, 3)]
    r1 = {k: b.batch(*k) for k in order1}
    fresh = ExcerptSampler(tracks, SEQ, ("vocals",), "balanced", 4, 4, seed=11)
    r2 = {k: fresh.batch(*k) for k in reversed(order1)}
    for k in order1:
        assert torch.equal(r1[k][0], r2[k][0]) and torch.equal(r1[k][1], r2[k][1])


def test_epoch_batches_resume_at_a_step():
    s = ExcerptSampler(fake_tracks(), SEQ, ("vocals",), "balanced", 4, 4, seed=4)
    n = s.nb_batches(2)
    eb = s.epoch(2, start_step=3)
    assert isinstance(eb, EpochBatches) and len(eb) == n - 3
    loader = torch.utils.data.DataLoader(eb, batch_size=None, num_workers=0)
    for k, (mix, tgt) in enumerate(loader):
        ref = s.batch(2, 3 + k)
        assert torch.equal(mix, ref[0]) and torch.equal(tgt, ref[1])
    with pytest.raises(IndexError):
        eb[n - 3]


def test_prefetched_batches_equal_direct_ones(wav_root, wav_cache):
    """Prefetching threads, DataLoader workers and a mid-epoch start all give sampler.batch(epoch, step)."""
    tracks = open_cached(wav_root, "train", "train", wav_cache, progress=False, stems=SOURCES)
    s = ExcerptSampler(tracks, 0.5, ("vocals",), "balanced", 3, 5, seed=9)
    ref = [s.batch(1, k) for k in range(s.nb_batches(1))]
    assert len(ref) == 7
    for prefetch, workers, start in [(0, 0, 0), (3, 0, 0), (2, 2, 0), (4, 0, 3), (1, 2, 2)]:
        eb = EpochBatches(s, 1, start, prefetch=prefetch)
        got = list(torch.utils.data.DataLoader(eb, batch_size=None, num_workers=workers))
        assert len(got) == len(ref) - start
        for (m, t), (rm, rt) in zip(got, ref[start:]):
            assert torch.equal(m, rm) and torch.equal(t, rt)
    # random access still works (a skipped prefetch is dropped)
    eb = s.epoch(1)
    assert torch.equal(eb[5][0], ref[5][0]) and torch.equal(eb[2][0], ref[2][0])


def test_read_excerpt_reads_the_slice(wav_root, wav_cache):
    (c,) = open_cached(wav_root, "train", "train", wav_cache, progress=False, stems=SOURCES)[:1]
    arr = c.stems["other"]
    for start, n in [(0, 1), (123, 4567), (c.nb_samples - 999, 999)]:
        out = np.empty((n, 2), np.int16)
        read_excerpt(arr, start, out)
        np.testing.assert_array_equal(out, np.asarray(arr[start:start + n]))


def test_sampler_bad_inputs():
    with pytest.raises(Hw2Error, match="shorter than"):
        ExcerptSampler(fake_tracks((3000, 500)), SEQ)
    with pytest.raises(Hw2Error, match="unknown mixing"):
        ExcerptSampler(fake_tracks(), SEQ, mixing="both")
    with pytest.raises(Hw2Error, match="unknown target"):
        ExcerptSampler(fake_tracks(), SEQ, targets=("piano",))
    with pytest.raises(Hw2Error, match="no tracks"):
        ExcerptSampler([], SEQ)


def test_sampler_on_cached_tracks_rebuilds_the_real_mixture(wav_root, wav_cache):
    """Coherent, unaugmented excerpts of generated tracks add up to the track's own mixture.wav."""
    tracks = open_cached(wav_root, "train", "train", wav_cache, progress=False)
    s = ExcerptSampler(tracks, 1.0, ("vocals", "accompaniment"), "balanced", 4, 2, mixing="coherent",
                       gain=None, swap=False, seed=0)
    for step in range(s.nb_batches(0)):
        mix, tgt = s.batch(0, step)
        for i, (t, start) in enumerate(s.plan(0)[step]):
            ref = tracks[t].stem("mixture")[:, start:start + RATE]
            np.testing.assert_allclose(mix[i].numpy(), ref, atol=3 / 32768)
            np.testing.assert_allclose(tgt[i, 0].numpy(), tracks[t].stem("vocals")[:, start:start + RATE],
                                       atol=1e-6)
        assert mix.abs().max() > 0.1


# ------------------------------------------------------------------------------------------------------- CLI
def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_synth_cli_bad_format(tmp_path):
    r = run_cli("-m", "hw2.synth", str(tmp_path / "out"), "--format", "flac")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "flac" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_synth_cli_too_many_valid(tmp_path):
    r = run_cli("-m", "hw2.synth", str(tmp_path / "out"), "--valid", "9")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "validation" in lines[0], r.stderr


@pytest.mark.parametrize("length,size,context,min_size", [
    (100, 30, 0, 1), (100, 30, 5, 20), (90, 30, 0, 1), (91, 30, 3, 2), (10, 0, 0, 1), (10, 30, 4, 1), (61, 30, 0, 2)])
def test_blocks_cover_every_sample_once(length, size, context, min_size):
    from hw2.tracks import blocks

    spans = list(blocks(length, size, context, min_size))
    covered = np.concatenate([np.arange(a, b) for _, a, b, _ in spans])
    np.testing.assert_array_equal(covered, np.arange(length))
    for lo, a, b, hi in spans:
        assert lo == max(0, a - context) and hi == min(length, b + context)
        assert b - a >= min(min_size, length)  # a short tail joined the block before


def test_atomic_write_leaves_old_file_on_failure_and_cleans_stale(tmp_path):
    from hw2 import atomic_write, remove_stale_temporaries

    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    stale = tmp_path / ".x.json.999999999.tmp.json"  # a writer that no longer runs
    stale.write_text("half")
    assert remove_stale_temporaries(tmp_path) == [stale] and not stale.exists()


def pinned_track(folder: Path, is_wav: bool):
    """A track of fixed bytes and modification times (not audio: the keys read bytes, not samples), each file
    longer than two 64 KiB ends, in either layout."""
    from types import SimpleNamespace

    folder.mkdir(parents=True)
    names = [f"{s}.wav" for s in STEMS] if is_wav else ["Pinned - Track.stem.mp4"]
    for k, name in enumerate(names):
        (folder / name).write_bytes((bytes(range(k, 256)) + bytes(range(k))) * 700 + bytes(k))
        os.utime(folder / name, ns=(1_700_000_000_000_000_000 + k, 1_700_000_000_000_000_000 + k))
    return SimpleNamespace(name="Pinned - Track", is_wav=is_wav, path=str(folder / names[0]))


def test_cache_keys_and_fingerprints_keep_the_values_stored_results_hold(tmp_path):
    """The decoded cache's entries are named by `cache_key` and results/*.json hold `fingerprint`s: the same files
    must give the same values, whatever the code that computes them (values of the code as of 43bcf3c)."""
    from hw2.tracks import fingerprint

    wav, stem = pinned_track(tmp_path / "wav", True), pinned_track(tmp_path / "stem", False)
    assert (cache_key(wav), cache_key(stem)) == ("c4085a48745f2ac1", "192623e69d0e2bdb")
    assert (fingerprint(wav), fingerprint(stem)) == ("181db509287459e1ecfa8cecf4d36f6bcfe3d06d",
                                                   "c009dd724db9ce109b5fc228204680588cf3b931")
