"""Growth and merges together: a merge after neurons were divided, added and retired lines
the stored history up by neuron id, leaves every weight touching a new neuron as it was,
keeps pruned connections at zero, and the merged network trains on."""

from __future__ import annotations

import torch

from plasticd.learn.engine import Engine
from plasticd.model import growth
from plasticd.model.plastic_net import NEURON_AXES
from tests.helpers import small_settings


def _train(engine: Engine, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn((8, 12), generator=g)
        engine.step(x, (x[:, :4].argmax(dim=1)).numpy())


def _touches(name: str, new: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Bool mask (shape) of the entries of parameter ``name`` on a neuron axis at a position in ``new``."""
    out = torch.zeros(shape, dtype=torch.bool)
    for axis in NEURON_AXES[name]:
        view = [1] * len(shape)
        view[axis] = shape[axis]
        out |= new.view(view).expand(shape)
    return out


def test_a_merge_after_growth_and_retirement_aligns_by_id_and_spares_new_neurons() -> None:
    engine = Engine.from_settings(small_settings(train={"optimizer": "adam"}, merge={"enabled": True}))
    _train(engine, 20, seed=0)
    assert engine.merge("task").skipped is None  # the base θ₀ (24 neurons)
    _train(engine, 20, seed=1)
    assert engine.merge("task").skipped is None  # one task vector folded
    engine.grow_neurons(3, divide=3)
    engine.grow_neurons(2)
    keep = torch.ones(engine.cfg.neurons, dtype=torch.bool)
    keep[[1, 7]] = False  # two neurons with history go
    engine.resize(*growth.retire(engine.theta, engine.mask, keep))
    _train(engine, 20, seed=2)
    ids = engine.neuron_ids.clone()
    new = ids >= 24  # (N,) neurons born after the base was taken
    assert int(new.sum()) == 5 and engine.cfg.neurons == 27
    before = {k: v[-1].clone() for k, v in engine.theta.items()}  # the predicting copy
    report = engine.merge("task")
    assert report.skipped is None and report.changed > 0
    assert torch.equal(engine.consolidator.fold.ids, ids), "the history now has the live layout, retired ids gone"
    for name, value in engine.theta.items():
        assert bool(torch.isfinite(value).all()), name
        assert torch.equal(value[0], value[-1]), f"{name}: every copy gets the merge"
        spared = _touches(name, new, before[name].shape)
        assert torch.equal(value[0][spared], before[name][spared]), f"{name}: a new neuron's weights were merged"
    assert not bool(engine.theta["w"][:, ~engine.mask].any()), "a pruned connection came back"
    old = ~new
    assert not torch.equal(engine.theta["w"][0][old][:, old], before["w"][old][:, old]), "old neurons were merged"
    _train(engine, 5, seed=3)  # training goes on at the grown size
    assert engine.live["w"].shape == (27, 27) and bool(torch.isfinite(engine.live["w"]).all())
