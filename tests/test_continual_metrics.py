"""Continual-learning metrics on a tiny hand-computed accuracy matrix, and the benchmark's streams."""

from __future__ import annotations

import numpy as np
import pytest

from plasticd.bench.continual import ContinualOptions, RunResult, build_tasks, format_report
from plasticd.data.fashion_mnist import Split
from plasticd.learn.continual_metrics import average_accuracy, backward_transfer, forgetting, scores

# R[i, j]: accuracy on task j after training task i (upper triangle: tasks not yet learned).
R = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.6, 0.8, 0.1],
        [0.7, 0.5, 0.95],
    ]
)


def test_average_accuracy_is_the_mean_of_the_last_row() -> None:
    assert average_accuracy(R) == pytest.approx((0.7 + 0.5 + 0.95) / 3)


def test_forgetting_uses_the_best_past_accuracy_of_each_task() -> None:
    # task 0: best before the last task = max(0.9, 0.6) = 0.9 → 0.9 − 0.7 = 0.2
    # task 1: best = 0.8 (row 0's 0.1 was before it was learned) → 0.8 − 0.5 = 0.3
    assert forgetting(R) == pytest.approx((0.2 + 0.3) / 2)


def test_backward_transfer_compares_with_accuracy_right_after_learning() -> None:
    # task 0: 0.7 − 0.9 = −0.2; task 1: 0.5 − 0.8 = −0.3
    assert backward_transfer(R) == pytest.approx(-0.25)


def test_improving_old_tasks_is_positive_transfer_and_negative_forgetting_is_allowed() -> None:
    r = np.array([[0.5, 0.0], [0.7, 0.9]])
    s = scores(r)
    assert s.backward_transfer == pytest.approx(0.2) and s.forgetting == pytest.approx(-0.2)


def test_one_task_has_no_forgetting() -> None:
    assert scores(np.array([[0.8]])) == scores(np.array([[0.8]]))
    assert forgetting(np.array([[0.8]])) == 0.0 and backward_transfer(np.array([[0.8]])) == 0.0


def _fake_split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(x=rng.random((n, 16), dtype=np.float32), y=np.arange(n) % 10)


def test_class_stream_holds_two_classes_per_task_and_domain_stream_permutes_pixels() -> None:
    train, test = _fake_split(500, 0), _fake_split(200, 1)
    opts = ContinualOptions(samples_per_task=30, test_per_task=20)
    tasks = build_tasks("class", train, test, opts, seed=0)
    for t, task in enumerate(tasks):
        assert set(task.train_y) <= {2 * t, 2 * t + 1} and set(task.test_y) == {2 * t, 2 * t + 1}
    domain = build_tasks("domain", train, test, opts, seed=0)
    again = build_tasks("domain", train, test, opts, seed=1)
    assert np.array_equal(domain[1].test_x, again[1].test_x)  # fixed permutations and test sets
    assert not np.array_equal(domain[1].train_x, again[1].train_x)  # the seed picks the training samples
    assert np.array_equal(np.sort(domain[1].test_x, axis=1), np.sort(domain[0].test_x, axis=1))  # a permutation


def test_report_prints_the_matrix_and_every_metric() -> None:
    runs = [
        RunResult("domain", v, s, R.tolist(), 0.7, f, -f, 0.8, 0, 1.0)
        for v, f in (("plain", 0.25), ("merges", 0.1)) for s in (0, 1)
    ]  # fmt: skip
    text = format_report(runs, ContinualOptions(streams=("domain",), variants=("plain", "merges"), seeds=(0, 1)))
    assert "forgetting ↓ | 25.0 ± 0.0 | 10.0 ± 0.0" in text and "+60%" in text and "| T2 | 70.0 | 50.0 | 95.0 |" in text
