"""The settings sections as the model layer's configs (``model/`` knows nothing of settings), and the device."""

from __future__ import annotations

import torch

from plasticd.config import ModelSettings, PlasticitySettings, TrainSettings
from plasticd.model.optim import OptimConfig
from plasticd.model.plastic_net import NetConfig
from plasticd.model.plasticity import PlasticityConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
    return torch.device(name)


def net_config(m: ModelSettings) -> NetConfig:
    return NetConfig(
        input_dim=m.input_dim,
        output_dim=m.num_classes,
        neurons=m.neurons,
        iterations=m.iterations,
        sparsity=m.sparsity,
        activation=m.activation,
        recurrent_scale=m.recurrent_scale,
    )


def plasticity_config(p: PlasticitySettings) -> PlasticityConfig:
    return PlasticityConfig(
        prune_fraction=p.prune_fraction,
        prune_score=p.prune_score,
        regrow=p.regrow,
        min_age=p.min_age,
        min_sparsity=p.min_sparsity,
        max_sparsity=p.max_sparsity,
        stats_decay=p.stats_decay,
    )


def optim_config(t: TrainSettings, input_dim: int) -> OptimConfig:
    lr = t.rate_for(input_dim)
    return OptimConfig(kind=t.optimizer, lr=lr, betas=t.betas, momentum=t.momentum, weight_decay=t.weight_decay)
