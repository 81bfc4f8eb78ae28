"""Decode one untrusted sample file (.json, .pt/.pth, .npz) into validated arrays: the entry points.

Every format's decoder hands back a mapping; every mapping goes through the same field,
feature and label checks, so the contract of :class:`SampleBatch` holds whatever the format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plasticd.errors import SampleError
from plasticd.samples.archives import decode_npz, decode_torch
from plasticd.samples.features import features_from_value, validated_features
from plasticd.samples.fields import pick_fields, validated_ids
from plasticd.samples.files import check_file_size, read_regular_file, supported_suffix
from plasticd.samples.json_format import decode_json
from plasticd.samples.labels import labels_from_value, validated_labels
from plasticd.samples.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class SampleBatch:
    """Validated samples, ready for the learner."""

    x: np.ndarray  # (B, D) float32, C-contiguous, all finite, |x| <= max_abs_value (checked before rounding)
    y: np.ndarray  # (B,) int64, label in [0, num_classes) or -1 for "unlabelled"
    ids: tuple[str, ...] | None = None  # the producer's "id" of each sample (a file's one id repeated); None: none given


def decode_file(path: Path, input_dim: int, num_classes: int, limits: Limits = DEFAULT_LIMITS) -> SampleBatch:
    """Read and decode the regular file at ``path``; raise SampleError if it is unusable in any way."""
    suffix = supported_suffix(path.suffix)
    data = read_regular_file(path, limits.max_file_bytes)
    return decode_bytes(data, suffix, input_dim, num_classes, limits)


def decode_bytes(
    data: bytes,
    suffix: str,
    input_dim: int,
    num_classes: int,
    limits: Limits = DEFAULT_LIMITS,
    *,
    fast_json: bool = True,
) -> SampleBatch:
    """Decode the content of a sample file whose name ends in ``suffix`` (e.g. ``".json"``).

    ``fast_json=False`` decodes JSON with the strict parser alone: the reference whose answer the
    orjson fast path must give, for tests that compare the two and for debugging a refusal.
    """
    suffix = supported_suffix(suffix)
    check_file_size(len(data), limits.max_file_bytes)
    if not data:
        raise SampleError("empty", "expected a sample file, found 0 bytes")
    document = decode_json(data, limits, fast=fast_json) if suffix == ".json" else _ARCHIVES[suffix](data, limits)
    x_value, y_value, id_value = pick_fields(document)
    x = validated_features(features_from_value(x_value, limits), input_dim, limits)
    y = validated_labels(labels_from_value(y_value, limits), len(x), num_classes)
    return SampleBatch(x=x, y=y, ids=validated_ids(id_value, len(x)))


_ARCHIVES: dict[str, Callable[[bytes, Limits], Any]] = {
    ".pt": decode_torch,
    ".pth": decode_torch,
    ".npz": decode_npz,
}
