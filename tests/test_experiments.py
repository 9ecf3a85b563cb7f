"""The experiment runner on generated tracks with a tiny budget: rows, skipping done rows, the model variants."""
from __future__ import annotations

import json

import pytest
import torch

from hw2.experiments import GRIDS, main
from hw2.model import ModelConfig, build_model, count_parameters
from hw2.checkpoint import MAX_PARAMS
from hw2.config import TrainConfig

TINY = ["seq_dur=1", "samples_per_track=1", "batch_size=2", "n_fft=512", "n_hop=128", "valid_chunk_dur=0"]


@pytest.mark.parametrize("grid,name", [(g, n) for g in GRIDS for n in GRIDS[g]])
def test_every_variant_builds_under_the_limit_and_trains(grid, name):
    changes = GRIDS[grid][name][0]
    full = TrainConfig(**{"hidden_size": 256, **changes}).model_config()
    assert count_parameters(build_model(full)) < MAX_PARAMS
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**full.__dict__, "n_fft": 512, "n_hop": 128}))
    spec, mag = model.magnitude(torch.randn(2, 2, 4000))
    if model.complex_output:  # complex in, complex out
        est = model(spec)
        assert est.shape == spec.shape and est.is_complex()
        est.abs().sum().backward()
    else:
        est = model(mag)
        assert est.shape == mag.shape and (est >= 0).all()
        est.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing  # every parameter is on the path from input to output


def test_runner_writes_table_and_skips_done_rows(wav_root, tmp_path, capsys):
    argv = ["--musdb-root", str(wav_root), "--only", "no-lstm", "unet", "--epochs", "1", "--set", *TINY,
            "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]
    assert main(argv) == 0
    table = json.loads((tmp_path / "results" / "models.json").read_text())
    rows = {r["variant"]: r for r in table["rows"]}
    assert set(rows) == {"no-lstm", "unet"}
    for r in rows.values():
        assert r["pretrained"] is False and r["params"] > 0 and r["epochs"] == 1 and r["data"]["nb_tracks"] == 2
        assert r["data"]["split"] == "valid" and {"SDR", "SIR", "ISR", "SAR"} <= set(r["scores"]["vocals"])
        sdr = r["scores"]["vocals"]["SDR"]
        assert sdr is None or -60 < sdr < 60
    assert rows["unet"]["params"] != rows["no-lstm"]["params"]
    assert "| unet |" in (tmp_path / "results" / "models.md").read_text()
    from hw2.plots import figures_dir
    assert "2 variants" in (figures_dir() / "05_models.txt").read_text()  # the figure and its note
    capsys.readouterr()
    assert main(argv) == 0  # the same command again: nothing retrained
    assert capsys.readouterr().out.count("already in") == 2


def test_runner_bad_variant_is_one_line(wav_root, tmp_path, capsys):
    assert main(["--musdb-root", str(wav_root), "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err


def test_augment_grid_row_on_generated_tracks(wav_root, tmp_path):
    """CI's tiny ablation row: the loader without gain, swap and random track mixing trains and is scored."""
    from hw2.config import TrainConfig as C

    changes = GRIDS["augment"]["all-off"][0]
    assert (C(**changes).gain_low, C(**changes).swap, C(**changes).mixing) == (1.0, False, "coherent")
    argv = ["--musdb-root", str(wav_root), "--grid", "augment", "--only", "all-off", "--epochs", "1",
            "--set", *TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]
    assert main(argv) == 0
    table = json.loads((tmp_path / "results" / "augment.json").read_text())
    assert table["title"].startswith("Augmentation ablation") and [r["variant"] for r in table["rows"]] == ["all-off"]
    assert json.loads((tmp_path / "runs" / "augment" / "all-off" / "config.json").read_text())["mixing"] == "coherent"


def test_new_augmentation_fields_leave_finished_rows_comparable():
    """Rows trained before the offsets / pitch / stretch / sign-flip options keep matching their configs, so the
    runner does not retrain them; a row that uses an option differs."""
    from pathlib import Path

    from hw2.experiments import comparable, variant_config
    from hw2.config import ADDED_LATER

    cfg = variant_config("augment", "all-on", "root", 25, Path("runs"), {})
    assert not set(ADDED_LATER) & set(comparable(cfg)) and comparable(cfg)["seed"] == 42
    for name, field in (("no-offsets", "offsets"), ("pitch", "pitch_shift"), ("stretch", "time_stretch"),
                        ("sign-flip", "sign_flip")):
        changed = comparable(variant_config("augment", name, "root", 25, Path("runs"), {}))
        assert changed[field] == GRIDS["augment"][name][0][field] and changed != comparable(cfg)


def test_augment_rows_at_other_seeds_and_differences(wav_root, tmp_path, capsys, monkeypatch):
    """A `--set seed=N` repeat is its own row beside the base seed's; each row has its difference to all-on at
    its seed, the table the means over seeds, and the figure is written."""
    from hw2.plots import figures_dir

    monkeypatch.setenv("HW2_FIGURES", str(tmp_path / "figures"))  # not the report's figure

    argv = ["--musdb-root", str(wav_root), "--grid", "augment", "--epochs", "1", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "results"), "--set", *TINY]
    assert main(argv[:-len(TINY) - 1] + ["--only", "all-on", "sign-flip", "--set", *TINY]) == 0
    assert main(argv[:-len(TINY) - 1] + ["--only", "all-on", "--set", *TINY, "seed=7"]) == 0
    table = json.loads((tmp_path / "results" / "augment.json").read_text())
    rows = {r["variant"]: r for r in table["rows"]}
    assert list(rows) == ["all-on", "all-on-seed7", "sign-flip"]
    assert rows["all-on-seed7"]["config"]["seed"] == 7 and rows["all-on-seed7"]["base"] == "all-on"
    assert (tmp_path / "runs" / "augment" / "all-on-seed7" / "best.pt").is_file()
    assert rows["all-on"]["delta"] == rows["all-on-seed7"]["delta"] == {"vocals": 0.0, "accompaniment": 0.0}
    flip = rows["sign-flip"]
    assert flip["delta"]["vocals"] == round(flip["scores"]["vocals"]["SDR"] - rows["all-on"]["scores"]["vocals"]["SDR"], 2)
    # the grid's command at the base seed, then the repeat: every row from the one line
    base, repeat = table["command"].split(" && ")
    assert "seed=" not in base and base.endswith(f"--set {' '.join(TINY)}")
    assert repeat.endswith(f"--only all-on --set {' '.join(TINY)} seed=7")
    md = (tmp_path / "results" / "augment.md").read_text()
    assert "| Δ vocals | Δ accompaniment |" in md and "| all-on | 42, 7 |" in md
    assert (figures_dir() / "06_augment.png").is_file() and "seeds 7, 42" in (figures_dir() / "06_augment.txt").read_text()
    capsys.readouterr()
    assert main(argv[:-len(TINY) - 1] + ["--only", "all-on", "--set", *TINY, "seed=7"]) == 0
    assert "[all-on-seed7] already in" in capsys.readouterr().out


def test_grids_keep_their_base_recipe_after_the_default_changed():
    """Training defaults to coherent mixing (the ablation's winner) and the shipped model is now a blend; the grids'
    base stays the recipe their committed rows were trained with (the first shipped model's, incoherent mixing),
    so that their rows stay comparable and are not retrained."""
    from pathlib import Path

    from hw2.experiments import variant_config
    from hw2.config import TrainConfig

    results = Path(__file__).resolve().parents[1] / "results"
    assert TrainConfig().mixing == "coherent"
    for grid, base in (("models", "openunmix-256"), ("augment", "all-on")):
        row = next(r for r in json.loads((results / f"{grid}.json").read_text())["rows"] if r["variant"] == base)
        cfg = variant_config(grid, base, "root", 25, Path("runs"), {})
        assert cfg.mixing == "incoherent"
        for key in ("mixing", "gain_low", "gain_high", "swap", "seq_dur", "samples_per_track", "hidden_size"):
            assert getattr(cfg, key) == row["config"][key], (grid, key)
