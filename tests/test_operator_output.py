"""Output a person can read (issue 20, section 4): one summary line per recovery, the daemon's own outputs
skipped by ingest, ingest across file systems, exit codes through a closed pipe, latency from first sight."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from plasticd.service import daemon
from plasticd.service.sources import FolderSource
from plasticd.service.worker import Worker
from tests.helpers import CLASSES, DIM, drop, events_named, sample_json, small_settings, write_config


def _settings(root: Path, **sections: dict):
    folders = ("inbox", "processed", "failed", "work", "checkpoints", "state")
    base: dict = {
        "paths": {name: str(root / name) for name in folders},
        "model": {"input_dim": DIM, "num_classes": CLASSES, "neurons": 16, "iterations": 2},
        "checkpoint": {"every_samples": 10**6},
        "plasticity": {"interval": 0},
        "train": {"max_batch": 4},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return small_settings(**base)


def _worker(root: Path) -> Worker:
    settings = _settings(root)
    return daemon.build_file_worker(settings, FolderSource(settings.paths.inbox, 0.0), settings.paths.processed)


def test_recovery_requeues_in_one_summary_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(12):
        drop(tmp_path / "inbox", f"f{i:02d}.json", sample_json(rng))
    first = _worker(tmp_path)
    first.recover()
    first.feed.scan()
    while items := first.feed.take(4):
        first.process(items)  # trained, never checkpointed: as after a kill -9
    first.predictions.close()
    with capture_logs() as logs:
        _worker(tmp_path).recover()
    (line,) = [e for e in events_named(logs, "recovery.requeued") if e["log_level"] == "info"]
    assert line["files"] == 12 and line["first"] == [f"f{i:02d}.json" for i in range(5)]
    assert len(events_named(logs, "recovery.requeued_file")) == 12  # each file at debug


def _plasticd(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_ingest_of_a_copied_processed_folder_skips_the_daemons_own_results(tmp_path: Path) -> None:
    write_config(tmp_path)
    cfg = tmp_path / "plasticd.toml"
    cfg.write_text(cfg.read_text().replace("[daemon]\n", "[daemon]\nresult_files = true\n"))
    rng = np.random.default_rng(1)
    for i in range(5):
        drop(tmp_path / "todo", f"f{i}.json", sample_json(rng, 2))
    first = _plasticd(tmp_path, "ingest", "todo", "--to", "done", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert len(list((tmp_path / "done").glob("*.pred.json"))) == 5
    shutil.copytree(tmp_path / "done", tmp_path / "again")  # what rollback tells operators to do
    second = _plasticd(tmp_path, "ingest", "again", "--to", "done2", "--no-progress")
    assert second.returncode == 0, second.stderr  # nothing quarantined
    (note,) = [e for e in _events(second.stderr) if e["event"] == "source.skipped_results"]
    assert note["files"] == 5
    assert not (tmp_path / "data_failed").exists() or not list((tmp_path / "data_failed").iterdir())
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [f"f{i}.json.pred.json" for i in range(5)]
    assert len(list((tmp_path / "done2").glob("f?.json"))) == 5


@pytest.mark.slow
def test_ingest_exit_code_tells_the_work_outcome_through_a_closed_pipe(tmp_path: Path) -> None:
    write_config(tmp_path)
    rng = np.random.default_rng(2)
    for i in range(6):
        drop(tmp_path / "todo", f"f{i}.json", sample_json(rng))
    command = f"{sys.executable} -m plasticd ingest todo --to done --config plasticd.toml 2>&1 | head -1 >/dev/null"
    out = subprocess.run(["bash", "-c", command + "; exit ${PIPESTATUS[0]}"], cwd=tmp_path, timeout=300, check=False)
    assert out.returncode == 0
    assert len(list((tmp_path / "done").glob("*.json"))) == 6


def test_latency_starts_when_the_daemon_first_sees_the_file_not_at_its_mtime(tmp_path: Path) -> None:
    path = drop(tmp_path / "inbox", "staged.json", sample_json(np.random.default_rng(3)))
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))  # staged elsewhere long ago, renamed in now
    worker = _worker(tmp_path)
    worker.recover()
    worker.feed.scan()
    worker.process(worker.feed.take(4))
    worker.predictions.close()
    (record,) = [json.loads(line) for line in (tmp_path / "state" / "predictions.jsonl").read_text().splitlines()]
    assert 0 <= record["latency_ms"] < 3_000_000, record  # the hour since the mtime is not counted


def _copy_worker(root: Path, other: Path) -> Worker:
    settings = _settings(root)
    source = FolderSource(other, 0.0)
    return daemon.build_file_worker(settings, source, settings.paths.processed, mode="burst", copy=True)


def _run_through(worker: Worker) -> None:
    worker.recover()
    worker.feed.scan()
    while items := worker.feed.take(4):
        worker.process(items)
    worker.checkpoint("test")
    worker.predictions.close()


def test_claims_from_another_file_system_are_exactly_once_across_a_crash(tmp_path: Path, monkeypatch) -> None:
    import plasticd.service.copy_claims as copy_claims

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        other = Path(shm)
        assert os.stat(other).st_dev != os.stat(tmp_path).st_dev
        rng = np.random.default_rng(5)
        for i in range(4):
            drop(other, f"f{i}.json", sample_json(rng))

        class Killed(BaseException):  # a kill -9 between the durable copy and the source's removal
            pass

        def crash(_taken: Path) -> None:
            raise Killed

        first = _copy_worker(tmp_path, other)
        first.recover()
        first.feed.scan()
        monkeypatch.setattr(copy_claims, "_remove_source", crash)
        with pytest.raises(Killed):
            first.feed.take(4)
        monkeypatch.undo()
        first.predictions.close()
        hidden = [p.name for p in other.iterdir() if p.name.startswith(copy_claims.TAKING_PREFIX)]
        assert len(hidden) == 1, "the source is still there while its copy is claimed"
        # a crash before the copy committed: a record and a taken source, no claim
        session = next(p for p in (tmp_path / "work").iterdir() if p.is_dir())
        taken = other / f"{copy_claims.TAKING_PREFIX}x-00000099~f3.json"
        os.rename(other / "f3.json", taken)
        (session / f"{copy_claims.RECORD_PREFIX}00000099.json").write_text(
            json.dumps({"source": str(taken), "name": "f3.json", "claim": "00000099~f3.json"})
        )
        with capture_logs() as logs:
            _run_through(_copy_worker(tmp_path, other))
        assert len(events_named(logs, "recovery.copy_finished")) == 1
        assert len(events_named(logs, "recovery.copy_undone")) == 1
        assert os.listdir(other) == []
        assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [f"f{i}.json" for i in range(4)]
        records = [json.loads(line) for line in (tmp_path / "state" / "predictions.jsonl").read_text().splitlines()]
        assert sorted(r["file"] for r in records) == [f"f{i}.json" for i in range(4)], "a file learned twice or never"
