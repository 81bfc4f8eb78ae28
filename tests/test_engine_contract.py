"""Engine contract: state() -> load_state() resumes exactly; a non-finite update changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plasticd.errors import NonFiniteError
from plasticd.learn.engine import UNLABELLED, Engine
from tests.helpers import small_settings, toy_data

VARIANTS = [
    pytest.param({"optimizer": "sgd", "average_decay": 0.0}, id="sgd"),
    pytest.param({"optimizer": "sgd", "average_decay": 0.99, "average_every": 2}, id="sgd-averaged"),
    pytest.param({"optimizer": "sgd", "momentum": 0.9, "average_decay": 0.99, "average_every": 1}, id="sgd-momentum-averaged"),
    pytest.param({"optimizer": "adam", "average_decay": 0.0}, id="adam"),
    pytest.param({"optimizer": "adam", "average_decay": 0.99, "average_every": 2}, id="adam-averaged"),
]


def _settings(train: dict, **sections: dict):
    # rewiring every 16 labelled samples: the contract covers plasticity state (stats, ages, rng) too
    return small_settings(train=train, plasticity={"interval": 16, "min_age": 4, "buffer_size": 16}, **sections)


def _assert_same_state(a: Engine, b: Engine) -> None:
    ta, ma = a.state()
    tb, mb = b.state()
    assert ma == mb
    assert set(ta) == set(tb)
    for name in ta:
        assert torch.equal(ta[name], tb[name]), f"{name} differs"


def _run(engine: Engine, x: torch.Tensor, y: np.ndarray) -> list[np.ndarray]:
    """Steps of mixed sizes, some unlabelled rows; returns every prediction and loss."""
    out, start, sizes = [], 0, [1, 3, 1, 5, 2]
    while start < len(y):
        end = min(start + sizes[start % len(sizes)], len(y))
        result = engine.step(x[start:end], y[start:end])
        out += [result.predicted, result.confidence, result.loss]
        start = end
    return out


@pytest.mark.parametrize("train", VARIANTS)
def test_state_loaded_into_a_fresh_engine_predicts_and_trains_bit_identically(train: dict) -> None:
    _check_resume(_settings(train))


def test_the_replay_reservoir_resumes_bit_identically_too() -> None:
    _check_resume(_settings({"optimizer": "adam", "average_decay": 0.99, "average_every": 2}, replay={"size": 32}))


def _check_resume(settings) -> None:
    x, y = toy_data(160, seed=3)
    y = y.copy()
    y[::7] = UNLABELLED
    original = Engine.from_settings(settings)
    _run(original, x[:80], y[:80])
    assert original.rewires >= 2 and original.steps > 0
    tensors, meta = original.state()
    resumed = Engine.from_settings(settings)
    resumed.load_state(tensors, meta)
    _assert_same_state(original, resumed)
    torch.testing.assert_close(resumed.predict_logits(x[80:]), original.predict_logits(x[80:]), rtol=0, atol=0)
    # both go on learning, interleaved: shared storage between them would show up as a divergence
    a, b = [], []
    for i in range(80, 160, 8):
        a += _run(original, x[i : i + 8], y[i : i + 8])
        b += _run(resumed, x[i : i + 8], y[i : i + 8])
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
    _assert_same_state(original, resumed)
    assert original.rewires == resumed.rewires >= 4


def test_a_checkpoint_round_trip_through_the_store_is_bit_identical(tmp_path) -> None:
    from plasticd.service.checkpoint_store import CheckpointStore

    settings = _settings({"optimizer": "adam", "average_decay": 0.99, "average_every": 1})
    x, y = toy_data(96, seed=4)
    original = Engine.from_settings(settings)
    _run(original, x[:48], y[:48])
    store = CheckpointStore(tmp_path)
    store.save(*original.state())
    loaded = store.load_latest()
    assert loaded is not None
    resumed = Engine.from_settings(settings)
    resumed.load_state(loaded.tensors, loaded.meta)
    np.testing.assert_array_equal(np.concatenate(_run(original, x[48:], y[48:])), np.concatenate(_run(resumed, x[48:], y[48:])))
    _assert_same_state(original, resumed)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_non_finite_update_raises_and_changes_nothing(optimizer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gradient of a finite batch overflows: the step is refused and every piece of state is as before."""
    engine = Engine.from_settings(_settings({"optimizer": optimizer, "average_decay": 0.99, "average_every": 1}))
    x, y = toy_data(40, seed=5)
    _run(engine, x[:32], y[:32])
    before_tensors, before_meta = engine.state()
    before = ({k: v.clone() for k, v in before_tensors.items()}, dict(before_meta))
    logits_before = engine.predict_logits(x[32:])
    import plasticd.learn.engine as engine_module

    real = engine_module.cross_entropy_grad
    monkeypatch.setattr(engine_module, "cross_entropy_grad", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(NonFiniteError, match="gradient"):
        engine.step(x[32:36], y[32:36])
    monkeypatch.undo()
    after_tensors, after_meta = engine.state()
    assert after_meta == before[1]
    for name, value in before[0].items():
        assert torch.equal(after_tensors[name], value), f"{name} changed"
    torch.testing.assert_close(engine.predict_logits(x[32:]), logits_before, rtol=0, atol=0)


def test_non_finite_outputs_raise_and_leave_the_input_scaler_as_it_was() -> None:
    """Finite inputs whose square overflows float32 poison the running variance: refused, nothing kept."""
    engine = Engine.from_settings(_settings({"optimizer": "sgd", "average_decay": 0.0}))
    x, y = toy_data(40, seed=6)
    _run(engine, x[:32], y[:32])
    before = {k: v.clone() for k, v in engine.state()[0].items()}
    logits_before = engine.predict_logits(x[32:])
    with pytest.raises(NonFiniteError, match="input statistics"):
        engine.step(torch.full((1, 12), 3e38), y[32:33])
    for name, value in before.items():
        assert torch.equal(engine.state()[0][name], value), f"{name} changed"
    torch.testing.assert_close(engine.predict_logits(x[32:]), logits_before, rtol=0, atol=0)
