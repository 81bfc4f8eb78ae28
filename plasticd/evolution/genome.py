"""A candidate's genome: the structural and learning choices evolution may change, and their ranges.

A genome is a small frozen record; ``apply`` turns it into the settings an
Engine is built from (the user's settings with the genome's genes written
over them), ``from_settings`` reads the genome the user's settings describe
(the first champion). The gene ranges are ladders of values, so a mutation
moves one gene one rung: the neuron and iteration ladders span what the
drift suite measured (N=64 and K=1 lose accuracy on the fast-drifting
streams, N=400/K=5 is the default; docs/BENCHMARKS.md), the learning-rate
scale spans the hindsight grid's ×{0.3, 1, 3}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from plasticd.config import Settings

NEURONS = (32, 64, 128, 200, 400, 800)
ITERATIONS = (1, 2, 3, 5, 8)
SPARSITY = (0.3, 0.5, 0.7)
ACTIVATIONS = ("relu", "tanh")
REWIRE_RATES = (0.05, 0.1, 0.2)
REWIRE_RULES = ("gradient", "coactivation", "mixed")
LR_SCALES = (0.3, 0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Genome:
    neurons: int = 400  # recurrent neurons N
    iterations: int = 5  # recurrent updates K per sample
    sparsity: float = 0.5  # initial share of absent recurrent connections (an inherited mask wins)
    activation: str = "relu"  # relu or tanh
    rewiring: bool = True  # prune and regrow connections every plasticity.interval samples
    rewire_rate: float = 0.1  # plasticity.prune_fraction
    rewire_rule: str = "gradient"  # plasticity.regrow: gradient (RigL), coactivation (Hebbian) or mixed
    growth: bool = False  # growth.enabled: grow on a plateau, retire dead neurons
    lr_scale: float = 1.0  # times the learning rate the settings give for this input width

    @classmethod
    def from_settings(cls, settings: Settings) -> Genome:
        """The genome the user's settings describe (the lr scale is 1: the settings' own rate)."""
        m, p = settings.model, settings.plasticity
        return cls(
            neurons=m.neurons,
            iterations=m.iterations,
            sparsity=m.sparsity,
            activation=m.activation,
            rewiring=p.enabled,
            rewire_rate=p.prune_fraction,
            rewire_rule=p.regrow,
            growth=settings.growth.enabled,
            lr_scale=1.0,
        )

    def apply(self, settings: Settings, neurons: int | None = None, seed: int | None = None) -> Settings:
        """``settings`` with this genome written over them; ``neurons`` overrides the size the Engine is built at
        (a child that inherits weights is built at its parent's starting size and resized after), ``seed`` the seed."""
        model = settings.model.model_copy(
            update={
                "neurons": self.neurons if neurons is None else neurons,
                "iterations": self.iterations,
                "sparsity": self.sparsity,
                "activation": self.activation,
            }
        )
        rate = settings.train.rate_for(settings.model.input_dim) * self.lr_scale
        train = settings.train.model_copy(update={"lr": min(rate, 10.0)})
        plasticity = settings.plasticity.model_copy(
            update={"enabled": self.rewiring, "prune_fraction": self.rewire_rate, "regrow": self.rewire_rule}
        )
        growth = settings.growth.model_copy(update={"enabled": self.growth})
        update: dict[str, Any] = {"model": model, "train": train, "plasticity": plasticity, "growth": growth}
        if seed is not None:
            update["runtime"] = settings.runtime.model_copy(update={"seed": seed})
        return settings.model_copy(update=update)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genome:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        """A short name: ``N400 K5 s0.5 relu rw0.1g lr1``."""
        rw = f"rw{self.rewire_rate:g}{self.rewire_rule[0]}" if self.rewiring else "rw-"
        gr = " grow" if self.growth else ""
        return f"N{self.neurons} K{self.iterations} s{self.sparsity:g} {self.activation} {rw} lr{self.lr_scale:g}{gr}"

    def differs(self, other: Genome) -> tuple[str, ...]:
        """The genes in which ``other`` differs from this genome."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name))

    def with_gene(self, gene: str, value: Any) -> Genome:
        return replace(self, **{gene: value})


# gene -> its ladder of values; booleans flip
LADDERS: dict[str, tuple[Any, ...]] = {
    "neurons": NEURONS,
    "iterations": ITERATIONS,
    "sparsity": SPARSITY,
    "activation": ACTIVATIONS,
    "rewiring": (False, True),
    "rewire_rate": REWIRE_RATES,
    "rewire_rule": REWIRE_RULES,
    "growth": (False, True),
    "lr_scale": LR_SCALES,
}
ORDERED = ("neurons", "iterations", "sparsity", "rewire_rate", "lr_scale")  # a mutation moves these one rung
