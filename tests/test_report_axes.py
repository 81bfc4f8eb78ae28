"""The report's axes tell no lies (issue 20, section 4): no throughput line across an idle gap or a restart,
whole numbers only on the neurons axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plasticd.report import plots
from plasticd.report.curves import Curves, break_gaps


def test_a_line_never_crosses_an_idle_gap() -> None:
    xs = np.array([0.0, 1.0, 2.0, 3.0, 30.0, 31.0, 32.0])  # minutes: idle from 3 to 30
    ys = np.array([5.0, 6.0, 5.0, 6.0, 0.1, 6.0, 5.0])
    gx, gy = break_gaps(xs, ys)
    nan = np.flatnonzero(np.isnan(gx))
    assert len(nan) == 1 and gx[nan[0] - 1] == 3.0 and gx[nan[0] + 1] == 30.0
    assert np.array_equal(gy[~np.isnan(gy)], ys)
    same_x, same_y = break_gaps(xs[:4], ys[:4])
    assert np.array_equal(same_x, xs[:4])  # evenly spaced: nothing broken


def test_the_neurons_axis_has_integer_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    x = np.arange(0, 1000, 50, dtype=float)
    curves = Curves(
        width=50, x=x, samples=1000, labelled=1000, prequential=np.zeros(len(x)), window=100,
        window_accuracy=np.zeros(len(x)), window_loss=np.zeros(len(x)), latency_x=np.zeros(0), latency={},
        neurons=(np.array([0.0, 400.0, 800.0]), np.array([32.0, 33.0, 34.0])),
    )  # fmt: skip
    assert plots.network(curves, tmp_path / "network.png") is not None
    ticks = saved[0].axes[0].get_yticks()
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks)), ticks
