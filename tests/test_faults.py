"""Faults inside the daemon, driven in-process: a Worker from ``daemon.build_file_worker`` under temporary
settings, stepped by hand (recover / scan / take / process / checkpoint) while the file system fails."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from plasticd.errors import CheckpointError
from plasticd.service import daemon
from plasticd.service.checkpoint_store import CheckpointStore
from plasticd.service.sources import FolderSource
from plasticd.service.worker import Worker
from tests.helpers import CLASSES, DIM, drop, events_named, fail_fsync, fail_rename, files_in, sample_json, small_settings

EIO = OSError(errno.EIO, "Input/output error")
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _settings(root: Path, **sections: dict):
    paths = {name: str(root / folder) for name, folder in [
        ("inbox", "inbox"), ("processed", "processed"), ("failed", "failed"), ("work", "work"),
        ("checkpoints", "checkpoints"), ("state", "state"),
    ]}  # fmt: skip
    base = {
        "paths": paths,
        "model": {"input_dim": DIM, "num_classes": CLASSES, "neurons": 16, "iterations": 2},
        "checkpoint": {"every_samples": 10**6, "retry_seconds": 300.0, "max_failures": 3},
        "plasticity": {"interval": 0},
        "train": {"max_batch": 4},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return small_settings(**base)


def _worker(root: Path, **sections: dict) -> Worker:
    settings = _settings(root, **sections)
    worker = daemon.build_file_worker(settings, FolderSource(settings.paths.inbox, 0.0), settings.paths.processed)
    worker.recover()
    return worker


def _feed(worker: Worker) -> None:
    """Claim and process everything in the inbox, as the loop would."""
    worker.feed.scan()
    while items := worker.feed.take(worker.settings.train.max_batch):
        worker.process(items)


def _drop(root: Path, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        drop(root / "inbox", name, sample_json(rng))


def _claimed(root: Path) -> list[str]:
    """Original names of the files waiting in the work area."""
    return sorted(p.name.split("~", 1)[1] for p in (root / "work").rglob("*~*") if p.is_file())


def _assert_each_once(root: Path, names: list[str]) -> None:
    assert sorted(p.name for p in files_in(root / "processed")) == sorted(names), "lost or duplicated"
    assert _claimed(root) == [] and files_in(root / "inbox") == []


def _latest(root: Path):
    loaded = CheckpointStore(root / "checkpoints").load_latest()
    assert loaded is not None
    return loaded


def _fail_link_into(monkeypatch: pytest.MonkeyPatch, folder: Path, error: OSError) -> None:
    real = os.link

    def link(src, dst, **kwargs) -> None:
        if Path(dst).parent == folder:
            raise error
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)


# A fault at each write a checkpoint needs: the model's files, the folder, the predictions journal.
SAVE_FAULTS: dict[str, Callable[[pytest.MonkeyPatch, Path], None]] = {
    "enospc-fsync-tensors": lambda mp, root: fail_fsync(mp, lambda p: p.endswith(".safetensors")),
    "eio-fsync-predictions": lambda mp, root: fail_fsync(mp, lambda p: p.endswith("predictions.jsonl")),
    "enospc-fsync-checkpoint-folder": lambda mp, root: fail_fsync(mp, lambda p: p == str(root / "checkpoints")),
    "eio-rename-json": lambda mp, root: fail_rename(mp, ".json", EIO),
}


@pytest.mark.parametrize("then", ["retry", "restart"])
@pytest.mark.parametrize("inject", SAVE_FAULTS.values(), ids=SAVE_FAULTS.keys())
def test_a_failed_checkpoint_keeps_its_files_until_a_retry_or_restart_covers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inject, then: str
) -> None:
    first, second = [f"a{i}.json" for i in range(6)], [f"b{i}.json" for i in range(6)]
    worker = _worker(tmp_path)
    _drop(tmp_path, first)
    _feed(worker)
    assert worker.checkpoint("test") is not None
    _drop(tmp_path, second, seed=1)
    _feed(worker)
    inject(monkeypatch, tmp_path)
    with capture_logs() as logs:
        assert worker.checkpoint("test") is None
        worker.checkpoints.maybe_checkpoint("samples")  # within the back-off: no second try, no second error
    monkeypatch.undo()
    [failed] = events_named(logs, "checkpoint.failed")
    assert failed["log_level"] == "error" and failed["failures"] == 1 and failed["retry_in_s"] == 300.0
    assert any(r in failed["error"] for r in ("No space left on device", "Input/output error")), failed
    assert str(tmp_path) in failed["error"], "the error names no path"
    assert sorted(p.name for p in files_in(tmp_path / "processed")) == first
    assert _claimed(tmp_path) == second, "files not yet covered must wait in the work area"
    assert _latest(tmp_path).info.seq == 1, "the previous checkpoint must stay loadable"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    if then == "retry":
        assert worker.checkpoint("retry") is not None and worker.checkpoints.failures == 0
    else:  # the process died after the failure: the next one trains the waiting files again, once
        worker.predictions.close()
        worker = _worker(tmp_path)
        _feed(worker)
        worker.checkpoint("restart")
    _assert_each_once(tmp_path, first + second)
    assert _latest(tmp_path).meta["counters"]["files_processed"] == 12
    assert worker.engine.metrics.trained == 12, "a sample was trained twice or not at all"


@pytest.mark.parametrize("then", ["retry", "restart"])
def test_a_failed_move_to_processed_is_logged_and_retried_without_training_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    names = [f"m{i}.json" for i in range(5)]
    worker = _worker(tmp_path)
    _drop(tmp_path, names)
    _feed(worker)
    _fail_link_into(monkeypatch, tmp_path / "processed", EIO)
    with capture_logs() as logs:
        info = worker.checkpoint("test")
    monkeypatch.undo()
    assert info is not None, "the checkpoint itself succeeded"
    [failed] = events_named(logs, "file.move_failed")  # one event: the rest wait without a storm of errors
    assert failed["log_level"] == "error" and failed["error"].endswith("Input/output error")
    assert failed["destination"] == str(tmp_path / "processed") and failed["files_waiting"] == 5
    assert failed["path"].startswith(str(tmp_path / "work"))
    assert _claimed(tmp_path) == names and files_in(tmp_path / "processed") == []
    trained = worker.engine.metrics.trained
    if then == "retry":
        assert worker.checkpoint("idle") is None  # nothing new to save: the moves are retried alone
        assert worker.checkpoints.last == info
    else:
        worker.predictions.close()
        worker = _worker(tmp_path)  # recovery moves what the checkpoint covers; nothing is requeued
        assert worker.feed.backlog == 0
    _assert_each_once(tmp_path, names)
    assert worker.engine.metrics.trained == trained == 5


def test_moves_wait_in_the_loop_for_the_back_off_then_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(tmp_path, checkpoint={"retry_seconds": 0.05})
    _drop(tmp_path, ["x.json", "y.json"])
    _feed(worker)
    _fail_link_into(monkeypatch, tmp_path / "processed", ENOSPC)
    worker.checkpoint("test")
    monkeypatch.undo()
    assert len(worker.checkpoints.unmoved) == 2
    moved_by_the_loop = threading.Event()

    def watch() -> None:  # stops the loop once it has moved the files on (or after 30 s)
        deadline = time.monotonic() + 30.0
        while len(worker.checkpoints.unmoved) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not len(worker.checkpoints.unmoved):
            moved_by_the_loop.set()
        worker.stopping = True

    worker.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert worker.run() == 0
    finally:
        watcher.join()
    assert moved_by_the_loop.is_set(), "the loop never retried the moves"
    _assert_each_once(tmp_path, ["x.json", "y.json"])


def test_a_failed_fsync_of_the_processed_folder_is_logged_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(tmp_path)
    _drop(tmp_path, ["s.json"])
    _feed(worker)
    fail_fsync(monkeypatch, lambda p: p == str(tmp_path / "processed"))
    with capture_logs() as logs:
        assert worker.checkpoint("test") is not None
    monkeypatch.undo()
    [event] = events_named(logs, "file.sync_failed")
    assert event["folder"] == str(tmp_path / "processed") and "No space left" in event["error"]
    _assert_each_once(tmp_path, ["s.json"])


def test_persistent_checkpoint_failures_stop_the_loop_with_an_error_and_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"p{i}.json" for i in range(10)]
    _drop(tmp_path, names)
    worker = _worker(tmp_path, checkpoint={"every_samples": 1, "retry_seconds": 0.01, "max_failures": 3})
    worker.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    # an I/O error: a full disk does not count towards max_failures (tests/test_disk_space.py)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / "checkpoints")):
            raise EIO
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    stop = threading.Timer(30.0, lambda: setattr(worker, "stopping", True))  # guard
    stop.start()
    try:
        with capture_logs() as logs, pytest.raises(CheckpointError, match="3 checkpoints in a row failed") as raised:
            worker.run()
    finally:
        stop.cancel()
        monkeypatch.undo()
        worker.predictions.close()
    assert "processed again at the next start" in str(raised.value) and "Input/output error" in str(raised.value)
    failures = events_named(logs, "checkpoint.failed")
    assert [e["failures"] for e in failures] == [1, 2, 3, 4]  # three in the loop, one last try at shutdown
    assert [e["retry_in_s"] for e in failures[:3]] == [0.01, 0.02, 0.04]
    assert files_in(tmp_path / "processed") == [] and sorted(_claimed(tmp_path)) == sorted(names)
    assert CheckpointStore(tmp_path / "checkpoints").load_latest() is None
    again = _worker(tmp_path)  # the disk is fixed: a restart learns every file once
    _feed(again)
    again.checkpoint("test")
    _assert_each_once(tmp_path, names)
    assert again.engine.metrics.trained == 10


def test_a_failed_final_checkpoint_makes_the_run_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _drop(tmp_path, ["q.json"])
    worker = _worker(tmp_path)
    worker.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    worker.mode = "burst"
    fail_rename(monkeypatch, ".safetensors", ENOSPC)
    with pytest.raises(CheckpointError, match="the final checkpoint failed .*No space left.* processed again"):
        worker.run()
    assert _claimed(tmp_path) == ["q.json"]


def test_an_unwritable_status_file_is_logged_once_and_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(tmp_path, daemon={"status_seconds": 0.001})
    real_replace = os.replace

    def replace(src, dst, **kwargs) -> None:  # the status file is not fsynced: it fails at its rename
        if str(dst).endswith("status.json"):
            raise ENOSPC
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with capture_logs() as logs:
        for _ in range(3):
            worker.heartbeat.beat()
    monkeypatch.undo()
    [event] = events_named(logs, "status.write_failed")
    assert event["folder"] == str(tmp_path / "state") and "No space left" in event["error"]
    worker.heartbeat.write_status()
    assert json.loads((tmp_path / "state" / "status.json").read_text())["state"] == "starting"


def test_a_predictions_journal_deleted_under_the_daemon_is_recreated(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    _drop(tmp_path, ["one.json"])
    _feed(worker)
    shutil.rmtree(tmp_path / "state")
    _drop(tmp_path, ["two.json"], seed=1)
    with capture_logs() as logs:
        _feed(worker)
    [event] = events_named(logs, "predictions.reopened")
    assert event["path"] == str(tmp_path / "state" / "predictions.jsonl")
    assert worker.checkpoint("test") is not None  # syncs the new journal
    journal = (tmp_path / "state" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["file"] for line in journal] == ["two.json"], "records went to the deleted file"


# -- non-finite training: the guilty file is quarantined, the network is untouched ----------------------


def _probe(worker: Worker) -> torch.Tensor:
    return worker.engine.predict_logits(torch.linspace(-2, 2, 5 * DIM).reshape(5, DIM))


def _huge(n: int = 1) -> str:
    return json.dumps({"x": [[3e38] * DIM] * n, "y": [1] * n})


def test_a_file_that_makes_training_non_finite_is_quarantined_and_changes_nothing(tmp_path: Path) -> None:
    worker = _worker(tmp_path, limits={"max_abs_value": 1e39})
    _drop(tmp_path, [f"w{i}.json" for i in range(8)])
    _feed(worker)
    before, state = _probe(worker), {k: v.clone() for k, v in worker.engine.state()[0].items()}
    drop(tmp_path / "inbox", "huge.json", _huge())
    drop(tmp_path / "inbox", "huge-big.json", _huge(9))  # more than one micro-batch: the all-or-nothing path
    _feed(worker)
    torch.testing.assert_close(_probe(worker), before, rtol=0, atol=0)
    after = worker.engine.state()[0]
    assert all(torch.equal(after[k], v) for k, v in state.items()), "the rejected steps changed the engine"
    sidecars = {p.name: json.loads(p.read_text()) for p in files_in(tmp_path / "failed", "*.error.json")}
    assert {n: s["reason"] for n, s in sidecars.items()} == {
        "huge.json.error.json": "non_finite_training",
        "huge-big.json.error.json": "non_finite_training",
    }
    assert "not finite" in sidecars["huge.json.error.json"]["message"]
    assert worker.counters.files_failed == 2 and worker.engine.metrics.seen == 8


def test_the_guilty_file_of_a_micro_batch_is_found_and_the_others_are_learned(tmp_path: Path) -> None:
    """[good, huge, good] in one micro-batch ends as if the huge file had never come."""
    a, b = _worker(tmp_path / "a", limits={"max_abs_value": 1e39}), _worker(tmp_path / "b")
    rng = np.random.default_rng(3)
    good = [sample_json(rng) for _ in range(2)]
    drop(tmp_path / "a" / "inbox", "1.json", good[0])
    drop(tmp_path / "a" / "inbox", "2.json", _huge())
    drop(tmp_path / "a" / "inbox", "3.json", good[1])
    _feed(a)
    for i, content in enumerate(good):  # the retry steps the innocent files one at a time
        drop(tmp_path / "b" / "inbox", f"{i}.json", content)
        _feed(b)
    assert [p.name for p in files_in(tmp_path / "a" / "failed")] == ["2.json", "2.json.error.json"]
    torch.testing.assert_close(_probe(a), _probe(b), rtol=0, atol=0)
    assert a.engine.metrics.trained == 2 and a.counters.files_processed == 2


# -- a second SIGTERM during a slow shutdown exits at once ---------------------------------------------------


class _Exited(BaseException):
    """Stands in for os._exit, which would end the test process."""


def test_a_second_sigterm_during_a_slow_shutdown_exits_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    _drop(tmp_path, ["t.json"])
    worker = _worker(tmp_path)
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise _Exited

    saves: list[str] = []

    def slow_save(tensors, meta):  # the final checkpoint is where a slow shutdown spends its time
        saves.append(meta["reason"])
        os.kill(os.getpid(), signal.SIGTERM)  # the operator loses patience
        raise AssertionError("the second SIGTERM did not end the process")

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(worker.store, "save", slow_save)
    worker.on_batch.append(lambda outcome: os.kill(os.getpid(), signal.SIGTERM))  # the first, after the micro-batch
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(_Exited):
            worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert exits == [1] and saves == ["shutdown"]
    assert "second SIGTERM, exiting now" in capfd.readouterr().err
    assert _claimed(tmp_path) == ["t.json"], "the file must wait for the next start"


def test_the_first_signal_only_asks_to_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(tmp_path)
    monkeypatch.setattr(os, "_exit", lambda code: pytest.fail("exited on the first signal"))
    worker.request_stop(signal.SIGINT)
    assert worker.stopping and worker.stop_signal == signal.SIGINT


def test_an_ingest_folder_deleted_mid_run_stops_with_its_name_and_keeps_what_was_learned(tmp_path: Path) -> None:
    """Burst mode (plasticd ingest): the folder vanishes after the first micro-batch. The loop stops
    with a PlasticdError naming the folder, not a traceback from os.scandir, and the files already
    trained on are checkpointed and moved on at shutdown."""
    from plasticd.errors import PlasticdError

    settings = _settings(tmp_path)
    folder = tmp_path / "todo"
    names = [f"s{i}.json" for i in range(10)]
    rng = np.random.default_rng(0)
    for name in names:
        drop(folder, name, sample_json(rng))
    worker = daemon.build_file_worker(settings, FolderSource(folder, 0.0), tmp_path / "done", mode="burst")
    # an operator cleans up under the running ingest, after the first micro-batch
    worker.on_batch.append(lambda outcome: shutil.rmtree(folder, ignore_errors=True))
    with pytest.raises(PlasticdError, match=f"folder {folder} cannot be listed"):
        worker.run()
    done = sorted(p.name for p in files_in(tmp_path / "done"))
    assert done and set(done) <= set(names), "the files learned before the folder went were not moved on"
    assert len(done) == worker.counters.files_processed == worker.engine.metrics.seen
    assert _latest(tmp_path).meta["counters"]["files_processed"] == len(done)
