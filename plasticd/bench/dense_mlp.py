"""The dense baseline of ``plasticd bench learn``: a one-hidden-layer torch MLP trained with autograd."""

from __future__ import annotations

import numpy as np
import torch

from plasticd.config import Settings
from plasticd.model.normalize import InputNorm


class DenseMLP:
    """The baseline: Linear(D, H) → ReLU → Linear(H, C), trained one step per batch with autograd.

    ``recipe=True`` adds plasticd's input standardisation and an averaged
    copy of the weights for predictions (same decay and cadence as the engine).
    """

    def __init__(self, settings: Settings, optimizer: str, lr: float, recipe: bool = False) -> None:
        torch.manual_seed(settings.runtime.seed)
        m = settings.model
        self.model = torch.nn.Sequential(
            torch.nn.Linear(m.input_dim, m.neurons), torch.nn.ReLU(), torch.nn.Linear(m.neurons, m.num_classes)
        )
        params = list(self.model.parameters())
        self.opt: torch.optim.Optimizer
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=settings.train.momentum, weight_decay=settings.train.weight_decay)
        elif optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=lr, betas=settings.train.betas, weight_decay=settings.train.weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=lr, betas=settings.train.betas, weight_decay=settings.train.weight_decay)
        self.norm = InputNorm(m.input_dim, enabled=recipe)
        self.decay = settings.train.average_decay if recipe else 0.0
        self.every = settings.train.average_every
        self.avg = [p.detach().clone() for p in params] if self.decay else None
        self.steps = 0

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.avg is None:
            return self.model(x)
        w1, b1, w2, b2 = self.avg
        return torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, w1, b1)), w2, b2)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Predict, then learn; returns per-sample correctness and prequential loss."""
        self.norm.update(x)
        x = self.norm(x)
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        pred_logits = logits if self.avg is None else self._predict(x).detach()
        with torch.no_grad():
            per_sample = torch.nn.functional.cross_entropy(pred_logits, y, reduction="none")
            correct = pred_logits.argmax(dim=1) == y
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        if self.avg is not None and self.steps % self.every == 0:
            t = self.steps
            d = min(self.decay, (1.0 + t) / (10.0 + t)) ** self.every
            with torch.no_grad():
                torch._foreach_lerp_(self.avg, [p.detach() for p in self.model.parameters()], 1.0 - d)
        return correct.numpy(), per_sample.detach().numpy()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self._predict(self.norm(x)).argmax(dim=1) == y).float().mean())
