"""``x``: whatever a format decoded (lists, a tensor, an array) as a (B, D) float32 array, finite and bounded."""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import torch

from plasticd.errors import SampleError
from plasticd.samples.limits import Limits
from plasticd.samples.messages import kinds, type_name
from plasticd.samples.tensors import tensor_to_array

_FLOAT32_MAX = float(np.finfo(np.float32).max)  # a larger |x| would round to infinity


def features_from_value(value: Any, limits: Limits) -> np.ndarray:
    """The decoded ``x`` as an array of its own dtype; its shape and values are checked by validated_features."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return tensor_to_array(value, limits)
    if isinstance(value, (list, tuple)):
        return _array_from_lists(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise SampleError("wrong_rank", "expected a list of numbers or a list of lists, found a single number")
    raise SampleError("wrong_dtype", f"expected numbers in x, found {type_name(value)}")


def validated_features(x: np.ndarray, input_dim: int, limits: Limits) -> np.ndarray:
    """``x`` as a (B, D) float32 C-contiguous array; shapes are checked before any value is touched."""
    _check_numeric(x.dtype)
    if x.ndim not in (1, 2):
        expected = f"one sample ({input_dim},) or a batch (B, {input_dim})"
        raise SampleError("wrong_rank", f"expected {expected}, found shape {x.shape}")
    if x.shape[0] == 0:
        raise SampleError("empty", f"expected at least one sample, found shape {x.shape}")
    batch = x.reshape(1, -1) if x.ndim == 1 else x  # (B, D)
    if batch.shape[1] != input_dim:
        raise SampleError("wrong_length", f"expected {input_dim} values per sample, found {batch.shape[1]}")
    if len(batch) > limits.max_samples:
        raise SampleError("too_many_samples", f"expected at most {limits.max_samples} samples, found {len(batch)}")
    _check_finite(batch)
    _check_magnitude(batch, limits.max_abs_value)
    return np.ascontiguousarray(batch, dtype=np.float32)


def _array_from_lists(rows: list | tuple) -> np.ndarray:
    """float64 from a list of numbers or of equally long lists of numbers; types are checked in C, not per value."""
    found = set(map(type, rows))  # a flat list's value types: checked once, below
    if found & {list, tuple}:
        if not found <= {list, tuple}:
            raise SampleError("wrong_rank", "expected a list of numbers or a list of lists, found a mix of both")
        lengths = set(map(len, rows))
        if len(lengths) > 1:
            span = f"lengths {min(lengths)} to {max(lengths)}"
            raise SampleError("wrong_length", f"expected samples of equal length, found {span}")
        found = set(map(type, chain.from_iterable(rows)))
    _check_number_types(found)
    try:
        return np.array(rows, dtype=np.float64)
    except OverflowError as exc:  # an integer beyond float64, from a pickle
        raise SampleError("value_out_of_range", "expected numbers within float64, found a larger integer") from exc


def _check_number_types(found: set[type]) -> None:
    foreign = found - {int, float}
    if not foreign:
        return
    if foreign & {list, tuple}:
        raise SampleError("wrong_rank", "expected at most two levels of lists in x, found deeper nesting")
    raise SampleError("wrong_dtype", f"expected numbers in x, found {kinds(foreign)}")


def _check_numeric(dtype: np.dtype) -> None:
    if dtype.kind == "b":
        raise SampleError("wrong_dtype", "expected numbers in x, found booleans")
    if dtype.kind not in "iuf":
        raise SampleError("wrong_dtype", f"expected integer or floating-point numbers in x, found dtype {dtype}")


def _check_finite(batch: np.ndarray) -> None:
    if batch.dtype.kind != "f":
        return
    finite = np.isfinite(batch)
    if not finite.all():
        sample, position = np.unravel_index(int(np.argmin(finite)), finite.shape)
        raise SampleError(
            "non_finite",
            f"expected finite numbers, found {finite.size - np.count_nonzero(finite)} NaN or infinite values"
            f" (first in sample {sample} at position {position})",
        )


def _check_magnitude(batch: np.ndarray, max_abs: float) -> None:
    """|x| <= max_abs, and within float32 whatever max_abs says: the batch is float32 from here on."""
    bound = min(max_abs, _FLOAT32_MAX)
    peak = max(abs(float(batch.min())), abs(float(batch.max())))  # min/max, not abs(): abs(int64 min) overflows
    if peak > bound:
        within = f"{bound:g}" if bound == max_abs else f"{bound:g} (float32)"
        raise SampleError("value_out_of_range", f"expected |x| <= {within}, found {peak:g}")
