"""hw2.report: both PDFs from small synthetic inputs, checked with poppler (pdftotext, pdfinfo, pdftoppm)."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hw2 import report

POPPLER = all(shutil.which(t) for t in ("pdftotext", "pdfinfo", "pdftoppm"))
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext, pdfinfo, pdftoppm) not installed")

DATA = {"root": "/data/musdb18", "subset": "test", "split": None, "nb_tracks": 50, "format": "stem"}
CONFIG = {"musdb_root": "/data/musdb18", "out": "runs/vocals", "target": "vocals", "epochs": 150,
          "milestones": [25, 50, 150], "seq_dur": 6.0, "batch_size": 16, "samples_per_track": 64,
          "sampler": "balanced", "mixing": "incoherent", "gain_low": 0.25, "gain_high": 1.25, "swap": True,
          "lr": 0.001, "weight_decay": 1e-05, "lr_decay_patience": 80, "lr_decay_gamma": 0.3, "patience": 140,
          "n_fft": 4096, "n_hop": 1024, "hidden_size": 512, "nb_layers": 3, "bandwidth": 16000.0,
          "nb_channels": 2, "unidirectional": False, "seed": 42, "amp": True}
README = """# Inference guide

Run the **trained model** on the MUSDB18 test set; see [Open-Unmix](https://github.com/sigsep/open-unmix-pytorch).

## Install

- Python 3.11
- `pip install -r requirements.txt`
  with a continuation line

```bash
python hw2/infer.py --musdb-root /path/to/musdb18 --checkpoint checkpoints/best.pt --out results/test.json --and-a-very-long-flag-that-must-wrap-somewhere-on-the-page
```

### Outputs

| file | what |
|------|------|
| results/test.json | SDR table |

1. first step
2. second step
"""


def _scores(v_sdr, a_sdr):
    return {"vocals": {"SDR": v_sdr, "SIR": v_sdr + 4.0, "ISR": v_sdr + 3.0, "SAR": v_sdr + 1.0},
            "accompaniment": {"SDR": a_sdr, "SIR": a_sdr + 5.0, "ISR": a_sdr + 6.0, "SAR": a_sdr + 0.5}}


def _row(label, ckpt, epoch, method, v, a):
    return {"label": label, "checkpoint": ckpt, "epoch": epoch, "method": method, "scores": _scores(v, a)}


def make_inputs(root: Path) -> dict:
    """Synthetic results, history, config, model card, a figure and a README under `root`."""
    (root / "results").mkdir(parents=True)
    common = {"created": "2024-10-20T12:00:00", "hw2_version": "0.1.0", "data": DATA}
    epochs = {"title": "Epoch comparison", "command": "python hw2/infer.py --musdb-root $MUSDB --epochs 25 50 150",
              "rows": [_row("epoch 25 / mixture", "checkpoints/epoch025.pt", 25, "mixture", 3.02, 11.10),
                       _row("epoch 50 / mixture", "checkpoints/epoch050.pt", 50, "mixture", 3.87, 11.95),
                       _row("epoch 150 / mixture", "checkpoints/epoch150.pt", 150, "mixture", 4.21, 12.34)],
              **common}
    best = {"title": "Phase methods on the best epoch",
            "command": "python hw2/infer.py --musdb-root /data/musdb18 --checkpoint checkpoints/epoch150.pt "
                       "--gl-iters 32 --out results/test_best.json",
            "rows": [_row("epoch 150 / mixture", "checkpoints/epoch150.pt", 150, "mixture", 4.21, 12.34),
                     _row("epoch 150 / griffinlim", "checkpoints/epoch150.pt", 150, "griffinlim", 1.93, 9.87),
                     _row("epoch 150 / griffinlim-mix", "checkpoints/epoch150.pt", 150, "griffinlim-mix", 3.55,
                          11.02),
                     _row("mix-as-estimate", None, None, "mix-as-estimate", -6.48, 5.77),
                     _row("oracle-irm", None, None, "oracle-irm", 8.86, float("nan"))],
            **common}
    (root / "results" / "test_epochs.json").write_text(json.dumps(epochs))
    (root / "results" / "test_best.json").write_text(json.dumps(best))
    run = root / "run"
    run.mkdir()
    hist = [{"epoch": e, "train_loss": 2.0 / e + 0.1, "valid_loss": 2.2 / e + 0.15 + (0.002 * e if e > 20 else 0),
             "lr": 1e-3 if e < 20 else 3e-4, "seconds": 60.0 + e % 3, "best": e <= 20} for e in range(1, 31)]
    (run / "history.json").write_text(json.dumps(hist))
    (run / "config.json").write_text(json.dumps(CONFIG))
    (run / "MODEL_CARD.md").write_text("# Model card\n\nOpen-Unmix vocals model, trained from scratch.\n\n"
                                       "- 8,893,348 parameters\n- trained on MUSDB18 train (86 tracks)\n")
    figs = root / "figures"
    figs.mkdir()
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 2.5), dpi=50)
    ax = fig.add_subplot()
    ax.plot(np.arange(10), np.arange(10) ** 2, color="C1")
    ax.set_title("durations")
    fig.savefig(figs / "01_durations.png")
    (root / "README.md").write_text(README)
    return {"results": root / "results", "history": run / "history.json", "config": run / "config.json",
            "card": run / "MODEL_CARD.md", "figures": figs, "readme": root / "README.md"}


def pdftext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    inp = make_inputs(root)
    out, readme_out = root / "out" / "report.pdf", root / "out" / "README.pdf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "ROOT", root)  # defaults and displayed paths relative to the fixture, not the repo
        rc = report.main(["--results", str(inp["results"]), "--runs-history", str(inp["history"]),
                          "--model-card", str(inp["card"]), "--figures", str(inp["figures"]), "--out", str(out),
                          "--readme", str(inp["readme"]), "--readme-out", str(readme_out), "--author",
                          "Ada Lovelace", "--student-id", "r12345678", "--repo-url", "https://example.org/hw2"])
    assert rc == 0
    return {"root": root, "out": out, "readme_out": readme_out, **inp}


def test_both_pdfs_written_atomically(built):
    assert built["out"].is_file() and built["readme_out"].is_file()
    assert built["out"].read_bytes()[:5] == b"%PDF-"
    assert not [p for p in built["out"].parent.iterdir() if p.name.endswith(".tmp")]


@needs_poppler
def test_report_is_16_9_and_has_every_section(built):
    info = subprocess.run(["pdfinfo", str(built["out"])], check=True, capture_output=True, text=True).stdout
    w, h = map(float, next(l for l in info.splitlines() if l.startswith("Page size:")).split()[2:5:2])
    assert abs(w / h - 16 / 9) < 1e-3
    text = pdftext(built["out"])
    low = text.lower()
    for section in ("novelty highlight", "methodology highlight", "result highlight", "findings highlight",
                    "details of the approach", "result analysis & discussion"):
        assert section in low, section
    assert "HW2 Source Separation: vocals /" in text
    assert "Ada Lovelace" in text and "r12345678" in text and "https://example.org/hw2" in text


@needs_poppler
def test_report_numbers_and_provenance(built):
    text = pdftext(built["out"])
    # the main table: best checkpoint, mixture phase vs Griffin-Lim, both targets, and their difference
    for number in ("4.21", "1.93", "12.34", "9.87", "-2.28", "-2.47", "3.02", "3.87", "8.86", "-6.48"):
        assert number in text, number
    assert "Best checkpoint: checkpoints/epoch150.pt (epoch 150)" in text
    # findings computed from the rows
    assert "2.28 dB higher with the mixture phase" in text
    # provenance: file, command, data, checkpoint
    assert "Source: results/test_best.json" in text and "Source: results/test_epochs.json" in text
    assert "command: python hw2/infer.py --musdb-root $MUSDB --epochs 25 50 150" in text
    assert "subset test" in text and "50 tracks" in text
    assert "checkpoint: checkpoints/epoch025.pt" in text
    # parameters from the config, the history, the model card and the notebook figure
    assert "8,893,348" in text
    assert "History:" in text and "history.json" in text
    assert "Model card" in text and "trained from scratch" in text
    assert "Figure 1: Durations" in text and "notebooks/01_" in text
    assert "--gl-iters" in text
    assert "No results yet" not in text


@needs_poppler
def test_readme_pdf(built):
    text = " ".join(pdftext(built["readme_out"]).split())
    for s in ("Inference guide", "Install", "Outputs", "pip install -r requirements.txt",
              "Open-Unmix (https://github.com/sigsep/open-unmix-pytorch)", "results/test.json", "second step"):
        assert s in text, s
    assert "**" not in text and "```" not in text
    assert "--and-a-very-long-flag" in text and "somewhere-on-the-page" in text  # wrapped, not clipped


@needs_poppler
def test_page_renders_not_blank(built, tmp_path):
    prefix = tmp_path / "page"
    for n in (1, 4):
        subprocess.run(["pdftoppm", "-png", "-r", "30", "-f", str(n), "-l", str(n), "-singlefile",
                        str(built["out"]), f"{prefix}{n}"], check=True)
        png = Path(f"{prefix}{n}.png")
        assert png.is_file()
        from matplotlib import image
        img = image.imread(png)
        assert img.shape[1] / img.shape[0] == pytest.approx(16 / 9, rel=0.02)
        assert img.std() > 0.05  # not a blank page


@needs_poppler
def test_without_results_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)  # no checkpoints/history.json of the real repo
    out = tmp_path / "r.pdf"
    empty = tmp_path / "results"
    empty.mkdir()
    rc = report.main(["--results", str(empty), "--config", str(_write(tmp_path / "c.json", CONFIG)),
                      "--figures", str(empty), "--out", str(out), "--no-readme"])
    assert rc == 0
    text = pdftext(out)
    assert "No results yet" in text
    assert "No training history yet" in text
    assert not re.search(r"\b\d+\.\d\d dB", text)  # no invented scores


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_bad_results_json_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "results"
    bad.mkdir()
    (bad / "x.json").write_text("{not json")
    out = tmp_path / "r.pdf"
    rc = report.main(["--results", str(bad), "--out", str(out), "--no-readme"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "x.json" in err
    assert not out.exists()


def test_missing_readme_is_one_line_error(tmp_path, capsys):
    rc = report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.pdf"),
                      "--readme", str(tmp_path / "nope.md"), "--readme-out", str(tmp_path / "R.pdf")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "nope.md" in err
    assert not (tmp_path / "r.pdf").exists()


def test_analysis_choices():
    rf = report.ResultFile(Path("r.json"), "t", "cmd", "now", "0.1.0", DATA, {})
    rows = [("a", "c/e25.pt", 25, "mixture", 3.0), ("b", "c/e150.pt", 150, "mixture", 4.0),
            ("c", "c/e150.pt", 150, "griffinlim", 2.0), ("d", None, None, "oracle-irm", 9.0)]
    rf.rows = [report.Row(l, c, e, m, _scores(v, v + 8), rf) for l, c, e, m, v in rows]
    res = report.Results([rf])
    assert res.best_ckpt == "c/e150.pt"  # the checkpoint Griffin-Lim was run on
    assert [r.method for r in res.best_rows()] == ["mixture", "griffinlim"]
    assert [r.epoch for r in res.epoch_rows()] == [25, 150]
    assert [r.method for r in res.references()] == ["oracle-irm"]
    assert math.isnan(report.Row("x", None, None, "mixture", {"vocals": {"SDR": None}}, rf).score("vocals"))
    assert rf.partial_note() == ""
    rf.data = {**DATA, "nb_tracks": 1}
    assert "only 1 of the 50 test tracks" in rf.partial_note() and rf.short_data() == "MUSDB18 test, 1 track"


def test_markdown_blocks():
    blocks = report.parse_markdown(README)
    kinds = [b[0] for b in blocks]
    assert kinds[:2] == ["h", "p"] and "code" in kinds and "table" in kinds
    assert ("h", 2, "Install") in blocks
    assert ("table", [["file", "what"], ["results/test.json", "SDR table"]]) in blocks
    assert report.parse_markdown("| | |\n|---|---|\n| a | b |") == [("table", [["", ""], ["a", "b"]])]
    assert any(b[0] == "li" and b[3] == "pip install -r requirements.txt with a continuation line" for b in blocks)
    assert report.inline("see [docs](http://x.y) and **bold** `code`") == "see docs (http://x.y) and bold code"
    assert report.inline("`runs/<run>/history.json`<br>[![Colab](b.svg)](http://c)") == \
        "runs/<run>/history.json Colab (http://c)"


def test_wrap_respects_width():
    text = "word " * 60 + "x" * 200
    lines = report.wrap(text, 3.0, 11)
    assert len(lines) > 5 and all(report.text_width(l, 11) <= 3.0 + 1e-9 for l in lines)


def test_param_count_matches_model():
    torch = pytest.importorskip("torch")
    from hw2.model import ModelConfig, OpenUnmix, count_parameters
    for cfg in (CONFIG, {**CONFIG, "hidden_size": 256, "nb_channels": 1, "bandwidth": 8000.0},
                {**CONFIG, "unidirectional": True, "nb_layers": 2, "n_fft": 2048}):
        model = OpenUnmix(ModelConfig.from_dict(cfg))
        assert sum(n for *_, n in report.param_breakdown(cfg)) == count_parameters(model)
    del torch

