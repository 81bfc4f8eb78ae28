"""What one step brings back to the host: its predictions and its finiteness checks, in one transfer.

The step needs, on the host, each sample's predicted class, its probability and
the prequential loss (from the logits *before* the update), each copy's
prediction for the copy choice, and whether the batch is safe to learn from
(the outputs, the input statistics and the gradient finite). Computed on the
device and moved in one transfer, before the optimizer step, so a refused batch
changes nothing and a per-sample step waits on the device once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Readout:
    predicted: np.ndarray  # (B,) int64
    confidence: np.ndarray  # (B,) float32
    loss: np.ndarray  # (B,) float32, NaN where unlabelled
    by_copy: np.ndarray | None  # (S, B) int64, each copy's predicted class
    finite: np.ndarray  # (len(checks),) bool: each check's sum was finite


def readout(logits: Tensor, target: Tensor, is_lab: np.ndarray, every_copy: Tensor | None, checks: list[Tensor]) -> Readout:
    """From (B, C) ``logits``, the (B,) class ``target`` (any valid class where unlabelled), optionally every
    copy's logits (S, B, C), and scalar ``checks`` (sums: any inf/NaN, or an overflow, makes one non-finite)."""
    logp = torch.log_softmax(logits, dim=1)  # (B, C)
    top, predicted = logp.max(dim=1)
    picked = logp.gather(1, target.unsqueeze(1)).squeeze(1)
    rows = [predicted.to(logp.dtype), top, picked]
    if every_copy is not None:
        rows.append(every_copy.argmax(dim=2).to(logp.dtype).view(-1))  # (S * B,)
    b = logits.shape[0]
    host = torch.cat((*rows, torch.stack(checks))).cpu().numpy()
    table = host[: host.size - len(checks)].reshape(-1, b)  # (3 [+ S], B)
    loss = np.where(is_lab, -table[2], np.nan).astype(np.float32)
    return Readout(
        predicted=table[0].astype(np.int64),
        confidence=np.exp(table[1]).astype(np.float32),
        loss=loss,
        by_copy=table[3:].astype(np.int64) if every_copy is not None else None,
        finite=np.isfinite(host[host.size - len(checks) :]),
    )
