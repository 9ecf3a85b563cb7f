"""The vocoder (hw2/vocoder.py): exact lengths in the separation model's STFT, a tiny one learns on a generated
track, its training run writes resumable checkpoints that load back, a checkpoint for other STFT settings or a
missing one is refused in one line, and the `vocoder` phase method runs through `Separator` and infer.py.

Generated tracks only (hw2.synth, tests/conftest.py's `wav_root`); tiny configs, one thread.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from hw2 import Hw2Error
from hw2.model import ModelConfig, OpenUnmix
from hw2.separate import Separator, references
from hw2.synth import make_stems
from hw2.config import TrainConfig
from hw2.train import train as train_separator
from hw2.vocoder import CHECKPOINT_FORMAT, Vocoder, VocoderConfig, load_vocoder, main, mrstft_loss, train

RATE = 44100
TINY = VocoderConfig(dim=8, nb_layers=1, kernel=3, seq_dur=1.0, batch_size=2, samples_per_track=1,
                     loss_ffts=(512, 2048), epochs=1, quiet=True, device="cpu")


def tiny(**kw) -> Vocoder:
    torch.manual_seed(0)
    return Vocoder(replace(TINY, **kw))


def save(model: Vocoder, path) -> None:
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(model.cfg), "model": model.state_dict()}, path)


@pytest.mark.parametrize("length", [RATE, RATE + 333, 5000])
def test_output_has_the_input_length_and_the_separators_frames(length):
    model = tiny()
    x = torch.randn(2, length)
    mag = model.stft(x).abs()  # (2, 2049, nb_frames), the separation model's STFT
    assert mag.shape[-2:] == (2049, length // 1024 + 1)
    assert model(mag, length).shape == (2, length)
    assert model(mag[0]).shape == ((mag.shape[-1] - 1) * 1024,)  # default length: the frames' span
    assert model.phase(mag).shape == mag.shape  # one phase per bin and frame


@pytest.mark.parametrize("time_invariant", [False, True])
def test_a_tiny_vocoders_loss_goes_down_on_a_generated_track(time_invariant):
    stems = make_stems(seed=3, duration=2.0)  # (5, nb_timesteps, 2) float32
    ref = torch.from_numpy(np.ascontiguousarray(np.stack([stems[4], stems[1:4].sum(0)]).transpose(0, 2, 1)))
    ref = ref.reshape(-1, ref.shape[-1])  # vocals and accompaniment, both channels: 4 signals
    model = tiny(dim=16, time_invariant=time_invariant)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    mag = model.stft(ref).abs()
    losses = []
    for _ in range(25):
        loss = mrstft_loss(model(mag, ref.shape[-1]), ref, (512, 2048))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.9 * losses[0], losses


def test_training_run_resumes_and_its_checkpoint_loads_back(wav_root, tmp_path):
    run = tmp_path / "voc"
    cfg = replace(TINY, musdb_root=str(wav_root), out=str(run))
    summary = train(cfg, log=lambda _: None)
    assert summary["epochs_done"] == 1 and summary["stopped"] == "done"
    assert {p.name for p in run.iterdir()} == {"config.json", "history.json", "last.pt", "best.pt"}
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["valid_loss"])
    assert train(replace(cfg, epochs=2), log=lambda _: None)["epochs_done"] == 2  # resumes from last.pt
    assert len(json.loads((run / "history.json").read_text())) == 2

    model = load_vocoder(run / "last.pt", 4096, 1024, RATE)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    fresh = Vocoder(VocoderConfig.from_dict(ckpt["config"]))
    fresh.load_state_dict(ckpt["model"])
    mag = model.stft(torch.randn(3 * RATE)).abs()
    with torch.no_grad():
        assert torch.equal(model(mag), fresh.eval()(mag))

    with pytest.raises(Hw2Error, match="different config"):  # another config into the same folder
        train(replace(cfg, dim=12, epochs=3), log=lambda _: None)

    from hw2.card import ship_vocoder
    dest = ship_vocoder(run, tmp_path / "checkpoints", None)
    assert load_vocoder(dest / "vocoder.pt", 4096, 1024, RATE).cfg == load_vocoder(run / "best.pt").cfg
    card = (dest / "VOCODER_CARD.md").read_text()
    assert f"{ckpt['nb_params']:,}" in card and "python -m hw2.vocoder --musdb-root" in card and "--dim 8" in card


def test_bad_checkpoints_are_refused_in_one_line(tmp_path):
    path = tmp_path / "v2048.pt"
    save(tiny(n_fft=2048, n_hop=512), path)
    with pytest.raises(Hw2Error, match="other STFT settings.*n_fft 2048 there, 4096 in the separator") as e:
        load_vocoder(path, 4096, 1024, RATE)
    assert "\n" not in str(e.value) and "python -m hw2.vocoder" in str(e.value)
    assert load_vocoder(path, 2048, 512, RATE).cfg.n_fft == 2048
    with pytest.raises(Hw2Error, match="no such vocoder checkpoint"):
        load_vocoder(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Hw2Error, match="corrupt"):
        load_vocoder(tmp_path / "junk.pt")
    torch.save({"format": "hw2-openunmix-v1", "config": {}}, tmp_path / "sep.pt")
    with pytest.raises(Hw2Error, match="not an hw2 vocoder checkpoint"):
        load_vocoder(tmp_path / "sep.pt")


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x")]) == 2
    assert main(["--musdb-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_vocoder_method_through_the_separator(tmp_path):
    stems = make_stems(seed=5, duration=6.0)[:, : 6 * RATE - 211]
    mixture = stems[1:].sum(0)
    torch.manual_seed(0)
    model = OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1)).eval()
    path = tmp_path / "v.pt"
    save(tiny(), path)
    sep = Separator(model, chunk_dur=2.0, context_dur=0.5)  # several blocks
    with pytest.raises(Hw2Error, match="--vocoder"):
        sep.separate(mixture, ["vocoder"])
    sep.load_vocoder(path)
    out = sep.separate(mixture, ["mixture", "vocoder"])
    for t in ("vocals", "accompaniment"):
        assert out["vocoder"][t].shape == mixture.shape and out["vocoder"][t].dtype == np.float32
        assert np.isfinite(out["vocoder"][t]).all() and np.abs(out["vocoder"][t]).max() > 0
    save(tiny(n_fft=2048), tmp_path / "other.pt")
    with pytest.raises(Hw2Error, match="other STFT settings"):
        sep.load_vocoder(tmp_path / "other.pt")

    refs = references(mixture, stems[4], stems[1:4].sum(0), rows=["oracle-vocoder"], vocoder=sep.vocoder)
    assert refs["oracle-vocoder"]["vocals"].shape == mixture.shape


def test_infer_runs_the_vocoder_method_and_refuses_a_missing_vocoder(wav_root, tmp_path, capsys):
    from hw2.infer import main as infer

    run = tmp_path / "sep"
    train_separator(TrainConfig(musdb_root=str(wav_root), out=str(run), epochs=1, milestones=(), seq_dur=1.0,
                                batch_size=4, samples_per_track=2, hidden_size=16, nb_layers=1, quiet=True,
                                device="cpu"), log=lambda _: None)
    args = ["--musdb-root", str(wav_root), "--subset", "train", "--split", "valid", "--checkpoint",
            str(run / "best.pt"), "--samples", "0", "--jobs", "1", "--phase", "mixture", "vocoder"]
    assert infer([*args, "--vocoder", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such vocoder checkpoint" in err[0]
    assert not (tmp_path / "a").exists()

    save(tiny(), tmp_path / "v.pt")
    assert infer([*args, "--references", "--vocoder", str(tmp_path / "v.pt"), "--out", str(tmp_path / "b")]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "b" / "synth-train-valid.json").read_text())["rows"]}
    assert {"mixture", "vocoder", "oracle-vocoder", "oracle-irm"} <= set(rows)
