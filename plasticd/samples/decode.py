"""Decode one untrusted sample file (.json, .pt/.pth, .npz) into validated arrays.

Trust model: a sample file comes from anyone who can write to the watched
folder, so its bytes are hostile until proven otherwise. Decoding therefore

* never runs code from the file: JSON is plain data, ``.pt`` goes through
  ``torch.load(weights_only=True)`` only, ``.npz`` through
  ``numpy.load(allow_pickle=False)`` after its object-dtype headers are refused;
* never follows a symlink, reads a FIFO or device, or reads a hard link (which
  could alias a checkpoint); the file is opened once and checked on its descriptor;
* checks every size that is declared (file size, zip member sizes, ``.npy``
  shapes, tensor extents, JSON nesting and integer length) *before* the work it implies;
* turns every failure into a :class:`SampleError` with a short ``reason`` code,
  so the caller quarantines the file and goes on. The caller adds the file name.

Every format ends in one validator: ``x`` becomes ``(B, D)`` float32, finite and
bounded; ``y`` becomes ``(B,)`` int64 in ``[0, num_classes)``, or -1 for unlabelled.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import stat
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import orjson
import torch
from numpy.lib import format as npy_format

from plasticd.errors import SampleError

SUPPORTED_SUFFIXES: tuple[str, ...] = (".json", ".pt", ".pth", ".npz")  # matched case-insensitively

_LABEL_KEYS = ("y", "label")
_NPZ_MEMBERS = {"x.npy": "x", "y.npy": "y", "label.npy": "label"}
_MAX_INT_DIGITS = 20  # a longer JSON integer literal is out of range whatever the limits
_SCAN_CHUNK = 1 << 20  # bytes per step of the JSON depth scan: bounds its memory, lets int32 count within a step
_BRACKET_STEP = np.zeros(256, dtype=np.int8)  # per byte value: +1 opens a level, -1 closes one
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
_READ_CHUNK = 1 << 20  # bytes per read() call


@dataclass(frozen=True)
class Limits:
    """Caps for one sample file; the size caps are checked before the work they bound."""

    max_file_bytes: int = 16 * 1024 * 1024  # on-disk size, checked (fstat) before reading
    max_samples: int = 50_000  # samples per file
    max_abs_value: float = 1e6  # |x| above this is rejected (keeps the running input scaler finite)
    max_json_depth: int = 64  # nesting depth of JSON arrays and objects
    max_uncompressed_bytes: int = 256 * 1024 * 1024  # sum of zip member sizes; declared size of one array


@dataclass(frozen=True)
class SampleBatch:
    """Validated samples, ready for the learner."""

    x: np.ndarray  # (B, D) float32, C-contiguous, all finite, |x| <= max_abs_value (checked before rounding)
    y: np.ndarray  # (B,) int64, label in [0, num_classes) or -1 for "unlabelled"


def decode_file(path: Path, input_dim: int, num_classes: int, limits: Limits = Limits()) -> SampleBatch:
    """Read and decode the regular file at ``path``; raise SampleError if it is unusable in any way."""
    suffix = _supported_suffix(path.suffix)
    data = _read_regular_file(path, limits.max_file_bytes)
    return decode_bytes(data, suffix, input_dim, num_classes, limits)


def decode_bytes(data: bytes, suffix: str, input_dim: int, num_classes: int, limits: Limits = Limits()) -> SampleBatch:
    """Decode the content of a sample file whose name ends in ``suffix`` (e.g. ``".json"``)."""
    decoder = _DECODERS[_supported_suffix(suffix)]
    _check_file_size(len(data), limits.max_file_bytes)
    if not data:
        raise SampleError("empty", "expected a sample file, found 0 bytes")
    x_value, y_value = _pick_fields(decoder(data, limits))
    x = _validated_features(_features_from_value(x_value, limits), input_dim, limits)
    y = _validated_labels(_labels_from_value(y_value, limits), len(x), num_classes)
    return SampleBatch(x=x, y=y)


# --- the file itself -------------------------------------------------------------------------------------------


def _supported_suffix(suffix: str) -> str:
    if suffix.lower() not in SUPPORTED_SUFFIXES:
        raise SampleError("unsupported_extension", f"expected one of {', '.join(SUPPORTED_SUFFIXES)}, found {suffix!r}")
    return suffix.lower()


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing symlinks, FIFOs, devices, directories and hard links without blocking."""
    try:
        _check_regular(os.lstat(path))  # so a device node is never even opened
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise _open_error(exc) from exc
    try:
        info = os.fstat(fd)  # the descriptor is what gets read: this closes the race with a swap after lstat
        _check_regular(info)
        _check_file_size(info.st_size, max_bytes)
        return _read_exactly(fd, info.st_size)
    finally:
        os.close(fd)


def _open_error(exc: OSError) -> SampleError:
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink swapped in after lstat
        return SampleError("not_a_regular_file", "expected a regular file, found a symbolic link")
    return SampleError("unreadable", f"expected a readable file, found: {exc.strerror or exc}")


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SampleError("not_a_regular_file", f"expected a regular file, found {_file_kind(info.st_mode)}")
    if info.st_nlink > 1:
        raise SampleError("hardlink", f"expected a file with one name, found {info.st_nlink} hard links to it")


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO",
             stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}  # fmt: skip
    return next((name for test, name in kinds.items() if test(mode)), f"file mode {mode:o}")


def _check_file_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise SampleError("too_large", f"expected at most {max_bytes} bytes, found {size}")


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, _READ_CHUNK))
        if not chunk:
            raise SampleError("truncated", f"expected {size} bytes (its size when opened), found {size - remaining}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --- .json -----------------------------------------------------------------------------------------------------


def _decode_json(data: bytes, limits: Limits) -> Any:
    document = _fast_json(data)  # orjson stops at its own depth limit (1024) without recursing further
    if document is None:  # the strict parser decides, and says precisely why a file is bad
        _check_json_depth(data, limits.max_json_depth)  # before a parser that recurses
        document = _parse_json(_utf8_text(data))
    elif _bracket_count(data) > limits.max_json_depth:  # a batch file may nest too deep: count on the parsed levels
        _check_parsed_depth(document, limits.max_json_depth)
    if isinstance(document, dict) and "id" in document:  # a producer's tag, allowed and ignored
        _check_id(document.pop("id"))
    return document


_INT64_LIMIT = 2.0**63


def _fast_json(data: bytes) -> Any | None:
    """orjson (~10x faster than json) where its answer is provably the strict parser's, else None.

    orjson is strict JSON already (no NaN/Infinity, valid UTF-8 only) but keeps the last of
    duplicate keys silently. A sample document has one object (the top level), so a key
    parsed once must also be *written* once: each key's quoted text occurs exactly once in
    the bytes, and no backslash escape can spell a key another way. Anything else, and
    every parse error, goes to the strict path. So do labels beyond 64 bits, which orjson
    turns into floats where the strict parser reports out-of-range integers (in ``x`` both
    paths end in the same magnitude check).
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
    for key in _LABEL_KEYS:
        labels = document.get(key)
        if any(isinstance(v, float) and abs(v) >= _INT64_LIMIT for v in (labels if isinstance(labels, list) else [labels])):
            return None
    return document


def _utf8_text(data: bytes) -> str:
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        found = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise SampleError("invalid_utf8", f"expected UTF-8 text, found {found}") from exc


def _check_json_depth(data: bytes, max_depth: int) -> None:
    """Reject nesting deeper than ``max_depth`` in one O(n) pass, so json.loads never recurses deeply.

    Brackets inside string literals do not count. The scan treats a quote after an odd run of backslashes
    as escaped everywhere, in strings or not; json.loads fails at the first backslash outside a string, so
    the count is exact up to wherever json.loads would get.
    """
    if _bracket_count(data) <= max_depth:
        return  # cannot nest deeper: most single-sample files stop here
    carry = _ScanCarry(backslashes=0, quotes=0, depth=0)
    for start in range(0, len(data), _SCAN_CHUNK):
        chunk = np.frombuffer(data, dtype=np.uint8, count=min(_SCAN_CHUNK, len(data) - start), offset=start)
        carry, peak = _scan_chunk(chunk, carry)
        if peak > max_depth:
            raise SampleError("json_too_deep", f"expected JSON nested at most {max_depth} deep, found {peak} or more")


def _bracket_count(data: bytes) -> int:
    """Opening brackets anywhere (strings included): an upper bound of the nesting depth."""
    return data.count(b"[") + data.count(b"{")


def _check_parsed_depth(document: Any, max_depth: int) -> None:
    """The nesting depth of a parsed document, one level at a time (no recursion); raises past ``max_depth``."""
    depth, level = 0, [document]
    while True:
        kinds = set(map(type, level))
        if not kinds & {list, dict}:
            return
        depth += 1
        if depth > max_depth:
            raise SampleError("json_too_deep", f"expected JSON nested at most {max_depth} deep, found {depth} or more")
        containers = level if kinds <= {list, dict} else [v for v in level if type(v) in (list, dict)]
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
    """int() of a JSON integer literal, refusing long ones before int() spends time on them."""
    digits = len(literal.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise SampleError("value_out_of_range", f"expected at most {_MAX_INT_DIGITS} digits per integer, found {digits}")
    return int(literal)


def _reject_constant(name: str) -> float:
    raise SampleError("non_finite", f"expected finite numbers, found the JSON extension literal {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        twice = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
        raise SampleError("duplicate_key", f"expected each key once per object, found {_listing(twice)} more than once")
    return document


def _check_id(value: Any) -> None:
    if not isinstance(value, str):
        raise SampleError("wrong_dtype", f'expected "id" to be a string, found {_type_name(value)}')


# --- .pt / .pth ------------------------------------------------------------------------------------------------


def _decode_torch(data: bytes, limits: Limits) -> Any:
    with _open_zip(data, "a torch.save zip archive (raw or legacy pickles are not accepted)") as archive:
        _check_zip_budget(archive.infolist(), limits)  # torch reads deflated records too: bound them first
    with _foreign_parser("a readable torch.save archive"):
        try:
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:  # the weights-only unpickler refused something; nothing ran
            found = _short(exc.__context__ or exc)  # the unpickler's own words, e.g. "unsupported GLOBAL posix.system"
            raise SampleError("unsafe_pickle", f"expected tensors, numbers, lists and dicts only, found: {found}") from exc


def _tensor_to_array(tensor: torch.Tensor, limits: Limits) -> np.ndarray:
    """A NumPy view of a dense CPU tensor; its nominal size is bounded first (strides may repeat one element)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise SampleError("wrong_dtype", f"expected a dense tensor, found layout {tensor.layout}, dtype {tensor.dtype}")
    nominal = tensor.numel() * tensor.element_size()
    if nominal > limits.max_uncompressed_bytes:
        budget = limits.max_uncompressed_bytes
        raise SampleError("too_large", f"expected tensors of {budget} bytes at most, found one of {nominal}")
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        raise SampleError("wrong_dtype", f"expected a numeric tensor, found dtype {tensor.dtype}") from exc


# --- .npz ------------------------------------------------------------------------------------------------------


def _decode_npz(data: bytes, limits: Limits) -> dict[str, np.ndarray]:
    with _open_zip(data, "an .npz (zip) archive") as archive:
        members = archive.infolist()
        _check_npz_names([info.filename for info in members])
        _check_zip_budget(members, limits)
        return {_NPZ_MEMBERS[info.filename]: _load_npy(archive, info, limits) for info in members}


def _check_npz_names(names: list[str]) -> None:
    unknown = sorted(set(names) - set(_NPZ_MEMBERS))
    if unknown:
        raise SampleError("unexpected_key", f"expected arrays {', '.join(_NPZ_MEMBERS)}, found {_listing(unknown)}")
    if len(set(names)) != len(names):
        raise SampleError("duplicate_key", f"expected each array once, found {_listing(names)}")


def _load_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> np.ndarray:
    with _foreign_parser(f"a valid {info.filename}"), archive.open(info) as stream:
        shape, dtype = _read_npy_header(stream)
        _check_npy_header(info, shape, dtype, stream.tell(), limits)
        stream.seek(0)
        return np.load(stream, allow_pickle=False)


def _read_npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = npy_format.read_magic(stream)
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        raise SampleError("bad_archive", f"expected .npy format version 1.0 or 2.0, found {version[0]}.{version[1]}")
    shape, _fortran_order, dtype = readers[version](stream)
    return shape, dtype


def _check_npy_header(
    info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, header_end: int, limits: Limits
) -> None:
    """Refuse object arrays and sizes the header declares, before any array data is read."""
    name, budget = info.filename, limits.max_uncompressed_bytes
    if dtype.hasobject:
        raise SampleError("object_array", f"expected a numeric array in {name}, found dtype {dtype} (needs pickle)")
    if any(n < 0 for n in shape):
        raise SampleError("bad_archive", f"expected non-negative dimensions in {name}, found shape {shape}")
    declared = math.prod(shape) * dtype.itemsize
    if declared > budget:
        raise SampleError("too_large", f"expected {budget} bytes at most in {name}, found shape {shape} of {dtype}")
    held = info.file_size - header_end
    if declared > held:
        raise SampleError("truncated", f"expected {declared} bytes of data in {name}, found {held}")


# --- zip archives (.npz and torch.save) ------------------------------------------------------------------------


def _open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    # A zip's directory sits at its end: one that starts like a zip but has none was most likely cut short.
    with _foreign_parser(what, reason="truncated" if data.startswith(b"PK\x03\x04") else "bad_archive"):
        return zipfile.ZipFile(io.BytesIO(data))


@contextmanager
def _foreign_parser(expected: str, reason: str = "bad_archive") -> Iterator[None]:
    """Turn whatever a third-party parser raises on hostile bytes into a SampleError; ours pass through.

    Their failures are not a documented set: besides ValueError, RuntimeError, EOFError, zipfile.BadZipFile,
    zlib.error and struct.error, fuzzing found AssertionError from torch.load and tokenize.TokenError from
    NumPy's header parser. Keep only parser calls inside, so a bug of ours is not relabelled as a bad file.
    """
    try:
        yield
    except SampleError:
        raise
    except Exception as exc:  # noqa: BLE001 - the trust boundary: any failure to parse means an unusable file
        raise SampleError(reason, f"expected {expected}, found: {_short(exc)}") from exc


def _check_zip_budget(members: list[zipfile.ZipInfo], limits: Limits) -> None:
    declared = sum(info.file_size for info in members)  # zipfile never inflates a member past its declared size
    if declared > limits.max_uncompressed_bytes:
        raise SampleError(
            "decompression_bomb",
            f"expected at most {limits.max_uncompressed_bytes} bytes uncompressed, found members declaring {declared}",
        )


# --- from decoded values to arrays ----------------------------------------------------------------------------


def _pick_fields(document: Any) -> tuple[Any, Any]:
    """``(x, y)`` from the decoded mapping; ``y`` may be spelled ``label``, and is None when absent."""
    if not isinstance(document, dict):
        raise SampleError("not_a_mapping", f'expected a mapping with key "x", found {_type_name(document)}')
    unknown = [key for key in document if key not in ("x", *_LABEL_KEYS)]
    if unknown:
        raise SampleError("unexpected_key", f"expected keys x, y or label, found {_listing(unknown)}")
    if "x" not in document:
        raise SampleError("missing_key", f'expected key "x", found only {_listing(list(document)) or "no keys"}')
    if all(key in document for key in _LABEL_KEYS):
        raise SampleError("ambiguous_label", 'expected the label under "y" or "label", found both')
    return document["x"], next((document[key] for key in _LABEL_KEYS if key in document), None)


def _features_from_value(value: Any, limits: Limits) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return _tensor_to_array(value, limits)
    if isinstance(value, (list, tuple)):
        return _array_from_lists(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise SampleError("wrong_rank", "expected a list of numbers or a list of lists, found a single number")
    raise SampleError("wrong_dtype", f"expected numbers in x, found {_type_name(value)}")


def _array_from_lists(rows: list | tuple) -> np.ndarray:
    """float64 from a list of numbers or of equally long lists of numbers; types are checked in C, not per value."""
    kinds = set(map(type, rows))  # a flat list's value types: checked once, below
    if kinds & {list, tuple}:
        if not kinds <= {list, tuple}:
            raise SampleError("wrong_rank", "expected a list of numbers or a list of lists, found a mix of both")
        lengths = set(map(len, rows))
        if len(lengths) > 1:
            found = f"lengths {min(lengths)} to {max(lengths)}"
            raise SampleError("wrong_length", f"expected samples of equal length, found {found}")
        kinds = set(map(type, chain.from_iterable(rows)))
    _check_number_types(kinds)
    try:
        return np.array(rows, dtype=np.float64)
    except OverflowError as exc:  # an integer beyond float64, from a pickle
        raise SampleError("value_out_of_range", "expected numbers within float64, found a larger integer") from exc


def _check_number_types(kinds: set[type]) -> None:
    foreign = kinds - {int, float}
    if not foreign:
        return
    if foreign & {list, tuple}:
        raise SampleError("wrong_rank", "expected at most two levels of lists in x, found deeper nesting")
    raise SampleError("wrong_dtype", f"expected numbers in x, found {_kinds(foreign)}")


def _labels_from_value(value: Any, limits: Limits) -> np.ndarray | None:
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return _tensor_to_array(value, limits)
    if isinstance(value, (list, tuple)):
        return _labels_from_list(value)
    _check_label_types({type(value)})
    return _int64_labels(np.array(value, dtype=object))


def _labels_from_list(values: list | tuple) -> np.ndarray:
    """Integer labels with None (JSON null) meaning unlabelled (-1)."""
    _check_label_types(set(map(type, values)) - {type(None)})
    labels = np.array(values, dtype=object)  # 1-D: the types above rule out nesting
    labels[np.equal(labels, None)] = -1
    return _int64_labels(labels)


def _check_label_types(kinds: set[type]) -> None:
    foreign = kinds - {int}
    if foreign:
        reason = "label_not_integer" if foreign & {bool, float} else "wrong_dtype"
        raise SampleError(reason, f"expected integer labels or null, found {_kinds(foreign)}")


def _int64_labels(labels: np.ndarray) -> np.ndarray:
    try:
        return labels.astype(np.int64)
    except OverflowError as exc:
        raise SampleError("label_out_of_range", "expected labels within int64, found a larger integer") from exc


# --- the one validator every format ends in --------------------------------------------------------------------


def _validated_features(x: np.ndarray, input_dim: int, limits: Limits) -> np.ndarray:
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
    peak = max(abs(float(batch.min())), abs(float(batch.max())))  # min/max, not abs(): abs(int64 min) overflows
    if peak > max_abs:
        raise SampleError("value_out_of_range", f"expected |x| <= {max_abs:g}, found {peak:g}")


def _validated_labels(y: np.ndarray | None, count: int, num_classes: int) -> np.ndarray:
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


# --- messages --------------------------------------------------------------------------------------------------


def _short(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line, bounded: parser messages may quote the hostile input."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return "null" if value is None else _kind_name(type(value))


def _kind_name(kind: type) -> str:
    names = {bool: "a boolean", str: "a string", dict: "a mapping", list: "a list", tuple: "a tuple",
             type(None): "null", float: "a non-integer number"}  # fmt: skip
    return names.get(kind, kind.__name__)


def _kinds(kinds: set[type]) -> str:
    return ", ".join(sorted(map(_kind_name, kinds)))


def _listing(items: Iterable[Any], limit: int = 5) -> str:
    shown = [repr(item) if isinstance(item, str) else str(item) for item in items]
    return ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


_DECODERS: dict[str, Callable[[bytes, Limits], Any]] = {
    ".json": _decode_json,
    ".pt": _decode_torch,
    ".pth": _decode_torch,
    ".npz": _decode_npz,
}
