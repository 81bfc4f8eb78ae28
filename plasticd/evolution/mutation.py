"""New challengers: mutation (one gene), crossover (two parents), and the weights a child starts from.

A child starts from its parent's weights wherever the change allows it, through
the Engine's own doors (``state``/``load_state``, ``grow_neurons``, ``resize``):

* the same network under other learning genes (rewiring on/off, its rate or
  rule, growth, learning-rate scale, initial sparsity, which an inherited mask
  overrides): the parent's whole state, exactly its function;
* more neurons: the parent's state, then Net2Net division of the busiest
  neurons (exactly its function);
* fewer neurons: the parent's state, then retirement of the neurons with the
  weakest outgoing weights (approximately its function);
* another iteration count or activation: the doors cannot carry the weights
  over (a checkpoint of K iterations is refused by an Engine of another K),
  so the child starts fresh with its own seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from plasticd.config import Settings
from plasticd.evolution.genome import LADDERS, ORDERED, Genome
from plasticd.learn.engine import Engine
from plasticd.model.growth import retire

FRESH_GENES = ("iterations", "activation")  # a change of these cannot keep the weights


def mutate(genome: Genome, rng: np.random.Generator, max_neurons: int, genes: tuple[str, ...] = ()) -> tuple[Genome, str]:
    """``genome`` with one gene moved (ordered genes one rung up or down, the others to another value).

    ``genes`` limits the choice; returns (child, the gene that changed).
    """
    pool = [g for g in (genes or tuple(LADDERS)) if len(_options(genome, g, max_neurons)) > 0]
    gene = pool[int(rng.integers(len(pool)))]
    options = _options(genome, gene, max_neurons)
    return genome.with_gene(gene, options[int(rng.integers(len(options)))]), gene


def _options(genome: Genome, gene: str, max_neurons: int) -> list:
    ladder = [v for v in LADDERS[gene] if gene != "neurons" or v <= max_neurons]
    value = getattr(genome, gene)
    if gene not in ORDERED:
        return [v for v in ladder if v != value]
    if value not in ladder:  # a value off the ladder (the user's settings): the nearest rungs either side
        below = [v for v in ladder if v < value]
        above = [v for v in ladder if v > value]
        return ([below[-1]] if below else []) + ([above[0]] if above else [])
    i = ladder.index(value)
    return [ladder[j] for j in (i - 1, i + 1) if 0 <= j < len(ladder)]


def crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """Each gene from ``a`` or ``b`` with equal odds (uniform crossover)."""
    picks = rng.integers(2, size=len(LADDERS))
    return Genome(**{g: getattr(a if p == 0 else b, g) for g, p in zip(LADDERS, picks, strict=True)})


@dataclass
class Child:
    engine: Engine
    base_neurons: int  # model.neurons the Engine was built with (a restart rebuilds it so)
    inherited: str  # "state", "state+divided", "state+retired", "fresh"


def compatible(parent: Genome, child: Genome) -> bool:
    """Whether the Engine's doors can carry ``parent``'s weights into ``child``."""
    return all(getattr(parent, g) == getattr(child, g) for g in FRESH_GENES)


def spawn(
    settings: Settings,
    genome: Genome,
    seed: int,
    device: torch.device,
    parent: tuple[Engine, Genome, int] | None = None,
) -> Child:
    """An Engine for ``genome``: from ``parent`` (engine, genome, base size) where ``compatible``, else fresh."""
    if parent is None or not compatible(parent[1], genome) or parent[0].metrics.trained == 0:
        engine = Engine.from_settings(genome.apply(settings, seed=seed), device=device)
        return Child(engine, genome.neurons, "fresh")
    p_engine, _, base = parent
    engine = Engine.from_settings(genome.apply(settings, neurons=base, seed=seed), device=device)
    tensors, meta = p_engine.state()
    engine.load_state({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(meta)))
    how = "state"
    n, target = engine.cfg.neurons, genome.neurons
    if target > n:
        divided, gradmax = engine.grow_neurons(target - n, divide=target - n)
        how = "state+divided" if divided + gradmax else "state"
    elif target < n:
        out_norm = engine.live["w_out"].square().sum(0) + engine.live["w"].square().sum(0)  # (N,) outgoing strength
        keep = torch.zeros(n, dtype=torch.bool)
        keep[out_norm.cpu().topk(target).indices] = True
        engine.resize(*retire(engine.theta, engine.mask, keep))
        how = "state+retired"
    return Child(engine, base, how)
