"""A ``.json`` sample: strict JSON only, nesting bounded before any parser could recurse on it.

Two parsers give one answer. orjson (~10x faster) takes the documents where its result is
provably the strict parser's; everything else, and every error, goes to ``json.loads`` with
hooks that refuse NaN/Infinity, duplicate keys and over-long integer literals, after a
byte-level scan has bounded the nesting depth (``json.loads`` recurses once per level).
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import orjson

from plasticd.errors import SampleError
from plasticd.samples.limits import Limits
from plasticd.samples.messages import listing

SCAN_CHUNK = 1 << 20  # bytes per step of the depth scan: bounds its memory, lets int32 count within a step
_MAX_INT_DIGITS = 309  # a longer JSON integer literal is >= 1e309, beyond float64 whatever the limits
_BRACKET_STEP = np.zeros(256, dtype=np.int8)  # per byte value: +1 opens a level, -1 closes one
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def decode_json(data: bytes, limits: Limits, *, fast: bool = True) -> Any:
    """The document in ``data`` (its ``"id"`` is checked with the other keys, ``fields``); ``fast=False``: the strict
    parser only."""
    document = _fast_json(data) if fast else None  # orjson stops at its own depth limit (1024) without recursing
    if document is None:  # the strict parser decides, and says precisely why a file is bad
        check_json_depth(data, limits.max_json_depth)  # before a parser that recurses
        document = _parse_json(_utf8_text(data))
    elif _bracket_count(data) > limits.max_json_depth:  # a batch file may nest too deep: count on the parsed levels
        _check_parsed_depth(document, limits.max_json_depth)
    return document


def _fast_json(data: bytes) -> Any | None:
    """orjson where its answer is provably the strict parser's, else None.

    orjson is strict JSON already (no NaN/Infinity, valid UTF-8 only) but keeps the last of
    duplicate keys silently. A sample document has one object (the top level), so a key
    parsed once must also be *written* once: each key's quoted text occurs exactly once in
    the bytes, and no backslash escape can spell a key another way. Anything else, and
    every parse error, goes to the strict path. orjson turns an integer beyond 64 bits into
    the nearest float where the strict parser keeps the integer, and neither parser caps it
    at a digit count below float64's (orjson fails on one beyond float64, so the strict parser
    refuses it): in ``x`` both become the same float64 before the magnitude check; as a
    label, such an integer and its float are both whole and both out of range. The two paths
    are checked against each other in tests/test_samples_json_paths.py.
    """
    if b"\\" in data or data.count(b"{") != 1:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    for key in document:
        if data.count(b'"' + key.encode() + b'"') != 1:
            return None
    return document


def _utf8_text(data: bytes) -> str:
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        found = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise SampleError("invalid_utf8", f"expected UTF-8 text, found {found}") from exc


# --- nesting depth ---------------------------------------------------------------------------------------------


def check_json_depth(data: bytes, max_depth: int) -> None:
    """Reject nesting deeper than ``max_depth`` in one O(n) pass, so json.loads never recurses deeply."""
    if _bracket_count(data) <= max_depth:
        return  # cannot nest deeper: most single-sample files stop here
    peak, _ = scan_depth(data, stop_above=max_depth)
    if peak > max_depth:
        raise SampleError("json_too_deep", f"expected JSON nested at most {max_depth} deep, found {peak} or more")


def scan_depth(data: bytes, stop_above: int, chunk_bytes: int = SCAN_CHUNK) -> tuple[int, int]:
    """``(deepest nesting seen, bytes scanned)``, scanning ``chunk_bytes`` at a time and stopping after the
    first chunk that nests deeper than ``stop_above``: memory stays bounded by the chunk, never by the file.

    Brackets inside string literals do not count. The scan treats a quote after an odd run of backslashes
    as escaped everywhere, in strings or not; json.loads fails at the first backslash outside a string, so
    the count is exact up to wherever json.loads would get.
    """
    carry, peak, scanned = _ScanCarry(backslashes=0, quotes=0, depth=0), 0, 0
    while scanned < len(data) and peak <= stop_above:
        chunk = np.frombuffer(data, dtype=np.uint8, count=min(chunk_bytes, len(data) - scanned), offset=scanned)
        carry, chunk_peak = _scan_chunk(chunk, carry)
        peak, scanned = max(peak, chunk_peak), scanned + len(chunk)
    return peak, scanned


def _bracket_count(data: bytes) -> int:
    """Opening brackets anywhere (strings included): an upper bound of the nesting depth."""
    return data.count(b"[") + data.count(b"{")


def _check_parsed_depth(document: Any, max_depth: int) -> None:
    """The nesting depth of a parsed document, one level at a time (no recursion); raises past ``max_depth``."""
    depth, level = 0, [document]
    while True:
        found = set(map(type, level))
        if not found & {list, dict}:
            return
        depth += 1
        if depth > max_depth:
            raise SampleError("json_too_deep", f"expected JSON nested at most {max_depth} deep, found {depth} or more")
        containers = level if found <= {list, dict} else [v for v in level if type(v) in (list, dict)]
        level = list(chain.from_iterable(c.values() if type(c) is dict else c for c in containers))


class _ScanCarry(NamedTuple):
    """The depth scan's state between chunks."""

    backslashes: int  # parity of the run of backslashes the previous chunk ended with
    quotes: int  # parity of unescaped quotes so far: 1 inside a string
    depth: int  # nesting depth so far


def _scan_chunk(chunk: np.ndarray, carry: _ScanCarry) -> tuple[_ScanCarry, int]:
    """The state after ``chunk`` and the deepest nesting reached in it, with NumPy instead of a byte loop."""
    positions = np.arange(len(chunk), dtype=np.int32)
    last_other = np.where(chunk == ord("\\"), np.int32(-1 - carry.backslashes), positions)  # carried ones sit before 0
    backslash_run = positions - np.maximum.accumulate(last_other)  # (n,) backslashes ending at each byte
    escaped = np.concatenate(([carry.backslashes == 1], (backslash_run[:-1] & 1).astype(bool)))
    quotes = np.cumsum((chunk == ord('"')) & ~escaped, dtype=np.int32) + carry.quotes  # (n,)
    depth = np.cumsum(_BRACKET_STEP[chunk] * ((quotes & 1) == 0), dtype=np.int32) + carry.depth  # (n,)
    return _ScanCarry(int(backslash_run[-1] & 1), int(quotes[-1] & 1), int(depth[-1])), int(depth.max())


# --- the strict parser -----------------------------------------------------------------------------------------


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        cut_short = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        reason = "truncated" if cut_short else "malformed_json"
        found = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise SampleError(reason, f"expected valid JSON, found: {found}") from exc
    except (RecursionError, MemoryError) as exc:  # not expected after the depth check; kept as a last line
        raise SampleError("malformed_json", f"expected JSON within limits, found {type(exc).__name__}") from exc


def _parse_int(literal: str) -> int:
    """int() of a JSON integer literal, refusing one beyond float64 before int() spends time on it.

    Only that: a long integer within float64 is a number like any other, held to ``max_abs_value``
    where it is used (as orjson's answer, a float, is). A cap tied to 64 bits instead would refuse
    here what the fast path accepts whenever ``max_abs_value`` is 1e20 or more.
    """
    digits = len(literal.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        found = f"an integer of {digits} digits"
        raise SampleError("value_out_of_range", f"expected numbers within float64 (1.8e308), found {found}")
    return int(literal)


def _reject_constant(name: str) -> float:
    raise SampleError("non_finite", f"expected finite numbers, found the JSON extension literal {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        twice = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
        raise SampleError("duplicate_key", f"expected each key once per object, found {listing(twice)} more than once")
    return document
