"""hw2.stats, hw2.plots, hw2.score_plots and hw2.players: the numbers behind the figures (levels, activity, plan
statistics), that every figure function returns a Figure, that save_figure writes where $HW2_FIGURES says, and
that the players build. hw2.notebook's pure helpers too."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from hw2 import notebook, players, plots, score_plots, stats
from hw2 import RATE
from hw2.cache import CachedTrack
from hw2.sampling import STRATEGIES, ExcerptSampler, plan_epoch
from hw2.tracks import STEMS


def sine(amplitude: float, seconds: float, freq: float = 440.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def make_track(stems: dict[str, np.ndarray], name: str = "t", rate: int = RATE) -> CachedTrack:
    """A cached track from float (nb_samples,) signals per source; missing sources are silent, the mixture sums."""
    n = len(next(iter(stems.values())))
    audio = np.zeros((5, 2, n), np.float64)
    for k, s in enumerate(STEMS[1:], start=1):
        if s in stems:
            audio[k] = stems[s]
    audio[0] = audio[1:].sum(0)
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    return CachedTrack(name, pcm, rate)


# ------------------------------------------------------------------------------------------------------ levels
def test_rms_db_of_known_signals():
    assert stats.rms_db(sine(1.0, 1.0)) == pytest.approx(-3.0103, abs=1e-3)  # full-scale sine
    assert stats.rms_db(sine(0.5, 1.0)) == pytest.approx(-9.0309, abs=1e-3)  # half amplitude: -6 dB more
    assert stats.rms_db(np.ones(100)) == pytest.approx(0.0)
    assert stats.rms_db(np.zeros(100)) == stats.FLOOR_DB
    assert stats.rms_db(np.zeros(100), floor_db=-60) == -60


def test_stem_loudness_per_stem_and_track():
    rate = 8000
    a = make_track({"vocals": sine(0.5, 2.0, rate=rate), "bass": sine(0.25, 2.0, 60, rate=rate)}, rate=rate)
    b = make_track({"drums": sine(0.1, 2.0, rate=rate)}, rate=rate)
    loud = stats.stem_loudness([a, b])
    assert loud.shape == (2, 5)
    vocals, bass, drums = STEMS.index("vocals"), STEMS.index("bass"), STEMS.index("drums")
    assert loud[0, vocals] == pytest.approx(-9.03, abs=0.01)
    assert loud[0, bass] == pytest.approx(-15.05, abs=0.01)
    assert loud[0, drums] == stats.FLOOR_DB  # silent
    assert loud[1, drums] == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.01)


def test_vocal_activity_of_gated_vocals():
    rate = 8000
    gate = np.repeat([1, 1, 0, 1, 0], rate).astype(float)  # vocals in seconds 0, 1 and 3 of 5
    gated = make_track({"vocals": sine(0.5, 5.0, rate=rate) * gate, "drums": sine(0.5, 5.0, rate=rate)}, rate=rate)
    silent = make_track({"drums": sine(0.5, 5.0, rate=rate)}, rate=rate)
    assert stats.vocal_activity([gated, silent]) == pytest.approx([0.6, 0.0])
    # frames of 2.5 s: both hold some vocals, and their level is above -40 dB
    assert stats.vocal_activity([gated], frame_dur=2.5) == pytest.approx([1.0])
    # above any level the track reaches, nothing counts
    assert stats.vocal_activity([gated], threshold_db=0.0) == pytest.approx([0.0])


def test_frame_rms_db_frames():
    rate = 1000
    x = np.concatenate([np.ones(rate), np.zeros(rate), 0.5 * np.ones(rate // 2)])  # 2.5 s
    levels = stats.frame_rms_db(np.stack([x, x]), rate, 1.0)
    assert levels == pytest.approx([0.0, stats.FLOOR_DB])  # the last half frame is dropped
    assert stats.frame_rms_db(0.5 * np.ones(10), rate, 1.0) == pytest.approx([-6.0206], abs=1e-3)  # < 1 frame


def test_track_durations():
    t = CachedTrack("x", np.zeros((5, 2, 3 * RATE), np.int16))
    assert stats.track_durations([t, t]) == pytest.approx([3.0, 3.0])


# ------------------------------------------------------------------------------------------------------ plans
LENGTHS = [10_000, 7_000, 12_000, 5_000]
EXCERPT = 1_000


def test_plan_stats_balanced_and_roundrobin():
    balanced = plan_epoch("balanced", LENGTHS, EXCERPT, batch_size=4, samples_per_track=3, seed=1)
    s = stats.plan_stats(balanced, LENGTHS, EXCERPT)
    assert s["nb_excerpts"] == 12 and s["nb_batches"] == 3
    assert list(s["excerpts_per_track"]) == [3, 3, 3, 3]
    assert (s["tracks_per_batch"] + s["repeats_per_batch"] == 4).all()
    rr = stats.plan_stats(plan_epoch("roundrobin", LENGTHS, EXCERPT, batch_size=4), LENGTHS, EXCERPT)
    assert (rr["repeats_per_batch"] == 0).all()


def test_coverage_of_the_grid_and_of_overlaps():
    seq = plan_epoch("sequential", LENGTHS, EXCERPT, batch_size=4)
    # every whole excerpt on a hop = excerpt grid: all of each track, as the lengths are multiples
    assert stats.plan_stats(seq, LENGTHS, EXCERPT)["coverage"] == pytest.approx(1.0)
    # overlapping excerpts count once: [0, 1000) and [500, 1500) cover 1500 samples of track 0
    pairs = np.array([[0, 0], [0, 500], [1, 6000]])
    assert stats.plan_stats([pairs], LENGTHS, EXCERPT)["coverage"] == pytest.approx(2500 / sum(LENGTHS))


def test_strategy_stats_table():
    plans = {s: stats.plan_epochs(s, LENGTHS, EXCERPT, 2, batch_size=4, samples_per_track=3, seed=0)
             for s in STRATEGIES}
    table = stats.strategy_stats(plans, LENGTHS, EXCERPT)
    assert list(table.index) == list(STRATEGIES)
    assert table.loc["roundrobin", "repeats/batch"] == 0
    assert table.loc["sequential", "epoch 2 seen in epoch 1"] == 1.0
    assert table.loc["balanced", "min excerpts/track"] == table.loc["balanced", "max excerpts/track"] == 3
    text = stats.plan_table(plans, epoch=0, nb_batches=2)
    assert len(text) == 2 * len(STRATEGIES)


# ------------------------------------------------------------------------------------------------------ figures
@pytest.fixture
def tracks():
    rate = 8000
    return [make_track({"vocals": sine(0.3, 4.0, 300 + 50 * i, rate), "bass": sine(0.3, 4.0, 55, rate),
                        "drums": np.random.default_rng(i).uniform(-0.1, 0.1, 4 * rate),
                        "other": sine(0.1, 4.0, 700, rate)}, f"track {i}", rate=rate)
            for i in range(3)]


def test_figures_are_figures_and_save_figure_writes_png(tracks, tmp_path, monkeypatch):
    monkeypatch.setenv("HW2_FIGURES", str(tmp_path / "figs"))
    lengths = [t.nb_samples for t in tracks]
    plans = {s: stats.plan_epochs(s, lengths, 8000, 2, batch_size=2, samples_per_track=2) for s in STRATEGIES}
    sampler = ExcerptSampler(tracks, 0.5, batch_size=2, seed=0)
    history = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e + 0.01 * e, "lr": 1e-3, "seconds": 2.0,
                "best": True} for e in range(1, 6)]
    figures = {
        "durations": plots.plot_durations({"train": stats.track_durations(tracks[:2]),
                                           "valid": stats.track_durations(tracks[2:])}),
        "loudness": plots.plot_loudness(stats.stem_loudness(tracks)),
        "activity": plots.plot_vocal_activity(stats.vocal_activity(tracks)),
        "spectrograms": plots.plot_spectrograms(tracks[0], dur=2.0),
        "coverage": plots.plot_coverage(plans, lengths, 8000),
        "order": plots.plot_batch_order(plans),
        "stats": plots.plot_strategy_stats(plans, lengths, 8000),
        "batch": plots.plot_batch({"a": sampler.batch(0, 0), "b": sampler.batch(0, 1)}, rate=8000, nb_examples=2),
        "history": plots.plot_history(history),
        "history_empty": plots.plot_history([]),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
    path = plots.save_figure(figures["loudness"], "01_loudness", note="Data: three sines.")
    assert path == tmp_path / "figs" / "01_loudness.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.with_suffix(".txt").read_text().strip() == "Data: three sines."
    plots.save_figure(figures["loudness"], "01_loudness.png")  # no note: the stale one goes
    assert not path.with_suffix(".txt").exists()


def test_figures_dir_default_is_the_repository(monkeypatch):
    monkeypatch.delenv("HW2_FIGURES", raising=False)
    assert plots.figures_dir() == notebook.REPO / "report" / "figures"


def test_a_smoke_run_never_writes_the_reports_figures(monkeypatch, tmp_path):
    """Without $HW2_FIGURES (a user's smoke run, not the tests'), smoke figures go to a scratch folder; every
    notebook passes its SMOKE, so none can replace report/figures/ with a figure of a few generated tracks."""
    import json

    monkeypatch.delenv("HW2_FIGURES", raising=False)
    monkeypatch.setattr(plots, "SMOKE_FIGURES", tmp_path / "scratch")
    report = notebook.REPO / "report" / "figures" / "01_loudness.png"
    before = report.read_bytes() if report.exists() else None
    path = plots.save_figure(plots.new_figure(2, 2), "01_loudness", note="smoke", smoke=True)
    assert path == tmp_path / "scratch" / "01_loudness.png" and path.is_file()
    assert (report.read_bytes() if report.exists() else None) == before
    calls = [line for nb in sorted((notebook.REPO / "notebooks").glob("*.ipynb"))
             for cell in json.loads(nb.read_text())["cells"] if cell["cell_type"] == "code"
             for line in cell["source"] if "save_figure(" in line]
    assert calls and all("smoke=SMOKE" in line for line in calls), calls


def test_history_from_a_run_folder(tmp_path):
    rows = [{"epoch": 1, "train_loss": 2.0, "valid_loss": 3.0, "lr": 1e-3, "seconds": 1.5, "best": True}]
    (tmp_path / "history.json").write_text(__import__("json").dumps(rows))
    assert stats.load_history(tmp_path) == rows
    assert stats.history_table(tmp_path).loc[1, "valid_loss"] == 3.0
    assert isinstance(plots.plot_history(tmp_path), Figure)


def test_history_of_a_run_selected_by_sdr(tmp_path):
    """A complex run trained on the waveform and kept by valid SDR: the loss axis names its loss, a panel draws
    the valid SDR, and the star and the note take the epoch best.pt holds, not the lowest valid loss."""
    import json

    rows = [{"epoch": e, "train_loss": 1 / e, "valid_loss": [0.5, 0.4, 0.3, 0.35, 0.36][e - 1], "lr": 1e-3,
             "seconds": 2.0, "best": e in (1, 4), "valid_sdr": {1: 1.0, 4: 2.5}.get(e)} for e in range(1, 6)]
    (tmp_path / "history.json").write_text(json.dumps(rows))
    (tmp_path / "config.json").write_text(json.dumps({"arch": "tfctdf", "loss": "wave-l1", "select_by": "sdr"}))
    fig = plots.plot_history(tmp_path)
    loss_ax, sdr_ax = fig.axes[:2]
    assert len(fig.axes) == 4 and loss_ax.get_ylabel() == "L1 of waveforms"
    assert list(sdr_ax.lines[0].get_ydata()) == [1.0, 2.5] and "own phase" in sdr_ax.get_title()
    assert "best.pt: epoch 4" in [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert "best epoch 4 (valid vocals SDR 2.50 dB)" in plots.history_note(tmp_path)
    assert stats.loss_name({"arch": "tfctdf"}) == "MSE of complex spectra"
    assert stats.loss_name({}) == "MSE of magnitudes"
    assert len(plots.plot_history(rows).axes) == 4  # a bare list: no config, the SDR panel still drawn
    assert plots.plot_history(rows).axes[0].get_ylabel() == "MSE of magnitudes"


def test_describe_batch(tracks):
    sampler = ExcerptSampler(tracks, 0.5, batch_size=2, seed=0)
    table = stats.describe_batch(sampler)
    assert table.shape == (2, 4) and list(table.columns) == ["drums", "bass", "other", "vocals"]


# ------------------------------------------------------------------------------------------------------ players
def test_audio_player_layouts():
    stereo = np.stack([sine(0.5, 1.0), sine(0.2, 1.0)])  # (2, 8000)
    for x in (stereo, stereo.T, stereo[0]):
        assert players.audio_player(x, 8000).data  # WAV bytes
    short = players.audio_player(stereo, 8000, start=0.25, dur=0.5)
    mono = players.audio_player(stereo, 8000, mono=True)
    assert len(short.data) < len(players.audio_player(stereo, 8000).data)
    assert len(mono.data) < len(players.audio_player(stereo, 8000).data)


def test_players_and_picker_build(tracks):
    assert "<audio" in players.stem_players(tracks[0], 0, 0.5).data
    picker = players.track_picker(tracks, 0.0, 0.5)
    dropdown, out = picker.children
    assert len(out.outputs) == 2  # players and spectrogram of the first track
    dropdown.value = 2
    assert len(out.outputs) == 2


# ------------------------------------------------------------------------------------------------------ notebook
def test_epoch_estimate_extrapolates():
    speed = {"device": "cpu", "batch_size": 16, "seq_dur": 6.0, "nb_steps": 3, "batch_seconds": 0.2,
             "step_seconds": 0.3, "nb_workers": 0}
    est = notebook.epoch_estimate(speed, nb_tracks=86, samples_per_track=64, epochs=10)
    assert est["steps per epoch"] == 344
    assert est["seconds per step"] == pytest.approx(0.5)
    assert est["minutes per epoch"] == pytest.approx(344 * 0.5 / 60, abs=0.01)
    workers = notebook.epoch_estimate({**speed, "nb_workers": 2}, nb_tracks=86)
    assert workers["seconds per step"] == pytest.approx(0.3)  # batch building overlaps the step


def test_subset_root_links_the_first_tracks(wav_root, tmp_path):
    out = notebook.subset_root(wav_root, nb_train=2, nb_valid=1, nb_test=1, out=tmp_path / "sub")
    names = sorted(p.name for p in (out / "train").iterdir())
    assert len(names) == 3 and all((out / "train" / n).is_symlink() for n in names)
    assert len(list((out / "test").iterdir())) == 1
    valid = [n for n in names if n in notebook.validation_names()]
    assert len(valid) == 1
    again = notebook.subset_root(wav_root, nb_train=1, nb_valid=1, nb_test=0, out=tmp_path / "sub")
    assert len(list((again / "train").iterdir())) == 2
    assert "first tracks of" in notebook.data_note(again, {"train": [1], "valid": [1]})


# ------------------------------------------------------------------------------------------- phase (notebook 04)
def sdr_rows() -> list[dict]:
    """Rows as hw2.infer.run returns them: a model row, one with an unscorable target, a reference row."""
    def scores(v, a):
        return {"vocals": {"SDR": v, "SIR": 1.0, "ISR": 1.0, "SAR": 1.0},
                "accompaniment": {"SDR": a, "SIR": 1.0, "ISR": 1.0, "SAR": 1.0}}
    return [{"label": "vocals / mixture", "method": "mixture", "scores": scores(4.1, 7.6), "nb_tracks": 2},
            {"label": "vocals / griffinlim", "method": "griffinlim", "scores": scores(-2.6, None), "nb_tracks": 2},
            {"label": "reference / oracle-irm", "method": "oracle-irm", "scores": scores(10.3, 13.4), "nb_tracks": 2}]


def test_phase_figures():
    fig = score_plots.plot_sdr_table(sdr_rows())
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["label"] for r in sdr_rows()]
    assert len(ax.patches) == 5  # 3 rows x 2 targets, less the missing score
    assert "n/a" in [t.get_text() for t in ax.texts]
    assert isinstance(score_plots.plot_sdr_table([]), Figure)

    sweep = [{"iterations": n, "vocals": -n / 10, "accompaniment": None if n == 8 else 1.0} for n in (0, 8, 32)]
    fig = score_plots.plot_iteration_sweep({"random init": sweep, "mixture init": sweep[::-1]},
                                           baselines={"mixture phase": {"vocals": 4.0, "accompaniment": 7.0}})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2 + 1 + 1  # two sweeps, the baseline, the 0 dB line
    assert isinstance(score_plots.plot_iteration_sweep({"one point": sweep[:1]}), Figure)

    rate = 8000
    stereo = np.stack([sine(0.5, 2.0, 440, rate), sine(0.2, 2.0, 660, rate)], axis=1)  # (nb_timesteps, 2)
    fig = plots.plot_phase_spectrograms({"true": stereo, "estimate": 0.5 * stereo, "mono": stereo[:, 0]}, rate,
                                        start=0.5, dur=1.0, fmax=None)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 + 1  # three panels and the colour bar
    true, half = (fig.axes[k].images[0].get_array() for k in (0, 1))
    assert true.max() <= 0.0  # 0 dB is the first panel's peak (the shown log-frequency rows may miss its bin)
    assert half.max() - true.max() == pytest.approx(-6.02, abs=0.05)  # half the amplitude, on the same scale


def test_audio_and_wav_players(tmp_path):
    import soundfile as sf

    stereo = np.stack([sine(0.5, 1.0), sine(0.2, 1.0)], axis=1)  # (nb_timesteps, nb_channels)
    html = players.audio_players({"truth": {"mixture": stereo, "vocals": stereo},
                                  "mixture": {"vocals": stereo[:, 0]}}, 8000, 0.25, 0.5).data
    assert html.count("<audio") == 3 and "truth" in html
    folder = tmp_path / "samples" / "track A"  # as hw2/infer.py writes them
    folder.mkdir(parents=True)
    for name in ("vocals-mixture_vocals", "mixture", "vocals-mixture_accompaniment"):
        sf.write(folder / f"{name}.wav", stereo, 8000)
    html = players.wav_players(tmp_path / "samples", dur=0.5).data
    assert html.count("<audio") == 3 and "track A" in html
    assert html.index("<b>mixture</b>") < html.index("<b>vocals-mixture_accompaniment</b>")  # mixture first
    assert "no listening samples" in players.wav_players(tmp_path / "nothing").data


def test_infer_args_are_the_commands(tmp_path):
    from pathlib import Path

    args = notebook.infer_args("/data/musdb", "ckpt/vocals.pt", "train", "valid", name="nb", smoke=False,
                               phase=("mixture", "griffinlim"), max_tracks=2, gl_iters=8)
    assert args.musdb_root == "/data/musdb" and args.subset == "train" and args.split == "valid"
    assert args.checkpoint == ["ckpt/vocals.pt"] and args.phase == ["mixture", "griffinlim"]
    assert args.references and args.max_tracks == 2 and args.gl_iters == 8 and args.name == "nb"
    assert args.out == str(notebook.REPO / "results")
    assert args.command.startswith("python hw2/infer.py --musdb-root /data/musdb --subset train --split valid")
    smoke = notebook.infer_args("/data/musdb", "c.pt", "test", None, smoke=True, references=False)
    assert smoke.split is None and not smoke.references and "--split" not in smoke.command
    assert Path(smoke.out).is_dir() and Path(smoke.out) != notebook.REPO / "results"  # a fresh temp folder
    Path(smoke.out).rmdir()
    assert notebook.infer_args("r", "c.pt", out=tmp_path).out == str(tmp_path)


def test_track_audio_and_medians_table(tracks):
    mixture, refs = notebook.track_audio(tracks[0])
    assert mixture.shape == refs["vocals"].shape == refs["accompaniment"].shape == (tracks[0].nb_samples, 2)
    assert np.allclose(mixture, refs["vocals"] + refs["accompaniment"], atol=1e-3)
    per = {"vocals": {"SDR": 1.234, "SIR": 2.0, "ISR": 3.0, "SAR": None},
           "accompaniment": {"SDR": 5.0, "SIR": 6.0, "ISR": 7.0, "SAR": 8.0}}
    table = notebook.medians_table({"mixture": per, "griffinlim": per})
    assert table.shape == (2, 8) and table.loc["mixture", ("vocals", "SDR")] == 1.23
    assert np.isnan(table.loc["griffinlim", ("vocals", "SAR")])


def test_checkpoint_or_tiny(wav_root, tmp_path):
    existing = tmp_path / "given.pt"
    existing.write_bytes(b"not read")
    assert notebook.checkpoint_or_tiny(existing, wav_root) == existing
    tiny = notebook.checkpoint_or_tiny(tmp_path / "missing.pt", wav_root)
    assert tiny.is_file() and tiny.name == "best.pt"
    summary = notebook.checkpoint_summary(tiny)
    assert summary.loc["epoch", "value"] == "1" and summary.loc["config.hidden_size", "value"] == "16"
