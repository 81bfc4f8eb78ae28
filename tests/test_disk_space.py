"""A tight disk never stops the daemon (issue 20, section 2): the checkpoints live on a real small tmpfs.

The checkpoint folder holds about three and a half checkpoints, so ``checkpoint.keep = 3`` plus a new one
does not fit: the daemon must make room from the oldest kept checkpoints (never the newest valid one). Then
the disk is filled to the last byte until even that is not enough: the daemon degrades (it learns on, files
wait), and when the space is freed it checkpoints again by itself, drains everything, exits 0 on SIGTERM, and
its counters equal what the folders hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from plasticd.service.checkpoint_store import CheckpointStore
from tests.helpers import Daemon, drop, files_in, fill, sample_json, wait_until, work_files, write_config

pytestmark = pytest.mark.slow

CHECKPOINT_BYTES = 130_000  # the helpers' model (N=32, D=8): ~122 kB of tensors plus its JSON record


def _mount_tmpfs(folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.system(f"mount -t tmpfs -o size={size} tmpfs {folder}") != 0:
        pytest.fail("cannot mount a tmpfs (these tests run as root)")


def _count(d: Daemon, name: str) -> int:
    return sum(e.get("event") == name for e in d.events())


def _drop_files(inbox: Path, rng: np.random.Generator, tag: str, n: int, good: dict[str, int]) -> None:
    for i in range(n):
        name = f"{tag}-{i}.json"
        samples = int(rng.integers(2, 6))
        drop(inbox, name, sample_json(rng, samples))
        good[name] = samples


def _config(root: Path, size: int) -> Path:
    write_config(root, "\n[limits]\nmax_file_bytes = 20000\n")
    cfg = root / "plasticd.toml"
    # retries far apart and few failures allowed: only the free-space watch can bring the checkpoints back in time,
    # and a full disk must not count as a failure that stops the daemon
    cfg.write_text(
        cfg.read_text().replace("every_samples = 50\n", "every_samples = 20\nkeep = 3\nretry_seconds = 60\nmax_failures = 2\n")
    )
    checkpoints = root / "checkpoints"
    _mount_tmpfs(checkpoints, size)
    return checkpoints


def _check_counters(root: Path, good: dict[str, int], failed_files: int) -> None:
    """The status file's counters (and the last checkpoint's) equal what the folders hold."""
    processed, failed = root / "data_processed", root / "data_failed"
    status = json.loads((root / "state" / "status.json").read_text())
    assert sorted(p.name for p in files_in(processed)) == sorted(good)
    assert status["files_processed"] == len(files_in(processed)) == len(good)
    assert status["files_failed"] == len(files_in(failed, "*.error.json")) == failed_files
    assert status["samples_trained"] == sum(good.values()), "a file was learned twice (or not at all)"
    loaded = CheckpointStore(root / "checkpoints").load_latest()
    assert loaded is not None and loaded.meta["counters"]["files_processed"] == len(good)


def _drained(root: Path, good: dict[str, int]) -> bool:
    inbox, processed = root / "data_inbox", root / "data_processed"
    return not files_in(inbox) and not work_files(root) and len(files_in(processed)) == len(good)


def test_kept_checkpoints_that_no_longer_fit_make_room_from_the_oldest(tmp_path: Path) -> None:
    checkpoints = _config(tmp_path, int(CHECKPOINT_BYTES * 3.5))  # keep = 3 plus a new one do not fit
    inbox = tmp_path / "data_inbox"
    rng = np.random.default_rng(3)
    good: dict[str, int] = {}
    try:
        d = Daemon(tmp_path)
        try:
            d.wait_for_event("daemon.ready", timeout=120)
            for round_ in range(6):
                saved = _count(d, "checkpoint.saved")
                _drop_files(inbox, rng, f"a{round_}", 6, good)
                wait_until(lambda s=saved: _count(d, "checkpoint.saved") > s, 60, f"a checkpoint in round {round_}\n{d.tail()}")
            drop(inbox, "broken.json", "{not json")
            wait_until(lambda: _drained(tmp_path, good) and _count(d, "sample.quarantined") == 1, 60, f"a drain\n{d.tail()}")
        finally:
            rc = d.stop()
        assert rc == 0, d.tail()
        made = [e for e in d.events() if e.get("event") == "checkpoint.space_made"]
        assert made, d.tail()
        assert all(e["removed"] < e["kept_newest"] for e in made), made  # never the newest valid checkpoint
        assert _count(d, "checkpoint.no_space") == 0 and _count(d, "checkpoint.failed") == 0
        assert len(CheckpointStore(checkpoints).list()) >= 2
        _check_counters(tmp_path, good, failed_files=1)
    finally:
        os.system(f"umount -l {checkpoints}")


def test_a_full_checkpoint_disk_degrades_then_recovers_by_itself(tmp_path: Path) -> None:
    checkpoints = _config(tmp_path, int(CHECKPOINT_BYTES * 3.5))
    inbox = tmp_path / "data_inbox"
    rng = np.random.default_rng(4)
    good: dict[str, int] = {}
    filler: Path | None = None
    try:
        d = Daemon(tmp_path)
        try:
            d.wait_for_event("daemon.ready", timeout=120)
            _drop_files(inbox, rng, "first", 3, good)
            d.wait_for_event("checkpoint.saved", timeout=60)  # one checkpoint: nothing older to make room from
            filler = fill(checkpoints, ".filler-0")
            _drop_files(inbox, rng, "full", 8, good)  # produce while the disk is full
            drop(inbox, "broken.json", "{not json")
            d.wait_for_event("checkpoint.no_space", timeout=60)
            wait_until(lambda: not files_in(inbox), 60, "the inbox taken while the disk is full")
            assert len(CheckpointStore(checkpoints).list()) == 1, "the newest valid checkpoint must be kept"
            assert d.proc.poll() is None, f"a full disk stopped the daemon\n{d.tail()}"
            saved = _count(d, "checkpoint.saved")
            filler.unlink()  # free: a checkpoint within seconds (the retry back-off is a minute), then a full drain
            wait_until(lambda: _count(d, "checkpoint.saved") > saved, 20, f"a checkpoint once space returned\n{d.tail()}")
            wait_until(lambda: _drained(tmp_path, good), 60, f"a full drain\n{d.tail()}")
            assert _count(d, "checkpoint.space_returned") == 1
        finally:
            rc = d.stop()
        assert rc == 0, d.tail()
        assert _count(d, "checkpoint.no_space") == 1  # said once, not once per retry
        _check_counters(tmp_path, good, failed_files=1)
    finally:
        os.system(f"umount -l {checkpoints}")
