"""``plasticd checkpoints`` and ``plasticd rollback`` against real daemon runs: refused while one runs,
nothing deleted, nothing learned again, and the daemon's recovery afterwards requeues and moves nothing twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import Daemon, drop, files_in, sample_json, wait_until, write_config

from plasticd.service.checkpoint_store import CheckpointStore

KEEP = ("--set", "checkpoint.keep=50")  # no rotation: every checkpoint of the run stays to be rolled back to


def plasticd(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def drop_batch(root: Path, prefix: str, n: int, rng: np.random.Generator) -> set[str]:
    names = {f"{prefix}{i:02d}.json" for i in range(n)}
    for name in sorted(names):
        drop(root / "data_inbox", name, sample_json(rng, n=5))
    return names


def checkpoint_files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("ckpt-*")}


def test_rollback_after_a_daemon_run(tmp_path: Path) -> None:
    write_config(tmp_path)
    rng = np.random.default_rng(3)
    processed = tmp_path / "data_processed"
    daemon = Daemon(tmp_path, *KEEP)
    try:
        first = drop_batch(tmp_path, "a", 20, rng)
        wait_until(lambda: len(files_in(processed)) == 20, 60, f"batch a processed\n{daemon.tail()}")
        later = drop_batch(tmp_path, "b", 20, rng)
        wait_until(lambda: len(files_in(processed)) == 40, 60, f"batch b processed\n{daemon.tail()}")
        store_files = checkpoint_files(tmp_path / "checkpoints")
        refused = plasticd(tmp_path, "rollback", "1")
        assert daemon.proc.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0
    assert refused.returncode == 1 and "rollback refused" in refused.stderr and "stop it first" in refused.stderr
    assert not any(tmp_path.joinpath("checkpoints").glob("rolled-back-*"))
    assert store_files <= checkpoint_files(tmp_path / "checkpoints")  # the refusal touched nothing

    listed = plasticd(tmp_path, "checkpoints", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["checkpoints"]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 3
    assert all(r["error"] is None and r["window_accuracy"] is not None and r["bytes"] > 0 for r in rows)
    target = max(r["seq"] for r in rows if r["samples_seen"] == 100)  # the model that had learned batch a only
    newest = rows[-1]
    assert newest["samples_seen"] == 200
    table = plasticd(tmp_path, "checkpoints")
    assert table.returncode == 0 and "window" in table.stdout and len(table.stdout.splitlines()) == len(rows) + 1

    # A kill -9 between a checkpoint and its moves leaves a covered claim in the work area: simulate one
    # with a batch-b file, listed as covered by the newest checkpoint and put back in a work session.
    session = tmp_path / "data_work" / "s20000101T000000-1"
    session.mkdir(parents=True)
    session.joinpath("session.json").write_text(
        json.dumps({"id": session.name, "source": str(tmp_path / "data_inbox"), "destination": str(processed), "pid": 1})
    )
    straggler = "00000000~b99.json"
    session.joinpath(straggler).write_text(sample_json(rng, n=5))
    newest_json = tmp_path / "checkpoints" / f"ckpt-{newest['seq']:010d}.json"
    record = json.loads(newest_json.read_text())
    record["meta"]["covered"].append(f"{session.name}/{straggler}")
    newest_json.write_text(json.dumps(record))  # the JSON's own bytes are not hashed: the checkpoint still verifies
    later.add("b99.json")

    store = CheckpointStore(tmp_path / "checkpoints")
    target_tensors = store.load(target).tensors
    before = checkpoint_files(tmp_path / "checkpoints")
    rolled = plasticd(tmp_path, "rollback", str(target), "--json")
    assert rolled.returncode == 0, rolled.stderr
    result = json.loads(rolled.stdout)
    copy = newest["seq"] + 1
    assert result["target"] == target and result["checkpoint"] == copy
    assert result["moved_aside"] == list(range(target + 1, copy))
    assert {item["file"] for item in result["learned_after"]} == later  # exactly batch b, not one of batch a
    assert result["learned_after_complete"] and result["work_moved_on"] == 1 and result["work_left"] == 0
    aside = Path(result["aside"])
    assert aside.parent == tmp_path / "checkpoints" and aside.name.startswith("rolled-back-")
    assert json.loads((aside / "ROLLBACK.json").read_text())["target"] == target
    assert checkpoint_files(tmp_path / "checkpoints") == before | {f"ckpt-{copy:010d}.json", f"ckpt-{copy:010d}.safetensors"}
    assert [i.seq for i in store.list()] == [*range(1, target + 1), copy]
    restored = store.load(copy)
    assert restored.meta["rollback_of"] == target
    assert all(bool((restored.tensors[k] == v).all()) for k, v in target_tensors.items())
    assert "b99.json" in {p.name for p in files_in(processed)} and not list(session.glob("0*"))
    assert plasticd(tmp_path, "rollback", str(target)).stdout.startswith("nothing to roll back")

    # The daemon resumes from the rollback: nothing requeued, nothing moved twice, batch b not learned again.
    daemon = Daemon(tmp_path, *KEEP)
    try:
        loaded = daemon.wait_for_event("checkpoint.loaded")[0]
        assert loaded["seq"] == copy and loaded["samples"] == 100
        drop_batch(tmp_path, "c", 5, rng)
        wait_until(lambda: len(files_in(processed)) == 46, 60, f"batch c processed\n{daemon.tail()}")
    finally:
        code = daemon.stop()
    assert code == 0
    assert not [e for e in daemon.events() if e["event"] in ("recovery.requeued", "recovery.covered", "file.vanished")]
    last = store.list()[-1]
    assert last.seq > copy
    assert store.load(last.seq).meta["counters"]["samples"] == 100 + 25  # batch a and c: b stayed unlearned
    assert sorted(p.name for p in files_in(processed)) == sorted(first | later | {f"c{i:02d}.json" for i in range(5)})
