"""Run an exported plasticd model without plasticd: ``load(path).predict_proba(x)``.

This module imports only the standard library, NumPy and ``safetensors``, so it can
be copied next to a model file and used anywhere (``pip install numpy safetensors``)::

    import numpy as np
    from loader import load

    model = load("model.safetensors")
    probs = model.predict_proba(np.asarray(rows, dtype=np.float32))   # (B, classes), rows sum to 1
    classes = model.predict(rows)                                     # (B,) int64

The file (written by ``plasticd export``) is a safetensors file whose metadata
key ``plasticd`` holds a JSON header::

    {"format": "plasticd-model", "version": 1,
     "architecture": {"input_dim": D, "classes": C, "neurons": N, "iterations": K, "activation": "relu"},
     "normalization": {"kind": "standardize", "eps": 0.01} | {"kind": "none"},
     "source": {"checkpoint": seq, "created": "...", "samples_seen": n, "copy": "average" | "live"}}

and these float32 tensors (the weights of the copy the daemon predicts with):
``w_in`` (N, D), ``b_in`` (N,), ``w`` (N, N), ``w_out`` (C, N), ``b_out`` (C,),
``mask`` (N, N) bool (``w`` is zero wherever it is off), and, when inputs are
standardised, ``norm.mean`` (D,) and ``norm.var`` (D,).

The forward pass is the daemon's (plasticd/model/plastic_net.py), for x (B, D)::

    xn   = (x - mean) / sqrt(var + eps)          # when normalization.kind == "standardize"
    u    = xn @ w_in.T + b_in                    # (B, N)
    h_1  = act(u)
    h_k  = act(u + h_{k-1} @ (w * mask).T)       # k = 2..K, act = relu or tanh
    logits = h_K @ w_out.T + b_out               # (B, C);  probabilities = softmax(logits)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

FORMAT = "plasticd-model"
VERSION = 1
HEADER_KEY = "plasticd"
TENSORS = ("w_in", "b_in", "w", "w_out", "b_out", "mask")


@dataclass(frozen=True)
class Model:
    """An exported plastic network: its header and weights, and its forward pass in NumPy (float32)."""

    header: dict[str, Any]
    tensors: dict[str, np.ndarray]

    @property
    def input_dim(self) -> int:
        return int(self.header["architecture"]["input_dim"])

    @property
    def classes(self) -> int:
        return int(self.header["architecture"]["classes"])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, C) for ``x`` (B, D) or one sample (D,)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must be (B, {self.input_dim}) or ({self.input_dim},), got {x.shape}")
        t = self.tensors
        norm = self.header["normalization"]
        if norm["kind"] == "standardize":
            x = (x - t["norm.mean"]) / np.sqrt(t["norm.var"] + np.float32(norm["eps"]))
        act = _relu if self.header["architecture"]["activation"] == "relu" else np.tanh
        u = x @ t["w_in"].T + t["b_in"]  # (B, N)
        h = act(u)
        w_t = (t["w"] * t["mask"]).T  # (N, N); w is already zero off the mask
        for _ in range(1, int(self.header["architecture"]["iterations"])):
            h = act(u + h @ w_t)
        return h @ t["w_out"].T + t["b_out"]  # (B, C)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C), each row summing to 1."""
        z = self.logits(x)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable class (B,) int64."""
        return self.logits(x).argmax(axis=1).astype(np.int64)


def load(path: str | Path) -> Model:
    """Read a model file written by ``plasticd export``; ValueError when it is not one this loader can run."""
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
        if HEADER_KEY not in metadata:
            raise ValueError(f"{path}: no {HEADER_KEY!r} header: not a model written by plasticd export")
        header = json.loads(metadata[HEADER_KEY])
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: format is {header.get('format')!r}, expected {FORMAT!r}")
        if not isinstance(header.get("version"), int) or header["version"] > VERSION:
            raise ValueError(f"{path}: format version {header.get('version')!r}; this loader reads up to {VERSION}")
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    missing = [name for name in TENSORS if name not in tensors]
    if header["normalization"]["kind"] == "standardize":
        missing += [name for name in ("norm.mean", "norm.var") if name not in tensors]
    if missing:
        raise ValueError(f"{path}: tensors {missing} are missing")
    tensors = {k: v if k == "mask" else v.astype(np.float32, copy=False) for k, v in tensors.items()}
    return Model(header=header, tensors=tensors)


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, np.float32(0.0))
