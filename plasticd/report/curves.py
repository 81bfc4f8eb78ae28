"""What the report draws, computed from the journal's bins, the log's events and the checkpoints.

Everything is placed on one axis, the sample number (the journal's ``seq``):

* journal curves come straight from the bins (prequential accuracy is the
  running ratio of correct to labelled; window accuracy and loss are ratios
  of sums over the last ``window`` samples; latency percentiles come from the
  merged latency histograms of a few hundred groups of bins);
* an event with ``trained`` (labelled samples learned) is placed where the
  journal's running count of labelled samples reaches it;
* an event with only a timestamp is placed by interpolating between
  *anchors*, events that carry both a time and a sample count (progress lines,
  checkpoints, and the events placed by ``trained``).

Throughput is the one curve over wall-clock time: samples between successive
anchors over the seconds between them, never across a daemon restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plasticd.report.events import MARKED, LogEvents
from plasticd.report.journal import LATENCY_EDGES_MS, JournalBins
from plasticd.report.snapshots import Snapshot

LATENCY_GROUPS = 200  # points per latency-percentile line
PERCENTILES = (50, 90, 99)
ANCHORS = ("daemon.progress", "checkpoint.saved", "stream.finished", "daemon.stopped")


@dataclass
class Curves:
    width: int  # samples per bin
    x: np.ndarray  # bin centres (sample numbers)
    samples: int  # records in the journal
    labelled: int
    prequential: np.ndarray  # running accuracy (NaN before the first label)
    window: int  # samples in the window of the window curves
    window_accuracy: np.ndarray
    window_loss: np.ndarray
    latency_x: np.ndarray  # group centres
    latency: dict[int, np.ndarray]  # percentile -> ms per group (NaN where the group has no latency)
    marks: dict[str, np.ndarray] = field(default_factory=dict)  # event name -> sample numbers
    unplaced: dict[str, int] = field(default_factory=dict)  # events that could not be placed on the axis
    neurons: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))  # (sample numbers, counts)
    active: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
    throughput: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))  # (minutes since the first anchor, samples/s)


def _rolling_all(values: np.ndarray, k: int) -> np.ndarray:
    c = np.concatenate([[0], np.cumsum(values, dtype=np.float64)])
    lo = np.maximum(np.arange(1, len(c)) - k, 0)
    return c[1:] - c[lo]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _percentiles(hist: np.ndarray) -> dict[int, np.ndarray]:
    """Per row of a (G, B) latency histogram, each percentile as the geometric middle of its bucket."""
    edges = LATENCY_EDGES_MS
    mids = np.concatenate([[edges[0]], np.sqrt(edges[1:] * edges[:-1]), [edges[-1]]])  # bucket b holds (edges[b-1], edges[b]]
    total = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    out = {}
    for p in PERCENTILES:
        bucket = (cum < (p / 100.0) * total[:, None]).sum(axis=1)
        out[p] = np.where(total > 0, mids[np.minimum(bucket, len(mids) - 1)], np.nan)
    return out


def _window_bins(bins: JournalBins, used: int, window: int | None) -> int:
    """Bins in the window: ``window`` samples when given, else a twentieth of the run (at least one bin)."""
    span = used * bins.width
    samples = window if window else max(span // 20, 1)
    return max(1, round(samples / bins.width))


def build(bins: JournalBins, log: LogEvents, snapshots: list[Snapshot], window: int | None = None) -> Curves:
    used = bins.used
    w = bins.width
    x = (np.arange(used) + 0.5) * w
    labelled, correct = bins.labelled[:used], bins.correct[:used]
    k = _window_bins(bins, used, window)
    groups = max(1, -(-used // LATENCY_GROUPS))  # bins per latency group
    n_groups = -(-used // groups) if used else 0
    hist = np.zeros((n_groups * groups, bins.latency.shape[1]), np.int64)
    hist[:used] = bins.latency[:used]
    curves = Curves(
        width=w,
        x=x,
        samples=int(bins.count[:used].sum()),
        labelled=int(labelled.sum()),
        prequential=_ratio(np.cumsum(correct), np.cumsum(labelled)),
        window=k * w,
        window_accuracy=_ratio(_rolling_all(correct, k), _rolling_all(labelled, k)),
        window_loss=_ratio(_rolling_all(bins.loss[:used], k), _rolling_all(labelled, k)),
        latency_x=(np.arange(n_groups) + 0.5) * groups * w,
        latency=_percentiles(hist.reshape(n_groups, groups, -1).sum(axis=1))
        if n_groups
        else {p: np.zeros(0) for p in PERCENTILES},
    )
    _place_events(curves, bins, log, snapshots)
    return curves


def _trained_to_seq(bins: JournalBins) -> tuple[np.ndarray, np.ndarray]:
    """(labelled samples so far, sample number) at each bin edge: where the journal reached each count of labels."""
    used = bins.used
    if used == 0:
        return np.zeros(0), np.zeros(0)
    cum = np.concatenate([[0], np.cumsum(bins.labelled[:used])]).astype(np.float64)
    return cum, np.arange(used + 1, dtype=np.float64) * bins.width


def _place_events(curves: Curves, bins: JournalBins, log: LogEvents, snapshots: list[Snapshot]) -> None:
    cum, edges = _trained_to_seq(bins)
    placed: list[tuple[str, float, float | None]] = []  # name, t, sample number (None: by time, later)
    for e in log.events:
        if e.samples is not None:
            placed.append((e.name, e.t, float(e.samples)))
        elif e.trained is not None:
            # without a journal, every sample is taken as labelled (the stream's case)
            placed.append((e.name, e.t, float(np.interp(e.trained, cum, edges)) if len(cum) > 1 else float(e.trained)))
        else:
            placed.append((e.name, e.t, None))
    # events of a run a later rollback abandoned (before the marker's time, at or past its from_seq) are left out
    cuts = [(float(m["t"]), float(m["from_seq"])) for m in bins.rollbacks if isinstance(m.get("t"), int | float)]
    placed = [(n, t, s) for n, t, s in placed if not any(t < mt and s is not None and s >= f for mt, f in cuts)]
    snapshots = [x for x in snapshots if not any(x.t < mt and x.samples is not None and x.samples >= f for mt, f in cuts)]
    events = [e for e, keep in zip(log.events, _kept(log.events, placed), strict=True) if keep]
    anchors = sorted([(t, s) for _, t, s in placed if s is not None] + [(s.t, float(s.samples)) for s in snapshots if s.samples])
    at = np.array([a[0] for a in anchors])
    asamples = np.maximum.accumulate(np.array([a[1] for a in anchors])) if anchors else np.zeros(0)

    def position(t: float, s: float | None) -> float | None:
        if s is not None:
            return s
        if len(at) and t < at[0]:  # before the first sample count (a daemon.ready): the run's start
            return 0.0
        return float(np.interp(t, at, asamples)) if len(at) >= 2 else None

    positions = [(name, t, position(t, s)) for name, t, s in placed]
    for name in MARKED:
        where = [p for n, _, p in positions if n == name]
        curves.marks[name] = np.array([p for p in where if p is not None])
        if missing := sum(p is None for p in where):
            curves.unplaced[name] = missing
    curves.marks["rollback"] = np.array([float(m["from_seq"]) for m in bins.rollbacks])
    sizes = [(p, e) for e, (_, _, p) in zip(events, positions, strict=True) if p is not None]
    neurons = sorted(
        [(p, e.neurons) for p, e in sizes if e.neurons is not None]
        + [(float(s.samples or 0), s.neurons) for s in snapshots if s.neurons]
    )
    active = sorted(
        [(p, e.active) for p, e in sizes if e.active is not None]
        + [(float(s.samples or 0), s.active) for s in snapshots if s.active]
    )
    curves.neurons = (np.array([a for a, _ in neurons]), np.array([b for _, b in neurons]))
    curves.active = (np.array([a for a, _ in active]), np.array([b for _, b in active]))
    curves.throughput = _throughput(log, anchors)


def _kept(events: list, placed: list[tuple[str, float, float | None]]) -> list[bool]:
    """Which of ``events`` are still in ``placed`` (filtered in order, by name and time)."""
    kept, i = [], 0
    for e in events:
        match = i < len(placed) and placed[i][0] == e.name and placed[i][1] == e.t
        kept.append(match)
        i += match
    return kept


def _throughput(log: LogEvents, anchors: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Samples/s between anchors at least a 200th of the run apart (so a burst of events is not a spike), per daemon run."""
    if len(anchors) < 2:
        return np.zeros(0), np.zeros(0)
    t0 = anchors[0][0]
    min_gap = max((anchors[-1][0] - t0) / 200.0, 0.2)
    starts = sorted(e.t for e in log.named("daemon.ready"))
    mids: list[float] = []
    rates: list[float] = []
    last = anchors[0]
    for t, s in anchors[1:]:
        if any(last[0] < r <= t for r in starts):  # a restart in between: the idle gap is not throughput
            if mids:
                mids.append(float("nan"))  # and no line across it
                rates.append(float("nan"))
            last = (t, s)
            continue
        if t - last[0] >= min_gap:
            if s >= last[1]:
                mids.append((t + last[0]) / 2 - t0)
                rates.append((s - last[1]) / (t - last[0]))
            last = (t, s)
    return break_gaps(np.array(mids) / 60.0, np.array(rates))


def break_gaps(xs: np.ndarray, ys: np.ndarray, factor: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A NaN between two points further apart than ``factor`` × the median spacing (an idle gap, a restart), so
    a line is never drawn across a time nothing was measured in; NaNs already there stay."""
    finite = ~np.isnan(xs)
    steps = np.diff(xs[finite])
    if len(steps) < 2:
        return xs, ys
    limit = factor * float(np.median(steps))
    out_x, out_y = [], []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if i and not np.isnan(x) and not np.isnan(xs[i - 1]) and x - xs[i - 1] > limit:
            out_x.append(np.nan)
            out_y.append(np.nan)
        out_x.append(x)
        out_y.append(y)
    return np.array(out_x), np.array(out_y)
