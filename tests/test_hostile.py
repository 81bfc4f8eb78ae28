"""Hostile and broken input against the running daemon: each is quarantined with its reason,
nothing executes, nothing is overwritten, and the daemon keeps serving."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import CLASSES, DIM, Daemon, drop, files_in, predictions, sample_json, wait_until, write_config

pytestmark = pytest.mark.slow

ROW = [0.5] * DIM


class Exploit:
    """Pickled, this asks the unpickler to run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pt(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_declaring(member_size: int) -> bytes:
    """A valid .npz whose central directory claims a member inflates to ``member_size`` bytes."""
    data = bytearray(npz(x=np.array(ROW, dtype=np.float32)))
    cd = data.rfind(b"PK\x01\x02")  # the (only) central directory entry
    data[cd + 24 : cd + 28] = struct.pack("<I", member_size)  # uncompressed size
    return bytes(data)


def npy_header_bomb() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", npy)
    return buf.getvalue()


def hostile_files(root: Path, marker: Path) -> dict[str, tuple[bytes | str, str]]:
    """name -> (content, expected reason)."""
    good_pt = pt({"x": torch.tensor(ROW), "y": 1})
    good_npz = npz(x=np.array(ROW, dtype=np.float32), y=np.int64(1))
    return {
        "exploit.pt": (pt({"x": Exploit(marker)}), "unsafe_pickle"),
        "legacy.pt": (pickle.dumps({"x": ROW, "y": 1}), "bad_archive"),
        "objects.pt": (pt({"x": "not numbers", "y": 1}), "wrong_dtype"),
        "truncated.pt": (good_pt[: len(good_pt) // 2], "truncated"),
        "truncated.npz": (good_npz[: len(good_npz) // 2], "truncated"),
        "truncated.json": (json.dumps({"x": ROW, "y": 1})[:20], "truncated"),
        "objects.npz": (npz(x=np.array([ROW, "a"], dtype=object)), "object_array"),
        "bomb.npz": (npz_declaring(2**31), "decompression_bomb"),
        "header-bomb.npz": (npy_header_bomb(), "too_large"),
        "deep.json": ("[" * 100_000 + "]" * 100_000, "json_too_deep"),
        "nan.json": ('{"x": [NaN' + ", 1" * (DIM - 1) + "]}", "non_finite"),
        "inf.json": ('{"x": [Infinity' + ", 1" * (DIM - 1) + "]}", "non_finite"),
        "duplicate.json": ('{"x": ' + json.dumps(ROW) + ', "x": ' + json.dumps(ROW) + "}", "duplicate_key"),
        "huge-int.json": ('{"x": [' + "9" * 5000 + ", 1" * (DIM - 1) + "]}", "value_out_of_range"),
        "utf8.json": (b'{"x": ' + json.dumps(ROW).encode() + b', "id": "\xff\xfe"}', "invalid_utf8"),
        "oversize.json": (json.dumps({"x": ROW, "id": "a" * 300_000}), "too_large"),
        "nan.pt": (pt({"x": torch.full((DIM,), float("nan"))}), "non_finite"),
        "inf.npz": (npz(x=np.full(DIM, np.inf, dtype=np.float32)), "non_finite"),
        "strings.json": (json.dumps({"x": ["a"] * DIM}), "wrong_dtype"),
        "rank3.npz": (npz(x=np.zeros((1, 1, DIM), dtype=np.float32)), "wrong_rank"),
        "length.json": (json.dumps({"x": ROW[:-1]}), "wrong_length"),
        "empty.npz": (npz(x=np.zeros((0, DIM), dtype=np.float32)), "empty"),
        "label-range.json": (json.dumps({"x": ROW, "y": CLASSES}), "label_out_of_range"),
        "label-float.npz": (npz(x=np.array(ROW, dtype=np.float32), y=np.float32(1.5)), "label_not_integer"),
        "readme.txt": ("hello", "unsupported_extension"),
    }


def test_hostile_inputs_are_quarantined_with_their_reasons(tmp_path: Path) -> None:
    write_config(tmp_path, "\n[limits]\nmax_file_bytes = 200000\n")
    inbox = tmp_path / "data_inbox"
    inbox.mkdir()
    marker = tmp_path / "pwned"
    cases = hostile_files(tmp_path, marker)
    expected = {name: reason for name, (_, reason) in cases.items()}
    # things that are not regular files, and aliases of files the daemon must never read
    (tmp_path / "data_processed").mkdir()
    (tmp_path / "data_processed" / "taken.json").write_text("already here")
    os.symlink("/etc/passwd", inbox / "passwd.json")
    os.symlink(tmp_path / "plasticd.toml", inbox / "config.npz")
    (tmp_path / "outside.json").write_text(sample_json(np.random.default_rng(0)))
    os.link(tmp_path / "outside.json", inbox / "alias.json")
    os.mkfifo(inbox / "fifo.json")
    (inbox / "folder.json").mkdir()
    expected.update({"passwd.json": "not_a_regular_file", "config.npz": "not_a_regular_file", "alias.json": "hardlink",
                     "fifo.json": "not_a_regular_file", "folder.json": "not_a_regular_file"})  # fmt: skip
    d = Daemon(tmp_path)
    try:
        d.wait_for_event("daemon.ready")
        for name, (content, _) in cases.items():
            drop(inbox, name, content)
        drop(inbox, "z" * 245 + ".json", '{"x": [1, 2')  # broken, and its sidecar's name would pass NAME_MAX
        rng = np.random.default_rng(1)
        good = {
            "line\nbreak.json": sample_json(rng),
            "x" * 240 + ".json": sample_json(rng),
            os.fsdecode(b"bytes-\xff\xfe.json"): sample_json(rng),
            "UPPER.JSON": sample_json(rng),
            "taken.json": sample_json(rng),
        }
        for name, content in good.items():
            drop(inbox, name, content)
        wait_until(lambda: len(files_in(tmp_path / "data_failed", "*.error.json")) >= len(expected) + 1, 60, "all quarantined")
        wait_until(lambda: len(files_in(tmp_path / "data_processed")) >= 1 + len(good), 60, "the good files")
        drop(inbox, "after.json", sample_json(rng))  # still serving
        wait_until(lambda: any(p["file"] == "after.json" for p in predictions(tmp_path)), 30, "a file after the attack")
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    assert not marker.exists(), "a pickled payload ran"
    found = {}
    for sidecar in files_in(tmp_path / "data_failed", "*.error.json"):
        record = json.loads(sidecar.read_text())
        found[record["file"]] = record["reason"]
        assert record["message"] and record["exception"] == "SampleError"
    long_names = [name for name in found if name.startswith("z" * 200)]  # claims shorten long names (kept unique)
    assert len(long_names) == 1 and long_names[0].endswith(".json") and found.pop(long_names[0]) == "truncated"
    assert found == expected
    assert Path("/etc/passwd").exists() and (tmp_path / "plasticd.toml").exists()
    assert (tmp_path / "outside.json").read_text().startswith("{"), "the hard link's other name was touched"
    processed = {p.name for p in files_in(tmp_path / "data_processed")}
    assert (tmp_path / "data_processed" / "taken.json").read_text() == "already here", "a processed file was overwritten"
    assert "taken~1.json" in processed and "UPPER.JSON" in processed and "line\nbreak.json" in processed
    assert os.fsdecode(b"bytes-\xff\xfe.json") in processed
    assert any(name.startswith("x" * 200) for name in processed), "the long name was lost"
    events = [e for e in d.events() if e["event"] == "sample.quarantined"]
    assert len(events) == len(expected) + 1
