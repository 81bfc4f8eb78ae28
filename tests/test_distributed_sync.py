"""One barrier between two real gloo processes, on engines alone: the group learns like one model.

Each test spawns two processes (torch.multiprocessing, gloo on localhost);
each learns its own toy samples, then both meet once as the coordinator
does (``average``, ``agree``, ``share``) and write what they hold after it.
"""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from helpers import small_settings, toy_data

SECTIONS: dict = {
    "plasticity": {"interval": 50, "enabled": True},  # neither replica alone reaches it; the group (70) does
    "train": {"optimizer": "adam", "average_decay": 0.99},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _barrier(rank: int, port: int, out: str, samples: list[int], sections: dict, alarm_on: int, combine: str) -> None:
    import torch.distributed as dist

    from plasticd.distributed.averaging import average, digest, flat_weights
    from plasticd.distributed.clocks import agree
    from plasticd.distributed.structure import share
    from plasticd.learn.engine import Engine
    from plasticd.learn.reports import DriftReport, MergeReport, RewireReport

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    engine = Engine.from_settings(small_settings(**sections), device="cpu")
    marks, norm_count = engine.counts(), engine.counts().inputs
    since = flat_weights(engine, torch.device("cpu"))
    x, y = toy_data(samples[rank], seed=10 + rank)
    for i in range(0, samples[rank], 5):
        engine.step(x[i : i + 5], y[i : i + 5], plasticity=False)
    engine.take_reports()
    before = {
        "correct": engine.metrics.correct,
        "start": since.tolist(),
        "weights": flat_weights(engine, torch.device("cpu")).tolist(),
        "exp_avg": [float(engine.optimizer.state[p]["exp_avg"].sum()) for p in engine.live.values()] if samples[rank] else None,
    }
    if rank == alarm_on:  # as if this replica's monitor had raised an alarm between the barriers
        engine.drift.alarms += 1
        engine.drift.last_alarm_at = engine.metrics.trained
    average(engine, 2, norm_count, torch.device("cpu"), since if combine == "sum" else None)
    combined = flat_weights(engine, torch.device("cpu")).tolist()
    averaged = [float(engine.optimizer.state[p]["exp_avg"].sum()) for p in engine.live.values()]
    agreed = agree(engine, rank, 2, marks)
    shared = share(engine, rank == 0, torch.device("cpu"))
    after = {
        "digest": digest(engine),
        "trained": engine.metrics.trained,
        "labelled": engine.metrics.labelled,
        "correct": engine.metrics.correct,
        "steps": engine.steps,
        "adam_steps": sorted({float(engine.optimizer.state[p]["step"]) for p in engine.live.values()}),
        "age": engine.clock.age,
        "alarms": engine.drift.alarms,
        "reacted": agreed.reacted,
        "average_is_live": all(torch.equal(engine.avg[k], engine.live[k]) for k in engine.live) if engine.avg else None,
        "averaged_exp_avg": averaged,
        "combined": combined,
        "exp_avg_zero": all(not bool(engine.optimizer.state[p]["exp_avg"].any()) for p in engine.live.values()),
        "rewired": sum(isinstance(r, RewireReport) and r.skipped is None for r in shared.reports),
        "merged": sum(isinstance(r, MergeReport) and r.skipped is None for r in shared.reports),
        "group_reactions": [list(r.actions) for r in (shared.reports or engine.take_reports()) if isinstance(r, DriftReport)],
    }
    Path(out, f"{rank}.json").write_text(json.dumps({"before": before, "after": after}))
    dist.barrier()  # rank 0 hosts the store: it leaves last
    dist.destroy_process_group()


def _meet(tmp_path: Path, samples: list[int], sections: dict = SECTIONS, alarm_on: int = -1, combine: str = "sum") -> list[dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    mp.spawn(_barrier, args=(_free_port(), str(tmp_path), samples, sections, alarm_on, combine), nprocs=2, join=True)
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]


def test_after_a_barrier_both_replicas_hold_one_model_that_counts_the_group_samples(tmp_path: Path) -> None:
    r0, r1 = _meet(tmp_path, [30, 40])
    a0, a1 = r0["after"], r1["after"]
    assert a0["digest"] == a1["digest"]  # weights, optimizer state, mask, scaler and clocks alike
    assert a0["trained"] == a1["trained"] == a0["labelled"] == 70  # the group's samples, on both
    assert a0["correct"] == a1["correct"] == r0["before"]["correct"] + r1["before"]["correct"]
    assert a0["steps"] == a1["steps"] == 6 + 8  # both replicas' optimizer steps
    assert a0["adam_steps"] == a1["adam_steps"] == [14.0]
    assert a0["age"] == a1["age"] == 70  # the weight average's clock counts the group's samples
    expected = [(a + b) / 2 for a, b in zip(r0["before"]["exp_avg"], r1["before"]["exp_avg"], strict=True)]
    assert np.allclose(a0["averaged_exp_avg"], expected, rtol=1e-5, atol=1e-5)  # Adam's moments averaged
    assert a0["rewired"] == 1  # interval 50 reached in group samples (30 and 40 alone would not): rank 0 rewired
    assert a1["rewired"] == 0  # ... once, and rank 1 took its result (same digest)


def test_a_replica_that_learned_nothing_meets_the_group_and_takes_its_optimizer_state(tmp_path: Path) -> None:
    r0, r1 = _meet(tmp_path, [40, 0])
    assert r0["after"]["digest"] == r1["after"]["digest"]
    assert r1["after"]["adam_steps"] == [8.0]
    assert r1["after"]["trained"] == 40


def test_a_merge_at_the_barrier_zeroes_every_replicas_first_moments(tmp_path: Path) -> None:
    sections = {**SECTIONS, "merge": {"enabled": True, "every_samples": 60, "min_samples": 1}}
    r0, r1 = _meet(tmp_path, [30, 40], sections)
    assert r0["after"]["merged"] == 1
    assert r0["after"]["exp_avg_zero"] and r1["after"]["exp_avg_zero"]
    assert r0["after"]["digest"] == r1["after"]["digest"]


def test_one_replicas_drift_alarm_is_the_groups_reaction_at_the_barrier(tmp_path: Path) -> None:
    r0, r1 = _meet(tmp_path, [30, 40], alarm_on=1)
    for r in (r0, r1):
        assert r["after"]["alarms"] == 1 and r["after"]["reacted"]
        assert r["after"]["average_is_live"]  # the average restarted from the averaged live weights, on both
        assert r["after"]["age"] == 0
        # each replica reports the group's reaction (logged, counted by /metrics) with the rows that acted
        assert r["after"]["group_reactions"] == [["average_reset", "lr_boosted"]]
    assert r0["after"]["digest"] == r1["after"]["digest"]


def test_the_group_model_takes_every_replicas_change_or_with_mean_their_average(tmp_path: Path) -> None:
    r0, r1 = _meet(tmp_path / "sum", [30, 40])
    start, a, b = (np.array(v) for v in (r0["before"]["start"], r0["before"]["weights"], r1["before"]["weights"]))
    assert np.array_equal(start, np.array(r1["before"]["start"]))  # both replicas started from one model
    assert np.allclose(r0["after"]["combined"], start + (a - start) + (b - start), atol=1e-6)  # replicas.combine = sum
    assert r0["after"]["combined"] == r1["after"]["combined"]
    m0, m1 = _meet(tmp_path / "mean", [30, 40], combine="mean")
    a, b = np.array(m0["before"]["weights"]), np.array(m1["before"]["weights"])
    assert np.allclose(m0["after"]["combined"], (a + b) / 2, atol=1e-6)  # replicas.combine = mean
    assert m0["after"]["digest"] == m1["after"]["digest"]
