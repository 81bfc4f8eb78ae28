"""The optimizer and the surgery its per-element state needs when connections change.

Plain SGD is one multi-tensor update and keeps no state (Adam is the default: ``train.optimizer``).
Adam, AdamW and SGD with momentum use torch.optim's fused implementations
(one kernel per step on CPU and CUDA). Gradients are assigned by hand.
Every change of the connection structure goes through ``reset_entries`` so a
rewired entry never keeps stale momentum: RigL's rule (new weights and their
moments start at zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

_STATE_SLOTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
FIRST_MOMENTS = ("exp_avg", "momentum_buffer")  # the slots that point along the recent update direction


@dataclass(frozen=True)
class OptimConfig:
    kind: str = "sgd"  # "sgd", "adam" or "adamw"
    lr: float = 5e-3  # learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decays
    momentum: float = 0.0  # SGD momentum
    weight_decay: float = 0.0  # L2 (adam, sgd) or decoupled (adamw)


class PlainSGD:
    """``p -= lr * (grad + weight_decay * p)`` for every parameter, in one or two multi-tensor ops.

    torch.optim.SGD computes the same; its per-call bookkeeping costs about as
    much as the arithmetic when one sample is learned at a time.
    """

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[Tensor, dict] = {}  # no per-element state

    @torch.no_grad()
    def step(self) -> None:
        grads = cast(list[Tensor], [p.grad for p in self.params])  # every one assigned by the engine
        if self.weight_decay:
            torch._foreach_add_(grads, self.params, alpha=self.weight_decay)
        torch._foreach_add_(self.params, grads, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"state": {}, "param_groups": [{"lr": self.lr, "weight_decay": self.weight_decay}]}

    def load_state_dict(self, state: dict) -> None:
        pass  # stateless: the learning rate comes from the settings


Optimizer = torch.optim.Optimizer | PlainSGD


def build_optimizer(params: list[Tensor], cfg: OptimConfig) -> Optimizer:
    """An optimizer over ``params`` (leaf tensors whose ``.grad`` we fill by hand)."""
    if cfg.kind == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    if cfg.kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    if cfg.kind == "sgd" and cfg.momentum == 0.0:
        return PlainSGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.kind == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
    raise ValueError(f"optimizer must be adam, adamw or sgd, got {cfg.kind!r}")


def state_tensors(opt: Optimizer, param: Tensor, slots: tuple[str, ...] = _STATE_SLOTS) -> list[Tensor]:
    """The per-element state tensors (of ``slots``) the optimizer keeps for ``param`` (empty before the first step)."""
    state = opt.state.get(param, {})
    return [state[slot] for slot in slots if isinstance(state.get(slot), Tensor)]


def reset_entries(opt: Optimizer, param: Tensor, flat_index: Tensor) -> None:
    """Zero every per-element optimizer state of ``param`` at ``flat_index`` (into ``param.view(-1)``)."""
    for slot in state_tensors(opt, param):
        slot.view(-1).index_fill_(0, flat_index, 0.0)


def zero_first_moments(opt: Optimizer, params: list[Tensor]) -> None:
    """Zero the first-moment state (``FIRST_MOMENTS``) of ``params``; second moments are kept."""
    for p in params:
        for moment in state_tensors(opt, p, FIRST_MOMENTS):
            moment.zero_()


def per_step(opt: Optimizer, cfg: OptimConfig, lr: float, samples: int) -> None:
    """Set the step's hyper-parameters so that a step over ``samples`` summed samples does what that many
    single-sample steps would, to first order — learning does not depend on how the stream was batched:

    * plain SGD: the gradient is a sum, so the learning rate stays per sample (the linear scaling rule);
    * SGD with momentum: the momentum decays per sample, ``momentum ** samples`` per step;
    * Adam/AdamW: the moments decay per sample, ``beta ** samples`` per step, and since Adam normalises
      the update, the rate grows with the square root of the samples (the square-root scaling rule for
      adaptive methods, Malladi et al., "On the SDEs and scaling rules for adaptive gradient algorithms",
      2022). With one sample per step every value is the configured one.
    """
    if isinstance(opt, PlainSGD):
        opt.lr = lr
        return
    for group in opt.param_groups:
        if cfg.kind == "sgd":
            group["lr"] = lr
            group["momentum"] = cfg.momentum**samples
        else:
            group["lr"] = lr * samples**0.5
            group["betas"] = (cfg.betas[0] ** samples, cfg.betas[1] ** samples)
