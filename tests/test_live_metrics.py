"""/metrics that tell the truth from the first scrape: the newest checkpoint after a restart, zero series for every
label, a file's end-to-end latency, the oldest waiting file; and a stall threshold the loop can meet."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from helpers import drop, small_settings, toy_data, worker_around
from test_metrics_endpoint import scrape

import plasticd
from plasticd.config import LOOP_WAIT_SECONDS, load_settings
from plasticd.errors import ConfigError
from plasticd.learn.engine import Engine
from plasticd.samples.reasons import SAMPLE_REASONS
from plasticd.service.prometheus import MAINTENANCE, QUARANTINE_REASONS, Exporter

DIM = 12


def served(settings, root: Path):
    """A worker over ``root`` with its exporter serving on a free port."""
    worker = worker_around(settings, Engine.from_settings(settings), root)
    exp = Exporter(worker, settings.metrics)
    exp.start()
    return worker, exp


def test_after_a_restart_checkpoint_size_and_time_come_from_the_newest_checkpoint(tmp_path: Path) -> None:
    settings = small_settings(metrics={"enabled": True, "port": 0})
    first = worker_around(settings, Engine.from_settings(settings), tmp_path)
    x, y = toy_data(16)
    first.engine.step(x, y)
    first.activity.unsaved_changes = True
    saved = first.checkpoint("test")
    assert saved is not None
    # a new process over the same folders: before and after its recovery, the gauges show that checkpoint
    worker, exp = served(settings, tmp_path)
    try:
        before = scrape(exp.port)
        worker.recover()
        after = scrape(exp.port)
    finally:
        exp.stop()
    created = datetime.fromisoformat(saved.created).timestamp()
    for m in (before, after):
        assert m[("plasticd_checkpoint_size_bytes", ())] == saved.tensors_bytes
        assert m[("plasticd_checkpoint_last_success_timestamp_seconds", ())] == pytest.approx(created, abs=1e-3)


def test_a_model_without_checkpoints_shows_zero_not_a_stale_value(tmp_path: Path) -> None:
    worker, exp = served(small_settings(metrics={"enabled": True, "port": 0}), tmp_path)
    try:
        m = scrape(exp.port)
    finally:
        exp.stop()
    assert m[("plasticd_checkpoint_size_bytes", ())] == 0 and m[("plasticd_checkpoint_last_success_timestamp_seconds", ())] == 0


def test_every_labelled_counter_exports_its_zero_series_from_the_start(tmp_path: Path) -> None:
    _, exp = served(small_settings(metrics={"enabled": True, "port": 0}), tmp_path)
    try:
        m = scrape(exp.port)
    finally:
        exp.stop()
    for reason in QUARANTINE_REASONS:
        assert m[("plasticd_files_quarantined_total", (("reason", reason),))] == 0
    for kind, result in MAINTENANCE:
        assert m[("plasticd_maintenance_total", (("kind", kind), ("result", result)))] == 0
    assert {"malformed_json", "too_large", "non_finite_training"} <= set(QUARANTINE_REASONS)
    assert ("merge", "applied") in MAINTENANCE and ("growth", "grew") in MAINTENANCE


def test_the_reason_list_names_every_code_the_decoders_raise() -> None:
    source = "\n".join(p.read_text() for p in Path(plasticd.__file__).parent.joinpath("samples").rglob("*.py"))
    raised = set(re.findall(r'SampleError\(\s*"([a-z_]+)"', source))
    raised |= set(re.findall(r'reason\s*=\s*"([a-z_]+)"', source))
    raised |= set(re.findall(r'reason = "([a-z_]+)" if', source)) | set(re.findall(r'reason[^\n]* else "([a-z_]+)"', source))
    assert len(raised) > 20 and raised <= set(SAMPLE_REASONS), sorted(raised - set(SAMPLE_REASONS))


def test_each_files_end_to_end_latency_is_observed_and_the_oldest_waiting_files_age_is_shown(tmp_path: Path) -> None:
    worker, exp = served(small_settings(metrics={"enabled": True, "port": 0}), tmp_path)
    rng = np.random.default_rng(0)
    try:
        assert scrape(exp.port)[("plasticd_oldest_waiting_file_age_seconds", ())] == 0  # nothing waits
        for i in range(3):
            drop(tmp_path / "inbox", f"f{i}.json", f'{{"x": {rng.normal(size=DIM).round(3).tolist()}, "y": 1}}')
        before_scan = time.time()
        worker.feed.scan()
        after_scan = time.time()
        before_scrape = time.time()
        age = scrape(exp.port)[("plasticd_oldest_waiting_file_age_seconds", ())]
        after_scrape = time.time()
        assert before_scrape - after_scan <= age <= after_scrape - before_scan
        worker.process(worker.feed.take(2))  # two files learned; one still waits
        m = scrape(exp.port)
        assert m[("plasticd_file_latency_seconds_count", ())] == 2
        assert m[("plasticd_file_latency_seconds_sum", ())] > 0
        assert m[("plasticd_oldest_waiting_file_age_seconds", ())] > 0
        worker.process(worker.feed.take(8))
        m = scrape(exp.port)
    finally:
        exp.stop()
    assert m[("plasticd_file_latency_seconds_count", ())] == 3
    assert m[("plasticd_oldest_waiting_file_age_seconds", ())] == 0


def test_a_stall_threshold_at_or_below_the_loops_own_period_is_refused_with_exit_2(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.stall_seconds: .*not above the worker loop's own period"):
        load_settings(None, {"metrics": {"stall_seconds": LOOP_WAIT_SECONDS}})
    assert load_settings(None, {"metrics": {"stall_seconds": 0.25}}).metrics.stall_seconds == 0.25
    run = subprocess.run(
        [sys.executable, "-m", "plasticd", "run", "--set", "metrics.stall_seconds=0.1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "metrics.stall_seconds" in run.stderr and "0.2 s" in run.stderr
    assert not (tmp_path / "checkpoints").exists()  # refused before anything started
