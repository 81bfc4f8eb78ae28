"""Replicas under torchrun (plasticd/distributed/): real gloo groups of plasticd processes on localhost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import CONFIG, drop, files_in, sample_json, wait_until, work_files
from safetensors.torch import load_file

from plasticd.distributed.group import ReplicaError, from_env

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
REPLICAS = """
[replicas]
sync_samples = 20
sync_seconds = 1.0
timeout_seconds = 30
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure(root: Path, config: str = CONFIG) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "plasticd.toml").write_text(config + REPLICAS)


class Group:
    """``torchrun --nproc-per-node N -m plasticd run`` in ``root``, its output in a log file."""

    def __init__(self, root: Path, replicas: int, *extra: str) -> None:
        self.root = root
        self.log_path = root / f"group-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        port = free_port()
        self.proc = subprocess.Popen(
            [
                TORCHRUN, "--nnodes", "1", "--nproc-per-node", str(replicas), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", *extra, "-m", "plasticd", "run", "--config", str(root / "plasticd.toml"),
            ],
            cwd=root, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        out.append(event)
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_for(self, name: str, count: int = 1, timeout: float = 120.0) -> list[dict]:
        return wait_until(
            lambda: len(self.events(name)) >= count and self.events(name), timeout, f"{name} x{count}\n{self.tail()}"
        )  # type: ignore[return-value]

    def replica_pid(self, rank: int) -> int:
        """The pid of the live plasticd replica of ``rank`` (a child of the torchrun agent)."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if ppid == self.proc.pid and b"plasticd" in cmdline and f"RANK={rank}".encode() in environ:
                return int(entry)
        raise AssertionError(f"no replica of rank {rank} under torchrun {self.proc.pid}\n{self.tail()}")

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM to torchrun, which passes it on to every replica; they meet once more and stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()


def newest_checkpoint(root: Path) -> tuple[dict, dict]:
    record = json.loads(sorted((root / "checkpoints").glob("ckpt-*.json"))[-1].read_text())
    return record, load_file(str(root / "checkpoints" / record["tensors_file"]))


def assert_learned_alike(plain: Path, single: Path) -> list[dict]:
    """Assert that two state roots learned the same: equal prediction journals (less times, latencies, claim keys and
    ids, which differ between runs) and equal tensors in their newest checkpoints. Returns ``single``'s journal."""

    def journal(root: Path) -> list[dict]:
        lines = [json.loads(line) for line in (root / "state" / "predictions.jsonl").read_text().splitlines()]
        return [{k: v for k, v in rec.items() if k not in ("time", "latency_ms", "claim", "id")} for rec in lines]

    theirs = journal(single)
    assert journal(plain) == theirs
    (_, a), (_, b) = newest_checkpoint(plain), newest_checkpoint(single)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), name
    return theirs


def statuses(root: Path, replicas: int) -> list[dict]:
    folders = [root / "state"] + [root / "state" / f"replica-{r}" for r in range(1, replicas)]
    return [json.loads((folder / "status.json").read_text()) for folder in folders]


def journal_ids(root: Path) -> list[str]:
    ids = []
    for path in (root / "state").rglob("predictions.jsonl"):
        ids += [json.loads(line)["id"] for line in path.read_text().splitlines()]
    return ids


def drop_files(inbox: Path, first: int, last: int, seed: int, pause: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(first, last):
        drop(inbox, f"f{i:04d}.json", sample_json(rng))
        if pause:
            time.sleep(pause)


# ------------------------------------------------------------------ the environment


def test_outside_torchrun_there_is_no_replica() -> None:
    assert from_env({}) is None
    replica = from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "7"})
    assert replica is not None
    assert (replica.rank, replica.world_size, replica.leader, replica.master) == (1, 2, False, "h:7")
    with pytest.raises(ReplicaError, match="outside"):
        from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_replica_that_cannot_reach_its_group_exits_1_saying_so(tmp_path: Path) -> None:
    (tmp_path / "plasticd.toml").write_text(CONFIG + REPLICAS.replace("timeout_seconds = 30", "timeout_seconds = 2"))
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(free_port())  # nobody listens there
    done = subprocess.run(
        [sys.executable, "-m", "plasticd", "run", "--config", str(tmp_path / "plasticd.toml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    failed = [json.loads(line) for line in done.stderr.splitlines() if '"plasticd.failed"' in line]
    assert failed, done.stderr[-2000:]
    assert "replica 1 of 2 cannot reach its group" in failed[-1]["message"]
    assert "replicas.timeout_seconds" in failed[-1]["message"]
    assert files_in(tmp_path / "data_inbox") == []  # nothing was claimed


# ------------------------------------------------------------------ two replicas, one model


def test_two_replicas_learn_every_file_once_into_one_model(tmp_path: Path) -> None:
    configure(tmp_path)
    drop_files(tmp_path / "data_inbox", 0, 100, seed=1)
    group = Group(tmp_path, 2)
    try:
        wait_until(
            lambda: len(files_in(tmp_path / "data_processed")) == 100 and not work_files(tmp_path),
            180, f"100 processed files\n{group.tail()}",
        )  # fmt: skip
    finally:
        group.stop()
    processed = [p.name for p in files_in(tmp_path / "data_processed")]
    assert processed == [f"f{i:04d}.json" for i in range(100)]  # each once: a second copy would be f0001~1.json
    ids = journal_ids(tmp_path)
    assert len(ids) == len(set(ids)) == 100  # every sample predicted once, by one replica or the other
    synced = group.events("replicas.synced")
    assert {e["rank"] for e in synced} == {0, 1}
    assert all(e["bytes"] > 0 and e["world_size"] == 2 for e in synced)
    assert group.events("plasticd.failed") == []
    assert len(group.events("daemon.stopped")) == 2
    record, tensors = newest_checkpoint(tmp_path)
    assert record["meta"]["replicas"]["trained"] == 100  # the group's labelled samples, counted once each
    assert record["meta"]["counters"]["files_processed"] == 100
    both = statuses(tmp_path, 2)
    assert [s["replica"]["rank"] for s in both] == [0, 1]
    digests = {s["replica"]["digest"] for s in both}
    assert len(digests) == 1 and None not in digests  # identical weights, masks and input statistics after the last sync
    assert all(s["files_processed"] > 0 for s in both)  # both replicas did work


def _plain_config() -> str:
    return CONFIG.replace("idle_seconds = 0.5", "idle_seconds = 1000")  # no idle rewiring: its timing would differ


def test_one_replica_under_torchrun_is_the_plain_daemon_bit_for_bit(tmp_path: Path) -> None:
    plain, single = tmp_path / "plain", tmp_path / "single"
    for root in (plain, single):
        configure(root, _plain_config())
        drop_files(root / "data_inbox", 0, 60, seed=2)
    from helpers import Daemon

    daemon = Daemon(plain)
    try:
        wait_until(lambda: len(files_in(plain / "data_processed")) == 60, 120, f"plain daemon\n{daemon.tail()}")
    finally:
        assert daemon.stop() == 0
    group = Group(single, 1)
    try:
        wait_until(lambda: len(files_in(single / "data_processed")) == 60, 120, f"one replica\n{group.tail()}")
    finally:
        group.stop()
    assert_learned_alike(plain, single)


def test_kill_9_of_one_replica_then_the_restarted_group_loses_and_repeats_nothing(tmp_path: Path) -> None:
    configure(tmp_path)
    inbox = tmp_path / "data_inbox"
    group = Group(tmp_path, 2, "--max-restarts", "3")
    try:
        group.wait_for("daemon.ready", 2)
        drop_files(inbox, 0, 100, seed=3, pause=0.005)
        group.wait_for("checkpoint.saved")
        drop_files(inbox, 100, 160, seed=4, pause=0.005)
        victim = group.replica_pid(1)
        os.kill(victim, signal.SIGKILL)
        drop_files(inbox, 160, 200, seed=5)
        group.wait_for("daemon.ready", 4, timeout=240)  # the restarted group
        wait_until(
            lambda: len(files_in(tmp_path / "data_processed")) == 200 and not work_files(tmp_path),
            240, f"200 processed files\n{group.tail()}",
        )  # fmt: skip
    finally:
        group.stop()
    processed = [p.name for p in files_in(tmp_path / "data_processed")]
    assert processed == [f"f{i:04d}.json" for i in range(200)]  # none lost, none moved twice
    record, _ = newest_checkpoint(tmp_path)
    assert record["meta"]["replicas"]["trained"] == 200  # the model that runs learned each labelled file once
    assert record["meta"]["counters"]["files_processed"] == 200
    assert len(group.events("checkpoint.loaded")) == 2  # both restarted replicas loaded the agreed checkpoint


def test_bench_scale_measures_the_weights_all_reduce_between_two_processes(tmp_path: Path) -> None:
    from plasticd.bench.scale import sync_cost

    costs = sync_cost((10, 20), input_dim=8, classes=3, work=tmp_path, moments=0)
    floats = 2 * (8 * 10 + 10 + 10 * 10 + 10 * 3 + 3) + 2 * 8  # both copies of every parameter, and the scaler
    assert costs[10]["bytes"] == 4 * floats
    assert costs[20]["bytes"] > costs[10]["bytes"]
    assert all(c["ms"] > 0 for c in costs.values())
    adam = sync_cost((10,), input_dim=8, classes=3, work=tmp_path)  # + Adam's two moments of the live weights
    assert adam[10]["bytes"] == 4 * (floats + 2 * (8 * 10 + 10 + 10 * 10 + 10 * 3 + 3))
