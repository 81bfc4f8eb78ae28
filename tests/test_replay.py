"""The replay reservoir: a uniform sample of the stream in bounded memory, replayed into training only."""

from __future__ import annotations

import numpy as np
import torch

from plasticd.learn.engine import Engine
from plasticd.model.replay import ReservoirBuffer
from tests.helpers import small_settings


def offer_stream(buf: ReservoirBuffer, n: int, batch: int) -> None:
    """Offer samples whose x and y are their arrival number 0..n-1."""
    for a in range(0, n, batch):
        ids = torch.arange(a, min(a + batch, n))
        buf.add(ids.float().unsqueeze(1), ids)


def test_size_is_bounded_and_the_first_samples_fill_it_in_order() -> None:
    buf = ReservoirBuffer(10, 1)
    offer_stream(buf, 7, 3)
    assert len(buf) == 7 and buf.y[:7].tolist() == list(range(7))
    offer_stream(buf, 500, 64)
    assert len(buf) == 10 and buf.offered == 507


def test_every_past_sample_is_equally_likely_to_be_kept() -> None:
    """Over 40 streams of 4,000 samples into a 250-slot reservoir, each tenth of the stream holds ~10%."""
    counts = np.zeros(10)
    for seed in range(40):
        buf = ReservoirBuffer(250, 1, seed=seed)
        offer_stream(buf, 4000, 97)
        assert torch.equal(buf.x[:, 0].long(), buf.y)  # x and y stay paired
        assert len(set(buf.y.tolist())) == 250  # no sample stored twice
        counts += np.bincount(buf.y.numpy() // 400, minlength=10)
    share = counts / counts.sum()
    assert np.all(np.abs(share - 0.1) < 0.015), share  # binomial sd ≈ 0.003 per tenth


def test_within_a_batch_the_later_sample_wins_a_shared_slot() -> None:
    buf = ReservoirBuffer(2, 1, seed=0)
    offer_stream(buf, 2, 2)
    offer_stream(buf, 100_000, 100_000)  # many collisions in one batch
    kept = buf.y.tolist()
    assert len(set(kept)) == 2 and all(0 <= v < 100_000 for v in kept)


def test_checkpoint_round_trip_restores_contents_and_draws() -> None:
    buf = ReservoirBuffer(50, 3, seed=4)
    buf.add(torch.randn(120, 3), torch.arange(120))
    state = {k: v.clone() for k, v in buf.state_dict().items()}
    other = ReservoirBuffer(50, 3, seed=99)
    other.load_state_dict(state)
    assert other.offered == 120 and torch.equal(other.x, buf.x) and torch.equal(other.y, buf.y)
    assert all(torch.equal(a, b) for a, b in zip(other.sample(8), buf.sample(8), strict=True))
    bigger = ReservoirBuffer(80, 3)
    bigger.load_state_dict(state)
    assert len(bigger) == 50 and torch.equal(bigger.y[:50], buf.y)


def test_replay_changes_training_but_never_predictions_or_counts() -> None:
    x, y = torch.randn(64, 12), np.arange(64) % 4
    plain = Engine.from_settings(small_settings(), device="cpu")
    replay = Engine.from_settings(small_settings(replay={"size": 20, "ratio": 2.0}), device="cpu")
    for a in range(0, 64, 8):
        rp, rr = plain.step(x[a : a + 8], y[a : a + 8]), replay.step(x[a : a + 8], y[a : a + 8])
        if a == 0:  # nothing to replay before the first step: identical
            assert np.array_equal(rp.predicted, rr.predicted)
        assert rr.predicted.shape == (8,) and rr.trained == 8
    assert replay.metrics.trained == plain.metrics.trained == 64 and len(replay.replay) == 20
    assert not torch.equal(plain.theta["w_out"], replay.theta["w_out"])  # replayed rows were trained on
    tensors, meta = replay.state()
    restored = Engine.from_settings(small_settings(replay={"size": 20, "ratio": 2.0}), device="cpu")
    restored.load_state(tensors, meta)
    assert torch.equal(restored.replay.x, replay.replay.x)
    assert np.array_equal(restored.step(x[:8], y[:8]).predicted, replay.step(x[:8], y[:8]).predicted)


def test_replay_is_off_by_default() -> None:
    engine = Engine.from_settings(small_settings(), device="cpu")
    assert engine.replay is None and not any(k.startswith("replay.") for k in engine.state()[0])
