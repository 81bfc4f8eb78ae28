"""``plasticd report``: the journal streamed into bins (bounded memory), the figures, the page, the command."""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from plasticd.cli import main
from plasticd.report.curves import build
from plasticd.report.events import read_log
from plasticd.report.journal import BINS, read_journal
from plasticd.report.page import render
from tests.helpers import Daemon, drop, sample_json, wait_until, write_config

TITLES = (
    "Accuracy over samples",
    "Loss over samples",
    "Maintenance events over samples",
    "Network size over samples",
    "Throughput over time",
    "Latency percentiles over samples",
)


def _write_journal(path: Path, n: int, chunk: int = 100_000) -> None:
    """``n`` records shaped like the pipeline's: accuracy rising from 0.3 towards 0.9, every tenth unlabelled."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for start in range(0, n, chunk):
            seq = np.arange(start, min(start + chunk, n))
            p = 0.9 - 0.6 * np.exp(-seq / (n / 5))
            correct = rng.random(len(seq)) < p
            latency = rng.lognormal(1.0, 0.5, len(seq)).round(3)
            lines = []
            for s, c, lat in zip(seq.tolist(), correct.tolist(), latency.tolist(), strict=True):
                labelled = s % 10 != 9
                lines.append(
                    f'{{"id":"f{s}.json#0","file":"f{s}.json","index":0,"predicted":1,"confidence":0.5,'
                    f'"label":{1 if labelled else "null"},"correct":{(str(c).lower()) if labelled else "null"},'
                    f'"loss":{0.4 if labelled else "null"},"seq":{s},"latency_ms":{lat}}}\n'
                )
            f.write("".join(lines))


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _write_log(path: Path, n: int, t0: float = 1.8e9) -> None:
    """A log of a run over ``n`` samples at 1000 samples/s: progress, checkpoints, rewiring, one growth, one drift."""
    events = [{"event": "daemon.ready", "neurons": 100, "active_connections": 5000, "timestamp": _stamp(t0)}]
    for s in range(10_000, n + 1, 10_000):
        t = t0 + s / 1000
        events.append({"event": "daemon.progress", "samples": s, "samples_per_s": 1000.0, "timestamp": _stamp(t)})
        events.append({"event": "checkpoint.saved", "samples": s, "seq": s // 10_000, "timestamp": _stamp(t + 0.01)})
        events.append({"event": "sample.processed", "seq": s, "timestamp": _stamp(t)})  # not wanted: skipped unparsed
        events.append({"event": "plasticity.rewired", "active": 5000, "trained": s * 9 // 10, "timestamp": _stamp(t + 0.02)})
    events.append({"event": "growth.applied", "neurons_after": 120, "active_after": 6000, "timestamp": _stamp(t0 + n / 2000)})
    events.append({"event": "drift.detected", "trained": n * 9 // 20, "timestamp": _stamp(t0 + n / 2000)})
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "daemon.progr')  # a torn last line


def test_bins_fold_without_losing_a_record(tmp_path: Path) -> None:
    """Sums survive the doubling of the bin width: counts are exact whatever the run's length."""
    journal = tmp_path / "predictions.jsonl"
    _write_journal(journal, 10_000)
    bins = read_journal(journal)
    assert bins.records == 10_000 and bins.skipped == 0
    assert bins.width * BINS >= 10_000 > bins.width * BINS // 2
    assert bins.count.sum() == 10_000 and bins.labelled.sum() == 9_000
    assert bins.latency.sum() == 10_000
    assert np.all(bins.count[: 10_000 // bins.width] == bins.width)  # full bins up to the end of the run


def test_rotated_journal_files_are_read_oldest_first_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    journal = tmp_path / "predictions.jsonl"
    _write_journal(journal, 3000)
    lines = journal.read_text().splitlines(keepends=True)
    (tmp_path / "predictions.jsonl.2").write_text("".join(lines[:1000]))
    (tmp_path / "predictions.jsonl.1").write_text("".join(lines[1000:2000]))
    journal.write_text("".join(lines[2000:]) + '{"id": "torn')
    bins = read_journal(journal)
    assert [f.name for f in bins.files] == ["predictions.jsonl.2", "predictions.jsonl.1", "predictions.jsonl"]
    assert bins.records == 3000 and bins.skipped == 1


def test_a_million_records_in_bounded_memory(tmp_path: Path) -> None:
    """1M records (~190 MB of JSON lines) render with a peak of Python allocations far below the journal's size."""
    journal = tmp_path / "state" / "predictions.jsonl"
    _write_journal(journal, 1_000_000)
    log = tmp_path / "plasticd.log"
    _write_log(log, 1_000_000)
    size = journal.stat().st_size
    tracemalloc.start()
    started = time.perf_counter()
    try:
        rendered = render(journal, log, tmp_path / "checkpoints", tmp_path / "report")
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"1M records, {size / 1e6:.0f} MB journal: {seconds:.1f}s (traced), peak {peak / 1e6:.0f} MB")
    assert size > 150e6
    assert peak < 200e6, f"peak {peak / 1e6:.0f} MB of Python allocations"
    curves = rendered.curves
    assert curves.samples == 1_000_000 and curves.labelled == 900_000
    assert set(rendered.figures.values()) == set(TITLES)
    assert abs(curves.prequential[-1] - (0.9 - 0.12 * (1 - np.exp(-5)))) < 0.005  # the mean of the rising accuracy
    assert 0.85 < curves.window_accuracy[-1] < 0.95 and curves.window_accuracy[5] < 0.5
    assert len(curves.marks["plasticity.rewired"]) == 100 and len(curves.marks["checkpoint.saved"]) == 100
    # rewiring placed by `trained` (9 of 10 samples labelled) lands on the sample count logged with it
    assert np.allclose(curves.marks["plasticity.rewired"], np.arange(10_000, 1_000_001, 10_000), atol=2 * curves.width)
    assert np.allclose(curves.marks["growth.applied"], [500_000], atol=1000)  # by time, between anchors
    assert np.allclose(curves.marks["drift.detected"], [500_000], atol=2 * curves.width)
    assert curves.neurons[1].tolist()[-1] == 120 and curves.active[1].max() == 6000
    assert np.allclose(curves.throughput[1], 1000.0, rtol=0.05)
    assert 2.0 < curves.latency[50][-1] < 3.5  # lognormal(1, 0.5): median e ≈ 2.7 ms, within a bucket


def test_the_page_says_what_is_missing_and_draws_what_it_can(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "predictions.jsonl"
    _write_journal(journal, 5000)
    rendered = render(journal, None, tmp_path / "checkpoints", tmp_path / "report")
    page = rendered.page.read_text()
    assert set(rendered.figures) == {"accuracy", "loss", "latency"}
    assert "log.file is not set" in page and "No checkpoints in" in page
    assert "Not drawn: this figure needs the log (log.file)" in page
    assert not (tmp_path / "report" / "throughput.png").exists() and not (tmp_path / "checkpoints").exists()
    nothing = render(tmp_path / "absent.jsonl", tmp_path / "absent.log", tmp_path / "checkpoints", tmp_path / "empty")
    assert nothing.figures == {}
    assert "No predictions journal at" in nothing.page.read_text() and "No log file at" in nothing.page.read_text()


def test_events_without_anchors_are_counted_as_unplaced(tmp_path: Path) -> None:
    log = tmp_path / "plasticd.log"
    log.write_text(json.dumps({"event": "merge.applied", "neurons": 10, "timestamp": _stamp(1.8e9)}) + "\n")
    curves = build(read_journal(tmp_path / "none.jsonl"), read_log(log), [])
    assert curves.unplaced == {"merge.applied": 1}


@pytest.mark.slow
def test_report_from_a_real_daemon_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ``plasticd run`` with log.file set, then ``plasticd report`` over what it left: every figure drawn."""
    # CONFIG ends in its [log] section: the file setting joins it
    write_config(tmp_path, f'file = "{tmp_path / "plasticd.log"}"\n[growth]\nenabled = true\ninterval = 100\nhorizon = 100\n')
    rng = np.random.default_rng(0)
    daemon = Daemon(tmp_path)
    try:
        daemon.wait_for_event("daemon.ready")
        for i in range(60):
            drop(tmp_path / "data_inbox", f"s{i:03d}.json", sample_json(rng, n=8))
        wait_until(lambda: len(list((tmp_path / "data_processed").glob("*.json"))) == 60, 120, "60 files processed")
    finally:
        code = daemon.stop()
    assert code == 0
    out = tmp_path / "report"
    monkeypatch.chdir(tmp_path)  # the settings' paths (state/, checkpoints/) are relative, as the daemon saw them
    assert main(["report", "--config", str(tmp_path / "plasticd.toml"), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    for stem in ("accuracy", "loss", "events", "network", "throughput", "latency"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'data-file="{stem}.png"' in page
    for title in TITLES:
        assert f">{title}</h2>" in page
    assert page.count("data:image/png;base64,") == 6 and "Not drawn" not in page
    assert "480 (480 labelled" in page  # 60 files of 8 labelled samples
    assert "No checkpoints" not in page and "log.file is not set" not in page
