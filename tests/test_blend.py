"""hw2.blend: several networks as one checkpoint that every command loads like a single model."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from hw2 import Hw2Error
from hw2.blend import Blend, blend_milestones, build, choose_weights, unpack
from hw2.model import ModelConfig, OpenUnmix, UNet
from hw2.separate import Separator
from hw2.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, model_from_checkpoint
from hw2.config import TrainConfig

from conftest import separation_track

REPO = Path(__file__).resolve().parents[1]


def _models():
    torch.manual_seed(0)
    a = OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1)).eval()
    b = UNet(ModelConfig(arch="unet", hidden_size=16, nb_layers=2)).eval()
    acc = UNet(ModelConfig(arch="unet", hidden_size=16, nb_layers=2)).eval()
    return a, b, acc


def _save(path: Path, model, target="vocals", epoch=3, **cfg) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(TrainConfig(target=target, **cfg)),
                "model": model.state_dict(), "epoch": epoch}, path)
    return path


@pytest.fixture(scope="module")
def mag():
    track = separation_track(seed=3, duration=3.0, length=3 * 44100)
    stft = OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1)).stft
    return stft(torch.from_numpy(track["mixture"].T.copy()))[None].abs()


def test_blend_is_the_weighted_average_of_its_members(mag):
    a, b, _ = _models()
    with torch.no_grad():
        va, vb = a(mag), b(mag)
        assert torch.allclose(Blend([a, b], [1.0, 0.0])(mag), va)
        assert torch.allclose(Blend([a, b], [0.3, 0.7])(mag), 0.3 * va + 0.7 * vb, atol=1e-6)
        vocals, rest = Blend([a, b], [0.5, 0.5]).targets(mag)
        assert torch.allclose(rest, torch.relu(mag - vocals))


def test_accompaniment_member_is_blended_with_the_residual(mag):
    a, _, acc = _models()
    with torch.no_grad():
        v = a(mag)
        for u in (0.0, 0.4, 1.0):
            vocals, accomp = Blend([a], [1.0], acc, u).targets(mag)
            assert torch.allclose(vocals, v)
            assert torch.allclose(accomp, u * acc(mag) + (1 - u) * torch.relu(mag - v), atol=1e-6)


def test_swap_averages_the_swapped_mixture(mag):
    a, _, _ = _models()
    with torch.no_grad():
        swapped = Blend([a], [1.0], swap=True)(mag)
        assert torch.allclose(swapped, 0.5 * (a(mag) + a(mag.flip(1)).flip(1)), atol=1e-6)
        assert not torch.allclose(swapped, a(mag))
        # a left/right mirrored mixture gives the mirrored estimate: the average is symmetric by construction
        assert torch.allclose(Blend([a], [1.0], swap=True)(mag.flip(1)), swapped.flip(1), atol=1e-5)


def test_bad_blends_are_refused():
    a, b, _ = _models()
    other = OpenUnmix(ModelConfig(hidden_size=16, nb_layers=1, n_fft=2048, n_hop=512))
    with pytest.raises(Hw2Error, match="different STFTs"):
        Blend([a, other], [0.5, 0.5])
    with pytest.raises(Hw2Error, match="summing to 1"):
        Blend([a, b], [0.5, 0.6])


def test_blend_checkpoint_loads_like_any_checkpoint(tmp_path):
    a, b, acc = _models()
    pa = _save(tmp_path / "a.pt", a, hidden_size=16, nb_layers=1, epoch=25)
    pb = _save(tmp_path / "b.pt", b, arch="unet", hidden_size=16, nb_layers=2, epoch=25)
    pc = _save(tmp_path / "acc.pt", acc, target="accompaniment", arch="unet", hidden_size=16, nb_layers=2, epoch=20)
    out = build([pa, pb], tmp_path / "blend.pt", accompaniment_path=pc, weights=[0.25, 0.5], swap=True,
                log=lambda s: None)
    ckpt = load_checkpoint(out)
    model, cfg = model_from_checkpoint(ckpt, out)
    assert isinstance(model, Blend) and cfg.target == "vocals"
    assert (model.weights, model.accompaniment_weight, model.swap) == ([0.25, 0.75], 0.5, True)
    assert ckpt["epoch"] == "25+25+20"
    sep = Separator.from_checkpoint(out)
    track = separation_track(seed=4, duration=2.0, length=2 * 44100)
    est = sep.separate(track["mixture"], ("mixture", "wiener"))
    ref = Blend([a, b], [0.25, 0.75], acc, 0.5, swap=True)
    direct = Separator(ref).separate(track["mixture"], ("mixture", "wiener"))
    for m in ("mixture", "wiener"):
        for t in ("vocals", "accompaniment"):
            assert est[m][t].shape == track["mixture"].shape
            np.testing.assert_allclose(est[m][t], direct[m][t], atol=1e-5)
    with pytest.raises(Hw2Error, match="already a blend"):
        build([out, pb], tmp_path / "again.pt", weights=[0.5], log=lambda s: None)
    with pytest.raises(Hw2Error, match="--members takes vocals models"):
        build([pc, pb], tmp_path / "again.pt", weights=[0.5], log=lambda s: None)


def test_choose_weights_picks_the_best_scored_point(synth):
    """On generated tracks: the chosen weight is the grid point with the highest vocals SDR."""
    from hw2.cache import open_cached

    _, root, cache = synth
    tracks = open_cached(root, "train", "valid", cache, progress=False)
    a, b, _ = _models()
    blend = Blend([a, b], [0.5, 0.5])
    scored = choose_weights(blend, tracks, log=lambda s: None)
    assert len(scored) == 11
    best = max(scored, key=lambda r: r["vocals"])
    assert blend.weights == [best["w"], round(1 - best["w"], 6)]


def test_blend_cli_error_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hw2.blend", "--members", str(tmp_path / "missing.pt"), "--out",
                        str(tmp_path / "b.pt")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such checkpoint" in r.stderr


def test_milestone_blends_take_the_best_blends_weights(tmp_path):
    a, b, _ = _models()
    for run, model, kw in (("ra", a, dict(hidden_size=16, nb_layers=1)),
                           ("rb", b, dict(arch="unet", hidden_size=16, nb_layers=2))):
        (tmp_path / run).mkdir()
        _save(tmp_path / run / "best.pt", model, epoch=30, **kw)
        for epoch in (25, 50):
            _save(tmp_path / run / f"epoch{epoch:03d}.pt", model, epoch=epoch, **kw)
    (tmp_path / "ra" / "epoch050.pt").unlink()  # only 25 is common to both runs
    (tmp_path / "blend").mkdir()
    best = build([tmp_path / "ra" / "best.pt", tmp_path / "rb" / "best.pt"], tmp_path / "blend" / "best.pt",
                 weights=[0.3], swap=True, log=lambda s: None)
    written = blend_milestones(best, log=lambda s: None)
    assert [p.name for p in written] == ["epoch025.pt"]
    ckpt = load_checkpoint(written[0])
    assert ckpt["epoch"] == 25 and ckpt["blend"]["weights"] == [0.3, 0.7] and ckpt["blend"]["swap"]


def test_ship_blend_writes_the_card_and_replaces_old_milestones(tmp_path):
    import json

    from hw2.card import ship_blend

    a, b, _ = _models()
    for run, model, kw in (("ra", a, dict(hidden_size=16, nb_layers=1)),
                           ("rb", b, dict(arch="unet", hidden_size=16, nb_layers=2, select_by="sdr", sdr_every=5))):
        (tmp_path / run).mkdir()
        _save(tmp_path / run / "best.pt", model, epoch=30, musdb_root=str(tmp_path / "nowhere"), **kw)
        _save(tmp_path / run / "epoch025.pt", model, epoch=25, **kw)
        (tmp_path / run / "config.json").write_text(json.dumps(asdict(TrainConfig(**kw))))
        (tmp_path / run / "history.json").write_text(json.dumps([{"epoch": 1, "seconds": 120.0, "valid_loss": 1.0}]))
    (tmp_path / "blend").mkdir()
    best = build([tmp_path / "ra" / "best.pt", tmp_path / "rb" / "best.pt"], tmp_path / "blend" / "best.pt",
                 weights=[0.4], log=lambda s: None)
    blend_milestones(best, log=lambda s: None)
    dest = tmp_path / "checkpoints"
    dest.mkdir()
    (dest / "epoch150.pt").write_bytes(b"an older model's milestone")
    ship_blend(best, dest, None)
    assert sorted(p.name for p in dest.glob("*.pt")) == ["epoch025.pt", "vocals.pt"]
    card = (dest / "MODEL_CARD.md").read_text()
    assert "weights | 0.4, 0.6 (in member order); the vocals weights fixed with `--weights`" in card
    assert "--weights 0.4 --musdb-root" in card and "a blend of 2 vocals models (" in card
    assert "spectrogram U-Net" in card and "Open-Unmix, hidden 16" in card
    assert "highest median vocals SDR" in card and "| 2.0 |" in card  # member 2's selection and minutes
    assert json.loads((dest / "blend.json").read_text())["weights"] == [0.4, 0.6]
    assert isinstance(model_from_checkpoint(load_checkpoint(dest / "vocals.pt"))[0], Blend)
    with pytest.raises(Hw2Error, match="not a blend checkpoint"):
        ship_blend(tmp_path / "ra" / "best.pt", dest, None)


def test_fixed_vocals_weight_still_searches_the_accompaniment_weight(synth):
    from hw2.cache import open_cached

    _, root, cache = synth
    tracks = open_cached(root, "train", "valid", cache, progress=False)
    a, b, acc = _models()
    blend = Blend([a, b], [0.3, 0.7], acc)
    scored = choose_weights(blend, tracks, log=lambda s: None, search_w=False)
    assert len(scored) == 11 and {r["w"] for r in scored} == {0.3} and blend.weights == [0.3, 0.7]
    assert blend.accompaniment_weight == max(scored, key=lambda r: r["accompaniment"])["u"]


def test_unpack_gives_back_the_members_and_their_milestones(tmp_path, mag):
    a, b, acc = _models()
    kws = (dict(hidden_size=16, nb_layers=1), dict(arch="unet", hidden_size=16, nb_layers=2))
    for run, model, kw in (("ra", a, kws[0]), ("rb", b, kws[1])):
        (tmp_path / run).mkdir()
        for name, epoch in (("best.pt", 30), ("epoch025.pt", 25)):
            _save(tmp_path / run / name, model, epoch=epoch, **kw)
    pc = _save(tmp_path / "acc.pt", acc, target="accompaniment", epoch=7, arch="unet", hidden_size=16, nb_layers=2)
    (tmp_path / "blend").mkdir()
    best = build([tmp_path / "ra" / "best.pt", tmp_path / "rb" / "best.pt"], tmp_path / "blend" / "best.pt",
                 weights=[0.3], log=lambda s: None)
    blend_milestones(best, log=lambda s: None)
    (tmp_path / "blend" / "history.json").write_text('{"epochs": []}')
    written = unpack(best, tmp_path / "out", log=lambda s: None)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in written) == [
        "member1/best.pt", "member1/epoch025.pt", "member2/best.pt", "member2/epoch025.pt"]
    m2 = load_checkpoint(tmp_path / "out" / "member2" / "epoch025.pt")
    assert m2["epoch"] == 25 and "blend" not in m2
    # member 1's history (shipped beside the blend) goes with it; there was no config.json to copy
    assert (tmp_path / "out" / "member1" / "history.json").read_text() == '{"epochs": []}'
    assert not (tmp_path / "out" / "member1" / "config.json").exists()
    # the members blend again, now with an accompaniment network, to the same vocals estimate
    again = build([tmp_path / "out" / "member1" / "best.pt", tmp_path / "out" / "member2" / "best.pt"],
                  tmp_path / "again.pt", accompaniment_path=pc, weights=[0.3, 0.0], log=lambda s: None)
    first, second = (model_from_checkpoint(load_checkpoint(p))[0].eval() for p in (best, again))
    with torch.no_grad():
        assert torch.equal(first(mag), second(mag))
    with pytest.raises(Hw2Error, match="not a blend checkpoint"):
        unpack(tmp_path / "ra" / "best.pt", tmp_path / "x")


# ------------------------------------------------------------------------------------- a complex member (issue 29)
def _complex_member():
    from hw2.model import TFCTDFNet

    torch.manual_seed(1)
    return TFCTDFNet(ModelConfig(arch="tfctdf", hidden_size=4, nb_layers=2, bandwidth=8000.0, tfc_layers=1,
                                 tdf_bottleneck=4)).eval()


def test_a_complex_member_makes_a_complex_blend_whose_phases_combine_as_documented(mag):
    """Magnitude members take the mixture's phase, the complex member keeps its own, the vocals are the weighted
    complex sum, and the accompaniment is the mixture minus them; the accompaniment network is blended on the
    mixture's phase."""
    a, b, acc = _models()
    c = _complex_member()
    track = separation_track(seed=3, duration=3.0, length=3 * 44100)
    X = a.stft(torch.from_numpy(track["mixture"].T.copy()))[None]
    phase = X / X.abs().clamp_min(1e-12)  # silent bins (the track starts with silence) have no phase
    with torch.no_grad():
        blend = Blend([a, b, c], [0.3, 0.3, 0.4])
        assert blend.complex_output
        vocals, rest = blend.targets(X)
        expected = 0.3 * a(X.abs()) * phase + 0.3 * b(X.abs()) * phase + 0.4 * c(X)
        torch.testing.assert_close(vocals, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(vocals + rest, X)
        withacc = Blend([a, c], [0.5, 0.5], acc, 0.4).targets(X)[1]
        v2 = Blend([a, c], [0.5, 0.5])(X)
        torch.testing.assert_close(withacc, 0.4 * acc(X.abs()) * phase + 0.6 * (X - v2), rtol=1e-4, atol=1e-4)


def test_a_third_member_joins_a_fixed_pair(synth):
    """Three members: the first two keep the ratio of --weights, the third's weight t is the best point of the
    grid, scored with the blend's own phase."""
    from hw2.cache import open_cached

    _, root, cache = synth
    tracks = open_cached(root, "train", "valid", cache, progress=False)
    a, b, _ = _models()
    blend = Blend([a, b, _complex_member()], [0.5, 0.5, 0.0])
    scored = choose_weights(blend, tracks, log=lambda s: None)
    assert len(scored) == 11 and {r["w"] for r in scored} == {0.5}
    best = max(scored, key=lambda r: r["vocals"])
    assert blend.weights == [round((1 - best["t"]) * 0.5, 6)] * 2 + [best["t"]]


def test_the_weight_search_as_a_results_table(tmp_path, wav_root):
    """--table: every point scored on the valid split, in the JSON the report reads and a Markdown table, with
    the command; the chosen weights are the checkpoint's."""
    from hw2.blend import main

    a, b, _ = _models()
    paths = [_save(tmp_path / "a.pt", a, hidden_size=16, nb_layers=1),
             _save(tmp_path / "b.pt", b, arch="unet", hidden_size=16, nb_layers=2),
             _save(tmp_path / "c.pt", _complex_member(), arch="tfctdf", hidden_size=4, nb_layers=2, bandwidth=8000.0,
                   tfc_layers=1, tdf_bottleneck=4)]
    out, table = tmp_path / "blend.pt", tmp_path / "results" / "blend-c"
    assert main(["--members", *map(str, paths), "--weights", "0.5", "--musdb-root", str(wav_root),
                 "--out", str(out), "--table", str(table)]) == 0
    doc = json.loads(table.with_suffix(".json").read_text())
    assert [r["t"] for r in doc["rows"]] == [round(0.1 * i, 1) for i in range(11)]
    assert doc["weights_chosen"] == load_checkpoint(out)["blend"]["weights"]
    best = max(doc["rows"], key=lambda r: r["vocals"])
    assert doc["weights_chosen"][2] == best["t"] and doc["data"]["split"] == "valid"
    assert "own" in doc["method"] and doc["command"].startswith("python -m hw2.blend --members")
    md = table.with_suffix(".md").read_text()
    assert "| t | vocals SDR | accompaniment SDR |" in md and f"| {best['t']:.1f} | {best['vocals']:.2f} |" in md


def test_milestone_blends_of_three_members_keep_all_three_weights(tmp_path):
    """A third member's t is fixed by --weights w u t; the milestones take the best blend's three weights and
    its u, with no valid split to search on."""
    a, b, _ = _models()
    runs = {"ra": (a, dict(hidden_size=16, nb_layers=1)), "rb": (b, dict(arch="unet", hidden_size=16, nb_layers=2)),
            "rc": (_complex_member(), dict(arch="tfctdf", hidden_size=4, nb_layers=2, bandwidth=8000.0, tfc_layers=1,
                                          tdf_bottleneck=4)),
            "acc": (_models()[2], dict(arch="unet", hidden_size=16, nb_layers=2))}
    for run, (model, kw) in runs.items():
        (tmp_path / run).mkdir()
        target = "accompaniment" if run == "acc" else "vocals"
        for name, epoch in (("best.pt", 30), ("epoch025.pt", 25)):
            _save(tmp_path / run / name, model, target=target, epoch=epoch, **kw)
    (tmp_path / "blend").mkdir()
    best = build([tmp_path / r / "best.pt" for r in ("ra", "rb", "rc")], tmp_path / "blend" / "best.pt",
                 accompaniment_path=tmp_path / "acc" / "best.pt", weights=[0.5, 0.4, 0.2], log=lambda s: None)
    entry = load_checkpoint(best)["blend"]
    assert entry["weights"] == [0.4, 0.4, 0.2] and entry["accompaniment_weight"] == 0.4 and entry["scored"] == []
    written = blend_milestones(best, log=lambda s: None)
    milestone = load_checkpoint(written[0])["blend"]
    assert [p.name for p in written] == ["epoch025.pt"] and milestone["weights"] == [0.4, 0.4, 0.2]
    assert milestone["accompaniment_weight"] == 0.4
    from hw2.card import ship_blend

    (tmp_path / "ra" / "config.json").write_text(json.dumps(asdict(TrainConfig(hidden_size=16, nb_layers=1))))
    (tmp_path / "ra" / "history.json").write_text("[]")
    card = (ship_blend(best, tmp_path / "ship", None) / "MODEL_CARD.md").read_text()
    assert "complex estimates" in card and "own predicted phase" in card
    assert "--weights 0.5 0.4 0.2 " in card  # the card's blend command rebuilds the same three weights
