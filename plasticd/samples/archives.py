"""``.pt``/``.pth`` and ``.npz`` samples: zip archives whose declared sizes are checked before they are read.

No code from the file ever runs: ``torch.load(weights_only=True)`` refuses every pickled global
but tensors and plain containers, and ``.npy`` members are loaded with ``allow_pickle=False``
after their headers (dtype, shape) have been read and checked on their own.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from plasticd.errors import SampleError
from plasticd.samples.limits import Limits
from plasticd.samples.messages import listing, short

NPZ_MEMBERS = {"x.npy": "x", "y.npy": "y", "label.npy": "label", "id.npy": "id"}  # member name -> field


def decode_torch(data: bytes, limits: Limits) -> Any:
    """The object a ``torch.save`` archive holds, loaded by the weights-only unpickler."""
    with _open_zip(data, "a torch.save zip archive (raw or legacy pickles are not accepted)") as archive:
        _check_zip_budget(archive.infolist(), limits)  # torch reads deflated records too: bound them first
    with _foreign_parser("a readable torch.save archive"):
        try:
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:  # the weights-only unpickler refused something; nothing ran
            found = short(exc.__context__ or exc)  # the unpickler's own words, e.g. "unsupported GLOBAL posix.system"
            raise SampleError("unsafe_pickle", f"expected tensors, numbers, lists and dicts only, found: {found}") from exc


def decode_npz(data: bytes, limits: Limits) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive by field name (``x``, ``y``, ``label``, ``id``: a string array)."""
    with _open_zip(data, "an .npz (zip) archive") as archive:
        members = archive.infolist()
        _check_npz_names([info.filename for info in members])
        _check_zip_budget(members, limits)
        return {NPZ_MEMBERS[info.filename]: _load_npy(archive, info, limits) for info in members}


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
    except Exception as exc:  # the trust boundary: any failure to parse means an unusable file
        raise SampleError(reason, f"expected {expected}, found: {short(exc)}") from exc


# --- zip archives (.npz and torch.save) ------------------------------------------------------------------------


def _open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    # A zip's directory sits at its end: one that starts like a zip but has none was most likely cut short.
    with _foreign_parser(what, reason="truncated" if data.startswith(b"PK\x03\x04") else "bad_archive"):
        return zipfile.ZipFile(io.BytesIO(data))


def _check_zip_budget(members: list[zipfile.ZipInfo], limits: Limits) -> None:
    declared = sum(info.file_size for info in members)  # zipfile never inflates a member past its declared size
    if declared > limits.max_uncompressed_bytes:
        raise SampleError(
            "decompression_bomb",
            f"expected at most {limits.max_uncompressed_bytes} bytes uncompressed, found members declaring {declared}",
        )


# --- .npz members ----------------------------------------------------------------------------------------------


def _check_npz_names(names: list[str]) -> None:
    unknown = sorted(set(names) - set(NPZ_MEMBERS))
    if unknown:
        raise SampleError("unexpected_key", f"expected arrays {', '.join(NPZ_MEMBERS)}, found {listing(unknown)}")
    if len(set(names)) != len(names):
        raise SampleError("duplicate_key", f"expected each array once, found {listing(names)}")


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


def _check_npy_header(info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, header_end: int, limits: Limits) -> None:
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
