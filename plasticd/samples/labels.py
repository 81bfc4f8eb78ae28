"""``y``: the decoded labels as (B,) int64 in [0, num_classes), -1 meaning unlabelled."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from plasticd.errors import SampleError
from plasticd.samples.limits import Limits
from plasticd.samples.messages import kinds
from plasticd.samples.tensors import tensor_to_array


def labels_from_value(value: Any, limits: Limits) -> np.ndarray | None:
    """The decoded ``y`` as an array (None: no labels at all); its shape and values are checked by validated_labels."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return tensor_to_array(value, limits)
    if isinstance(value, (list, tuple)):
        return _labels_from_list(value)
    _check_label_types({type(value)})
    return _int64_labels(np.array(value, dtype=object))


def validated_labels(y: np.ndarray | None, count: int, num_classes: int) -> np.ndarray:
    """``y`` as (B,) int64 in [0, num_classes) or -1; absent labels mean all unlabelled."""
    if y is None:
        return np.full(count, -1, dtype=np.int64)
    if y.dtype.kind not in "iu":
        raise SampleError("label_not_integer", f"expected integer labels, found dtype {y.dtype}")
    if y.ndim == 0:
        if count != 1:
            raise SampleError("label_count_mismatch", f"expected {count} labels (one per sample), found a single label")
        y = y.reshape(1)
    if y.ndim != 1:
        raise SampleError("wrong_rank", f"expected labels of shape ({count},), found shape {y.shape}")
    if len(y) != count:
        raise SampleError("label_count_mismatch", f"expected {count} labels (one per sample), found {len(y)}")
    bad = (y < -1) | (y >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise SampleError(
            "label_out_of_range",
            f"expected labels in [0, {num_classes}) or -1 for unlabelled, found {y[first]} (sample {first})",
        )
    return y.astype(np.int64)


def _labels_from_list(values: list | tuple) -> np.ndarray:
    """Integer labels with None (JSON null) meaning unlabelled (-1)."""
    _check_label_types(set(map(type, values)) - {type(None)})
    labels = np.array(values, dtype=object)  # 1-D: the types above rule out nesting
    labels[np.equal(labels, None)] = -1
    return _int64_labels(labels)


def _check_label_types(found: set[type]) -> None:
    foreign = found - {int}
    if foreign:
        reason = "label_not_integer" if foreign & {bool, float} else "wrong_dtype"
        raise SampleError(reason, f"expected integer labels or null, found {kinds(foreign)}")


def _int64_labels(labels: np.ndarray) -> np.ndarray:
    try:
        return labels.astype(np.int64)
    except OverflowError as exc:
        raise SampleError("label_out_of_range", "expected labels within int64, found a larger integer") from exc
