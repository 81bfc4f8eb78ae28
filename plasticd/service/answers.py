"""The answer of ``plasticd predict``, one JSON line per sample: shared by the command and the live ``POST /predict``.

Both decode a document with the daemon's own decoders and limits, and print
the same records from the same logits, so an answer of the running daemon and
one of ``plasticd predict`` on the checkpoint it names are the same bytes::

    {"file": "a.json", "index": 0, "predicted": 3, "confidence": 0.91,
     "probabilities": [0.01, 0.02, 0.05, 0.91], "checkpoint": 12, "id": "order-17"}

A refused document is one line ``{"file": ..., "error": {"reason": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from plasticd.errors import SampleError
from plasticd.samples import Limits, decode_bytes
from plasticd.samples.files import check_file_size


def decode_document(data: bytes, suffix: str, input_dim: int, num_classes: int, limits: Limits) -> tuple[np.ndarray, str | None]:
    """(x (B, D) float32, the JSON document's one "id" or None) of a sample document; SampleError as the daemon raises it."""
    batch = decode_bytes(data, suffix, input_dim, num_classes, limits)
    return batch.x, sample_id(data) if suffix.lower() == ".json" else None


def check_size(size: int, limits: Limits) -> None:
    """Refuse a document over ``limits.max_file_bytes`` (SampleError ``too_large``) before it is read."""
    check_file_size(size, limits.max_file_bytes)


def sample_id(data: bytes) -> str | None:
    """The producer's "id" of a JSON sample the decoder accepted (it checked the tag is a string)."""
    if b'"id"' not in data and b"\\u" not in data:  # no key "id", not even escaped: skip parsing it again
        return None
    document = json.loads(data)
    value = document.get("id") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def records(name: str, logits: torch.Tensor, checkpoint: int | None, sample_id: str | None) -> list[dict[str, Any]]:
    """One record per row of ``logits`` (B, C): class, confidence, probabilities (6 decimals), checkpoint, id."""
    probs = torch.softmax(logits, dim=1).cpu().numpy()
    out = []
    for i, row in enumerate(probs):
        record: dict[str, Any] = {
            "file": name,
            "index": i,
            "predicted": int(row.argmax()),
            "confidence": round(float(row.max()), 6),
            "probabilities": [round(float(p), 6) for p in row],
            "checkpoint": checkpoint,
        }
        if sample_id is not None:
            record["id"] = sample_id
        out.append(record)
    return out


def refusal(name: str, exc: SampleError) -> dict[str, Any]:
    return {"file": name, "error": {"reason": exc.reason, "message": str(exc)}}


def line(record: dict[str, Any]) -> str:
    """A record as the JSON line both print (compact separators, newline-terminated)."""
    return json.dumps(record, separators=(",", ":")) + "\n"
