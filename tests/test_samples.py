"""plasticd.samples: every sample file is decoded into valid arrays or refused with a specific reason.

Hostile files are crafted for real in ``tmp_path`` (symlinks, hard links, FIFOs, pickles that would run
``os.system``, zip bombs, lying .npy headers); property tests check round trips and fuzz every decoder.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import threading
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plasticd.errors import SampleError
from plasticd.samples import SUPPORTED_SUFFIXES, Limits, SampleBatch, decode_bytes, decode_file
from plasticd.samples.json_format import scan_depth

DIM = 4  # input_dim of most tests
CLASSES = 3  # num_classes of most tests
LIMITS = Limits()
REASONS = {
    "not_a_regular_file", "hardlink", "too_large", "unreadable", "unsupported_extension", "empty", "truncated",
    "invalid_utf8", "malformed_json", "json_too_deep", "non_finite", "duplicate_key", "value_out_of_range",
    "wrong_dtype", "unexpected_key", "missing_key", "not_a_mapping", "ambiguous_label", "unsafe_pickle",
    "bad_archive", "decompression_bomb", "object_array", "wrong_rank", "wrong_length", "too_many_samples",
    "label_not_integer", "label_out_of_range", "label_count_mismatch",
}  # fmt: skip
ROW = [0.5, -1.0, 2.0, 3.0]  # one valid sample of DIM values


# --- encoders and helpers ------------------------------------------------------------------------------------------


def as_json(document: Any) -> bytes:
    return json.dumps(document).encode()


def as_pt(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def as_npz(*, compressed: bool = False, **named: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **named)
    return buffer.getvalue()


def as_npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def member(name: str, array: Any, allow_pickle: bool = False) -> tuple[str, bytes]:
    """One .npz member: ``name``.npy holding ``array``."""
    return f"{name}.npy", as_npy(np.asarray(array), allow_pickle)


def raw_npy(descr: str, shape: tuple[int, ...], payload: bytes) -> bytes:
    """A version 1.0 .npy file with a hand-written header, which may lie about the payload."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape})
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload


def zip_of(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name" is what one test wants
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def rezipped(archive_bytes: bytes, compression: int) -> bytes:
    """The same archive with every member re-compressed (torch.save stores its records uncompressed)."""
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        return zip_of([(info.filename, archive.read(info)) for info in archive.infolist()], compression)


class RunsShell:
    """Pickles to a call of os.system(command): loading it with plain pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (self.command,))


def decode(data: bytes, suffix: str, input_dim: int = DIM, limits: Limits = LIMITS) -> SampleBatch:
    return decode_bytes(data, suffix, input_dim, CLASSES, limits)


def reason_of(data: bytes, suffix: str, input_dim: int = DIM, limits: Limits = LIMITS) -> str:
    with pytest.raises(SampleError) as caught:
        decode(data, suffix, input_dim, limits)
    assert caught.value.reason in REASONS
    return caught.value.reason


def file_reason(path: Path, limits: Limits = LIMITS) -> str:
    with pytest.raises(SampleError) as caught:
        decode_file(path, DIM, CLASSES, limits)
    assert caught.value.reason in REASONS
    return caught.value.reason


def assert_valid(batch: SampleBatch, limits: Limits = LIMITS) -> None:
    """The contract of SampleBatch."""
    x, y = batch.x, batch.y
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.ndim == 2 and x.shape[1] == DIM
    assert 1 <= len(x) <= limits.max_samples
    assert np.isfinite(x).all() and np.abs(x).max() <= limits.max_abs_value
    assert y.dtype == np.int64 and y.shape == (len(x),)
    assert ((y == -1) | ((y >= 0) & (y < CLASSES))).all()


def run_with_timeout(action: Callable[[], Any], seconds: float) -> Any:
    """The outcome of ``action`` (value or exception); fails the test if it has not finished in time."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return outcome[0]


# --- the file on disk ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.json", as_json({"x": ROW, "y": 1})),
        ("a.pt", as_pt({"x": torch.tensor(ROW), "y": 1})),
        ("a.pth", as_pt({"x": torch.tensor(ROW), "y": 1})),
        ("a.npz", as_npz(x=np.array(ROW), y=np.array(1))),
        ("X.JSON", as_json({"x": ROW, "y": 1})),
        ("b.Npz", as_npz(x=np.array(ROW), y=np.array(1))),
    ],
    ids=["json", "pt", "pth", "npz", "uppercase-JSON", "mixed-case-Npz"],
)
def test_a_regular_file_of_each_format_is_decoded(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    batch = decode_file(path, DIM, CLASSES)
    np.testing.assert_array_equal(batch.x, np.array([ROW], dtype=np.float32))
    np.testing.assert_array_equal(batch.y, [1])


@pytest.mark.parametrize("name", ["a.txt", "a", "a.json.tmp", "a.pkl", ".json"])
def test_a_file_with_an_unknown_extension_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(as_json({"x": ROW}))
    assert file_reason(path) == "unsupported_extension"


@pytest.mark.parametrize("target", ["/etc/passwd", "valid.json"], ids=["to-etc-passwd", "to-a-valid-sample"])
def test_a_symlink_is_refused_without_being_followed(tmp_path: Path, target: str) -> None:
    (tmp_path / "valid.json").write_bytes(as_json({"x": ROW}))
    link = tmp_path / "x.json"
    link.symlink_to(target if target.startswith("/") else tmp_path / target)
    assert file_reason(link) == "not_a_regular_file"


def test_a_hard_linked_file_is_refused_under_both_names(tmp_path: Path) -> None:
    original = tmp_path / "a.json"
    original.write_bytes(as_json({"x": ROW}))
    os.link(original, tmp_path / "b.json")
    assert file_reason(original) == "hardlink"
    assert file_reason(tmp_path / "b.json") == "hardlink"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.json"
    os.mkfifo(fifo)  # no writer: a blocking open or read would hang forever
    outcome = run_with_timeout(lambda: decode_file(fifo, DIM, CLASSES), seconds=5)
    assert isinstance(outcome, SampleError) and outcome.reason == "not_a_regular_file"


def test_a_symlink_swapped_in_after_the_check_is_refused_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "valid.json").write_bytes(as_json({"x": ROW}))
    link = tmp_path / "x.json"
    link.symlink_to("/etc/passwd")
    regular = os.stat(tmp_path / "valid.json")
    monkeypatch.setattr(os, "lstat", lambda path: regular)  # as if the swap happened right after lstat
    assert file_reason(link) == "not_a_regular_file"


def test_a_fifo_swapped_in_after_the_check_is_refused_without_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "valid.json").write_bytes(as_json({"x": ROW}))
    fifo = tmp_path / "x.json"
    os.mkfifo(fifo)
    regular = os.stat(tmp_path / "valid.json")
    monkeypatch.setattr(os, "lstat", lambda path: regular)
    outcome = run_with_timeout(lambda: decode_file(fifo, DIM, CLASSES), seconds=5)
    assert isinstance(outcome, SampleError) and outcome.reason == "not_a_regular_file"


def test_a_directory_named_like_a_sample_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").mkdir()
    assert file_reason(tmp_path / "x.json") == "not_a_regular_file"


def test_an_oversize_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sparse = tmp_path / "huge.npz"
    with open(sparse, "wb") as handle:
        handle.truncate(1 << 40)  # a 1 TiB sparse file: reading it would never finish
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    assert file_reason(sparse) == "too_large"
    assert reads == [], "the file was read before its size was checked"


def test_the_size_limit_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(as_json({"x": ROW}))
    size = path.stat().st_size
    assert_valid(decode_file(path, DIM, CLASSES, Limits(max_file_bytes=size)))
    assert file_reason(path, Limits(max_file_bytes=size - 1)) == "too_large"


def test_a_missing_file_is_unreadable(tmp_path: Path) -> None:
    assert file_reason(tmp_path / "gone.json") == "unreadable"


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_an_empty_file_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    path.write_bytes(b"")
    assert file_reason(path) == "empty"


def test_decode_bytes_applies_the_file_size_limit_too() -> None:
    assert reason_of(as_json({"x": ROW}), ".json", limits=Limits(max_file_bytes=10)) == "too_large"


# --- .json ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "labels"),
    [
        ({"x": ROW, "y": 2}, [2]),
        ({"x": ROW}, [-1]),
        ({"x": ROW, "y": None}, [-1]),
        ({"x": ROW, "label": 0}, [0]),
        ({"x": [ROW, ROW, ROW], "y": [2, None, 1]}, [2, -1, 1]),
        ({"x": [ROW, ROW], "label": [0, 1]}, [0, 1]),
        ({"x": [ROW, ROW]}, [-1, -1]),
        ({"x": [ROW], "y": 1}, [1]),
        ({"x": [1, 2, 3, 4], "y": [1], "id": "cam-7/000123"}, [1]),
    ],
    ids=[
        "single",
        "single-unlabelled",
        "single-null",
        "label-key",
        "batch-with-null",
        "batch-label-key",
        "batch-unlabelled",
        "batch-of-one-scalar-label",
        "integers-and-id",
    ],
)
def test_json_sample_is_decoded(document: dict, labels: list[int]) -> None:
    batch = decode(as_json(document), ".json")
    assert_valid(batch)
    np.testing.assert_array_equal(batch.x, np.array(document["x"], dtype=np.float32).reshape(-1, DIM))
    np.testing.assert_array_equal(batch.y, labels)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'{"x": [1, 2, 3, NaN]}', "non_finite", id="NaN-literal"),
        pytest.param(b'{"x": [1, 2, 3, Infinity]}', "non_finite", id="Infinity-literal"),
        pytest.param(b'{"x": [1, 2, 3, -Infinity]}', "non_finite", id="minus-Infinity-literal"),
        pytest.param(b'{"x": [1, 2, 3, 1e999]}', "non_finite", id="float-overflowing-to-inf"),
        pytest.param(b'{"x": [1, 2, 3, 4], "x": [1, 2, 3, 4]}', "duplicate_key", id="duplicate-top-level-key"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 1, "y": 2}', "duplicate_key", id="duplicate-label-key"),
        pytest.param(b'{"x": [1, 2, 3, ' + b"7" * 10_000 + b"]}", "value_out_of_range", id="10000-digit-integer"),
        pytest.param(b'{"x": [1, 2, 3, 123456789012345678901]}', "value_out_of_range", id="21-digit-integer"),
        pytest.param(b'{"x": [1, 2, 3, 4e15]}', "value_out_of_range", id="beyond-max-abs"),
        pytest.param(b'{"x": [1, 2, 3, -4e15]}', "value_out_of_range", id="beyond-minus-max-abs"),
        pytest.param(b'{"x": [1, 2, 3, 4], "id": "caf\xe9"}', "invalid_utf8", id="latin1-byte"),
        pytest.param(b'\xff\xfe{"x": [1, 2, 3, 4]}', "invalid_utf8", id="utf16-bom"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": ', "truncated", id="cut-after-key"),
        pytest.param(b'{"x": [1, 2, 3, 4], "id": "ab', "truncated", id="cut-inside-string"),
        pytest.param(b'{"x": [1, 2 3, 4]}', "malformed_json", id="missing-comma"),
        pytest.param(b"x = [1, 2, 3, 4]", "malformed_json", id="not-json"),
        pytest.param(b"[1, 2, 3, 4]", "not_a_mapping", id="top-level-list"),
        pytest.param(b'"x"', "not_a_mapping", id="top-level-string"),
        pytest.param(b'{"y": 1}', "missing_key", id="no-x"),
        pytest.param(b'{"x": [1, 2, 3, 4], "z": 1}', "unexpected_key", id="extra-key"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 1, "label": 1}', "ambiguous_label", id="y-and-label-agreeing"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 1, "label": 2}', "ambiguous_label", id="y-and-label-differing"),
        pytest.param(b'{"x": [1, 2, 3, 4], "id": 7}', "wrong_dtype", id="id-not-a-string"),
        pytest.param(b'{"x": [1, 2, 3, true]}', "wrong_dtype", id="boolean-among-numbers"),
        pytest.param(b'{"x": [true, false, true, true]}', "wrong_dtype", id="all-booleans"),
        pytest.param(b'{"x": [1, 2, 3, "4"]}', "wrong_dtype", id="numeric-string"),
        pytest.param(b'{"x": [1, 2, 3, null]}', "wrong_dtype", id="null-value"),
        pytest.param(b'{"x": [1, 2, 3, {}]}', "wrong_dtype", id="object-value"),
        pytest.param(b'{"x": "1 2 3 4"}', "wrong_dtype", id="x-a-string"),
        pytest.param(b'{"x": 4}', "wrong_rank", id="x-a-number"),
        pytest.param(b'{"x": [[1, 2, 3, 4], 5]}', "wrong_rank", id="rows-and-numbers-mixed"),
        pytest.param(b'{"x": [[[1, 2, 3, 4]]]}', "wrong_rank", id="three-levels"),
        pytest.param(b'{"x": [[1, 2, 3, 4], [1, 2, 3]]}', "wrong_length", id="ragged-rows"),
        pytest.param(b'{"x": [1, 2, 3]}', "wrong_length", id="short-sample"),
        pytest.param(b'{"x": [[1, 2, 3, 4, 5]]}', "wrong_length", id="long-row"),
        pytest.param(b'{"x": [[]]}', "wrong_length", id="one-empty-row"),
        pytest.param(b'{"x": []}', "empty", id="no-values"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 1.5}', "label_not_integer", id="float-label"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": true}', "label_not_integer", id="boolean-label"),
        pytest.param(b'{"x": [[1, 2, 3, 4]], "y": [0.5]}', "label_not_integer", id="float-in-label-list"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": "cat"}', "wrong_dtype", id="string-label"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 3}', "label_out_of_range", id="label-equal-to-num-classes"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": -2}', "label_out_of_range", id="label-minus-two"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 99999999999999999999}', "label_out_of_range", id="label-beyond-int64"),
        pytest.param(b'{"x": [[1, 2, 3, 4]], "y": [1, 2]}', "label_count_mismatch", id="more-labels-than-samples"),
        pytest.param(b'{"x": [[1, 2, 3, 4], [1, 2, 3, 4]], "y": 1}', "label_count_mismatch", id="scalar-label-2-rows"),
        pytest.param(b'{"x": [[1, 2, 3, 4]], "y": []}', "label_count_mismatch", id="no-labels-in-list"),
    ],
)
def test_bad_json_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    assert reason_of(data, ".json") == reason


def test_json_wrong_length_message_names_expected_and_found() -> None:
    with pytest.raises(SampleError, match="expected 784 values per sample, found 783"):
        decode(as_json({"x": [0.0] * 783}), ".json", input_dim=784)


def test_json_nested_100k_deep_is_refused_without_recursing() -> None:
    """A parser that recursed once per level would hit the (lowered) recursion limit: malformed_json, not this."""
    data = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        reason = reason_of(data, ".json")
    finally:
        sys.setrecursionlimit(limit)
    assert reason == "json_too_deep"


def test_json_depth_scan_reads_bounded_chunks_and_stops_at_the_first_too_deep_one() -> None:
    """Its memory is one chunk, and a file too deep near its start is refused without scanning the rest."""
    chunk = 1 << 16
    data = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b', "id": "' + b"[" * (10 * chunk) + b'"}'
    peak, scanned = scan_depth(data, stop_above=LIMITS.max_json_depth, chunk_bytes=chunk)
    assert peak > LIMITS.max_json_depth and scanned == chunk
    whole = scan_depth(data, stop_above=len(data), chunk_bytes=chunk)
    assert whole == (100_001, len(data))  # brackets in the string do not count; nothing is skipped


def test_json_unclosed_deep_nesting_is_refused_as_too_deep() -> None:
    assert reason_of(b'{"x": ' + b"[{" * 50_000, ".json") == "json_too_deep"


def test_json_depth_limit_counts_arrays_and_objects_exactly() -> None:
    data = as_json({"x": [ROW]})  # object > array > array: depth 3
    assert_valid(decode(data, ".json", limits=Limits(max_json_depth=3)))
    assert reason_of(data, ".json", limits=Limits(max_json_depth=2)) == "json_too_deep"


def test_json_brackets_inside_strings_do_not_count_as_nesting() -> None:
    data = as_json({"id": '[{\\"' * 5_000, "x": ROW})
    assert_valid(decode(data, ".json"))


def test_json_too_many_samples_is_refused() -> None:
    data = as_json({"x": [ROW] * 6})
    assert_valid(decode(data, ".json", limits=Limits(max_samples=6)))
    assert reason_of(data, ".json", limits=Limits(max_samples=5)) == "too_many_samples"


def test_json_error_message_says_what_was_found() -> None:
    with pytest.raises(SampleError, match=r"expected labels in \[0, 3\) or -1 for unlabelled, found 7 \(sample 1\)"):
        decode(as_json({"x": [ROW, ROW], "y": [0, 7]}), ".json")


# --- .pt / .pth ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "labels"),
    [
        ({"x": torch.tensor(ROW), "y": 2}, [2]),
        ({"x": torch.tensor(ROW)}, [-1]),
        ({"x": torch.tensor([ROW, ROW]), "y": torch.tensor([0, 2])}, [0, 2]),
        ({"x": torch.tensor([ROW, ROW]), "label": torch.tensor([1, -1])}, [1, -1]),
        ({"x": torch.tensor(ROW), "y": torch.tensor(1)}, [1]),
        ({"x": [ROW, ROW], "y": [2, None]}, [2, -1]),
        ({"x": (0.5, -1, 2, 3), "label": None}, [-1]),
        ({"x": torch.tensor(ROW, dtype=torch.float64), "y": torch.tensor([1], dtype=torch.uint8)}, [1]),
        ({"x": torch.tensor(ROW, dtype=torch.bfloat16), "y": 0}, [0]),
        ({"x": torch.tensor(ROW, dtype=torch.float16, requires_grad=True), "y": 0}, [0]),
        ({"x": torch.tensor([[1, 2, 3, 4]], dtype=torch.int16), "y": [1]}, [1]),
        ({"x": torch.tensor([ROW, ROW]).t().contiguous().t(), "y": [1, 1]}, [1, 1]),
    ],
    ids=[
        "single-int-label",
        "unlabelled",
        "batch",
        "label-key",
        "0-d-label-tensor",
        "nested-lists-with-None",
        "tuple-and-None-label",
        "float64-uint8",
        "bfloat16",
        "float16-requiring-grad",
        "int16",
        "non-contiguous",
    ],
)
def test_pt_sample_is_decoded(obj: dict, labels: list[int]) -> None:
    batch = decode(as_pt(obj), ".pt")
    assert_valid(batch)
    np.testing.assert_array_equal(batch.x, torch.as_tensor(obj["x"]).detach().float().numpy().reshape(-1, DIM))
    np.testing.assert_array_equal(batch.y, labels)


def test_pt_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = as_pt({"x": torch.tensor(ROW), "y": RunsShell(f"touch {marker}")})
    with pytest.raises(SampleError, match="system") as caught:
        decode(data, ".pt")
    assert caught.value.reason == "unsafe_pickle"
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["dict", "os-system"])
def test_pt_legacy_raw_pickle_is_refused_and_never_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    obj = {"x": ROW} if payload == "dict" else RunsShell(f"touch {marker}")
    assert reason_of(pickle.dumps(obj), ".pt") == "bad_archive"
    assert not marker.exists()


def test_pt_truncated_archive_is_refused() -> None:
    data = as_pt({"x": torch.tensor([ROW] * 8)})
    assert reason_of(data[: len(data) // 2], ".pt") == "truncated"


def test_pt_deflated_records_beyond_the_budget_are_a_bomb() -> None:
    data = rezipped(as_pt({"x": torch.zeros(50_000, DIM)}), zipfile.ZIP_DEFLATED)
    assert len(data) < 10_000  # 800 kB of zeros deflate to a few kB
    assert reason_of(data, ".pt", limits=Limits(max_uncompressed_bytes=500_000)) == "decompression_bomb"


def test_pt_deflated_archive_within_budget_is_decoded() -> None:
    data = rezipped(as_pt({"x": torch.tensor(ROW), "y": 1}), zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(decode(data, ".pt").y, [1])


def test_pt_tensor_repeating_one_element_to_a_huge_shape_is_refused() -> None:
    huge_view = torch.ones(1).expand(10**10).reshape(1, -1)  # stride 0: 4 bytes of storage, 40 GB nominal
    assert reason_of(as_pt({"x": huge_view}), ".pt") == "too_large"


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        pytest.param({"x": torch.tensor([0.5, float("nan"), 2.0, 3.0])}, "non_finite", id="NaN"),
        pytest.param({"x": torch.tensor([[0.5, 1.0, float("inf"), 3.0]])}, "non_finite", id="inf"),
        pytest.param({"x": torch.tensor(ROW[:3] + [-1e300], dtype=torch.float64)}, "value_out_of_range", id="huge-float64"),
        pytest.param({"x": [0.5, 1, 2, 10**400]}, "value_out_of_range", id="huge-python-int"),
        pytest.param({"x": torch.ones(DIM, dtype=torch.bool)}, "wrong_dtype", id="bool-tensor"),
        pytest.param({"x": torch.ones(DIM, dtype=torch.complex64)}, "wrong_dtype", id="complex-tensor"),
        pytest.param({"x": torch.ones(DIM).to_sparse()}, "wrong_dtype", id="sparse-tensor"),
        pytest.param({"x": "0.5 1 2 3"}, "wrong_dtype", id="string-x"),
        pytest.param({"x": {"values": ROW}}, "wrong_dtype", id="dict-x"),
        pytest.param({"x": [torch.tensor(ROW)]}, "wrong_dtype", id="list-of-tensors"),
        pytest.param({"x": torch.tensor(ROW), "y": "cat"}, "wrong_dtype", id="string-y"),
        pytest.param({"x": torch.tensor(ROW), "y": {"class": 1}}, "wrong_dtype", id="dict-y"),
        pytest.param({"x": torch.tensor(ROW), "y": torch.tensor(1.5)}, "label_not_integer", id="float-label-tensor"),
        pytest.param({"x": torch.tensor(ROW), "y": torch.tensor(True)}, "label_not_integer", id="bool-label-tensor"),
        pytest.param({"x": torch.tensor(ROW), "y": [1.5]}, "label_not_integer", id="float-in-label-list"),
        pytest.param({"x": torch.tensor(ROW), "y": 2**70}, "label_out_of_range", id="label-beyond-int64"),
        pytest.param({"x": torch.tensor(ROW), "y": torch.tensor([[1]])}, "wrong_rank", id="2-d-labels"),
        pytest.param({"x": torch.tensor(ROW), "y": torch.tensor([5])}, "label_out_of_range", id="label-too-big"),
        pytest.param({"x": torch.tensor([ROW, ROW]), "y": [1]}, "label_count_mismatch", id="too-few-labels"),
        pytest.param({"x": torch.ones(2, 2, DIM)}, "wrong_rank", id="3-d-x"),
        pytest.param({"x": torch.tensor(1.0)}, "wrong_rank", id="0-d-x"),
        pytest.param({"x": 1.5}, "wrong_rank", id="python-float-x"),
        pytest.param({"x": torch.ones(DIM + 1)}, "wrong_length", id="long-sample"),
        pytest.param({"x": torch.ones(0, DIM)}, "empty", id="zero-samples"),
        pytest.param({"x": torch.ones(0)}, "empty", id="zero-values"),
        pytest.param({"x": torch.ones(7, DIM)}, "too_many_samples", id="seven-samples"),
        pytest.param([torch.tensor(ROW)], "not_a_mapping", id="list-top-level"),
        pytest.param(torch.tensor(ROW), "not_a_mapping", id="bare-tensor"),
        pytest.param({"y": 1}, "missing_key", id="no-x"),
        pytest.param({"x": torch.tensor(ROW), "meta": "cam"}, "unexpected_key", id="extra-key"),
        pytest.param({"x": torch.tensor(ROW), 3: 1}, "unexpected_key", id="non-string-key"),
        pytest.param({"x": torch.tensor(ROW), "y": 1, "label": 1}, "ambiguous_label", id="y-and-label"),
    ],
)
def test_bad_pt_is_refused_with_its_reason(obj: Any, reason: str) -> None:
    assert reason_of(as_pt(obj), ".pt", limits=Limits(max_samples=6)) == reason


def test_pth_is_decoded_like_pt() -> None:
    assert reason_of(as_pt({"x": torch.tensor([float("nan")] * DIM)}), ".pth") == "non_finite"


# --- .npz ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("named", "labels"),
    [
        ({"x": np.array(ROW)}, [-1]),
        ({"x": np.array(ROW), "y": np.array(2)}, [2]),
        ({"x": np.array([ROW, ROW]), "y": np.array([0, -1])}, [0, -1]),
        ({"x": np.array([ROW, ROW], dtype=np.float16), "label": np.array([1, 2], dtype=np.uint8)}, [1, 2]),
        ({"x": np.asfortranarray([ROW, ROW]), "y": np.array([2, 2], dtype=np.int32)}, [2, 2]),
        ({"x": np.array([ROW], dtype=">f8"), "y": np.array([1], dtype=">i2")}, [1]),
    ],
    ids=["single-unlabelled", "single-0-d-label", "batch", "float16-label-key", "fortran-order", "big-endian"],
)
@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_npz_sample_is_decoded(named: dict, labels: list[int], compressed: bool) -> None:
    batch = decode(as_npz(compressed=compressed, **named), ".npz")
    assert_valid(batch)
    np.testing.assert_array_equal(batch.x, np.array([ROW] * len(labels), dtype=np.float32))
    np.testing.assert_array_equal(batch.y, labels)


def test_npz_object_array_is_refused_before_its_pickle_is_read(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    npy = as_npy(np.array([RunsShell(f"touch {marker}")] * DIM, dtype=object), allow_pickle=True)
    assert reason_of(zip_of([("x.npy", npy)]), ".npz") == "object_array"
    assert not marker.exists()


def test_npz_header_declaring_a_huge_shape_is_refused_before_allocating() -> None:
    """8 TB declared, 16 bytes held: refused on the header (too_large, not truncated), nothing large allocated."""
    lying = raw_npy("<f8", (10**12,), b"\0" * 16)
    tracemalloc.start()  # NumPy reports its array allocations to tracemalloc
    try:
        reason = reason_of(zip_of([("x.npy", lying)]), ".npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "too_large"
    assert peak < 1 << 20, f"{peak} bytes allocated while refusing it"


def test_npz_header_declaring_more_data_than_the_member_holds_is_truncated() -> None:
    assert reason_of(zip_of([("x.npy", raw_npy("<f4", (2, DIM), b"\0" * 16))]), ".npz") == "truncated"


def test_npz_members_declaring_more_than_the_budget_are_a_bomb() -> None:
    data = as_npz(compressed=True, x=np.zeros((50_000, DIM)))  # 1.6 MB of zeros deflate to a few kB
    assert len(data) < 10_000
    assert reason_of(data, ".npz", limits=Limits(max_uncompressed_bytes=1_000_000)) == "decompression_bomb"


def test_npz_member_understating_its_size_is_never_inflated_past_it() -> None:
    data = bytearray(as_npz(compressed=True, x=np.zeros((50_000, DIM))))
    real_size = struct.pack("<I", 50_000 * DIM * 8 + 128)
    assert data.count(real_size) == 2  # in the local header and in the central directory
    data[:] = data.replace(real_size, struct.pack("<I", 1_000))
    with pytest.raises(SampleError, match="CRC") as caught:  # zipfile stops at 1,000 bytes, which then fail their CRC
        decode(bytes(data), ".npz")
    assert caught.value.reason == "bad_archive"


ONE_X, TWO_X = member("x", np.zeros((1, DIM))), member("x", np.zeros((2, DIM)))


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        pytest.param([member("x", ROW), member("z", 1)], "unexpected_key", id="extra-array"),
        pytest.param([("data/x.npy", as_npy(np.array(ROW)))], "unexpected_key", id="member-in-folder"),
        pytest.param([("x", as_npy(np.array(ROW)))], "unexpected_key", id="member-without-npy"),
        pytest.param([member("x", ROW), member("x", ROW)], "duplicate_key", id="x-twice"),
        pytest.param([], "missing_key", id="no-members"),
        pytest.param([member("y", 1)], "missing_key", id="no-x"),
        pytest.param([member("x", ROW), member("y", 1), member("label", 1)], "ambiguous_label", id="y-and-label"),
        pytest.param([("x.npy", b"not an npy file at all")], "bad_archive", id="not-npy"),
        pytest.param([("x.npy", as_npy(np.array(ROW))[:60])], "bad_archive", id="cut-header"),
        pytest.param([("x.npy", as_npy(np.array(ROW))[:-4])], "truncated", id="cut-data"),
        pytest.param([("x.npy", raw_npy("<f4", (-1, DIM), b""))], "bad_archive", id="negative-dimension"),
        pytest.param(
            [member("x", np.zeros(3, dtype=[("a", "<f4"), ("b", "O")]), allow_pickle=True)],
            "object_array",
            id="struct-with-object",
        ),
        pytest.param([member("x", [0.5, np.nan, 1, 2])], "non_finite", id="NaN"),
        pytest.param([member("x", np.array([[0.5, 1, 2, -np.inf]], dtype=np.float32))], "non_finite", id="minus-inf"),
        pytest.param([member("x", [1, 2, 3, 2**60])], "value_out_of_range", id="huge-int64"),
        pytest.param([member("x", [1, 2, 3, np.iinfo(np.int64).min])], "value_out_of_range", id="int64-min"),
        pytest.param([member("x", np.ones(DIM, dtype=bool))], "wrong_dtype", id="bool-array"),
        pytest.param([member("x", np.ones(DIM, dtype=np.complex128))], "wrong_dtype", id="complex-array"),
        pytest.param([member("x", ["a"] * DIM)], "wrong_dtype", id="string-array"),
        pytest.param([member("x", np.zeros(DIM, dtype="datetime64[s]"))], "wrong_dtype", id="datetime-array"),
        pytest.param([member("x", np.zeros((2, 2, DIM)))], "wrong_rank", id="3-d-x"),
        pytest.param([member("x", np.float32(1.0))], "wrong_rank", id="0-d-x"),
        pytest.param([member("x", np.zeros((2, DIM - 1)))], "wrong_length", id="short-rows"),
        pytest.param([member("x", np.zeros((0, DIM)))], "empty", id="zero-samples"),
        pytest.param([ONE_X, member("y", [1.5])], "label_not_integer", id="float-labels"),
        pytest.param([ONE_X, member("y", [True])], "label_not_integer", id="bool-labels"),
        pytest.param([ONE_X, member("y", [[1]])], "wrong_rank", id="2-d-labels"),
        pytest.param([TWO_X, member("y", [0, -5])], "label_out_of_range", id="label-minus-5"),
        pytest.param([TWO_X, member("y", np.array([0, 2**63], dtype=np.uint64))], "label_out_of_range", id="huge-uint64"),
        pytest.param([TWO_X, member("y", [0, 1, 2])], "label_count_mismatch", id="extra-label"),
    ],
)
def test_bad_npz_is_refused_with_its_reason(members: list[tuple[str, bytes]], reason: str) -> None:
    assert reason_of(zip_of(members), ".npz") == reason


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_npz_truncated_archive_is_refused(cut: float) -> None:
    data = as_npz(x=np.zeros((8, DIM)), y=np.zeros(8, dtype=np.int64))
    assert reason_of(data[: int(len(data) * cut)], ".npz") == "truncated"


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_a_file_that_is_not_a_zip_is_a_bad_archive(suffix: str) -> None:
    assert reason_of(b"GIF89a" + bytes(100), suffix) == "bad_archive"


# --- properties ----------------------------------------------------------------------------------------------------

FORMATS = [".json", ".pt", ".npz"]


@st.composite
def valid_samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None, str]:
    """x float32 (B, D) or (D,); labels int64 (B,) or a scalar, -1 for unlabelled, or None; the label key."""
    count = draw(st.integers(1, 6))
    x = draw(arrays(np.float32, (count, DIM), elements=st.floats(-1e6, 1e6, width=32)))
    y = draw(arrays(np.int64, count, elements=st.integers(-1, CLASSES - 1)))
    if count == 1 and draw(st.booleans()):  # the single-sample form
        x, y = x[0], y[0]
    return x, (y if draw(st.booleans()) else None), draw(st.sampled_from(["y", "label"]))


def encode(fmt: str, x: np.ndarray, y: np.ndarray | None, key: str) -> bytes:
    """A sample file as a producer would write it: JSON says null for unlabelled, tensors and arrays -1."""
    if fmt == ".json":
        labels = {} if y is None else {key: np.where(y == -1, None, y).tolist()}
        return as_json({"x": x.tolist(), **labels})
    named = {"x": x} if y is None else {"x": x, key: np.asarray(y)}
    if fmt == ".pt":
        return as_pt({name: torch.from_numpy(np.array(value)) for name, value in named.items()})
    return as_npz(**named)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(deadline=2000, max_examples=40)
@given(sample=valid_samples())
def test_valid_batches_round_trip_through_every_format(fmt: str, sample: tuple) -> None:
    x, y, key = sample
    batch = decode(encode(fmt, x, y, key), fmt)
    assert_valid(batch)
    np.testing.assert_array_equal(batch.x, x.reshape(-1, DIM))
    np.testing.assert_array_equal(batch.y, np.full(len(batch.x), -1) if y is None else np.reshape(y, -1))


SEEDS = {
    ".json": as_json({"x": [ROW, ROW], "y": [1, None], "id": "seed"}),
    ".pt": as_pt({"x": torch.tensor([ROW, ROW]), "y": torch.tensor([1, -1])}),
    ".pth": as_pt({"x": [ROW], "label": [2]}),
    ".npz": as_npz(compressed=True, x=np.array([ROW, ROW]), y=np.array([1, -1])),
}


def decode_or_reason(data: bytes, suffix: str, limits: Limits = LIMITS) -> str:
    """ "ok" for a batch that keeps the contract, else the reason: any other exception fails the test."""
    try:
        batch = decode(data, suffix, limits=limits)
    except SampleError as exc:
        assert exc.reason in REASONS and str(exc), exc
        return exc.reason
    assert_valid(batch, limits)
    return "ok"


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few bytes overwritten, a span deleted or duplicated, then maybe cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 64)))
    data[start:end] = draw(st.sampled_from([b"", bytes(data[start:end]) * 2]))
    return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


@pytest.mark.parametrize("suffix", sorted(SEEDS))
@settings(deadline=2000, max_examples=150)
@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_or_raise_sample_error(suffix: str, data: bytes) -> None:
    decode_or_reason(data, suffix)


@pytest.mark.parametrize("suffix", sorted(SEEDS))
@settings(deadline=2000, max_examples=150)
@given(st.data())
def test_mutated_files_decode_or_raise_sample_error(suffix: str, data: st.DataObject) -> None:
    decode_or_reason(data.draw(mutations(SEEDS[suffix])), suffix)


KEYS = st.sampled_from(["x", "y", "label", "id", "z"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**25), 10**25) | st.floats() | st.text('[]{}"\\x\u00e9', max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=40,
)


@settings(deadline=2000, max_examples=150)
@given(document=st.dictionaries(KEYS, json_values, max_size=4))
def test_arbitrary_json_documents_decode_or_raise_sample_error(document: dict) -> None:
    decode_or_reason(json.dumps(document).encode(), ".json")


def nesting_depth(value: Any) -> int:
    if isinstance(value, dict):
        value = list(value.values()) or [None]
    return 1 + max(map(nesting_depth, value), default=0) if isinstance(value, list) else 0


@settings(deadline=2000, max_examples=150)
@given(document=json_values, ensure_ascii=st.booleans())
def test_json_depth_scan_agrees_with_the_parsed_nesting(document: Any, ensure_ascii: bool) -> None:
    """Brackets, quotes and backslashes inside strings never shift the depth the scan finds."""
    data = json.dumps({"x": document}, ensure_ascii=ensure_ascii).encode()
    depth = 1 + nesting_depth(document)
    assert decode_or_reason(data, ".json", Limits(max_json_depth=depth)) != "json_too_deep"
    assert decode_or_reason(data, ".json", Limits(max_json_depth=depth - 1)) == "json_too_deep"


@pytest.mark.parametrize("fast_json", [True, False], ids=["fast-path", "strict-parser"])
def test_json_long_integers_are_held_to_max_abs_value_not_to_a_digit_count(fast_json: bool) -> None:
    data = b'{"x": [1, 2, 3, 123456789012345678901234567890]}'
    batch = decode_bytes(data, ".json", DIM, CLASSES, Limits(max_abs_value=1e30), fast_json=fast_json)
    assert batch.x[0, 3] == np.float32(1.2345678901234568e29)
    with pytest.raises(SampleError) as caught:
        decode_bytes(data, ".json", DIM, CLASSES, Limits(max_abs_value=1e29), fast_json=fast_json)
    assert caught.value.reason == "value_out_of_range"


@pytest.mark.parametrize("fast_json", [True, False], ids=["fast-path", "strict-parser"])
def test_json_integer_beyond_float64_is_refused_whatever_the_limits(fast_json: bool) -> None:
    data = b'{"x": [1, 2, 3, 1' + b"0" * 309 + b"]}"
    with pytest.raises(SampleError, match="310 digits") as caught:
        decode_bytes(data, ".json", DIM, CLASSES, Limits(max_abs_value=float("inf")), fast_json=fast_json)
    assert caught.value.reason == "value_out_of_range"
