"""Prediction alone: the predicting copy's weights and the input scaler, and the one function that predicts with them.

``Engine.predict_logits`` predicts through a ``Predictor`` over views of its own
tensors; ``Engine.predictor()`` hands out one over *clones*, which no later step,
rewiring or resize of the engine changes. Another thread may predict from such
a copy while the engine's owner goes on learning (the live ``POST /predict``):
the two share no tensor, and both run the same code on the same numbers, so
the answers are the engine's own, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plasticd.model.normalize import InputNorm
from plasticd.model.plastic_net import NetConfig, forward

BATCH_ROWS = 4096  # rows per forward pass: bounds the (K, 1, B, N) hidden-state buffer


@dataclass(frozen=True)
class Predictor:
    """One weight copy (each parameter (1, ...)), the input scaler and the architecture: all that predicting reads."""

    theta: dict[str, Tensor]
    norm: InputNorm
    cfg: NetConfig

    def logits(self, x: Tensor, batch_size: int = BATCH_ROWS) -> Tensor:
        """Logits (B, C) for ``x`` (B, D), on the weights' device; reads the weights, changes nothing."""
        device = self.theta["w"].device
        with torch.no_grad():
            out = [
                forward(self.theta, self.norm(x[i : i + batch_size].to(device, torch.float32)), self.cfg).logits[0]
                for i in range(0, x.shape[0], batch_size)
            ]
        return torch.cat(out) if out else torch.empty((0, self.cfg.output_dim), device=device)

    @property
    def nbytes(self) -> int:
        """Bytes of tensors this predictor holds (what a clone of it copies)."""
        tensors = [*self.theta.values(), self.norm.mean, self.norm.var]
        return sum(t.numel() * t.element_size() for t in tensors)


def chosen_copy(theta: dict[str, Tensor], chosen: int) -> dict[str, Tensor]:
    """Views of copy ``chosen`` of every parameter, each keeping a copy axis of 1."""
    return {k: v[chosen : chosen + 1] for k, v in theta.items()}


def frozen(predictor: Predictor) -> Predictor:
    """A predictor over clones of ``predictor``'s tensors: later in-place changes of the originals do not reach it."""
    return Predictor(theta={k: v.clone() for k, v in predictor.theta.items()}, norm=predictor.norm.copy(), cfg=predictor.cfg)
