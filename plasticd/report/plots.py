"""The report's figures, drawn with matplotlib (Agg: no display needed) and saved as PNGs.

One function per figure; each returns the figure's title, or None when its
data is missing (the page then says what is missing instead of showing an
empty plot). Maintenance events are vertical marks on every chart over samples,
one colour per kind, so a change of accuracy can be read against what the
daemon did at that point.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter, ScalarFormatter  # noqa: E402

from plasticd.report.curves import PERCENTILES, Curves  # noqa: E402

SIZE = (10.0, 3.6)  # inches; at DPI this is 1000 x 360 pixels
DPI = 100
MARK_STYLE = {  # event -> (label, colour, line style)
    "plasticity.rewired": ("rewiring", "#9e9e9e", ":"),
    "growth.applied": ("growth", "#2e7d32", "-"),
    "merge.applied": ("merge", "#6a1b9a", "-."),
    "drift.detected": ("drift detected", "#c62828", "-"),
    "drift.adapted": ("drift adapted", "#ef6c00", "--"),
    "rollback": ("rollback (later records replaced)", "#000000", "-"),
}
CHECKPOINT_STYLE = ("checkpoint", "#455a64", "-")
MAX_LINES_PER_KIND = 400  # beyond this a kind is drawn as a rug along the bottom, not as lines


def _marks(ax: Axes, curves: Curves) -> None:
    """The maintenance events: rare ones (drift, growth, merge) as vertical lines, routine rewiring (and any kind
    with very many events) as a rug of ticks along the bottom; each kind labelled once, with its count."""
    for name, (label, colour, style) in MARK_STYLE.items():
        where = curves.marks.get(name, np.zeros(0))
        if len(where) == 0:
            continue
        text = f"{label} ({len(where)})"
        if name != "plasticity.rewired" and len(where) <= MAX_LINES_PER_KIND:
            for i, x in enumerate(where):
                ax.axvline(x, color=colour, linestyle=style, linewidth=0.9, alpha=0.85, label=text if i == 0 else None)
        else:
            ax.plot(
                where, np.full(len(where), 0.015), "|", color=colour, markersize=7, transform=ax.get_xaxis_transform(), label=text
            )


def _axis_samples(ax: Axes) -> None:
    ax.set_xlabel("samples (journal seq)")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.grid(True, alpha=0.25)
    ax.margins(x=0.01)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def accuracy(curves: Curves, path: Path) -> str | None:
    title = "Accuracy over samples"
    if curves.labelled == 0:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    ax.plot(curves.x, curves.prequential, color="#1565c0", linewidth=1.8, label="prequential (all samples so far)")
    ax.plot(curves.x, curves.window_accuracy, color="#42a5f5", linewidth=1.0, label=f"window (last {curves.window:,} samples)")
    _marks(ax, curves)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    _axis_samples(ax)
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    _save(fig, path)
    return title


def loss(curves: Curves, path: Path) -> str | None:
    title = "Loss over samples"
    if curves.labelled == 0:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    ax.plot(curves.x, curves.window_loss, color="#ad1457", linewidth=1.2, label=f"cross-entropy, window of {curves.window:,}")
    _marks(ax, curves)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("prequential loss")
    ax.set_title(title)
    _axis_samples(ax)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    _save(fig, path)
    return title


def events(curves: Curves, path: Path) -> str | None:
    title = "Maintenance events over samples"
    names = [n for n in (*MARK_STYLE, "checkpoint.saved") if len(curves.marks.get(n, ())) > 0]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(SIZE[0], 0.45 * len(names) + 1.3))
    for row, name in enumerate(names):
        label, colour, _ = MARK_STYLE.get(name, CHECKPOINT_STYLE)
        where = curves.marks[name]
        ax.plot(where, np.full(len(where), row), "|", color=colour, markersize=14, markeredgewidth=1.5)
    ax.set_yticks(range(len(names)), [f"{MARK_STYLE.get(n, CHECKPOINT_STYLE)[0]} ({len(curves.marks[n])})" for n in names])
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(
        0, max(float(curves.x[-1] + curves.width / 2) if len(curves.x) else 0, *(curves.marks[n].max() for n in names)) * 1.01
    )
    ax.set_title(title)
    _axis_samples(ax)
    _save(fig, path)
    return title


def _step_to_end(xs: np.ndarray, ys: np.ndarray, end: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A size holds until the next change: carry the last value to the end of the run."""
    return (np.append(xs, end), np.append(ys, ys[-1])) if end is not None and end > xs[-1] else (xs, ys)


def network(curves: Curves, path: Path) -> str | None:
    title = "Network size over samples"
    panels = [
        (n, c, xy) for n, c, xy in (("neurons", "#2e7d32", curves.neurons), ("active connections", "#ef6c00", curves.active))
    ]
    panels = [p for p in panels if len(p[2][1])]
    if not panels:
        return None
    end = float(curves.x[-1] + curves.width / 2) if len(curves.x) else None
    fig, axes = plt.subplots(len(panels), 1, figsize=(SIZE[0], 2.3 * len(panels) + 0.8), sharex=True, squeeze=False)
    for ax, (label, colour, (xs, ys)) in zip(axes[:, 0], panels, strict=True):
        ax.step(*_step_to_end(xs, ys, end), where="post", color=colour, linewidth=1.6, label=label)
        ax.plot(xs, ys, ".", color=colour, markersize=3)
        _marks(ax, curves)
        lo, hi = float(np.min(ys)), float(np.max(ys))
        pad = max((hi - lo) * 0.15, hi * 0.02, 1.0)
        ax.set_ylim(max(lo - pad, 0), hi + pad)
        ax.set_ylabel(label)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no fractional ticks
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(True, alpha=0.25)
        ax.legend(loc="lower right", fontsize=8, ncol=4)
    axes[0, 0].set_title(title)
    _axis_samples(axes[-1, 0])
    _save(fig, path)
    return title


def throughput(curves: Curves, path: Path) -> str | None:
    title = "Throughput over time"
    minutes, rate = curves.throughput
    if len(rate) == 0:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    span = float(np.nanmax(minutes)) if len(minutes) else 0.0
    scale, unit = (60.0, "seconds") if span < 2 else ((1 / 60, "hours") if span > 180 else (1.0, "minutes"))
    ax.plot(minutes * scale, rate, "o-", color="#00838f", linewidth=1.2, markersize=3)
    ax.set_xlabel(f"{unit} since the first logged sample count")
    ax.set_ylabel("samples / s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.25)
    ax.set_title(title)
    _save(fig, path)
    return title


def latency(curves: Curves, path: Path) -> str | None:
    title = "Latency percentiles over samples"
    if not any(np.isfinite(v).any() for v in curves.latency.values()):
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    colours = {50: "#283593", 90: "#7986cb", 99: "#c5cae9"}
    for p in sorted(PERCENTILES, reverse=True):
        ax.plot(curves.latency_x, curves.latency[p], color=colours.get(p, "black"), linewidth=1.4, label=f"p{p}")
    finite = np.concatenate([v[np.isfinite(v)] for v in curves.latency.values()])
    if finite.max() > 30 * max(finite.min(), 1e-3):  # spans decades (a backlog, a stall): log scale
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    ax.set_ylabel("arrival → prediction (ms)")
    ax.set_title(title)
    _axis_samples(ax)
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    _save(fig, path)
    return title


FIGURES: dict[str, Callable[[Curves, Path], str | None]] = {
    "accuracy": accuracy,
    "loss": loss,
    "events": events,
    "network": network,
    "throughput": throughput,
    "latency": latency,
}
