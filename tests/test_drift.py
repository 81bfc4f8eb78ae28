"""Learning under change: batch-invariant averaging, the copy choice, drift alarms and their reactions, saved state."""

from __future__ import annotations

import numpy as np
import torch
from structlog.testing import capture_logs

from plasticd.learn.average import AverageClock
from plasticd.learn.choice import CopyChoice
from plasticd.learn.engine import Engine
from plasticd.learn.reports import DriftReport, log_report
from plasticd.log import get_logger
from tests.helpers import small_settings

DIM, CLASSES = 12, 4


def blobs(n: int, seed: int, change_at: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Gaussian clusters, one per class; from ``change_at`` on the same inputs carry rotated labels (an abrupt change)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (CLASSES, DIM))
    y = rng.integers(0, CLASSES, n)
    x = centres[y] + rng.normal(0.0, 1.0, (n, DIM))
    if change_at is not None:
        y[change_at:] = (y[change_at:] + 1) % CLASSES
    return torch.from_numpy(x.astype(np.float32)), y.astype(np.int64)


def learn(engine: Engine, x: torch.Tensor, y: np.ndarray, batch: int) -> np.ndarray:
    """Prequential 0/1 correctness of every sample, learned ``batch`` at a time."""
    correct = np.zeros(len(y), dtype=bool)
    for i in range(0, len(y), batch):
        result = engine.step(x[i : i + batch], y[i : i + batch])
        correct[i : i + batch] = result.predicted == y[i : i + batch]
    return correct


def drift_reports(engine: Engine) -> list[DriftReport]:
    return [r for r in engine.take_reports() if isinstance(r, DriftReport)]


# ------------------------------------------------------------------ batch invariance


def test_the_average_moves_as_far_for_one_batch_of_32_as_for_32_single_samples() -> None:
    batched, single = AverageClock(0.998, every=1), AverageClock(0.998, every=1)
    batched.age = single.age = 100_000  # past the warm-up: the decay per sample is 0.998 for both
    weight = batched.advance(32)
    remaining = 1.0
    for _ in range(32):
        w = single.advance(1)
        assert w is not None
        remaining *= 1.0 - w
    assert weight is not None and abs((1.0 - weight) - remaining) < 1e-12
    assert abs(remaining - 0.998**32) < 1e-12


def test_the_average_counts_samples_not_steps() -> None:
    x, y = blobs(960, seed=1)
    engines = {b: Engine.from_settings(small_settings()) for b in (1, 32)}
    for b, engine in engines.items():
        learn(engine, x, y, b)
    assert engines[1].clock.age == engines[32].clock.age == 960
    assert engines[32].steps == 30 and engines[1].steps == 960


def test_a_drifting_stream_is_learned_as_well_in_micro_batches_as_per_sample() -> None:
    # The averaging horizon used to count steps: in batches of 32 the average spanned ~16,000 samples and
    # kept predicting the old concept long after the change (on this stream it scored 0.5% and 52% in the
    # first two thousand samples after it). Counted in samples, with per-sample optimizer hyper-parameters
    # and the copy choice, the daemon's backlog batches (train.max_batch) follow the per-sample curve, and
    # even batches of 32 recover within a thousand samples.
    x, y = blobs(16000, seed=2, change_at=12000)
    backlog = small_settings().train.max_batch
    curves = {}
    for b in (1, backlog, 32):
        correct = learn(Engine.from_settings(small_settings()), x, y, b)
        curves[b] = correct.reshape(16, 1000).mean(axis=1)
    assert curves[1][11] > 0.95 and curves[1][15] > 0.95, f"the per-sample learner learns both concepts: {curves[1]}"
    assert np.all(np.abs(curves[1][1:] - curves[backlog][1:]) < 0.03), f"curves differ: {curves[1]} vs {curves[backlog]}"
    assert curves[32][12] > 0.75, f"batches of 32 recover from the change: {curves[32]}"
    assert np.all(np.abs(curves[1][13:] - curves[32][13:]) < 0.03), f"curves differ: {curves[1]} vs {curves[32]}"


# ------------------------------------------------------------------ the copy choice


def test_the_live_weights_predict_while_they_are_more_accurate() -> None:
    choice = CopyChoice(copies=2, horizon=50)
    assert choice.chosen() == 1, "the average predicts by default (ties go to it)"
    choice.observe(np.array([[1] * 40, [0] * 40], dtype=bool))  # live right, average wrong
    assert choice.chosen() == 0
    choice.observe(np.array([[0] * 200, [1] * 200], dtype=bool))
    assert choice.chosen() == 1
    assert CopyChoice(copies=2, horizon=0).chosen() == 1 and CopyChoice(copies=1, horizon=50).chosen() == 0


def test_scores_fold_a_batch_exactly_as_its_samples_one_by_one() -> None:
    rng = np.random.default_rng(3)
    correct = rng.random((2, 37)) < 0.7
    batched, single = CopyChoice(2, 100), CopyChoice(2, 100)
    batched.observe(correct)
    for j in range(37):
        single.observe(correct[:, j : j + 1])
    np.testing.assert_allclose(batched.score, single.score, rtol=1e-12)


# ------------------------------------------------------------------ drift alarms and reactions


def test_an_abrupt_change_raises_an_alarm_and_the_engine_adapts() -> None:
    x, y = blobs(4000, seed=4, change_at=2000)
    engine = Engine.from_settings(small_settings())
    learn(engine, x, y, 8)
    reports = drift_reports(engine)
    assert reports, "no alarm after the labels changed"
    first = reports[0]
    assert 2000 < first.trained <= 2300, f"alarm at {first.trained}, the change was at 2000"
    assert first.error_before is not None and first.error_recent > first.error_before
    assert "average_reset" in first.actions
    assert engine.drift.alarms == len(reports) and engine.drift.last_alarm_at == reports[-1].trained


def test_a_stationary_stream_of_the_same_length_raises_no_alarm() -> None:
    x, y = blobs(4000, seed=4)
    engine = Engine.from_settings(small_settings())
    learn(engine, x, y, 8)
    assert drift_reports(engine) == [] and engine.drift.alarms == 0


def test_detection_off_never_alarms() -> None:
    x, y = blobs(4000, seed=4, change_at=2000)
    engine = Engine.from_settings(small_settings(drift={"detector": "off"}))
    learn(engine, x, y, 8)
    assert drift_reports(engine) == []


def test_a_learning_rate_boost_decays_back_after_an_alarm() -> None:
    x, y = blobs(4000, seed=4, change_at=2000)
    engine = Engine.from_settings(small_settings(drift={"lr_boost": 3.0, "boost_samples": 500}))
    base = engine.learning_rate
    learn(engine, x[:2200], y[:2200], 8)
    assert engine.drift.alarms == 1
    since = engine.metrics.trained - engine.drift.last_alarm_at
    assert abs(engine.learning_rate - base * (1.0 + 2.0 * (1.0 - since / 500))) < 1e-12
    learn(engine, x[2200:], y[2200:], 8)
    assert engine.learning_rate == base


def test_drift_events_carry_the_evidence_and_the_reaction() -> None:
    report = DriftReport("adwin", trained=2050, error_recent=0.61, error_before=0.04, since_last=2050, actions=("average_reset",))
    with capture_logs() as logs:
        log_report(get_logger("test"), report)
    detected, adapted = logs
    assert detected["event"] == "drift.detected" and detected["error_recent"] == 0.61 and detected["error_before"] == 0.04
    assert adapted["event"] == "drift.adapted" and adapted["actions"] == ["average_reset"] and adapted["trained"] == 2050


# ------------------------------------------------------------------ saved state


def test_a_checkpoint_carries_the_drift_state_and_learning_continues_identically() -> None:
    x, y = blobs(4000, seed=5, change_at=2000)
    settings = small_settings(drift={"lr_boost": 2.0})
    original = Engine.from_settings(settings)
    learn(original, x[:2400], y[:2400], 8)
    assert original.drift.alarms >= 1, "the change was detected before the checkpoint"
    resumed = Engine.from_settings(settings)
    resumed.load_state(*original.state())
    assert resumed.drift.state_dict() == original.drift.state_dict()
    assert resumed.clock.state_dict() == original.clock.state_dict()
    np.testing.assert_array_equal(resumed.choice.score, original.choice.score)
    assert resumed.learning_rate == original.learning_rate, "the boost goes on where it was"
    # The rebuilt detector is the one that ran: the rest of the stream gives the same alarms and predictions.
    original.take_reports()
    a, b = learn(original, x[2400:], y[2400:], 8), learn(resumed, x[2400:], y[2400:], 8)
    np.testing.assert_array_equal(a, b)
    assert drift_reports(original) == drift_reports(resumed)
    assert original.drift.state_dict() == resumed.drift.state_dict()
    for k in original.theta:
        torch.testing.assert_close(original.theta[k], resumed.theta[k], rtol=0, atol=0)


def test_the_monitor_alarms_on_a_rise_of_the_error_and_never_on_a_fall() -> None:
    from plasticd.config import DriftSettings
    from plasticd.learn.drift import DriftMonitor

    rng = np.random.default_rng(6)
    falling = np.concatenate([rng.random(3000) < 0.5, rng.random(12000) < 0.1]).astype(np.float64)  # learning
    monitor = DriftMonitor(DriftSettings())
    alarms = [monitor.observe(falling[i : i + 8], i) for i in range(0, falling.size, 8)]
    assert not any(alarms), "an error rate that falls (a network learning) is no drift"
    rising = np.concatenate([rng.random(9000) < 0.1, rng.random(1000) < 0.5]).astype(np.float64)
    monitor = DriftMonitor(DriftSettings())
    fired = [a for a in (monitor.observe(rising[i : i + 8], i) for i in range(0, rising.size, 8)) if a is not None]
    assert len(fired) == 1 and 9000 < fired[0].trained < 9200
    assert fired[0].error_before is not None and fired[0].error_before < 0.15 and fired[0].error_recent > 0.2
