"""Durability on the failure paths, in-process (issue 12, items 1-4, 6, 9, 13): a Worker from
``daemon.build_file_worker`` stepped by hand while something raises, a folder fills up, or the process "dies"
(an exception standing in for kill -9 at an exact point, the next Worker recovering from what is on disk)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from plasticd import fsutil
from plasticd.fsutil import NAME_MAX, fit_name
from plasticd.service import claims, daemon, signals
from plasticd.service.checkpoint_store import CheckpointStore
from plasticd.service.messages import Checkpoint
from plasticd.service.notify import Notifier
from plasticd.service.predictions import PredictionWriter
from plasticd.service.sources import FolderSource
from plasticd.service.worker import Worker
from tests.helpers import CLASSES, DIM, drop, events_named, files_in, fill, sample_json, small_settings, wait_until


def _settings(root: Path, **sections: dict):
    paths = {name: str(root / name) for name in ("inbox", "processed", "failed", "work", "checkpoints", "state")}
    base = {
        "paths": paths,
        "model": {"input_dim": DIM, "num_classes": CLASSES, "neurons": 16, "iterations": 2},
        "checkpoint": {"every_samples": 10**6, "retry_seconds": 300.0, "max_failures": 3, "min_interval_seconds": 0.0},
        "plasticity": {"interval": 0},
        "train": {"max_batch": 4},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return small_settings(**base)


def _worker(root: Path, mode: str = "daemon", **sections: dict) -> Worker:
    settings = _settings(root, **sections)
    return daemon.build_file_worker(settings, FolderSource(settings.paths.inbox, 0.0), settings.paths.processed, mode=mode)


def _feed(worker: Worker) -> None:
    worker.feed.scan()
    while items := worker.feed.take(worker.settings.train.max_batch):
        worker.process(items)


def _good(root: Path, n: int, seed: int = 0, samples: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    names = [f"g{seed}-{i:03d}.json" for i in range(n)]
    for name in names:
        drop(root / "inbox", name, sample_json(rng, samples))
    return names


def _bad(root: Path, name: str, content: str = "{not json") -> None:
    drop(root / "inbox", name, content)


def _recovered(root: Path) -> Worker:
    worker = _worker(root)
    worker.recover()
    return worker


def _sidecar_check(failed: Path) -> list[str]:
    """The quarantined files of ``failed``; asserts that each has its sidecar (a JSON reason naming the file)
    and that nothing else is there (no sidecar without its file, no temp file)."""
    entries = {p.name for p in failed.iterdir() if p.name != "lost+found"}
    files = sorted(n for n in entries if n + claims.SIDECAR_SUFFIX in entries)
    orphans = entries - set(files) - {n + claims.SIDECAR_SUFFIX for n in files}
    assert not orphans, f"without a sidecar, or a sidecar without its file: {sorted(orphans)}"
    for name in files:
        reason = json.loads((failed / (name + claims.SIDECAR_SUFFIX)).read_text())
        assert reason["reason"] and os.path.splitext(reason["file"])[0][:10] in reason["claim"]
    return files


class Died(BaseException):
    """Stands in for kill -9 at an exact point: nothing after it runs, no finally of ours saves anything."""


# -- item 1: an exception after Engine.step never lets a checkpoint disagree with the model ------------------------


def test_an_exception_after_the_step_never_saves_a_model_ahead_of_its_covered_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _good(tmp_path, 40)
    worker = _worker(tmp_path, mode="burst")
    real, calls = PredictionWriter.write, []

    def write(self, records):  # the journal's disk fills up on the third micro-batch, after its Engine.step
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, records)

    monkeypatch.setattr(PredictionWriter, "write", write)
    with capture_logs() as logs, pytest.raises(OSError, match="No space"):
        worker.run()
    assert events_named(logs, "checkpoint.refused"), "the shutdown checkpoint must not save the model"
    monkeypatch.setattr(PredictionWriter, "write", real)
    worker.predictions.close()
    again = _worker(tmp_path, mode="burst")
    assert again.run() == 0
    again.predictions.close()
    final = _recovered(tmp_path)
    assert final.engine.metrics.trained == 40, "a file was learned twice (or lost)"
    assert sorted(p.name for p in files_in(tmp_path / "processed")) == names


def test_an_exception_in_maintenance_disables_checkpoints_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(tmp_path, plasticity={"interval": 0})
    worker.recover()
    _good(tmp_path, 4)
    _feed(worker)

    def broken(*_a, **_k):
        raise RuntimeError("half-done rewiring")

    monkeypatch.setattr(worker.engine, "rewire", broken)
    from plasticd.service.messages import Rewire

    with pytest.raises(RuntimeError):
        worker.handle(Rewire("idle"))
    assert worker.checkpoint("test") is None and worker.checkpoints.pending


# -- item 2: kill -9 during quarantine: finished at the next start, never a file without its sidecar --------------


@pytest.mark.parametrize("die_at", ["record", "sidecar", "file", "unlink"])
def test_a_quarantine_interrupted_anywhere_is_finished_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, die_at: str
) -> None:
    worker = _worker(tmp_path)
    worker.recover()
    _bad(tmp_path, "victim.json")
    real_link, real_unlink, real_write = claims.link_new, os.unlink, claims.write_json_atomic

    def link_new(src: Path, target: Path) -> None:
        if die_at == "file" and not target.name.endswith(claims.SIDECAR_SUFFIX):
            raise Died
        real_link(src, target)
        if die_at == "sidecar" and target.name.endswith(claims.SIDECAR_SUFFIX):
            raise Died

    def unlink(path, *a, **k):
        if die_at == "unlink" and "~victim.json" in str(path):
            raise Died
        return real_unlink(path, *a, **k)

    def write(path, payload, durable=True):
        real_write(path, payload, durable)
        if die_at == "record":
            raise Died

    monkeypatch.setattr(claims, "link_new", link_new)  # the quarantined file's move
    monkeypatch.setattr(fsutil, "link_new", link_new)  # the sidecar (fsutil.create_json)
    monkeypatch.setattr(claims.os, "unlink", unlink)
    from plasticd.service import moves

    monkeypatch.setattr(moves, "write_json_atomic", write)
    with pytest.raises(Died):
        _feed(worker)
    monkeypatch.undo()
    # a half-written sidecar temp file of a dead process, as a kill -9 inside write_json_atomic leaves it
    (tmp_path / "failed" / ".victim.json.error.json.tmp-999999999").write_text('{"fi')
    with capture_logs() as logs:
        again = _recovered(tmp_path)
    assert _sidecar_check(tmp_path / "failed") == ["victim.json"]
    assert json.loads((tmp_path / "failed" / "victim.json.error.json").read_text())["reason"] == "malformed_json"
    assert [p.name for p in (tmp_path / "failed").iterdir() if p.name.startswith(".")] == [], "stray temp file left"
    assert [p for p in (tmp_path / "work").rglob("*~*")] == []
    assert again.counters.files_failed == 1
    assert events_named(logs, "recovery.quarantined") or die_at == "unlink"


# -- item 3: nothing is ever overwritten in the failed folder ------------------------------------------------------


def test_a_sidecar_never_overwrites_an_earlier_quarantined_file(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    worker.recover()
    contents = {"victim.json.error.json": "first bad file", "victim.json": "second bad file", "victim.json#2": "third"}
    _bad(tmp_path, "victim.json.error.json", contents["victim.json.error.json"])
    _feed(worker)
    _bad(tmp_path, "victim.json", contents["victim.json"])
    _feed(worker)
    _bad(tmp_path, "victim.json", contents["victim.json#2"])
    _feed(worker)
    failed = tmp_path / "failed"
    names = _sidecar_check(failed)
    assert len(names) == 3
    bodies = sorted((failed / name).read_text() for name in names)
    assert bodies == sorted(contents.values()), "a quarantined file's bytes were lost"
    originals = sorted(json.loads((failed / (name + claims.SIDECAR_SUFFIX)).read_text())["file"] for name in names)
    assert originals == ["victim.json", "victim.json", "victim.json.error.json"]


# -- item 4: a full failed folder: events, back-off, nothing lost, recovery when space returns ---------------------


@pytest.fixture
def full_failed(tmp_path: Path):
    """``tmp_path/failed`` on a 256 KiB tmpfs, filled to the last byte (a real ENOSPC)."""
    failed = tmp_path / "failed"
    failed.mkdir()
    if os.system(f"mount -t tmpfs -o size=256k tmpfs {failed}") != 0:
        pytest.fail("cannot mount a tmpfs (these tests run as root)")
    try:
        yield fill(failed)
    finally:
        os.system(f"umount -l {failed}")


def test_a_full_failed_folder_loses_nothing_and_the_quarantine_is_retried(tmp_path: Path, full_failed: Path) -> None:
    worker = _worker(tmp_path, checkpoint={"retry_seconds": 0.05})
    worker.recover()
    _bad(tmp_path, "bad.json")
    names = _good(tmp_path, 3)
    with capture_logs() as logs:
        _feed(worker)
        worker.checkpoints.tick()
    failures = events_named(logs, "file.quarantine_failed")
    assert failures and failures[0]["errno"] == errno.ENOSPC and failures[0]["retry_in_s"] > 0
    assert [p.name.split("~", 1)[1] for p in (tmp_path / "work").rglob("*~bad.json")] == ["bad.json"], "the file left work/"
    assert worker.checkpoint("test") is not None  # training and checkpoints go on meanwhile
    assert sorted(p.name for p in files_in(tmp_path / "processed")) == names
    # a restart while the disk is still full reaches READY (recover does not raise) and keeps the file
    worker.predictions.close()
    again = _worker(tmp_path, checkpoint={"retry_seconds": 0.05})
    with capture_logs() as logs:
        again.recover()
    assert events_named(logs, "file.quarantine_failed") and len(again.pipeline.quarantine) == 1
    full_failed.unlink()  # space returns
    wait_until(lambda: again.checkpoints.tick() or not len(again.pipeline.quarantine), 30, "the retried quarantine")
    assert _sidecar_check(tmp_path / "failed") == ["bad.json"]
    assert again.counters.files_failed == 1


# -- item 6: files_failed is exact after a crash; names cut on a character; future mtimes; early SIGTERM -----------


def test_files_failed_counts_each_quarantine_once_across_crashes(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    worker.recover()
    _good(tmp_path, 2)
    _feed(worker)
    assert worker.checkpoint("test") is not None
    for i in range(3):
        _bad(tmp_path, f"bad{i}.json")
    _feed(worker)
    assert worker.counters.files_failed == 3
    worker.predictions.close()  # "kill -9": no checkpoint after the quarantines
    crashed = _recovered(tmp_path)
    assert crashed.counters.files_failed == 3, "quarantines since the last checkpoint were forgotten"
    _good(tmp_path, 1, seed=1)
    _feed(crashed)
    assert crashed.checkpoint("test") is not None
    crashed.predictions.close()
    assert _recovered(tmp_path).counters.files_failed == 3, "a quarantine was counted twice"
    assert list((tmp_path / "work").rglob(f"{claims.REASON_PREFIX}*")) == [], "records outlive the checkpoint"


def test_a_long_utf8_name_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    name = "日" * 84 + ".json"  # 252 + 5 bytes: any prefix makes it too long
    for prefix, reserve in (("00000001~", 0), ("", len(claims.SIDECAR_SUFFIX)), (".tmp-", 8)):
        cut = fit_name(name, prefix, reserve)
        raw = os.fsencode(cut)
        assert len(raw) <= NAME_MAX - reserve
        raw.decode("utf-8")  # no half character: no lone surrogate anywhere the name is shown
        assert cut.endswith(".json")
    worker = _worker(tmp_path)
    worker.recover()
    drop(tmp_path / "inbox", "ü" * 120 + ".json", sample_json(np.random.default_rng(0)))
    _feed(worker)
    line = (tmp_path / "state" / "predictions.jsonl").read_text()
    assert "\\ud" not in line
    json.loads(line)["file"].encode("utf-8")


def test_a_file_with_a_future_mtime_is_taken_by_the_rescan(tmp_path: Path) -> None:
    path = drop(tmp_path, "future.json", "{}")
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    source = FolderSource(tmp_path, settle_seconds=2.0)
    assert source.scan() == 1 and source.take(5) == [path]


def test_a_stop_signal_before_the_worker_exists_is_acted_on_when_it_starts(tmp_path: Path) -> None:
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signals.install_early(signals.worker_command(["run", "--config", "x"]))
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the early handler: recorded, not fatal
        _good(tmp_path, 3)
        worker = _worker(tmp_path)
        assert worker.run() == 0 and worker.stop_signal == signal.SIGTERM
        assert worker.counters.files_processed == 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    assert not signals.worker_command(["status"]) and signals.worker_command(["--quiet", "ingest", "dir"])


# -- item 9: a large file never blocks the heartbeat or a stop ------------------------------------------------------


def _big(root: Path, samples: int = 40) -> None:
    drop(root / "inbox", "big.json", sample_json(np.random.default_rng(5), samples))


def test_a_large_file_is_learned_in_chunks_with_heartbeats_between(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(tmp_path, daemon={"status_seconds": 1e-6})
    worker.recover()
    pings: list[float] = []
    monkeypatch.setattr(worker.notifier, "watchdog", lambda: pings.append(time.monotonic()) or True)
    _big(tmp_path)
    _feed(worker)
    assert len(pings) >= 9, "no WATCHDOG=1 between the 10 steps of one file"
    assert worker.engine.metrics.seen == 40 and worker.counters.files_processed == 1


def test_a_stop_in_the_middle_of_a_large_file_leaves_it_untouched_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _worker(tmp_path, daemon={"status_seconds": 1e-6})
    worker.recover()
    _good(tmp_path, 2)
    _feed(worker)
    before = {k: v.clone() for k, v in worker.engine.state()[0].items()}
    beats: list[int] = []

    def watchdog() -> bool:
        beats.append(1)
        if len(beats) == 3:
            worker.request_stop(signal.SIGTERM)
        return True

    monkeypatch.setattr(worker.notifier, "watchdog", watchdog)
    monkeypatch.setattr(worker, "stop_signal", None)
    _big(tmp_path)
    worker.feed.scan()
    outcome = worker.process(worker.feed.take(4))
    assert [item.name for item in outcome.interrupted] == ["big.json"] and not outcome.done
    after = worker.engine.state()[0]
    assert all(np.array_equal(after[k].numpy(), v.numpy()) for k, v in before.items()), "a partial file changed the model"
    worker.shutdown()
    worker.predictions.close()
    assert [p.name.split("~", 1)[1] for p in (tmp_path / "work").rglob("*~big.json")] == ["big.json"]
    again = _worker(tmp_path, mode="burst")
    assert again.run() == 0
    assert again.engine.metrics.seen == 42 and again.engine.metrics.trained == 42, "learned twice or not at all"
    journal = [json.loads(line) for line in (tmp_path / "state" / "predictions.jsonl").read_text().splitlines()]
    assert len([r for r in journal if r["file"] == "big.json"]) == 40


def test_stopping_is_announced_when_the_stop_is_requested_and_the_watchdog_period_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "notify"))
    server.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    settings = _settings(tmp_path, daemon={"status_seconds": 5.0})
    worker = daemon.build_file_worker(settings, FolderSource(settings.paths.inbox, 0.0), settings.paths.processed)
    assert worker.heartbeat.period == pytest.approx(0.1)
    monkeypatch.setattr(worker, "stop_signal", None)
    worker.request_stop(signal.SIGTERM)
    assert server.recv(4096) == b"STOPPING=1"
    assert Notifier.watchdog_seconds({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    server.close()


# -- item 13: checkpoints only when something changed, and rate-limited -------------------------------------------


def _saved(worker: Worker) -> int:
    return len(CheckpointStore(worker.settings.paths.checkpoints).list())


def test_idle_and_timed_checkpoints_are_rate_limited_and_need_a_change(tmp_path: Path) -> None:
    worker = _worker(tmp_path, checkpoint={"min_interval_seconds": 3600.0})
    worker.recover()
    _bad(tmp_path, "bad.json")
    _feed(worker)
    worker.handle(Checkpoint("idle"))
    assert _saved(worker) == 0, "a batch of refused files changed nothing, yet a checkpoint was written"
    _good(tmp_path, 1)
    _feed(worker)
    worker.handle(Checkpoint("idle"))
    assert _saved(worker) == 1
    _good(tmp_path, 1, seed=1)
    _feed(worker)
    worker.handle(Checkpoint("idle"))
    worker.handle(Checkpoint("timer"))
    assert _saved(worker) == 1, "a second full checkpoint within checkpoint.min_interval_seconds"
    assert len(list((tmp_path / "work").rglob("*~g1-*"))) == 1  # it waits, uncovered, in the work area
    worker.shutdown()  # the shutdown checkpoint is never held back
    assert _saved(worker) == 2 and list((tmp_path / "work").rglob("*~*.json")) == []


def test_a_byte_budget_stretches_the_interval(tmp_path: Path) -> None:
    worker = _worker(tmp_path, checkpoint={"min_interval_seconds": 1.0, "max_bytes_per_hour": 3600})
    worker.recover()
    _good(tmp_path, 1)
    _feed(worker)
    info = worker.checkpoint("test")
    assert info is not None and worker.checkpoints.min_interval() == pytest.approx(max(1.0, info.tensors_bytes))
