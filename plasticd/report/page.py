"""The report: read the sources, draw the figures, write ``index.html`` next to the PNGs.

The page is self-contained (each PNG is also inlined as a data URI, so the
HTML file alone can be mailed or archived) and says plainly which sources were
missing and which figures could therefore not be drawn.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from plasticd.report.curves import Curves, build
from plasticd.report.events import LogEvents, read_log
from plasticd.report.journal import JournalBins, read_journal
from plasticd.report.plots import CHECKPOINT_STYLE, FIGURES, MARK_STYLE
from plasticd.report.snapshots import Snapshot, read_snapshots

# Why a figure can be missing, in words for the page.
_NEEDS = {
    "accuracy": "labelled records in the predictions journal",
    "loss": "labelled records in the predictions journal",
    "events": "the JSON-lines log (log.file) with maintenance or checkpoint events",
    "network": "the log (daemon.ready, plasticity.rewired, growth.applied) or checkpoints",
    "throughput": "the log (log.file) with at least two progress or checkpoint events of one daemon run",
    "latency": "records with latency_ms in the predictions journal",
}


@dataclass(frozen=True)
class Rendered:
    page: Path
    figures: dict[str, str]  # file stem -> title, for the figures drawn
    missing: list[str]  # what the page says is missing
    curves: Curves


def render(journal: Path, log_file: Path | None, checkpoints: Path, out: Path, window: int | None = None) -> Rendered:
    """Read the journal, the log and the checkpoints; write ``out/index.html`` and one PNG per figure drawn."""
    bins = read_journal(journal)
    log = read_log(log_file)
    snaps = read_snapshots(checkpoints)
    curves = build(bins, log, snaps, window)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    for stem, draw in FIGURES.items():
        png = out / f"{stem}.png"
        png.unlink(missing_ok=True)  # a stale figure from an earlier report must not look current
        title = draw(curves, png)
        if title is not None:
            figures[stem] = title
    missing = _missing(journal, bins, log_file, log, checkpoints, snaps, curves)
    page = out / "index.html"
    page.write_text(_html(out, figures, missing, _facts(journal, bins, log, checkpoints, snaps, curves)), encoding="utf-8")
    return Rendered(page=page, figures=figures, missing=missing, curves=curves)


def _missing(
    journal: Path,
    bins: JournalBins,
    log_file: Path | None,
    log: LogEvents,
    checkpoints: Path,
    snaps: list[Snapshot],
    curves: Curves,
) -> list[str]:
    notes = []
    if not bins.files:
        notes.append(f"No predictions journal at {journal}: accuracy, loss and latency cannot be drawn.")
    elif bins.records == 0:
        notes.append(f"The predictions journal {journal} holds no prediction records.")
    if log_file is None:
        notes.append("No log file: log.file is not set, so events, throughput and network size over time are not known.")
    elif log.path is None or not log_file.is_file():
        notes.append(f"No log file at {log_file}: events, throughput and network size over time are not known.")
    elif not log.events:
        notes.append(f"The log {log_file} holds none of the events a report draws (is it a JSON-lines log?).")
    if not snaps:
        notes.append(f"No checkpoints in {checkpoints}.")
    for name, count in curves.unplaced.items():
        notes.append(f"{count} {name} event(s) could not be placed on the sample axis (no sample counts in the log around them).")
    return notes


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def _last(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else None


def _facts(
    journal: Path, bins: JournalBins, log: LogEvents, checkpoints: Path, snaps: list[Snapshot], curves: Curves
) -> list[tuple[str, str]]:
    facts = [
        ("journal", ", ".join(str(f) for f in bins.files) or f"{journal} (absent)"),
        ("records", f"{bins.records:,} ({curves.labelled:,} labelled; {bins.skipped:,} lines skipped)"),
        ("samples per bin", f"{curves.width:,}"),
        ("prequential accuracy (end)", _fmt(_last(curves.prequential))),
        (f"window accuracy (last {curves.window:,})", _fmt(_last(curves.window_accuracy))),
        (f"loss (last {curves.window:,})", _fmt(_last(curves.window_loss))),
        ("log", str(log.path) if log.path else "(none)"),
    ]
    counts = ", ".join(f"{MARK_STYLE.get(n, CHECKPOINT_STYLE)[0]} {len(v)}" for n, v in curves.marks.items() if len(v))
    facts.append(("events", counts or "(none)"))
    if len(curves.neurons[1]):
        facts.append(("neurons (end)", f"{int(curves.neurons[1][-1]):,}"))
    if len(curves.active[1]):
        facts.append(("active connections (end)", f"{int(curves.active[1][-1]):,}"))
    if len(curves.throughput[1]):
        facts.append(("throughput (median)", f"{float(np.median(curves.throughput[1])):,.0f} samples/s"))
    ckpts = ", ".join(f"#{s.seq} at {s.samples if s.samples is not None else '?'} samples" for s in snaps[-5:])
    facts.append(("checkpoints", f"{checkpoints}: {ckpts}" if snaps else f"{checkpoints}: none"))
    return facts


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1040px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin: 1.4em 0 0.3em; }
table { border-collapse: collapse; font-size: 0.9em; } td { padding: 2px 12px 2px 0; vertical-align: top; }
td:first-child { color: #555; white-space: nowrap; } img { max-width: 100%; border: 1px solid #ddd; }
.missing { background: #fff8e1; border-left: 4px solid #f9a825; padding: 0.5em 1em; font-size: 0.9em; }
.muted { color: #777; font-size: 0.85em; }
"""


def _html(out: Path, figures: dict[str, str], missing: list[str], facts: list[tuple[str, str]]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>plasticd report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>plasticd report</h1>",
        f'<p class="muted">rendered {datetime.now(UTC).isoformat(timespec="seconds")} by <code>plasticd report</code></p>',
        "<table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in facts) + "</table>",
    ]
    if missing:
        parts.append('<div class="missing"><b>Missing</b><ul>' + "".join(f"<li>{e(m)}</li>" for m in missing) + "</ul></div>")
    for stem in FIGURES:
        if stem in figures:
            data = base64.b64encode((out / f"{stem}.png").read_bytes()).decode("ascii")
            parts.append(f'<h2 id="{stem}">{e(figures[stem])}</h2>')
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{e(figures[stem])}" data-file="{stem}.png">')
        else:
            parts.append(f'<h2 id="{stem}">{e(stem.capitalize())}</h2>')
            parts.append(f'<p class="missing">Not drawn: this figure needs {e(_NEEDS[stem])}.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
