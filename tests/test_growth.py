"""Neuron growth and retirement: every operation preserves the function, all state follows the new size."""

from __future__ import annotations

import pytest
import torch

from plasticd.learn.engine import Engine
from plasticd.model import growth
from plasticd.model.optim import state_tensors
from plasticd.model.plastic_net import NetConfig, forward, init_params
from plasticd.service.checkpoint_store import CheckpointStore
from tests.helpers import small_settings, toy_data

ACTIVATIONS = ["relu", "tanh"]


def _random_net(activation: str, n: int = 20, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, NetConfig]:
    """Two copies that differ (live vs average), both with non-trivial recurrent weights."""
    cfg = NetConfig(input_dim=9, output_dim=5, neurons=n, iterations=4, activation=activation, recurrent_scale=1.0)
    g = torch.Generator().manual_seed(seed)
    theta, mask = init_params(cfg, g, copies=2)
    for v in theta.values():
        v[1] += 0.1 * torch.randn(v[1].shape, generator=g)
    theta["w"].mul_(mask)
    return theta, mask, cfg


def _logits(theta: dict[str, torch.Tensor], cfg: NetConfig, x: torch.Tensor) -> torch.Tensor:
    n = theta["w"].shape[1]
    return forward(theta, x, NetConfig(**{**cfg.__dict__, "neurons": n})).logits  # (S, B, C)


def _trained_engine(activation: str = "relu", optimizer: str = "adam", samples: int = 256, **sections: dict) -> Engine:
    sections.setdefault("train", {"optimizer": optimizer})
    engine = Engine.from_settings(small_settings(model={"activation": activation}, **sections))
    x, y = toy_data(samples)
    for i in range(0, samples, 8):
        engine.step(x[i : i + 8], y[i : i + 8])
    return engine


def _all_logits(engine: Engine, x: torch.Tensor) -> torch.Tensor:
    """Logits of every copy (live and average) for raw inputs ``x``."""
    return forward(engine.theta, engine.norm(x), engine.cfg).logits


# ---------------------------------------------------------------- surgery


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_division_preserves_the_function_of_every_copy(activation: str) -> None:
    theta, mask, cfg = _random_net(activation)
    x = torch.randn(64, cfg.input_dim, generator=torch.Generator().manual_seed(3))
    before = _logits(theta, cfg, x)
    parents = torch.tensor([0, 3, 7, 19, 11])  # includes connected pairs and self-connections
    new_theta, new_mask, index = growth.divide(theta, mask, parents, jitter=0.2, generator=torch.Generator().manual_seed(1))
    assert new_mask.shape == (25, 25) and index.tolist()[-5:] == parents.tolist()
    assert torch.equal(new_theta["w_in"][:, 20:], theta["w_in"][:, parents]), "children copy their parents' incoming weights"
    assert not torch.allclose(new_theta["w_out"][:, :, parents], new_theta["w_out"][:, :, 20:]), "outgoing shares differ"
    assert torch.allclose(_logits(new_theta, cfg, x), before, atol=1e-5)
    assert bool((new_theta["w"][:, ~new_mask] == 0).all()), "weights stay zero where the mask is off"


def test_division_with_incoming_noise_preserves_the_function_to_second_order_only() -> None:
    """A smooth activation (tanh): relu's kink makes inputs near 0 first order anyway."""
    theta, mask, cfg = _random_net("tanh")
    x = torch.randn(64, cfg.input_dim, generator=torch.Generator().manual_seed(3))
    before = _logits(theta, cfg, x)
    parents = torch.arange(10)
    changes = []
    for noise in (1e-2, 1e-3):
        t, _, _ = growth.divide(theta, mask, parents, jitter=0.2, in_noise=noise, generator=torch.Generator().manual_seed(1))
        changes.append(float((_logits(t, cfg, x) - before).abs().max()))
    assert changes[0] > 1e-6, "noise changes the function a little"
    assert changes[1] < changes[0] / 30, "10x less noise, about 100x less change: second order"


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_adding_neurons_with_one_zero_side_preserves_the_function(activation: str) -> None:
    theta, mask, cfg = _random_net(activation)
    x = torch.randn(64, cfg.input_dim, generator=torch.Generator().manual_seed(3))
    before = _logits(theta, cfg, x)
    p, n = 6, 20
    rows, cols = growth.random_connections(n, p, 0.5, torch.Generator().manual_seed(2))
    if activation == "relu":  # active incoming, zero outgoing
        g = torch.Generator().manual_seed(4)
        args = (torch.randn(p, 9, generator=g), torch.randn(p, generator=g), torch.zeros(5, p), torch.zeros(n, p))
    else:  # zero incoming, active outgoing
        g = torch.Generator().manual_seed(4)
        args = (torch.zeros(p, 9), torch.zeros(p), torch.randn(5, p, generator=g), torch.randn(n, p, generator=g))
    new_theta, new_mask, index = growth.add_neurons(theta, mask, *args, (rows, cols))
    assert (index[n:] == -1).all() and new_mask.shape == (n + p, n + p)
    assert torch.allclose(_logits(new_theta, cfg, x), before, atol=1e-5)
    assert bool((new_theta["w"][:, ~new_mask] == 0).all())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_retiring_neurons_with_zero_outgoing_weights_is_exact(activation: str) -> None:
    theta, mask, cfg = _random_net(activation)
    gone = torch.tensor([2, 5, 13])
    theta["w"][:, :, gone] = 0.0
    theta["w_out"][:, :, gone] = 0.0
    x = torch.randn(64, cfg.input_dim, generator=torch.Generator().manual_seed(3))
    before = _logits(theta, cfg, x)
    keep = torch.ones(20, dtype=torch.bool)
    keep[gone] = False
    new_theta, new_mask, index = growth.retire(theta, mask, keep)
    assert new_mask.shape == (17, 17) and not set(index.tolist()) & set(gone.tolist())
    assert torch.allclose(_logits(new_theta, cfg, x), before, atol=1e-6)


def test_retiring_neurons_that_are_dead_on_the_inputs_is_exact_there() -> None:
    theta, mask, cfg = _random_net("relu")
    dead = torch.tensor([1, 8])
    theta["w_in"][:, dead] = 0.0
    theta["b_in"][:, dead] = -1.0
    theta["w"][:, dead, :] = 0.0  # no input at all: relu(-1) = 0 at every iteration
    x = torch.randn(64, cfg.input_dim, generator=torch.Generator().manual_seed(3))
    before = _logits(theta, cfg, x)
    keep = torch.ones(20, dtype=torch.bool)
    keep[dead] = False
    new_theta, _, _ = growth.retire(theta, mask, keep)
    assert torch.allclose(_logits(new_theta, cfg, x), before, atol=1e-6)


# ------------------------------------------------------------------ engine


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_engine_growth_preserves_predictions_and_training_copy(activation: str) -> None:
    engine = _trained_engine(activation)
    x, _ = toy_data(100, seed=5)
    before = _all_logits(engine, x)
    assert engine.grow_neurons(6, divide=6) == (6, 0)
    assert engine.grow_neurons(5) == (0, 5)
    assert engine.cfg.neurons == 35
    assert torch.allclose(_all_logits(engine, x), before, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradmax_neurons_learn_at_the_next_step(activation: str) -> None:
    engine = _trained_engine(activation)
    engine.grow_neurons(4)
    new = slice(24, 28)
    w_in, w_out = engine.live["w_in"][new].clone(), engine.live["w_out"][:, new].clone()
    x, y = toy_data(16, seed=7)
    engine.step(x, y)
    # relu: incoming active, outgoing starts at 0 and moves; tanh: the opposite (tanh'(0) = 1).
    moved = engine.live["w_out"][:, new] if activation == "relu" else engine.live["w_in"][new]
    start = w_out if activation == "relu" else w_in
    assert bool((moved - start).abs().sum(dim=0 if activation == "relu" else 1).gt(0).all()), "every new neuron learns"


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "sgd-momentum"])
def test_optimizer_state_follows_growth_and_retirement(optimizer: str) -> None:
    momentum = 0.9 if optimizer == "sgd-momentum" else 0.0
    optimizer = optimizer.removesuffix("-momentum")
    engine = _trained_engine(optimizer=optimizer, train={"optimizer": optimizer, "momentum": momentum})
    if momentum:
        assert state_tensors(engine.optimizer, engine.live["w"]), "momentum buffers exist before the resize"
    if optimizer == "adam":
        parent_moment = state_tensors(engine.optimizer, engine.live["w_in"])[0][3].clone()
    engine.resize(*growth.divide(engine.theta, engine.mask, torch.tensor([3])))
    engine.grow_neurons(3)
    keep = torch.ones(engine.cfg.neurons, dtype=torch.bool)
    keep[[0, 10]] = False
    engine.resize(*growth.retire(engine.theta, engine.mask, keep))
    assert engine.cfg.neurons == 24 + 1 + 3 - 2
    for name, p in engine.live.items():
        assert p.grad is engine.grads[name] and p.grad.shape == p.shape
        for slot in state_tensors(engine.optimizer, p):
            assert slot.shape == p.shape, f"{name} optimizer state {tuple(slot.shape)} vs param {tuple(p.shape)}"
    if optimizer == "adam":
        moments = state_tensors(engine.optimizer, engine.live["w_in"])[0]
        assert bool((moments[-3:] == 0).all()), "fresh neurons start with zero moments"
        # parent 3 became position 2 after retiring 0; its child sits before the 3 GradMax neurons
        assert torch.equal(moments[-4], parent_moment), "a divided child inherits its parent's moments"
    x, y = toy_data(32, seed=3)
    engine.step(x, y)  # learning continues at the new size
    assert bool(torch.isfinite(engine.live["w"]).all())


def test_retired_neurons_leave_no_dangling_connections_or_ids() -> None:
    engine = _trained_engine()
    ids_before = engine.neuron_ids.clone()
    keep = torch.ones(24, dtype=torch.bool)
    keep[[3, 4, 20]] = False
    engine.resize(*growth.retire(engine.theta, engine.mask, keep))
    n = engine.cfg.neurons
    assert n == 21 and engine.mask.shape == (n, n) and engine.mask_f.shape == (n, n)
    assert engine.live["w"].shape == (n, n) and engine.live["w_in"].shape[0] == n and engine.live["w_out"].shape[1] == n
    assert engine.stats.coact.shape == (n, n) and engine.stats.age.shape == (n, n)
    assert bool((engine.theta["w"][:, ~engine.mask] == 0).all())
    assert bool((engine.stats.age[~engine.mask] == 0).all())
    assert engine.neuron_ids.tolist() == [i for i in ids_before.tolist() if i not in (3, 4, 20)]
    assert engine.active_connections == int(engine.mask.sum())
    engine.rewire()  # plasticity works at the new size
    assert engine.mask.shape == (n, n)


def test_division_children_get_fresh_ids_and_a_birth_time() -> None:
    engine = _trained_engine()
    engine.grow_neurons(3, divide=3)
    ids = engine.neuron_ids.tolist()
    assert ids[:24] == list(range(24)) and ids[24:] == [24, 25, 26] and engine.next_neuron_id == 27
    assert engine.neuron_born[24:].tolist() == [engine.metrics.trained] * 3 and engine.neuron_born[:24].eq(0).all()


def test_checkpoint_round_trip_across_a_size_change(tmp_path) -> None:
    settings = small_settings(train={"optimizer": "adam"})
    engine = _trained_engine()
    engine.grow_neurons(4, divide=4)
    engine.grow_neurons(3)
    engine.resize(*growth.retire(engine.theta, engine.mask, torch.arange(engine.cfg.neurons) != 5))
    store = CheckpointStore(tmp_path)
    store.save(*engine.state())
    loaded = store.load_latest()
    resumed = Engine.from_settings(settings)  # the settings still say 24 neurons: the checkpoint's size wins
    resumed.load_state(loaded.tensors, loaded.meta)
    assert resumed.cfg.neurons == engine.cfg.neurons == 30
    assert torch.equal(resumed.neuron_ids, engine.neuron_ids) and resumed.next_neuron_id == engine.next_neuron_id
    x, y = toy_data(64, seed=9)
    assert torch.equal(resumed.predict_logits(x), engine.predict_logits(x))
    for a, b in ((engine, x[:32]), (resumed, x[:32])):
        a.step(b, y[:32])
    assert torch.equal(resumed.predict_logits(x), engine.predict_logits(x)), "training resumes identically"
