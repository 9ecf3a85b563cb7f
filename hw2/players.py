"""The notebooks' audio players and widgets: labelled `IPython.display` players for stems, batches, separated
estimates and the listening WAVs `hw2/infer.py` writes, and a track picker with the stems' spectrograms.

Audio is float (nb_channels, nb_samples), (nb_samples, nb_channels) or (nb_samples,), a numpy array or a tensor.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import soundfile as sf
from IPython.display import HTML, Audio, Image
from matplotlib.figure import Figure

from hw2 import RATE
from hw2.plots import plot_spectrograms
from hw2.tracks import STEMS


def audio_player(audio, rate: int = RATE, start: float = 0.0, dur: float | None = None, mono: bool = False,
                 normalize: bool = True):
    """An `IPython.display.Audio` of `audio`: float (nb_channels, nb_samples), (nb_samples, nb_channels) or
    (nb_samples,), a numpy array or a tensor; `start` / `dur` in seconds cut an excerpt; mono downmixes."""
    x = np.asarray(audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float32)
    x = np.atleast_2d(x)
    if x.shape[0] > x.shape[1]:
        x = x.T  # (nb_samples, nb_channels) -> (nb_channels, nb_samples)
    a = int(start * rate)
    x = x[:, a:] if dur is None else x[:, a:a + int(dur * rate)]
    if mono or x.shape[0] > 2:
        x = x.mean(0, keepdims=True)
    if not normalize:
        x = np.clip(x, -1, 1)
    return Audio(x[0] if x.shape[0] == 1 else x, rate=rate, normalize=normalize)


def _players_html(rows: Sequence[tuple[str, Sequence[tuple[str, object]]]]) -> str:
    """HTML of labelled players: rows of (row label, [(player label, IPython Audio), ...])."""
    out = []
    for head, players in rows:
        cells = "".join(f"<div style='margin:0 8px 6px 0'><div><b>{label}</b></div>{audio._repr_html_()}</div>"
                        for label, audio in players)
        title = f"<div style='width:100%'><i>{head}</i></div>" if head else ""
        out.append(f"<div style='display:flex;flex-wrap:wrap;align-items:flex-end'>{title}{cells}</div>")
    return "".join(out)


def stem_players(track, start: float = 0.0, dur: float | None = 5.0, stems: Sequence[str] = STEMS):
    """An `IPython.display.HTML` with one labelled player per stem of a cached track, for [start, start + dur)."""
    players = [(s, audio_player(track.stem(s), track.rate, start, dur)) for s in stems]
    return HTML(_players_html([("", players)]))


def batch_players(batches: Mapping[str, tuple], example: int = 0, rate: int = RATE, target_name: str = "vocals"):
    """An `IPython.display.HTML` with players for the mixture and the target of one excerpt of each batch.
    batches: name -> (mixture, target), as for `plot_batch`."""
    return HTML(_players_html([(name, [("mixture", audio_player(mix[example], rate)),
                                       (target_name, audio_player(tgt[example], rate))])
                               for name, (mix, tgt) in batches.items()]))


def figure_png(fig: Figure, dpi: int = 80):
    """An `IPython.display.Image` of a figure (PNG bytes), for places that need a display object."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return Image(data=buf.getvalue(), format="png")


def track_picker(tracks: Sequence, start: float = 0.0, dur: float = 5.0, stems: Sequence[str] = STEMS):
    """A dropdown of cached tracks that shows, for the chosen one, a player per stem and the stem spectrograms
    of the excerpt [start, start + dur). Returns the widget (leave it last in a cell). The first track is shown
    at once; the output is set directly on the widget (no output capture), so it also runs headless."""
    dropdown = widgets.Dropdown(options=[(t.name, i) for i, t in enumerate(tracks)], value=0,
                                description="track", layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def show(change=None):
        track = tracks[dropdown.value]
        out.outputs = ()
        out.append_display_data(stem_players(track, start, dur, stems))
        out.append_display_data(figure_png(plot_spectrograms(track, start, dur, stems)))

    dropdown.observe(show, names="value")
    show()
    return widgets.VBox([dropdown, out])


def audio_players(rows: Mapping[str, Mapping[str, np.ndarray]], rate: int = RATE, start: float = 0.0,
                  dur: float | None = None):
    """An `IPython.display.HTML` of labelled players, one line per row: rows is row label -> {player label:
    audio}, audio as `audio_player` takes it (e.g. (nb_timesteps, nb_channels)); `start` / `dur` in seconds."""
    return HTML(_players_html([(head, [(label, audio_player(x, rate, start, dur)) for label, x in players.items()])
                               for head, players in rows.items()]))


def wav_players(folder, start: float = 0.0, dur: float | None = None, max_tracks: int | None = None):
    """An `IPython.display.HTML` with a player per WAV file under `folder`, one line per sub-folder (a track):
    what `hw2/infer.py` writes to `<out>/<name>/samples/<track>/`. The mixture comes first, then the files in
    name order; `max_tracks` limits the lines."""
    folder = Path(folder)
    dirs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    rows = []
    for d in dirs[:max_tracks]:
        files = sorted(d.glob("*.wav"), key=lambda p: (p.stem != "mixture", p.stem))
        players = []
        for f in files:
            audio, rate = sf.read(f, dtype="float32", always_2d=True)  # (nb_timesteps, nb_channels)
            players.append((f.stem, audio_player(audio, rate, start, dur)))
        rows.append((d.name, players))
    if not rows:
        return HTML(f"<i>no listening samples in {folder}</i>")
    return HTML(_players_html(rows))
