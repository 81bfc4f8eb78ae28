"""The Prometheus endpoint: scraped from the real daemon and parsed with prometheus_client's own parser; /healthz's rule."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plasticd.errors import PlasticdError
from plasticd.learn.engine import Engine
from plasticd.learn.reports import DriftReport
from plasticd.service.prometheus import Exporter, LoopHealth
from tests.helpers import Daemon, drop, fail_fsync, files_in, sample_json, small_settings, wait_until, worker_around, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(sample name, sorted labels): value}, through prometheus_client's parser."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def refused(port: int) -> bool:
    try:
        get(port, "/healthz")
    except ConnectionRefusedError:
        return True
    return False


# ------------------------------------------------------------------ the real daemon


@pytest.mark.slow
def test_the_real_daemon_serves_its_metrics_and_health(tmp_path: Path) -> None:
    port = free_port()
    write_config(tmp_path, f"[metrics]\nenabled = true\nport = {port}\n")
    rng = np.random.default_rng(3)
    sizes = [1 + i % 4 for i in range(24)]  # 60 labelled samples: past plasticity.interval (40) and checkpoint.every_samples (50)
    d = Daemon(tmp_path)
    try:
        listening = d.wait_for_event("metrics.listening")[0]
        assert (listening["host"], listening["port"]) == ("127.0.0.1", port)
        for i, n in enumerate(sizes):
            drop(tmp_path / "data_inbox", f"s-{i:02d}.json", sample_json(rng, n=n))
        drop(tmp_path / "data_inbox", "short.json", json.dumps({"x": [1.0, 2.0], "y": 0}))
        wait_until(lambda: len(files_in(tmp_path / "data_processed")) == len(sizes), 60, "every good file processed")
        wait_until(lambda: files_in(tmp_path / "data_failed", "*.error.json"), 30, "the bad file quarantined")
        m = wait_until(
            lambda: (
                (m := scrape(port)).get(("plasticd_samples_seen_total", ())) == sum(sizes)
                and m.get(("plasticd_checkpoint_seconds_count", ()), 0) >= 1
                and m.get(("plasticd_files_failed_total", ())) == 1
                and m
            ),
            30,
            "the published status to catch up",
        )
        health = get(port, "/healthz")
        missing = get(port, "/nope")
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    assert isinstance(m, dict)
    assert m[("plasticd_samples_trained_total", ())] == sum(sizes)
    assert m[("plasticd_samples_labelled_total", ())] == sum(sizes)
    assert m[("plasticd_files_processed_total", ())] == len(sizes)
    assert m[("plasticd_files_quarantined_total", (("reason", "wrong_length"),))] == 1
    assert m[("plasticd_queue_depth", ())] == 0
    assert m[("plasticd_neurons", ())] == 32
    assert m[("plasticd_active_connections", ())] > 0
    assert 0.0 <= m[("plasticd_accuracy", ())] <= 1.0 and 0.0 <= m[("plasticd_window_accuracy", ())] <= 1.0
    assert m[("plasticd_loss", ())] > 0.0
    # the micro-batch histogram: every batch observed, each in the +Inf bucket
    batches = m[("plasticd_step_seconds_count", ())]
    assert batches >= 1 and m[("plasticd_step_seconds_sum", ())] > 0.0
    assert m[("plasticd_step_seconds_bucket", (("le", "+Inf"),))] == batches
    assert m[("plasticd_rewire_seconds_count", ())] >= 1  # plasticity.interval = 40 < 60 samples learned
    assert m[("plasticd_maintenance_total", (("kind", "rewire"), ("result", "applied")))] >= 1
    assert m[("plasticd_checkpoint_size_bytes", ())] > 0 and m[("plasticd_checkpoint_failures_total", ())] == 0
    assert m[("plasticd_drift_events_total", ())] == 0
    assert m[("process_resident_memory_bytes", ())] > 10e6  # the process collector, from /proc
    assert m[("plasticd_healthy", ())] == 1
    assert health[0] == 200 and json.loads(health[1])["status"] == "ok"
    assert missing[0] == 404
    assert refused(port), "the metrics server outlived the daemon"
    assert [e for e in d.events() if e["event"] == "metrics.stopped"]


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    assert small_settings().metrics.enabled is False
    assert small_settings().metrics.host == "127.0.0.1"


# ------------------------------------------------------------------ /healthz: the loop-stall rule


def test_loop_health_turns_unhealthy_once_the_loop_has_not_ticked_for_stall_seconds() -> None:
    now = [100.0]
    health = LoopHealth(last_tick=lambda: 90.0, stall_seconds=10.0, clock=lambda: now[0])
    assert health.healthy() and health.age() == 10.0
    now[0] = 100.5
    assert not health.healthy() and health.age() == 10.5


@pytest.fixture
def exporter(tmp_path: Path):
    """An exporter on a free port around a real (idle) worker, its clock ``offset`` seconds after the loop's last tick."""
    settings = small_settings(metrics={"enabled": True, "port": 0, "stall_seconds": 30.0})
    worker = worker_around(settings, Engine.from_settings(settings), tmp_path)
    offset = [0.0]
    exp = Exporter(worker, settings.metrics, clock=lambda: worker.heartbeat.last_tick + offset[0])
    exp.start()
    try:
        yield exp, worker, offset
    finally:
        exp.stop()


def test_healthz_answers_503_when_the_loop_stalls_and_200_when_it_turns_again(exporter) -> None:
    exp, worker, offset = exporter
    worker.heartbeat.tick()  # a turn of the loop: publishes the status too
    assert get(exp.port, "/healthz")[0] == 200
    offset[0] = 30.0
    assert get(exp.port, "/healthz")[0] == 200  # exactly stall_seconds: still alive
    offset[0] = 31.0
    status, body = get(exp.port, "/healthz")
    assert status == 503 and json.loads(body) == {
        "status": "stalled",
        "state": "starting",
        "loop_tick_age_seconds": 31.0,
        "stall_seconds": 30.0,
    }
    assert scrape(exp.port)[("plasticd_healthy", ())] == 0
    offset[0] = 0.0  # the loop turned again
    assert get(exp.port, "/healthz")[0] == 200


def test_reports_and_checkpoints_reach_their_metrics_through_the_worker_hooks(exporter, monkeypatch: pytest.MonkeyPatch) -> None:
    exp, worker, _ = exporter
    drift = DriftReport(detector="adwin", trained=500, error_recent=0.6, error_before=0.2, since_last=500, actions=())
    for hook in worker.on_report:  # as Worker calls them for each report the engine queued
        hook(drift)
    worker.activity.unsaved_changes = True
    saved = worker.checkpoint("test")
    assert saved is not None
    fail_fsync(monkeypatch, lambda path: "/checkpoints/" in path)
    worker.activity.unsaved_changes = True
    assert worker.checkpoint("test") is None  # failed: logged, counted, not fatal
    worker.heartbeat.tick()
    m = scrape(exp.port)
    assert m[("plasticd_drift_events_total", ())] == 1
    assert m[("plasticd_maintenance_total", (("kind", "drift"), ("result", "detected")))] == 1
    assert m[("plasticd_checkpoint_seconds_count", ())] == 1
    assert m[("plasticd_checkpoint_size_bytes", ())] == saved.tensors_bytes
    assert m[("plasticd_checkpoint_failures_total", ())] == 1
    assert m[("plasticd_checkpoint_consecutive_failures", ())] == 1
    assert m[("plasticd_checkpoint_last_seq", ())] == saved.seq
    assert m[("plasticd_state", (("plasticd_state", "starting"),))] == 1


def test_stop_closes_the_port(exporter) -> None:
    exp, _, _ = exporter
    port = exp.port
    assert get(port, "/healthz")[0] == 200
    exp.stop()
    assert refused(port)
    exp.stop()  # idempotent


def test_a_port_in_use_is_an_error_that_names_the_settings(tmp_path: Path) -> None:
    settings = small_settings()
    worker = worker_around(settings, Engine.from_settings(settings), tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = settings.metrics.model_copy(update={"enabled": True, "port": taken.getsockname()[1]})
        with pytest.raises(PlasticdError, match=r"metrics: cannot listen on 127\.0\.0\.1:\d+ .*metrics\.port"):
            Exporter(worker, busy).start()
