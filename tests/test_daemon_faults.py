"""The real daemon under operational faults: folders deleted under it, several processes on one inbox,
a 10,000-file burst, corrupt checkpoints at start-up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from plasticd.config import load_settings
from plasticd.learn.engine import Engine
from plasticd.service.checkpoint_store import CheckpointStore
from tests.helpers import Daemon, drop, files_in, predictions, sample_json, wait_until, work_files, write_config

pytestmark = pytest.mark.slow


def _set(root: Path, old: str, new: str) -> None:
    cfg = root / "plasticd.toml"
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


def test_inbox_and_processed_deleted_while_running_are_recreated_loudly(tmp_path: Path) -> None:
    write_config(tmp_path)
    inbox, processed = tmp_path / "data_inbox", tmp_path / "data_processed"
    rng = np.random.default_rng(0)
    d = Daemon(tmp_path)
    try:
        d.wait_for_event("daemon.ready")
        drop(inbox, "before.json", sample_json(rng))
        wait_until(lambda: (processed / "before.json").exists(), 30, "before.json processed")
        shutil.rmtree(inbox)
        shutil.rmtree(processed)
        d.wait_for_event("inbox.missing", timeout=30)
        drop(inbox, "after.json", sample_json(rng))
        wait_until(lambda: (processed / "after.json").exists(), 30, "after.json in a recreated processed/")
        # deleted and made again by someone else: a new folder (perhaps on the same inode), watched again
        shutil.rmtree(inbox)
        inbox.mkdir(exist_ok=True)  # the daemon may have been quicker
        wait_until(lambda: sum(e["event"] in ("inbox.missing", "inbox.replaced") for e in d.events()) >= 2, 30, "a new watch")
        drop(inbox, "replaced.json", sample_json(rng))
        wait_until(lambda: (processed / "replaced.json").exists(), 30, "replaced.json processed")
        assert d.proc.poll() is None, d.tail()
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    events = Counter(e["event"] for e in d.events())
    assert events["inbox.missing"] + events["inbox.replaced"] == 2, "watched again more than once: a loop"
    assert events["destination.missing"] == 1
    assert sorted(p.name for p in files_in(processed)) == ["after.json", "replaced.json"]
    assert [p["file"] for p in predictions(tmp_path)] == ["before.json", "after.json", "replaced.json"]


def test_an_inbox_that_is_no_longer_a_folder_stops_the_daemon_with_a_clear_error(tmp_path: Path) -> None:
    write_config(tmp_path)
    d = Daemon(tmp_path)
    try:
        d.wait_for_event("daemon.ready")
        shutil.rmtree(tmp_path / "data_inbox")
        (tmp_path / "data_inbox").write_text("not a folder")
        code = d.proc.wait(timeout=60)
    finally:
        d.kill()
    log = d.log_path.read_text()
    assert code == 1, log[-2000:]
    assert f"plasticd: error: inbox {tmp_path / 'data_inbox'} cannot be listed" in log and "Traceback" not in log


def _second_model(root: Path, name: str) -> Path:
    """A config for another model over the same inbox: its own checkpoints, work, state, failed and processed."""
    cfg = root / f"{name}.toml"
    text = (root / "plasticd.toml").read_text()
    cfg.write_text(
        text
        + f'[paths]\ninbox = "data_inbox"\nprocessed = "{name}_processed"\nfailed = "{name}_failed"\nwork = "{name}_work"\n'
        + f'checkpoints = "{name}_checkpoints"\nstate = "{name}_state"\n'
    )
    return cfg


def test_two_daemons_and_an_ingest_on_one_inbox_process_each_file_exactly_once(tmp_path: Path) -> None:
    write_config(tmp_path)
    inbox = tmp_path / "data_inbox"
    rng = np.random.default_rng(1)
    names = [f"f{i:04d}.json" for i in range(900)]
    for name in names[:600]:
        drop(inbox, name, sample_json(rng))
    b_cfg, c_cfg = _second_model(tmp_path, "b"), _second_model(tmp_path, "c")
    a, b = Daemon(tmp_path), Daemon(tmp_path, "--config", str(b_cfg))  # the later --config wins
    ingest = subprocess.Popen(
        [sys.executable, "-m", "plasticd", "ingest", "data_inbox", "--to", "c_processed", "--no-progress",
         "--config", str(c_cfg)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        a.wait_for_event("daemon.ready", timeout=60)
        b.wait_for_event("daemon.ready", timeout=60)
        for name in names[600:]:  # more while all three race
            drop(inbox, name, sample_json(rng))
        out, err = ingest.communicate(timeout=120)
        assert ingest.returncode == 0, err[-3000:]
        everywhere = ("data_processed", "b_processed", "c_processed")
        wait_until(lambda: sum(len(files_in(tmp_path / f)) for f in everywhere) >= len(names), 120, "every file processed")
    finally:
        ingest.kill()
        codes = (a.stop(), b.stop())
    assert codes == (0, 0), a.tail() + b.tail()
    got = {f: [p.name for p in files_in(tmp_path / f)] for f in everywhere}
    flat = [n for f in everywhere for n in got[f]]
    assert sorted(flat) == names, "a file was lost or processed twice"
    shares = {f: len(v) for f, v in got.items()}
    print(f"\nfiles per process: {shares}")
    assert sum(n > 0 for n in shares.values()) >= 2, f"no race happened: {shares}"
    assert files_in(inbox) == [] and not work_files(tmp_path) and not work_files(tmp_path, "b_work")
    ids = [p["file"] for p in predictions(tmp_path)]
    for state in ("b_state", "c_state"):
        path = tmp_path / state / "predictions.jsonl"
        ids += [json.loads(line)["file"] for line in path.read_text().splitlines()]
    assert sorted(ids) == names, "one prediction per file over all three journals"


def test_a_burst_of_10000_files_is_processed_exactly_once(tmp_path: Path) -> None:
    write_config(tmp_path)
    _set(tmp_path, "every_samples = 50", "every_samples = 2000")
    _set(tmp_path, 'level = "info"', 'level = "warning"')  # no per-sample events: the journal is the record
    staging, inbox = tmp_path / "staging", tmp_path / "data_inbox"
    staging.mkdir()
    rng = np.random.default_rng(2)
    names = [f"b{i:05d}.json" for i in range(10_000)]
    for name in names:
        (staging / name).write_text(sample_json(rng))
    d = Daemon(tmp_path, "--set", "log.level=info")
    try:
        d.wait_for_event("daemon.ready")
        for name in names:
            os.replace(staging / name, inbox / name)
        wait_until(lambda: len(files_in(tmp_path / "data_processed")) == len(names), 180, "10,000 processed files")
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    assert sorted(p.name for p in files_in(tmp_path / "data_processed")) == names
    assert files_in(inbox) == [] and not work_files(tmp_path) and files_in(tmp_path / "data_failed") == []
    preds = predictions(tmp_path)
    assert len(preds) == len(names) and sorted(p["file"] for p in preds) == names
    assert len({p["id"] for p in preds}) == len(names)
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["samples_trained"] == status["files_processed"] == len(names)


def _two_checkpoints(root: Path) -> list[Path]:
    """Checkpoints 1 and 2 of an untrained model with the test config's architecture; their JSON paths."""
    settings = load_settings(root / "plasticd.toml", {})
    store = CheckpointStore(root / "checkpoints")
    engine = Engine.from_settings(settings)
    for _ in range(2):
        tensors, meta = engine.state()
        store.save(tensors, {**meta, "covered": [], "counters": {}})
    return [info.json_path for info in store.list()]


def test_refuses_to_start_when_every_checkpoint_is_corrupt(tmp_path: Path) -> None:
    write_config(tmp_path)
    first, second = _two_checkpoints(tmp_path)
    first.write_text("{ torn")
    tensors = second.with_suffix(".safetensors")
    tensors.write_bytes(tensors.read_bytes()[:-7])
    drop(tmp_path / "data_inbox", "waiting.json", sample_json(np.random.default_rng(3)))
    out = subprocess.run(
        [sys.executable, "-m", "plasticd", "run", "--config", "plasticd.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    err = out.stderr
    assert f"no valid checkpoint in {tmp_path / 'checkpoints'}" in err
    assert f"{first}: not valid JSON" in err and f"{second}: ckpt-0000000002.safetensors has" in err  # absolute paths
    assert f"mv {tmp_path / 'checkpoints'} {tmp_path / 'checkpoints'}.broken" in err, "no way out offered"
    assert "Traceback" not in err
    assert (tmp_path / "data_inbox" / "waiting.json").exists(), "a file was claimed by a daemon that did not start"
    assert files_in(tmp_path / "data_processed") == []


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    write_config(tmp_path)
    _, second = _two_checkpoints(tmp_path)
    second.with_suffix(".safetensors").write_bytes(b"\0" * 64)
    d = Daemon(tmp_path)
    try:
        loaded = d.wait_for_event("checkpoint.loaded")[0]
        fallback = d.wait_for_event("checkpoint.fallback")[0]
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    assert loaded["seq"] == 1 and fallback["loaded"] == 1 and fallback["skipped"] == [2]
    [invalid] = [e for e in d.events() if e["event"] == "checkpoint.invalid"]
    assert invalid["path"] == str(second) and invalid["level"] == "error"
