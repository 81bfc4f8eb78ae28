"""A group that stops and counts like one daemon: ``plasticd run --replicas N`` on localhost (real gloo groups)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIG, files_in, wait_until, work_files
from test_distributed import REPLICAS, Group, assert_learned_alike, drop_files, newest_checkpoint, statuses

from plasticd.distributed.launcher import worker_argv
from plasticd.distributed.totals import ROW, Totals
from plasticd.learn.replication import Counts
from plasticd.report.journal import read_journal

# nothing saved before the stop (no sample, timer or idle checkpoint): every claim is uncovered at a kill -9
NO_CHECKPOINTS = CONFIG.replace("every_samples = 50", "every_samples = 100000\nevery_seconds = 100000").replace(
    "idle_seconds = 0.3", "idle_seconds = 100000"
)


class Launched(Group):
    """``plasticd run --replicas N``: stderr and stdout in files of their own."""

    def __init__(self, root: Path, replicas: int, *extra: str) -> None:
        self.root = root
        stamp = time.monotonic_ns()
        self.log_path = root / f"stderr-{stamp}.log"
        self.out_path = root / f"stdout-{stamp}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self._out = open(self.out_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasticd", "run", "--replicas", str(replicas), *extra,
             "--config", str(root / "plasticd.toml")],
            cwd=root, stdout=self._out, stderr=self._log, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip

    def stop(self, timeout: float = 90.0) -> None:
        super().stop(timeout)
        self._out.close()


def _configure(root: Path, config: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "plasticd.toml").write_text(config + REPLICAS)


def _journals(root: Path) -> list[dict]:
    out = []
    for path in sorted((root / "state").rglob("predictions.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


# ------------------------------------------------------------------ without a group


def test_the_replicas_run_the_launchers_arguments_without_its_own() -> None:
    argv = ["run", "--replicas", "2", "--config", "c.toml", "--max-restarts=5", "--set", "a.b=1", "--nnodes", "1"]
    assert worker_argv(argv) == ["run", "--config", "c.toml", "--set", "a.b=1"]


def test_group_totals_are_the_checkpoints_plus_every_replicas_own() -> None:
    totals = Totals(2, {"files_processed": 100, "files_failed": 2, "samples": 300})
    marks = Counts(seen=300, labelled=200, correct=150, trained=200, steps=0, age=0, alarms=0, inputs=300)
    rows = torch.zeros((2, ROW), dtype=torch.float64)
    rows[0, :7] = torch.tensor([10, 1, 30, 30, 20, 10, 20], dtype=torch.float64)
    rows[1, :7] = torch.tensor([5, 0, 15, 15, 10, 10, 10], dtype=torch.float64)
    totals.update(rows, marks)
    group = totals.group()
    assert (group["files_processed"], group["files_failed"], group["samples"]) == (115, 3, 345)
    assert (group["samples_seen"], group["samples_labelled"], group["samples_trained"]) == (345, 230, 230)
    assert group["accuracy"] == pytest.approx(170 / 230)
    each = totals.each()
    assert [(e["rank"], e["files_processed"]) for e in each] == [(0, 10), (1, 5)]
    totals.update_counters(
        [{"files_processed": 12, "files_failed": 1, "samples": 36}, {"files_processed": 5, "files_failed": 0, "samples": 15}]
    )
    assert totals.group()["files_processed"] == 117


def test_report_reads_every_replicas_journal_on_the_groups_sample_axis(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "replica-1").mkdir(parents=True)
    for rank, folder in ((0, state), (1, state / "replica-1")):
        lines = [{"seq": s * 2 + rank, "replica": rank, "replicas": 2, "correct": True, "loss": 0.1} for s in range(50)]
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    bins = read_journal(state / "predictions.jsonl")
    assert bins.records == 100 and len(bins.files) == 2
    assert int(bins.count.sum()) == 100 and bins.used * bins.width <= 64  # on samples 0..49, not seq 0..99


def test_the_outer_step_is_nesterov_momentum_on_the_averaged_change() -> None:
    from plasticd.distributed.outer import OuterOptimizer

    since, mean = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 2.5, 0.0])
    assert torch.equal(OuterOptimizer(lr=1.0, momentum=0.0).step(since, mean), mean)  # the plain mean (local SGD)
    outer = OuterOptimizer(lr=0.5, momentum=0.9)
    first = outer.step(since, mean)
    g = since - mean
    assert torch.allclose(first, since - 0.5 * (g + 0.9 * g))  # m = g after one step
    second = outer.step(first, first - g)  # the same change again: the momentum grows
    m = 0.9 * g + g
    assert torch.allclose(second, first - 0.5 * (g + 0.9 * m))
    assert second[2] == 0.0 and outer.buffer is not None and outer.buffer[2] == 0.0  # unchanged (masked) stays 0
    outer.step(torch.zeros(5), torch.zeros(5))  # the network changed size: the momentum starts again
    assert outer.buffer.shape == (5,) and not outer.buffer.any()


def test_the_sync_ramp_syncs_often_early_and_thins_out_to_h() -> None:
    from plasticd.distributed.coordinator import RAMP_MIN, sync_interval

    assert [sync_interval(1000, 0.0, t) for t in (0, 100, 10_000)] == [1000, 1000, 1000]  # off: always H
    assert [sync_interval(1000, 0.25, t) for t in (0, 100, 400, 2000, 10_000)] == [RAMP_MIN, RAMP_MIN, 100, 500, 1000]
    assert sync_interval(32, 0.25, 0) == 32  # never longer than H


# ------------------------------------------------------------------ real groups


def test_sigterm_through_the_launcher_exits_0_with_json_only_stderr_and_the_groups_totals(tmp_path: Path) -> None:
    _configure(tmp_path, CONFIG)
    drop_files(tmp_path / "data_inbox", 0, 80, seed=11)
    group = Launched(tmp_path, 2)
    try:
        wait_until(
            lambda: len(files_in(tmp_path / "data_processed")) == 80 and not work_files(tmp_path),
            180, f"80 processed files\n{group.tail()}",
        )  # fmt: skip
        wait_until(lambda: statuses(tmp_path, 2)[0]["files_processed"] == 80, 60, f"the group's total\n{group.tail()}")
        status = statuses(tmp_path, 2)[0]  # what plasticd status reads: rank 0's
    finally:
        group.stop()
    assert group.proc.returncode == 0, group.tail()
    stderr = group.log_path.read_text().splitlines()
    assert stderr and all(line.startswith("{") and json.loads(line) for line in stderr), [
        line for line in stderr if not line.startswith("{")
    ]
    assert group.out_path.read_text() == ""
    assert group.events("launcher.stopped")[-1]["clean"] is True
    assert status["files_processed"] == 80 and status["samples_seen"] == 80
    assert sum(r["files_processed"] for r in status["replicas"]) == 80
    assert all(r["files_processed"] > 0 for r in status["replicas"])  # both worked, each labelled with its rank
    stopped = group.events("daemon.stopped")
    assert len(stopped) == 2 and {e["files_processed"] for e in stopped} == {80}, group.tail(80)  # the group's, in both
    assert sorted(e["replica"]["rank"] for e in stopped) == [0, 1]
    assert sum(e["replica"]["files_processed"] for e in stopped) == 80
    records = _journals(tmp_path)
    seqs = [r["seq"] for r in records]
    assert len(records) == 80 and len(set(seqs)) == 80  # unique across the two journals
    assert {r["replica"] for r in records} == {0, 1} and {r["replicas"] for r in records} == {2}
    record, _ = newest_checkpoint(tmp_path)
    assert record["meta"]["counters"]["files_processed"] == 80


def test_kill_9_then_the_requeued_files_are_shared_and_the_totals_equal_the_folders(tmp_path: Path) -> None:
    _configure(tmp_path, NO_CHECKPOINTS)
    group = Launched(tmp_path, 2, "--max-restarts", "3")
    try:
        group.wait_for("daemon.ready", 2)
        drop_files(tmp_path / "data_inbox", 0, 120, seed=12, pause=0.003)
        wait_until(lambda: statuses(tmp_path, 2)[0]["files_processed"] >= 60, 120, f"60 files learned\n{group.tail()}")
        os.kill(group.replica_pid(1), signal.SIGKILL)
        group.wait_for("daemon.ready", 4, timeout=240)  # the restarted group
        wait_until(
            lambda: statuses(tmp_path, 2)[0]["state"] != "stopped" and statuses(tmp_path, 2)[0]["files_processed"] == 120,
            240, f"the group's 120 files\n{group.tail()}",
        )  # fmt: skip
    finally:
        group.stop()
    assert group.proc.returncode == 0, group.tail()
    shared = group.events("recovery.shared")
    assert sorted(e["rank"] for e in shared) == [0, 1], group.tail()
    requeued = {e["requeued"] for e in shared}
    assert len(requeued) == 1 and requeued.pop() == sum(e["taken"] for e in shared)
    assert all(e["taken"] > 0 for e in shared)  # split, not piled onto rank 0
    assert sum(e["files"] for e in group.events("recovery.requeued")) == shared[0]["requeued"]
    processed = [p.name for p in files_in(tmp_path / "data_processed")]
    assert processed == [f"f{i:04d}.json" for i in range(120)]
    record, _ = newest_checkpoint(tmp_path)
    assert record["meta"]["counters"]["files_processed"] == 120 == record["meta"]["replicas"]["trained"]
    stopped = group.events("daemon.stopped")[-2:]  # the restarted group's
    assert {e["files_processed"] for e in stopped} == {120}
    after = [r for r in _journals(tmp_path) if r["seq"] >= 0]
    last = {}
    for r in after:
        last[r["id"]] = r["seq"]
    assert len(last) == 120


@pytest.mark.parametrize("replicas", [1])
def test_a_one_replica_launcher_is_the_plain_daemon_bit_for_bit(tmp_path: Path, replicas: int) -> None:
    from helpers import Daemon

    plain, single = tmp_path / "plain", tmp_path / "single"
    config = CONFIG.replace("idle_seconds = 0.5", "idle_seconds = 1000")
    for root in (plain, single):
        _configure(root, config)
        drop_files(root / "data_inbox", 0, 60, seed=13)
    daemon = Daemon(plain)
    try:
        wait_until(lambda: len(files_in(plain / "data_processed")) == 60, 120, f"plain daemon\n{daemon.tail()}")
    finally:
        assert daemon.stop() == 0
    group = Launched(single, replicas)
    try:
        wait_until(lambda: len(files_in(single / "data_processed")) == 60, 120, f"one replica\n{group.tail()}")
    finally:
        group.stop()
    assert group.proc.returncode == 0
    journal = assert_learned_alike(plain, single)
    assert np.all([not k.startswith("replica") for k in journal[0]])
