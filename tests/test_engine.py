"""Engine behaviour: test-then-train, unlabelled samples, mask invariants, rewiring, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plasticd.learn.engine import UNLABELLED, Engine
from plasticd.learn.reports import RewireReport
from plasticd.model.plasticity import RewirePlan
from tests.helpers import small_settings, toy_data


def _live_logits(engine: Engine, x: torch.Tensor) -> torch.Tensor:
    from plasticd.model.plastic_net import forward

    theta = {k: v[:1] for k, v in engine.theta.items()}
    return forward(theta, engine.norm(x), engine.cfg).logits[0]


@pytest.mark.parametrize("average_decay", [0.0, 0.998])
def test_each_sample_is_predicted_before_the_step_that_trains_on_it(average_decay: float) -> None:
    engine = Engine.from_settings(
        small_settings(train={"average_decay": average_decay, "average_every": 1}, model={"input_norm": False})
    )
    x, y = toy_data(40)
    for i in range(20):  # move away from the initial weights first
        engine.step(x[i : i + 1], y[i : i + 1])
    for i in range(20, 40):
        expected = engine.predict_logits(x[i : i + 1]).argmax(dim=1).item()
        before = {k: v.clone() for k, v in engine.theta.items()}
        result = engine.step(x[i : i + 1], y[i : i + 1])
        assert result.predicted[0] == expected
        assert any(not torch.equal(before[k], engine.theta[k]) for k in before), "the step did not train"


def test_micro_batch_predictions_come_from_the_weights_before_the_update() -> None:
    engine = Engine.from_settings(small_settings(model={"input_norm": False}))
    x, y = toy_data(64)
    engine.step(x[:32], y[:32])
    expected = engine.predict_logits(x[32:]).argmax(dim=1).numpy()
    result = engine.step(x[32:], y[32:])
    np.testing.assert_array_equal(result.predicted, expected)
    assert result.trained == 32


def test_unlabelled_samples_are_predicted_but_not_trained_on() -> None:
    engine = Engine.from_settings(small_settings())
    x, y = toy_data(8)
    before = {k: v.clone() for k, v in engine.theta.items()}
    result = engine.step(x[:4], np.full(4, UNLABELLED))
    assert result.trained == 0 and len(result.predicted) == 4
    assert np.isnan(result.loss).all()
    for k in before:
        assert torch.equal(before[k], engine.theta[k]), f"{k} changed without a label"
    snap = engine.snapshot()
    assert (snap.samples_seen, snap.samples_labelled, snap.samples_trained) == (4, 0, 0)
    assert len(engine.buffer) == 0, "unlabelled samples must not enter the training buffer"


def test_a_mixed_batch_trains_only_on_its_labelled_rows() -> None:
    """Learning from a mixed batch equals learning from its labelled rows alone."""
    x, y = toy_data(6)
    mixed = y.copy()
    mixed[[1, 4]] = UNLABELLED
    a = Engine.from_settings(small_settings(model={"input_norm": False}))
    b = Engine.from_settings(small_settings(model={"input_norm": False}))
    a.step(x, mixed)
    keep = mixed >= 0
    b.step(x[torch.from_numpy(keep)], y[keep])
    for k in a.theta:
        torch.testing.assert_close(a.theta[k], b.theta[k])
    assert a.snapshot().samples_trained == 4


def test_absent_connections_stay_zero_and_get_no_update() -> None:
    engine = Engine.from_settings(small_settings(plasticity={"interval": 7, "min_age": 3, "prune_fraction": 0.2}))
    x, y = toy_data(300)
    rewired = 0
    for i in range(0, 300, 3):
        mask_at_update = engine.mask.clone()
        engine.step(x[i : i + 3], y[i : i + 3])
        rewired += sum(isinstance(r, RewireReport) and r.pruned > 0 for r in engine.take_reports())
        for c in range(engine.copies):
            assert torch.all(engine.theta["w"][c][~engine.mask] == 0), "an absent connection has a weight"
        assert torch.all(engine.grads["w"][~mask_at_update] == 0), "an absent connection got a gradient"
    assert rewired >= 5, "plasticity cycles should have run"
    torch.testing.assert_close(engine.mask_f, engine.mask.float())


def test_active_count_stays_within_bounds_and_constant_by_default() -> None:
    engine = Engine.from_settings(small_settings(plasticity={"interval": 5, "prune_fraction": 0.3}))
    lo, hi = engine.plasticity.bounds(engine.cfg.neurons)
    start = engine.active_connections
    x, y = toy_data(200)
    for i in range(200):
        engine.step(x[i : i + 1], y[i : i + 1])
        for report in engine.take_reports():
            assert isinstance(report, RewireReport) and report.active_after == start
            assert lo <= engine.active_connections <= hi


def test_a_cycle_restores_the_count_into_the_configured_bounds() -> None:
    # sparsity 0.9 starts with ~10% of connections, below the 30% that max_sparsity=0.7 demands
    engine = Engine.from_settings(small_settings(model={"sparsity": 0.9}, plasticity={"min_sparsity": 0.3, "max_sparsity": 0.7}))
    x, y = toy_data(20)
    engine.step(x, y)
    lo, hi = engine.plasticity.bounds(engine.cfg.neurons)
    assert engine.active_connections < lo
    report = engine.rewire()
    assert report.active_after == engine.active_connections == lo


def test_regrowth_leaves_the_output_unchanged() -> None:
    """Adding connections at the moment of rewiring changes nothing the network computes."""
    engine = Engine.from_settings(small_settings())
    x, y = toy_data(64)
    for i in range(0, 64, 4):
        engine.step(x[i : i + 4], y[i : i + 4])
    probe = torch.randn(16, 12)
    before_live, before_pred = _live_logits(engine, probe), engine.predict_logits(probe)
    absent = torch.nonzero(~engine.mask.view(-1)).squeeze(1)
    grow = absent[torch.randperm(absent.numel())[: absent.numel() // 2]]
    engine.apply_rewire(RewirePlan(prune=grow[:0], grow=grow, active_before=0, eligible=0))
    assert bool(engine.mask.view(-1)[grow].all())
    assert torch.equal(_live_logits(engine, probe), before_live)
    assert torch.equal(engine.predict_logits(probe), before_pred)


def test_a_full_cycle_changes_the_output_only_through_what_it_pruned() -> None:
    engine = Engine.from_settings(small_settings())
    x, y = toy_data(64)
    for i in range(0, 64, 4):
        engine.step(x[i : i + 4], y[i : i + 4])
    w_before = engine.live["w"].clone()
    probe = torch.randn(16, 12)
    report = engine.rewire()
    assert report.pruned > 0 and report.regrown == report.pruned
    # the same network with only the pruned weights removed:
    pruned_only = w_before * engine.mask
    from plasticd.model.plastic_net import forward

    theta = {k: v[:1].clone() for k, v in engine.theta.items()}
    theta["w"][0] = pruned_only
    torch.testing.assert_close(_live_logits(engine, probe), forward(theta, engine.norm(probe), engine.cfg).logits[0])


def test_rewiring_zeroes_optimizer_moments_of_changed_connections() -> None:
    engine = Engine.from_settings(small_settings(train={"optimizer": "adam"}))
    x, y = toy_data(64)
    for i in range(0, 64, 4):
        engine.step(x[i : i + 4], y[i : i + 4])
    state = engine.optimizer.state[engine.live["w"]]
    active_before = engine.mask.clone()
    engine.rewire()
    changed = active_before ^ engine.mask
    assert changed.any()
    for slot in ("exp_avg", "exp_avg_sq"):
        assert torch.all(state[slot][changed] == 0), f"{slot} kept history for a rewired connection"
        assert torch.all(state[slot][~engine.mask] == 0), f"{slot} is non-zero on an absent connection"


def test_young_connections_are_not_pruned() -> None:
    engine = Engine.from_settings(small_settings(plasticity={"min_age": 1000}))
    x, y = toy_data(10)
    engine.step(x, y)
    report = engine.rewire()
    assert report.eligible == 0 and report.pruned == 0 and report.regrown == 0


def test_rewire_without_labelled_samples_is_skipped_with_a_reason() -> None:
    engine = Engine.from_settings(small_settings())
    report = engine.rewire()
    assert report.skipped == "no labelled samples yet" and report.pruned == 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_same_result(optimizer: str) -> None:
    x, y = toy_data(120)

    def run() -> tuple[np.ndarray, dict]:
        engine = Engine.from_settings(small_settings(train={"optimizer": optimizer}, plasticity={"interval": 10}))
        preds = np.concatenate([engine.step(x[i : i + 4], y[i : i + 4]).predicted for i in range(0, 120, 4)])
        return preds, engine.theta

    (p1, t1), (p2, t2) = run(), run()
    np.testing.assert_array_equal(p1, p2)
    for k in t1:
        assert torch.equal(t1[k], t2[k])


def test_different_seeds_give_different_networks() -> None:
    a = Engine.from_settings(small_settings(runtime={"seed": 1}))
    b = Engine.from_settings(small_settings(runtime={"seed": 2}))
    assert not torch.equal(a.theta["w_in"], b.theta["w_in"])


def test_step_does_not_mutate_its_inputs() -> None:
    engine = Engine.from_settings(small_settings())
    x, y = toy_data(8)
    x0, y0 = x.clone(), y.copy()
    engine.step(x, y)
    assert torch.equal(x, x0) and np.array_equal(y, y0)


def test_the_network_learns_the_toy_problem() -> None:
    engine = Engine.from_settings(small_settings())
    x, y = toy_data(3000)
    for i in range(3000):
        engine.step(x[i : i + 1], y[i : i + 1])
    xt, yt = toy_data(500, seed=1)
    assert engine.evaluate(xt, torch.from_numpy(yt)) > 0.8  # chance is ~0.25
    assert engine.snapshot().window_accuracy > 0.75
