"""``y``: the decoded labels as (B,) int64 in [0, num_classes), -1 meaning unlabelled.

A label is a class index, so what counts is its *value*: ``3``, ``3.0`` (JSON, a float tensor,
a float array) are the same label; a boolean is a label only for two classes (false = 0,
true = 1); ``1.5``, NaN or infinity are no label at all. Checks run in one order whatever the
format (kind, shape, integral values, range), so every path to a refusal gives one reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from plasticd.errors import SampleError
from plasticd.samples.limits import Limits
from plasticd.samples.messages import kinds
from plasticd.samples.tensors import tensor_to_array

_PYTHON_LABEL_KINDS = {int, float, bool}  # besides None (null: unlabelled)


def labels_from_value(value: Any, limits: Limits) -> np.ndarray | None:
    """The decoded ``y`` as an array (None: no labels at all); its shape and values are checked by validated_labels.

    Python values (JSON, lists in a ``.pt``) become an object array, so an integer beyond 64 bits
    stays exact until the range check refuses it.
    """
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return tensor_to_array(value, limits)
    if isinstance(value, (list, tuple)):
        return _labels_from_list(value)
    return _labels_from_list([value]).reshape(())


def validated_labels(y: np.ndarray | None, count: int, num_classes: int) -> np.ndarray:
    """``y`` as (B,) int64 in [0, num_classes) or -1; absent labels mean all unlabelled."""
    if y is None:
        return np.full(count, -1, dtype=np.int64)
    _check_label_kind(y, num_classes)
    if y.ndim == 0:
        if count != 1:
            raise SampleError("label_count_mismatch", f"expected {count} labels (one per sample), found a single label")
        y = y.reshape(1)
    if y.ndim != 1:
        raise SampleError("wrong_rank", f"expected labels of shape ({count},), found shape {y.shape}")
    if len(y) != count:
        raise SampleError("label_count_mismatch", f"expected {count} labels (one per sample), found {len(y)}")
    _check_integral(y)
    bad = (y < -1) | (y >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise SampleError(
            "label_out_of_range",
            f"expected labels in [0, {num_classes}) or -1 for unlabelled, found {_label_text(y[first])} (sample {first})",
        )
    return y.astype(np.int64)  # exact: every value is integral and within [-1, num_classes)


def _labels_from_list(values: list | tuple) -> np.ndarray:
    """Python labels as a 1-D object array, None (JSON null) meaning unlabelled (-1)."""
    foreign = set(map(type, values)) - _PYTHON_LABEL_KINDS - {type(None)}
    if foreign:
        raise SampleError("wrong_dtype", f"expected integer labels or null, found {kinds(foreign)}")
    labels = np.empty(len(values), dtype=object)  # filled, not np.array(values): the types above rule out nesting
    labels[:] = [-1 if value is None else value for value in values]
    return labels


def _check_label_kind(y: np.ndarray, num_classes: int) -> None:
    if y.dtype.kind not in "iufbO":
        raise SampleError("label_not_integer", f"expected integer labels, found dtype {y.dtype}")
    booleans = y.dtype.kind == "b" or (y.dtype.kind == "O" and any(type(v) is bool for v in y.flat))
    if booleans and num_classes != 2:
        raise SampleError(
            "label_not_integer",
            f"expected integer labels (true/false only with 2 classes), found a boolean label with {num_classes} classes",
        )


def _check_integral(y: np.ndarray) -> None:
    """Refuse a label whose value is not a whole number (1.5, NaN, infinity); 3.0 is label 3."""
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(y) & (np.trunc(y) == y))
    elif y.dtype.kind == "O":
        bad = np.array([type(v) is float and not v.is_integer() for v in y], dtype=bool)
    else:
        return
    if bad.any():
        first = int(np.argmax(bad))
        raise SampleError("label_not_integer", f"expected integer labels, found {_label_text(y[first])} (sample {first})")


def _label_text(value: Any) -> str:
    """A label as found: ``12`` for 12.0 (a whole number), ``1.5``, ``nan``; a huge integer by its size only."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return str(int(number)) if math.isfinite(number) and number.is_integer() and abs(number) < 1e16 else repr(number)
    number = int(value)
    return str(number) if abs(number) < 10**20 else f"an integer of {number.bit_length()} bits"
