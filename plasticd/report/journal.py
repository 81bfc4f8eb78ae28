"""The predictions journal, read in one streaming pass into a fixed number of bins over ``seq``.

A journal can hold millions of records (one per sample), so it is never held
in memory: it is read in blocks of a few MB, each block parsed with orjson and
folded into ``BINS`` bins of ``width`` consecutive sample numbers. The width
starts at 1 and doubles (adjacent bins summed pairwise) whenever a record
lands beyond the last bin, so one pass needs no prior knowledge of the run's
length and memory stays the same for 60 thousand or 60 million records.

Each bin keeps sums, so every curve drawn from it is exact at the bin's
resolution: samples, labelled samples, correct predictions, summed loss, and a
histogram of latencies over log-spaced buckets (percentiles come from it, to
within one bucket, about 10 %).

A rollback (``plasticd rollback``) appends a *marker* line to the journal,
``{"rollback": {"from_seq": F, ...}}``: every record written before it with a
``seq`` of F or more belongs to the abandoned run and is left out
(``abandoned``); records after it are the new run's. A cheap first pass finds
the markers (``ROLLBACK_MARKER`` at a line's start), so the records are still
folded in one parsing pass.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from plasticd.report.lines import blocks, parse_lines

BINS = 2048  # even: folding sums bins pairwise
LATENCY_EDGES_MS = np.logspace(-3, 7, 241)  # 1 µs … ~3 h, 24 buckets per decade (≈10 % wide)


ROLLBACK_MARKER = b'{"rollback":'  # a journal line that starts so is a rollback marker (tools/rollback.py)
REPLICA_JOURNALS = "replica-*"  # rank r > 0 of a replica group keeps its journal in <state>/replica-r/ (distributed.replica)


def group_journals(path: Path) -> list[Path]:
    """``path`` and, for a replica group, every other replica's journal of the same name (``replica-*/``)."""
    others = sorted(path.parent.glob(f"{REPLICA_JOURNALS}/{path.name}")) if path.parent.is_dir() else []
    return [path, *others]


def journal_files(path: Path) -> list[Path]:
    """The journal and its rotated predecessors, oldest first (``.N`` … ``.1``, then the live file)."""
    rotated = []
    for entry in path.parent.glob(f"{path.name}.*") if path.parent.is_dir() else []:
        suffix = entry.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), entry))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


@dataclass
class JournalBins:
    """Per-bin sums over sample numbers ``[i * width, (i + 1) * width)``."""

    width: int = 1
    count: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    labelled: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))
    latency: np.ndarray = field(default_factory=lambda: np.zeros((BINS, len(LATENCY_EDGES_MS) + 1), np.int64))
    records: int = 0  # records folded in
    skipped: int = 0  # lines that were not a prediction record (torn, foreign, no seq)
    files: list[Path] = field(default_factory=list)
    rollbacks: list[dict] = field(default_factory=list)  # the markers, in journal order (from_seq, time, ...)
    abandoned: int = 0  # records a later rollback abandoned, left out

    @property
    def used(self) -> int:
        """Bins up to the last one holding a record."""
        nonzero = np.flatnonzero(self.count)
        return int(nonzero[-1]) + 1 if len(nonzero) else 0

    def _fit(self, top: int) -> None:
        """Double the width (summing bins pairwise) until sample number ``top`` falls in the last bin or before."""
        while top >= BINS * self.width:
            for name in ("count", "labelled", "correct", "loss", "latency"):
                a = getattr(self, name)
                folded = a.reshape(BINS // 2, 2, *a.shape[1:]).sum(axis=1)
                setattr(self, name, np.concatenate([folded, np.zeros_like(folded)]))
            self.width *= 2

    def add(self, seq: np.ndarray, labelled: np.ndarray, correct: np.ndarray, loss: np.ndarray, latency: np.ndarray) -> None:
        """Fold one block of records in (arrays of equal length; loss NaN where unlabelled, latency NaN when absent)."""
        if len(seq) == 0:
            return
        self._fit(int(seq.max()))
        idx = seq // self.width
        self.count += np.bincount(idx, minlength=BINS)
        self.labelled += np.bincount(idx, weights=labelled, minlength=BINS).astype(np.int64)
        self.correct += np.bincount(idx, weights=correct, minlength=BINS).astype(np.int64)
        self.loss += np.bincount(idx, weights=np.nan_to_num(loss), minlength=BINS)
        has = ~np.isnan(latency)
        bucket = np.searchsorted(LATENCY_EDGES_MS, latency[has])
        cells = idx[has] * self.latency.shape[1] + bucket
        self.latency += np.bincount(cells, minlength=self.latency.size).reshape(self.latency.shape)
        self.records += len(seq)


def _columns(records: list) -> tuple[np.ndarray, ...] | None:
    """seq, labelled, correct, loss, latency of the records that are prediction records."""
    rows = [r for r in records if isinstance(r, dict) and isinstance(r.get("seq"), int) and r["seq"] >= 0]
    if not rows:
        return None
    # a replica's seq is its sample count x W + rank: the group's sample number is seq // W (within a sync interval)
    seq = np.fromiter(
        (r["seq"] // (w if isinstance(w := r.get("replicas"), int) and w > 0 else 1) for r in rows), np.int64, len(rows)
    )
    correct_raw = [r.get("correct") for r in rows]
    labelled = np.fromiter((c is not None for c in correct_raw), np.float64, len(rows))
    correct = np.fromiter((c is True for c in correct_raw), np.float64, len(rows))
    loss = np.fromiter((v if isinstance(v := r.get("loss"), int | float) else np.nan for r in rows), np.float64, len(rows))
    lat = np.fromiter((v if isinstance(v := r.get("latency_ms"), int | float) else np.nan for r in rows), np.float64, len(rows))
    return seq, labelled, correct, loss, lat


def read_journal(path: Path) -> JournalBins:
    """Every record of the journal (rotated files included) and of the other replicas' journals (``group_journals``),
    folded into bins; an absent journal gives empty bins."""
    bins = JournalBins()
    files = [f for journal in group_journals(path) for f in journal_files(journal)]
    at = _markers(files, bins)  # global line numbers of the markers
    # the records before line at[k] are cut at the lowest from_seq of marker k and every later marker
    cut = [min(m["from_seq"] for m in bins.rollbacks[k:]) for k in range(len(at))]
    line_no = 0
    for file in files:
        bins.files.append(file)
        for block in blocks(file):
            lines = block.split(b"\n")
            start = 0
            while start < len(lines):
                k = bisect.bisect_left(at, line_no + start)
                end = len(lines) if k == len(at) else min(len(lines), at[k] - line_no + 1)
                _fold(bins, [x for x in lines[start:end] if not x.startswith(ROLLBACK_MARKER)], cut[k] if k < len(cut) else None)
                start = end
            line_no += len(lines)
    return bins


def _markers(files: list[Path], bins: JournalBins) -> list[int]:
    """The rollback markers of ``files`` (into ``bins.rollbacks``) and their global line numbers, in order."""
    at: list[int] = []
    line_no = 0
    for file in files:
        for block in blocks(file):
            lines = block.split(b"\n")
            if ROLLBACK_MARKER in block:
                for i, line in enumerate(lines):
                    if line.startswith(ROLLBACK_MARKER):
                        try:
                            marker = orjson.loads(line)["rollback"]
                            marker["from_seq"] = int(marker["from_seq"])
                        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                            continue
                        bins.rollbacks.append(marker)
                        at.append(line_no + i)
            line_no += len(lines)
    return at


def _fold(bins: JournalBins, lines: list[bytes], cut: int | None = None) -> None:
    """Fold records in; with ``cut``, those of ``seq >= cut`` are the abandoned run's and left out."""
    records, bad = parse_lines(lines)
    bins.skipped += bad
    cols = _columns(records)
    bins.skipped += len(records) - (0 if cols is None else len(cols[0]))
    if cols is None:
        return
    if cut is not None:
        keep = cols[0] < cut
        bins.abandoned += int((~keep).sum())
        cols = tuple(c[keep] for c in cols)
    bins.add(*cols)
