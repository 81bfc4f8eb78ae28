"""The data contract: value limits that guard the arithmetic, labels judged by their value, messages that say
what was found. Every case runs through JSON (both parser paths), ``.pt`` and ``.npz``."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch

from plasticd.config import LimitSettings
from plasticd.errors import SampleError
from plasticd.samples import Limits, decode_bytes

DIM = 2
ROWS = [[0.5, 1.0], [2.0, -3.0], [4.0, 5.0]]
FORMATS = ["json-fast", "json-strict", "pt", "npz"]
DEFAULTS = Limits()


def encode(fmt: str, x: Any, y: Any) -> bytes:
    """A sample file in ``fmt``; ``y`` is written as given (JSON literals, a tensor, an array)."""
    if fmt.startswith("json"):
        return json.dumps({"x": x, "y": y}).encode()
    if fmt == "pt":
        buffer = io.BytesIO()
        torch.save({"x": torch.from_numpy(np.array(x)), "y": torch.tensor(y)}, buffer)  # x float64, as npz
        return buffer.getvalue()
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array(x), y=np.array(y))
    return buffer.getvalue()


def decode(fmt: str, x: Any, y: Any, num_classes: int, limits: Limits = DEFAULTS) -> np.ndarray:
    """The decoded labels."""
    suffix = ".json" if fmt.startswith("json") else f".{fmt}"
    batch = decode_bytes(encode(fmt, x, y), suffix, DIM, num_classes, limits, fast_json=fmt != "json-strict")
    return batch.y


def refusal(fmt: str, x: Any, y: Any, num_classes: int, limits: Limits = DEFAULTS) -> SampleError:
    with pytest.raises(SampleError) as caught:
        decode(fmt, x, y, num_classes, limits)
    return caught.value


# --- labels --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("y", "expected"),
    [([1.0, 0.0, 2.0], [1, 0, 2]), ([2.0, -1.0, 9.0], [2, -1, 9]), ([1, 0, 2], [1, 0, 2])],
    ids=["floats", "float-minus-one-unlabelled", "integers"],
)
def test_integer_valued_float_labels_are_accepted(fmt: str, y: list, expected: list[int]) -> None:
    labels = decode(fmt, ROWS, y, num_classes=10)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_single_float_label_is_accepted(fmt: str) -> None:
    np.testing.assert_array_equal(decode(fmt, ROWS[0], 3.0, num_classes=10), [3])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_npz_float_labels_of_any_width_are_accepted(dtype: type) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array(ROWS), y=np.array([1, 0, 2], dtype=dtype))
    np.testing.assert_array_equal(decode_bytes(buffer.getvalue(), ".npz", DIM, 3).y, [1, 0, 2])


@pytest.mark.parametrize("fmt", FORMATS)
def test_boolean_labels_are_classes_0_and_1_for_two_classes(fmt: str) -> None:
    np.testing.assert_array_equal(decode(fmt, ROWS, [True, False, True], num_classes=2), [1, 0, 1])
    np.testing.assert_array_equal(decode(fmt, ROWS[0], False, num_classes=2), [0])


@pytest.mark.parametrize("fast_json", [True, False], ids=["fast-path", "strict-parser"])
def test_json_booleans_mix_with_integers_and_null_for_two_classes(fast_json: bool) -> None:
    data = b'{"x": [[1, 2], [3, 4], [5, 6], [7, 8]], "y": [true, 0, null, 1.0]}'
    np.testing.assert_array_equal(decode_bytes(data, ".json", DIM, 2, fast_json=fast_json).y, [1, 0, -1, 1])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("num_classes", [3, 10])
def test_boolean_labels_are_refused_unless_there_are_two_classes(fmt: str, num_classes: int) -> None:
    error = refusal(fmt, ROWS, [True, False, True], num_classes)
    assert error.reason == "label_not_integer"
    assert "boolean" in str(error) and "2 classes" in str(error) and f"{num_classes} classes" in str(error)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_non_integral_label_is_refused_saying_what_it_is(fmt: str) -> None:
    error = refusal(fmt, ROWS, [1.0, 1.5, 2.0], num_classes=10)
    assert error.reason == "label_not_integer"
    assert str(error) == "expected integer labels, found 1.5 (sample 1)"


@pytest.mark.parametrize("fmt", ["pt", "npz"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nan_and_infinite_labels_are_not_integers(fmt: str, value: float) -> None:
    error = refusal(fmt, ROWS, [0.0, value, 1.0], num_classes=10)
    assert error.reason == "label_not_integer" and f"found {value!r}" in str(error)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("y", [[1, 12, 0], [1.0, 12.0, 0.0]], ids=["integer", "float"])
def test_an_out_of_range_label_is_refused_saying_what_it_is(fmt: str, y: list) -> None:
    error = refusal(fmt, ROWS, y, num_classes=10)
    assert error.reason == "label_out_of_range"
    assert str(error) == "expected labels in [0, 10) or -1 for unlabelled, found 12 (sample 1)"


@pytest.mark.parametrize("fast_json", [True, False], ids=["fast-path", "strict-parser"])
@pytest.mark.parametrize("literal", [b"1" + b"0" * 30, b"1e30", b"1.0e30"], ids=["integer", "exponent", "float"])
def test_a_huge_json_label_is_out_of_range_however_written(fast_json: bool, literal: bytes) -> None:
    with pytest.raises(SampleError) as caught:
        decode_bytes(b'{"x": [1, 2], "y": ' + literal + b"}", ".json", DIM, 10, fast_json=fast_json)
    assert caught.value.reason == "label_out_of_range"


def test_a_huge_integer_label_is_out_of_range_and_not_printed_in_full() -> None:
    data = b'{"x": [[1, 2], [3, 4]], "y": [0, 1' + b"0" * 300 + b"]}"
    with pytest.raises(SampleError, match=r"found an integer of 997 bits \(sample 1\)$") as caught:
        decode_bytes(data, ".json", DIM, 10, fast_json=False)
    assert caught.value.reason == "label_out_of_range"


# --- values --------------------------------------------------------------------------------------------------------


def test_the_settings_default_is_the_decoders_default() -> None:
    assert LimitSettings().max_abs_value == Limits().max_abs_value == 1e15


@pytest.mark.parametrize("fmt", FORMATS)
def test_ordinary_large_values_pass_the_default_limit(fmt: str) -> None:
    """House values, prices, counts: the old 1e6 default quarantined a share of river's Agrawal stream."""
    rows = [[1_250_000.0, 3.0], [8.5e14, -2.5e9], [1e15, -1e15]]
    suffix = ".json" if fmt.startswith("json") else f".{fmt}"
    batch = decode_bytes(encode(fmt, rows, [0, 1, 2]), suffix, DIM, 3, fast_json=fmt != "json-strict")
    np.testing.assert_array_equal(batch.x, np.array(rows, dtype=np.float32))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", [2e15, -2e15])
def test_values_beyond_the_default_limit_are_refused(fmt: str, value: float) -> None:
    error = refusal(fmt, [[1.0, value]], [0], num_classes=3)
    assert error.reason == "value_out_of_range"
    assert str(error) == f"expected |x| <= 1e+15, found {abs(value):g}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_values_beyond_float32_are_refused_whatever_the_limit(fmt: str) -> None:
    """float32 is what the learner gets: a larger value would arrive as infinity."""
    limits = Limits(max_abs_value=float("inf"))
    assert decode(fmt, [[1.0, 3e38]], [0], 3, limits).tolist() == [0]
    error = refusal(fmt, [[1.0, 1e39]], [0], num_classes=3, limits=limits)
    assert error.reason == "value_out_of_range" and "(float32)" in str(error)
