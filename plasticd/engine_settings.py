"""The settings sections the Engine is built from: model, train, plasticity, drift, merge, replay, growth.

Part of the settings tree of ``config.py`` (which re-exports every class
here and is where settings are loaded); kept apart so each file holds one
side of the tree: what the network learns with here, where and how the
process runs there. Also the base of every section, and the settings that
were retired (an old config file that still sets one is refused with the
reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Settings that existed once: a config file that still sets one gets this reason instead of "extra field".
_DRIFT_MOVED = (
    "merge.on_drift now follows the one change detector on the prequential error (the [drift] section: "
    "drift.detector, drift.delta, drift.min_samples); remove this line"
)
RETIRED: dict[tuple[str, str], str] = {
    ("merge", "drift_threshold"): _DRIFT_MOVED,
    ("merge", "drift_delta"): _DRIFT_MOVED,
    ("merge", "drift_min_samples"): _DRIFT_MOVED,
}


class Section(BaseModel):
    """The base of every settings section: unknown fields refused, values frozen, retired settings named."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_retired(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for (section, name), why in RETIRED.items():
                if name in data and cls.__name__.lower() == f"{section}settings":
                    raise ValueError(f"{section}.{name} was retired: {why}")
        return data


class ModelSettings(Section):
    """Shape of the plastic network."""

    neurons: int = Field(400, ge=2, le=65536, description="recurrent neurons N")
    iterations: int = Field(5, ge=1, le=64, description="recurrent updates K per sample")
    input_dim: int = Field(784, ge=1, description="length of a sample's x vector")
    num_classes: int = Field(10, ge=2, description="labels are integers in [0, num_classes)")
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="initial fraction of absent recurrent connections")
    activation: Literal["relu", "tanh"] = Field("relu", description="neuron non-linearity (f(0)=0 for both)")
    recurrent_scale: float = Field(0.5, gt=0.0, le=4.0, description="init std of W is scale/sqrt(active fan-in)")
    input_norm: bool = Field(True, description="standardise inputs with running per-feature mean/variance")


class TrainSettings(Section):
    """How each labelled sample updates the network."""

    optimizer: Literal["sgd", "adam", "adamw"] = Field(
        "adam", description="update rule (a step over n samples acts like n single-sample steps, see model/optim.per_step)"
    )
    lr: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="learning rate per sample (unset: 0.005 for sgd; adam/adamw: 1e-3 at 8 inputs, times sqrt(8/input_dim))",
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW moment decays")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 (adam, sgd) or decoupled (adamw) weight decay")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing")
    average_decay: float = Field(
        0.998,
        ge=0.0,
        lt=1.0,
        description=(
            "per labelled sample: decay of the weight average that predictions use (horizon ~1/(1-decay) samples; 0: no average)"
        ),
    )
    average_every: int = Field(
        4, ge=1, le=100, description="labelled samples between updates of the weight average (the decay compounds over them)"
    )
    select_horizon: int = Field(
        200,
        ge=0,
        description=(
            "predict with the live weights instead of the average while they were more accurate "
            "over ~this many recent labelled samples (0: always the average)"
        ),
    )
    max_batch: int = Field(
        8, ge=1, description="largest micro-batch of samples learned in one step under backlog (1: always per sample)"
    )
    window: int = Field(10000, ge=1, description="samples in the recent-accuracy window")

    @model_validator(mode="after")
    def _betas_in_range(self) -> TrainSettings:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each lie in [0, 1), got {self.betas}")
        return self

    def rate_for(self, input_dim: int) -> float:
        """``lr``, or the default for the optimizer and a network with ``input_dim`` inputs.

        SGD: 0.005 per sample. Adam/AdamW: 1e-3 at 8 inputs, shrinking with the square root of
        the input width (1e-4 at 800): Adam moves every input weight by about the rate whatever its
        gradient's scale, so a wide input (Fashion-MNIST's 784 pixels) moves the first layer's
        pre-activations much further per step than a narrow tabular one. Chosen by measurement
        across ``plasticd bench drift`` and Fashion-MNIST (docs/BENCHMARKS.md).
        """
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd":
            return 5e-3
        return 1e-3 * (8.0 / input_dim) ** 0.5


class PlasticitySettings(Section):
    """Structural plasticity: prune weak recurrent connections, regrow promising ones."""

    enabled: bool = Field(True, description="rewire at all")
    interval: int = Field(1000, ge=0, description="labelled samples learned between rewiring cycles (0: only when idle)")
    prune_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of active connections pruned per cycle")
    prune_score: Literal["magnitude", "credit"] = Field(
        "magnitude", description="rank active connections by |w| or by credit EMA |w*grad|"
    )
    regrow: Literal["gradient", "coactivation", "mixed"] = Field(
        "gradient", description="rank absent connections by |grad| (RigL), co-activation (Hebbian) or both"
    )
    min_age: int = Field(
        500, ge=0, le=32767, description="labelled samples learned while a connection lives before it may be pruned"
    )
    min_sparsity: float = Field(0.3, ge=0.0, lt=1.0, description="fewest absent connections (as a fraction)")
    max_sparsity: float = Field(0.7, ge=0.0, lt=1.0, description="most absent connections (as a fraction)")
    stats_decay: float = Field(0.8, ge=0.0, lt=1.0, description="EMA decay of usage statistics across cycles")
    buffer_size: int = Field(256, ge=1, description="recent labelled samples kept to estimate gradients")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> PlasticitySettings:
        if self.min_sparsity > self.max_sparsity:
            raise ValueError(f"min_sparsity ({self.min_sparsity}) exceeds max_sparsity ({self.max_sparsity})")
        return self


class DriftSettings(Section):
    """Reacting to a change of the concept: a detector on the prequential error, and what the engine does on an alarm."""

    detector: Literal["adwin", "kswin", "page_hinkley", "off"] = Field(
        "adwin", description="change detector on the 0/1 prequential error (river); off: never react"
    )
    delta: float = Field(0.002, gt=0.0, lt=1.0, description="ADWIN's confidence δ (KSWIN: its α); smaller fires less often")
    min_samples: int = Field(200, ge=1, description="labelled samples after an alarm before the next one counts")
    reset_average: bool = Field(
        True, description="on an alarm, set the prediction average to the live weights and warm it up again"
    )
    rearm_growth: bool = Field(True, description="on an alarm, let a growth policy that stopped growing grow again")
    lr_boost: float = Field(
        3.0,
        ge=1.0,
        le=10.0,
        description=("on an alarm, multiply the learning rate by this, decaying back over boost_samples (1: off)"),
    )
    boost_samples: int = Field(1000, ge=1, description="labelled samples over which a learning-rate boost decays to 1")


class MergeSettings(Section):
    """MagMax consolidation: fold task vectors at task boundaries, write θ₀ + λ·τ* into the network."""

    enabled: bool = Field(False, description="merge at task boundaries at all")
    lam: float = Field(0.5, ge=0.0, le=2.0, description="λ in θ = θ₀ + λ·τ* (MagMax's value: 0.5)")
    min_samples: int = Field(
        1000, ge=1, description="labelled samples learned since the last boundary before an idle/drift/count merge runs"
    )
    every_samples: int = Field(0, ge=0, description="also merge after this many labelled samples (0: not on a count)")
    on_idle: bool = Field(True, description="merge once per idle period (after daemon.idle_seconds without samples)")
    on_drift: bool = Field(False, description="merge on each alarm of the change detector (drift.detector): a task boundary")


class ReplaySettings(Section):
    """Experience replay: a reservoir of past labelled samples mixed into training steps."""

    size: int = Field(0, ge=0, description="samples kept in the reservoir (0: replay off)")
    ratio: float = Field(
        1.0, gt=0.0, le=8.0, description="replayed samples per labelled sample in a training step (at least 1 per step)"
    )


class GrowthSettings(Section):
    """Neuron growth and retirement: capacity that follows the data (plasticd/growth_policy.py)."""

    enabled: bool = Field(False, description="grow neurons on a learning plateau and retire dead ones at all")
    interval: int = Field(
        2000, ge=0, description="labelled samples learned between growth checks while training (0: only when idle)"
    )
    horizon: int = Field(6000, ge=100, description="plateau: accuracy of the last `horizon` samples vs the `horizon` before them")
    min_delta: float = Field(
        0.005,
        ge=0.0,
        lt=1.0,
        description=("smallest accuracy gain that counts as progress (noise, 2 standard errors, can raise it)"),
    )
    patience: int = Field(
        2, ge=1, description="growths in a row that bring no gain beyond noise and trend before growth stops (re-armed by a drop)"
    )
    grow_fraction: float = Field(0.5, gt=0.0, le=4.0, description="neurons added per growth, as a fraction of the current N")
    division_share: float = Field(
        0.5, ge=0.0, le=1.0, description="share of new neurons made by dividing loaded neurons; the rest by GradMax"
    )
    split_jitter: float = Field(
        0.1, ge=0.0, lt=0.5, description="division shares outgoing weights alpha:1-alpha, alpha = 0.5 +- this (exact)"
    )
    in_noise: float = Field(
        0.0, ge=0.0, le=1.0, description="relative symmetric noise on a divided neuron's incoming weights (first-order only)"
    )
    gradmax_scale: float = Field(
        0.5, gt=0.0, le=4.0, description="norm of a GradMax neuron's non-zero side, relative to the mean existing neuron's"
    )
    max_neurons: int = Field(1024, ge=2, le=65536, description="capacity budget: never grow beyond this many neurons")
    min_neurons: int = Field(16, ge=2, description="retirement never shrinks the network below this many neurons")
    max_active_connections: int = Field(
        0, ge=0, description="capacity budget: most active recurrent connections after a growth (0: no limit)"
    )
    max_cost_ratio: float = Field(
        0.0, ge=0.0, description="capacity budget: most per-sample multiply-adds relative to model.neurons' (0: no limit)"
    )
    retire: bool = Field(True, description="retire neurons that are dead on the recent buffer or whose outgoing weights vanished")
    retire_out_eps: float = Field(
        1e-6, ge=0.0, description="outgoing weights (every copy) at most this large count as vanished; 0 keeps it exact"
    )
    retire_min_age: int = Field(5000, ge=0, description="labelled samples a neuron lives through before it may be retired")
    max_retire_fraction: float = Field(0.1, ge=0.0, le=1.0, description="most neurons retired per check, as a fraction of N")

    @model_validator(mode="after")
    def _budget_ordered(self) -> GrowthSettings:
        if self.min_neurons > self.max_neurons:
            raise ValueError(f"min_neurons ({self.min_neurons}) exceeds max_neurons ({self.max_neurons})")
        return self
