"""The orjson fast path of the JSON decoder gives exactly the strict parser's answer.

Differential: every generated document is decoded twice, ``fast_json=True`` (orjson where the
decoder judges it safe) and ``fast_json=False`` (the strict parser alone), under the same limits;
both must accept with bit-identical arrays or refuse with the same reason. Documents are written
by hand from (key, value) pairs so keys may repeat, and are biased towards what separates the
parsers: integers beyond 64 bits and beyond float64, large floats, booleans and floats as labels,
strings holding brackets, quotes and escapes, nesting near the depth limit.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from plasticd.errors import SampleError
from plasticd.samples import Limits, decode_bytes

DIM = 3
HUGE_INTS = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**20 - 1, 10**20, 10**21, 10**29, 10**30 + 7])
INTS = st.integers(-5, 5) | st.integers(-(2**70), 2**70) | HUGE_INTS | HUGE_INTS.map(lambda n: -n)
BEYOND_FLOAT64 = st.sampled_from([10**308, 2 * 10**308, 10**309, 10**400]).map(lambda n: n if n % 2 else -n)
FLOATS = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 2.0, 1.5, -1.0, 1e15, 1e19, 1e20, 9.3e18, 1.8e19, 1e25, 1e30, 1e300])
    | st.floats(allow_nan=True, allow_infinity=True)
)
NUMBERS = INTS | FLOATS | BEYOND_FLOAT64
STRINGS = st.text('[]{}"\\xy\u00e9\u2028 ', max_size=6)
SCALARS = st.none() | st.booleans() | NUMBERS | STRINGS
KEYS = st.sampled_from(["x", "y", "label", "id", "z"])
LABEL_VALUES = st.none() | st.booleans() | INTS | FLOATS | st.integers(-1, 3).map(float) | st.integers(-1, 3)
ANY_VALUE = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=12
)
ROWS = st.lists(NUMBERS | st.integers(-3, 3), min_size=DIM, max_size=DIM)
X_VALUES = ROWS | st.lists(ROWS, min_size=1, max_size=3) | ANY_VALUE
Y_VALUES = LABEL_VALUES | st.lists(LABEL_VALUES, max_size=4) | ANY_VALUE
FIELDS = {"x": X_VALUES, "y": Y_VALUES, "label": Y_VALUES, "id": STRINGS | ANY_VALUE, "z": ANY_VALUE}
LIMITS = st.builds(
    Limits,
    max_abs_value=st.sampled_from([1e6, 1e15, 1e19, 1e20, 1e25, 1e30, 1e300, float("inf")]),
    max_json_depth=st.integers(1, 6),
    max_samples=st.integers(1, 4),
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A JSON object written pair by pair (a key may repeat), mostly with an ``x`` first."""
    keys = draw(st.lists(KEYS, max_size=4))
    if draw(st.booleans()):
        keys = ["x", *keys]
    ensure_ascii, space = draw(st.booleans()), draw(st.sampled_from(["", " ", "\n  "]))
    pairs = [f"{json.dumps(key)}:{space}{json.dumps(draw(FIELDS[key]), ensure_ascii=ensure_ascii)}" for key in keys]
    return ("{" + f",{space}".join(pairs) + "}").encode()


def outcome(data: bytes, limits: Limits, num_classes: int, *, fast_json: bool) -> tuple[Any, ...]:
    """("ok", x bytes, x shape, labels) or ("refused", reason); any other exception fails the test."""
    try:
        batch = decode_bytes(data, ".json", DIM, num_classes, limits, fast_json=fast_json)
    except SampleError as exc:
        return ("refused", exc.reason)
    return ("ok", batch.x.tobytes(), batch.x.shape, batch.y.tolist())


@settings(max_examples=600, deadline=None)
@given(data=documents(), limits=LIMITS, num_classes=st.sampled_from([2, 3, 10]))
@example(data=b'{"x": [1, 2, 123456789012345678901234567890]}', limits=Limits(max_abs_value=1e30), num_classes=3)
@example(data=b'{"x": [1, 2, 3], "y": 1e20}', limits=Limits(), num_classes=3)
@example(data=b'{"x": [[1, 2, 3]], "y": [100000000000000000000, 1]}', limits=Limits(), num_classes=3)
def test_the_fast_path_and_the_strict_parser_agree(data: bytes, limits: Limits, num_classes: int) -> None:
    fast = outcome(data, limits, num_classes, fast_json=True)
    strict = outcome(data, limits, num_classes, fast_json=False)
    assert fast == strict, data


def test_both_paths_are_exercised() -> None:
    """A document the fast path takes and one it must hand over decode alike (a guard for the property above)."""
    plain, escaped = b'{"x": [1, 2, 3], "y": 1}', b'{"x": [1, 2, 3], "y": 1, "id": "a\\"b"}'
    for data in (plain, escaped):
        assert outcome(data, Limits(), 3, fast_json=True) == outcome(data, Limits(), 3, fast_json=False)
        assert outcome(data, Limits(), 3, fast_json=True)[0] == "ok"
    np.testing.assert_array_equal(decode_bytes(plain, ".json", DIM, 3).x, [[1, 2, 3]])
