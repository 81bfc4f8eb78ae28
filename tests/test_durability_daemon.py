"""Durability against the real ``plasticd run`` process (issue 12): real full disks (small tmpfs mounts), real
kill -9, real signals. The fault-injection test asserts the three promises whatever happened: no file lost,
none learned twice, every quarantined file has its sidecar."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest

from plasticd.service.checkpoint_store import CheckpointStore
from tests.helpers import Daemon, drop, files_in, fill, sample_json, wait_until, write_config

SIDECAR = ".error.json"


@contextmanager
def tmpfs(folder: Path, size: str = "256k"):
    folder.mkdir(parents=True, exist_ok=True)
    if os.system(f"mount -t tmpfs -o size={size} tmpfs {folder}") != 0:
        pytest.fail("cannot mount a tmpfs (these tests run as root)")
    try:
        yield folder
    finally:
        os.system(f"umount -l {folder}")


def test_sighup_reopens_the_log_file_and_the_daemon_goes_on(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "plasticd.log"
    write_config(tmp_path)
    config = (tmp_path / "plasticd.toml").read_text()
    (tmp_path / "plasticd.toml").write_text(config.replace("[log]\n", f'[log]\nfile = "{log_file}"\n'))
    d = Daemon(tmp_path)
    try:
        d.wait_for_event("daemon.ready")
        os.rename(log_file, log_file.with_name("plasticd.log.1"))  # logrotate
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log_file.exists() and "log.reopened" in log_file.read_text(), 30, "the reopened log file")
        drop(tmp_path / "data_inbox", "a.json", sample_json(np.random.default_rng(0)))
        wait_until(lambda: files_in(tmp_path / "data_processed"), 30, "a file processed after SIGHUP")
        assert d.proc.poll() is None, "SIGHUP killed the daemon"
    finally:
        rc = d.stop()
    assert rc == 0
    assert "daemon.stopped" in log_file.read_text()


@pytest.mark.parametrize("command", ["python -m plasticd", "plasticd"])  # the console script too (issue 20)
def test_sigterm_during_start_up_exits_cleanly(tmp_path: Path, command: str) -> None:
    write_config(tmp_path)
    program = [sys.executable, "-m", "plasticd"] if command != "plasticd" else [str(Path(sys.executable).parent / "plasticd")]
    proc = subprocess.Popen(
        [*program, "run", "--config", str(tmp_path / "plasticd.toml")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    maps = Path(f"/proc/{proc.pid}/maps")
    # still importing (pydantic is loaded on the way to the settings, long before the worker exists)
    wait_until(lambda: proc.poll() is not None or "pydantic_core" in maps.read_text(), 60, "the start-up imports")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


# -- the fault-injection test of "Done when" ------------------------------------------------------------------


def _config(root: Path) -> None:
    write_config(root, "\n[limits]\nmax_file_bytes = 20000\n")
    text = (root / "plasticd.toml").read_text()
    text = text.replace("[log]\n", f'[log]\nfile = "{root / "logs" / "plasticd.log"}"\n')
    paths = '\n[paths]\ninbox = "data/inbox"\nwork = "data/work"\nprocessed = "out/processed"\nfailed = "out/failed"\n'
    (root / "plasticd.toml").write_text(text + paths + "[train]\nmax_batch = 4\n")


def _drop_round(root: Path, rng: np.random.Generator, round_: int, good: dict, bad: set) -> None:
    for i in range(6):
        name = f"r{round_}-g{i}.json"
        n = int(rng.integers(1, 4))
        drop(root / "data" / "inbox", name, sample_json(rng, n))
        good[name] = n
    for i in range(3):
        name = f"r{round_}-b{i}.json"
        if i == 0 and not (root / "data" / "inbox" / "victim.json").exists():  # not replacing our own unclaimed drop
            name = "victim.json"  # the same bad name in most rounds: the failed folder must never overwrite
        drop(root / "data" / "inbox", name, "{broken" + "x" * i)
        bad.add(name)


def _quarantined(failed: Path) -> list[str]:
    entries = {p.name for p in failed.iterdir() if not p.name.startswith(".")}
    files = [n for n in entries if n + SIDECAR in entries]
    orphans = entries - set(files) - {n + SIDECAR for n in files}
    assert not orphans, f"in {failed}: without a sidecar, or a sidecar without its file: {sorted(orphans)}"
    assert not [p.name for p in failed.iterdir() if p.name.startswith(".") and ".tmp-" in p.name], "stray temp files"
    return [json.loads((failed / (n + SIDECAR)).read_text())["file"] for n in files]


def test_full_disks_and_kill_9_at_the_quarantine_step_lose_nothing_and_learn_nothing_twice(tmp_path: Path) -> None:
    _config(tmp_path)
    rng = np.random.default_rng(7)
    good: dict[str, int] = {}
    bad: set[str] = set()
    total_bad = 0
    with ExitStack() as mounts:
        data = mounts.enter_context(tmpfs(tmp_path / "data", "2m"))
        out = tmp_path / "out"
        processed = mounts.enter_context(tmpfs(out / "processed"))
        failed = mounts.enter_context(tmpfs(out / "failed"))
        logs = mounts.enter_context(tmpfs(tmp_path / "logs", "512k"))
        for round_, full in enumerate([failed, processed, data, logs, failed, None, failed]):
            d = Daemon(tmp_path)
            try:
                d.wait_for_event("daemon.ready", timeout=120)  # READY even with a full disk somewhere
                _drop_round(tmp_path, rng, round_, good, bad)
                filler = fill(full) if full is not None else None  # the producers' files are in first
                total_bad += 3
                if full is failed or full is None:  # kill -9 while quarantines are under way or waiting
                    wait_until(
                        lambda d=d: any(e["event"] in ("sample.quarantined", "file.quarantine_failed") for e in d.events()),
                        60,
                        "a quarantine attempt",
                    )
                else:
                    wait_until(lambda d=d: len(d.events()) > 5, 30, "some work")
                d.kill()
                if filler is not None:
                    filler.unlink()
            finally:
                d.kill()
        d = Daemon(tmp_path)  # space everywhere: the last run finishes everything
        try:
            d.wait_for_event("daemon.ready", timeout=120)
            wait_until(lambda: not list((data / "work").rglob("*~*")) and not files_in(data / "inbox"), 120, "all work done")
        finally:
            rc = d.stop()
        assert rc == 0, d.tail()
        processed_names = sorted(p.name for p in files_in(processed))
        assert processed_names == sorted(good), "a good file was lost, duplicated or quarantined"
        quarantined = _quarantined(failed)
        assert len(quarantined) == total_bad and set(quarantined) == bad, "a bad file was lost or overwritten"
        assert quarantined.count("victim.json") > 1, "the same name was never quarantined twice: nothing tested"
        loaded = CheckpointStore(tmp_path / "checkpoints").load_latest()
        assert loaded is not None
        assert loaded.meta["counters"]["files_failed"] == total_bad
        trained = json.loads((tmp_path / "state" / "status.json").read_text())["samples_trained"]
        assert trained == sum(good.values()), "a file was learned twice (or not at all)"
