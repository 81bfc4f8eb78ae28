"""Prequential metrics: totals and the recent window."""

from __future__ import annotations

import numpy as np

from plasticd.learn.prequential import PrequentialMetrics


def test_window_tracks_only_the_most_recent_labelled_samples() -> None:
    m = PrequentialMetrics(window=4)
    m.update(np.array([True, True, True]), np.array([0.1, 0.1, 0.1]), unlabelled=2, trained=3)
    m.update(np.array([False, False]), np.array([1.0, 3.0]), trained=2)
    s = m.snapshot()
    assert (s.samples_seen, s.samples_labelled, s.samples_trained) == (7, 5, 5)
    assert s.accuracy == 3 / 5
    assert s.window_accuracy == 2 / 4  # the last four: T, T, F, F
    assert abs(s.loss - (0.1 + 0.1 + 1.0 + 3.0) / 4) < 1e-12


def test_batches_larger_than_the_window_keep_their_tail() -> None:
    m = PrequentialMetrics(window=3)
    m.update(np.array([False, False, True, True, True]), np.zeros(5))
    assert m.snapshot().window_accuracy == 1.0


def test_empty_metrics_report_none() -> None:
    s = PrequentialMetrics(window=10).snapshot()
    assert s.accuracy is None and s.window_accuracy is None and s.loss is None


def test_state_round_trip() -> None:
    a = PrequentialMetrics(window=5)
    a.update(np.array([True, False, True]), np.array([0.5, 1.5, 0.2]), unlabelled=1, trained=3)
    b = PrequentialMetrics(window=5)
    b.load_state_dict(a.state_dict())
    assert a.snapshot() == b.snapshot()
