"""MagMax merges: the fold rule, λ, masks, size changes by neuron id, finiteness, the daemon's wiring."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from plasticd.learn.consolidate import merge_due
from plasticd.learn.engine import Engine
from plasticd.learn.reports import MergeReport, log_merge
from plasticd.log import get_logger
from plasticd.model.merge import MagMaxFold, id_positions
from plasticd.service.messages import Merge, Rewire
from plasticd.service.scheduler import Activity, MaintenanceScheduler
from tests.helpers import small_settings, toy_data


def params(n: int, fill: float = 0.0, d: int = 3, c: int = 2) -> dict[str, torch.Tensor]:
    """A single-copy parameter dict of N neurons, every entry ``fill``."""
    return {
        "w_in": torch.full((n, d), fill),
        "b_in": torch.full((n,), fill),
        "w": torch.full((n, n), fill),
        "w_out": torch.full((c, n), fill),
        "b_out": torch.full((c,), fill),
    }


def with_b_in(theta: dict[str, torch.Tensor], values: list[float]) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in theta.items()}
    out["b_in"] = torch.tensor(values)
    return out


IDS3 = torch.arange(3)
FULL3 = torch.ones(3, 3, dtype=torch.bool)


def test_fold_keeps_the_largest_magnitude_and_newer_wins_ties() -> None:
    fold = MagMaxFold()
    base = params(3)
    fold.fold(with_b_in(base, [1.0, 1.0, 1.0]), IDS3)  # the first boundary is the base θ₀
    fold.fold(with_b_in(base, [3.0, 1.5, -1.0]), IDS3)  # τ1 = [2, 0.5, -2]
    fold.fold(with_b_in(base, [0.0, -2.0, 3.0]), IDS3)  # τ2 = [-1, -3, 2]: |2| ties |-2| at index 2
    assert fold.tasks == 2
    assert fold.tau["b_in"].tolist() == [2.0, -3.0, 2.0]  # max |τ|; the tie goes to the newer (+2, not -2)


def test_apply_is_base_plus_lambda_tau_and_changes_nothing() -> None:
    fold = MagMaxFold()
    base = with_b_in(params(3, 0.5), [1.0, 1.0, 1.0])
    fold.fold(base, IDS3)
    live = with_b_in(params(3, 0.5), [3.0, -1.0, 1.0])
    fold.fold(live, IDS3)
    before = {k: v.clone() for k, v in live.items()}
    for lam in (0.0, 0.5, 1.0):
        result = fold.apply(live, IDS3, FULL3, lam)
        assert torch.allclose(result.theta["b_in"], torch.tensor([1.0 + 2.0 * lam, 1.0 - 2.0 * lam, 1.0]))
        assert torch.equal(result.theta["w"], torch.full((3, 3), 0.5))
        assert result.finite
    assert all(torch.equal(live[k], before[k]) for k in live)


def test_first_boundary_only_takes_the_base() -> None:
    fold = MagMaxFold()
    theta = with_b_in(params(3), [1.0, 2.0, 3.0])
    fold.fold(theta, IDS3)
    result = fold.apply(theta, IDS3, FULL3, 0.5)
    assert fold.tasks == 0 and result.changed == 0
    assert all(torch.equal(result.theta[k], theta[k]) for k in theta)


def test_pruned_connections_stay_exactly_zero() -> None:
    fold = MagMaxFold()
    fold.fold(params(3, 1.0), IDS3)  # base has every connection at 1
    fold.fold(params(3, 3.0), IDS3)  # τ* = 2 everywhere
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, False]])
    live = params(3, 3.0)
    live["w"] = live["w"] * mask
    merged = fold.apply(live, IDS3, mask, 0.5).theta["w"]
    assert torch.equal(merged[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(merged[mask], torch.full((int(mask.sum()),), 2.0))


def test_size_changes_align_by_neuron_id() -> None:
    """Base at ids [10, 11, 12]; the live net lost 11, reordered, and grew id 20 (no history)."""
    fold = MagMaxFold()
    old_ids = torch.tensor([10, 11, 12])
    base = params(3)
    base["w"] = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])  # w[i, j] for ids (10+i, 10+j)
    base["b_in"] = torch.tensor([1.0, 2.0, 3.0])
    fold.fold(base, old_ids)
    new_ids = torch.tensor([12, 10, 20])
    live = params(3, 9.0)  # every live value is 9: τ = 9 − θ₀ where there is history
    result = fold.apply(live, new_ids, FULL3, 0.0)  # λ = 0: θ₀ re-keyed, live values where no history
    assert result.theta["b_in"].tolist() == [3.0, 1.0, 9.0]
    assert result.theta["w"].tolist() == [[8.0, 6.0, 9.0], [2.0, 0.0, 9.0], [9.0, 9.0, 9.0]]
    assert fold.ids.tolist() == [12, 10, 20] and fold.base["w_in"].shape == (3, 3)
    fold.fold(live, new_ids)  # the new neuron's τ starts at 0: a merge leaves it unchanged
    merged = fold.apply(live, new_ids, FULL3, 0.5).theta
    assert merged["b_in"][2] == 9.0 and torch.equal(merged["w"][2], torch.full((3,), 9.0))
    assert merged["w_out"][:, 2].tolist() == [9.0, 9.0]
    assert merged["b_in"][:2].tolist() == [3.0 + 0.5 * 6.0, 1.0 + 0.5 * 8.0]


def test_id_positions_finds_present_ids_and_flags_absent_ones() -> None:
    index, found = id_positions(torch.tensor([7, 3, 5]), torch.tensor([5, 9, 7]))
    assert found.tolist() == [True, False, True] and index[found].tolist() == [2, 0]


def test_a_non_finite_task_vector_is_refused_and_changes_nothing() -> None:
    fold = MagMaxFold()
    fold.fold(params(3, 1.0), IDS3)
    fold.fold(params(3, 2.0), IDS3)
    snap = {k: v.clone() for k, v in fold.tau.items()}
    bad = params(3, 2.0)
    bad["w"][0, 0] = float("nan")
    assert not fold.fold(bad, IDS3)
    assert fold.tasks == 1 and all(torch.equal(fold.tau[k], snap[k]) for k in snap)


def test_engine_refuses_a_merge_that_would_overflow_and_leaves_the_net_unchanged() -> None:
    engine = Engine.from_settings(small_settings(merge={"enabled": True}), device="cpu")
    x, y = torch.randn(8, 12), np.arange(8) % 4
    engine.step(x, y)
    engine.merge("task")  # base
    engine.step(x, y)
    engine.theta["b_out"][:, 0] = 3e38  # finite, but θ₀ + λ·τ* with λ = 2 overflows to inf
    before = {k: v.clone() for k, v in engine.theta.items()}
    tasks = engine.consolidator.fold.tasks
    with capture_logs() as logs:
        report = engine.merge("task", lam=2.0)
        log_merge(get_logger("test"), report)
    assert report.skipped and "not finite" in report.skipped
    assert all(torch.equal(engine.theta[k], before[k]) for k in before)
    assert engine.consolidator.fold.tasks == tasks
    assert [e["event"] for e in logs] == ["merge.refused"] and logs[0]["log_level"] == "error"


def test_engine_merge_writes_every_copy_and_resets_first_moments_only() -> None:
    engine = Engine.from_settings(small_settings(train={"optimizer": "adam"}, merge={"enabled": True}), device="cpu")
    x, y = torch.randn(16, 12), np.arange(16) % 4
    engine.step(x, y)
    engine.merge("task")
    for _ in range(3):
        engine.step(x, y)
    sq = engine.optimizer.state[engine.live["w"]]["exp_avg_sq"].clone()
    report = engine.merge("task")
    assert report.skipped is None and report.entries_changed > 0 and report.tasks == 1
    assert all(torch.equal(v[0], v[-1]) for v in engine.theta.values())  # live == average
    assert torch.equal(engine.theta["w"][0][~engine.mask], torch.zeros(int((~engine.mask).sum())))
    state = engine.optimizer.state[engine.live["w"]]
    assert not state["exp_avg"].any() and torch.equal(state["exp_avg_sq"], sq)
    engine.step(x, y)  # training goes on from the merged point
    assert all(torch.isfinite(v).all() for v in engine.theta.values())


def test_merge_waits_for_min_samples_since_the_last_boundary() -> None:
    engine = Engine.from_settings(small_settings(merge={"enabled": True}), device="cpu")
    engine.step(torch.randn(4, 12), np.arange(4))
    report = engine.merge("idle", min_samples=10)
    assert report.skipped and "fewer than 10" in report.skipped and not engine.consolidator.fold.has_base


def test_merge_state_survives_a_checkpoint_and_old_checkpoints_load() -> None:
    settings = small_settings(merge={"enabled": True})
    engine = Engine.from_settings(settings, device="cpu")
    x, y = torch.randn(8, 12), np.arange(8) % 4
    for _ in range(2):
        engine.step(x, y)
        engine.merge("task")
    tensors, meta = engine.state()
    restored = Engine.from_settings(settings, device="cpu")
    restored.load_state(tensors, meta)
    fa, fb = engine.consolidator.fold, restored.consolidator.fold
    assert fb.tasks == fa.tasks == 1 and all(torch.equal(fa.tau[k], fb.tau[k]) for k in fa.tau)
    assert restored.consolidator.trained_at_boundary == engine.consolidator.trained_at_boundary
    old = Engine.from_settings(settings, device="cpu")
    old.load_state({k: v for k, v in tensors.items() if not k.startswith("merge.")}, meta)
    assert not old.consolidator.fold.has_base and old.consolidator.merges == 0


def test_idle_job_posts_a_merge_message_and_touches_no_tensors() -> None:
    settings = small_settings(merge={"enabled": True}, daemon={"idle_seconds": 0.1})
    engine = Engine.from_settings(settings, device="cpu")
    before = {k: v.clone() for k, v in engine.theta.items()}
    posted: list = []
    activity = Activity(last_sample=time.monotonic() - 10.0)
    sched = MaintenanceScheduler(settings, activity, posted.append, watch_inbox=False)
    sched.idle_check()
    sched.idle_check()  # once per idle period
    assert Merge("idle") in posted and posted.count(Merge("idle")) == 1 and Rewire("idle") in posted
    assert not any(isinstance(v, torch.Tensor) for v in vars(sched).values())
    assert all(torch.equal(engine.theta[k], before[k]) for k in before)
    off: list = []
    MaintenanceScheduler(small_settings(), Activity(last_sample=time.monotonic() - 10.0), off.append, False).idle_check()
    assert Merge("idle") not in off  # merges are opt-in


def test_merge_due_on_drift_and_on_sample_count() -> None:
    settings = small_settings(merge={"enabled": True, "every_samples": 100, "on_drift": True}).merge
    engine = Engine.from_settings(small_settings(), device="cpu")
    c = engine.consolidator
    assert merge_due(settings, c, 99) is None and merge_due(settings, c, 100) == "samples"
    c.drift_pending = True
    assert merge_due(settings, c, 0) == "drift"
    assert merge_due(small_settings().merge, c, 10**6) is None  # disabled


def test_a_drift_alarm_is_a_task_boundary_through_the_reaction_table_when_merge_on_drift() -> None:
    """One change detector: merge.on_drift follows the drift monitor's alarms (the table's merge_due row)."""
    x, y = toy_data(40, seed=3)
    for on_drift, merged in ((True, ["drift"]), (False, [])):
        engine = Engine.from_settings(small_settings(merge={"enabled": True, "on_drift": on_drift, "min_samples": 1}))
        engine.step(x, y)
        engine.take_reports()
        report = engine.react("local")
        assert ("merge_due" in report.actions) is on_drift
        engine.maintain()
        assert [r.reason for r in engine.take_reports() if isinstance(r, MergeReport) and r.skipped is None] == merged


def test_an_old_config_file_with_the_retired_page_hinkley_settings_is_refused_with_the_reason(tmp_path) -> None:
    from plasticd.config import load_settings
    from plasticd.errors import ConfigError

    path = tmp_path / "old.toml"
    path.write_text("[merge]\nenabled = true\non_drift = true\ndrift_threshold = 40.0\n")
    with pytest.raises(ConfigError, match=r"merge.drift_threshold was retired: .*drift.detector"):
        load_settings(path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_merge_never_produces_non_finite_weights(seed: int) -> None:
    """Random fold sequences with extreme (finite) values: the merge is finite or refused, never written non-finite."""
    gen = torch.Generator().manual_seed(seed)
    fold = MagMaxFold()
    for scale in (1.0, 1e30, 1e38):
        theta = {k: torch.randn(v.shape, generator=gen) * scale for k, v in params(4).items()}
        fold.fold(theta, torch.arange(4))
        result = fold.apply(theta, torch.arange(4), torch.ones(4, 4, dtype=torch.bool), 2.0)
        assert result.finite == all(bool(torch.isfinite(v).all()) for v in result.theta.values())


@pytest.mark.slow
def test_the_daemon_merges_when_idle_and_keeps_the_history_across_a_restart(tmp_path) -> None:
    """Real process: two idle periods after enough samples → base, then a merge; the fold survives SIGTERM."""
    from tests.helpers import Daemon, drop, sample_json, write_config

    # average_every = 1: a backlog of 25 files may be one micro-batch, and the average must move for τ ≠ 0
    write_config(tmp_path, "[merge]\nenabled = true\nmin_samples = 20\n[train]\naverage_every = 1\n")
    rng = np.random.default_rng(0)
    d = Daemon(tmp_path)
    try:
        d.wait_for_event("daemon.ready")
        for i in range(25):
            drop(tmp_path / "data_inbox", f"a-{i:02d}.json", sample_json(rng))
        first = d.wait_for_event("merge.applied")[0]
        for i in range(25):
            drop(tmp_path / "data_inbox", f"b-{i:02d}.json", sample_json(rng))
        second = d.wait_for_event("merge.applied", count=2)[1]
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    assert first["reason"] == "idle" and first["tasks"] == 0 and first["changed"] == 0  # the base
    assert second["tasks"] == 1 and second["changed"] > 0 and second["lam"] == 0.5
    d = Daemon(tmp_path)
    try:
        d.wait_for_event("daemon.ready")
        for i in range(25):
            drop(tmp_path / "data_inbox", f"c-{i:02d}.json", sample_json(rng))
        third = d.wait_for_event("merge.applied")[0]
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    assert third["tasks"] == 2  # the fold came back from the checkpoint


def test_non_finite_weights_are_refused_before_they_can_become_a_base() -> None:
    """Neither the first fold (θ₀) nor the history of new neurons may take non-finite values:
    one would poison every later task vector."""
    fold = MagMaxFold()
    bad = params(3, 1.0)
    bad["b_in"][0] = float("inf")
    assert not fold.fold(bad, IDS3) and not fold.has_base
    fold.fold(params(3, 1.0), IDS3)
    grown = params(4, 2.0)
    grown["w_in"][3, 0] = float("nan")  # the new neuron (id 3) carries the bad value
    assert not fold.fold(grown, torch.arange(4))
    assert torch.equal(fold.ids, IDS3) and fold.base["w"].shape == (3, 3) and fold.tasks == 0
    assert fold.fold(params(4, 2.0), torch.arange(4)) and fold.tasks == 1
    assert all(bool(torch.isfinite(v).all()) for v in (*fold.base.values(), *fold.tau.values()))
