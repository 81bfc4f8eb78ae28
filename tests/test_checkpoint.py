"""The checkpoint store, on real files: round trip, rotation, verification, fallback, stray files, faults."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs

from plasticd.errors import CheckpointError
from plasticd.service import checkpoint_store as checkpoint
from plasticd.service.checkpoint_store import FORMAT_VERSION, CheckpointStore
from tests.helpers import events_named, fail_fsync, fail_rename, no_space


class _Crash(BaseException):
    """Stands for ``kill -9``: a BaseException, so none of save's own clean-up runs after it."""


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """A model-like state: several dtypes, a 0-d tensor, an empty one, dotted names."""
    g = torch.Generator().manual_seed(seed)
    return {
        "theta.w_in": torch.randn(5, 3, generator=g),
        "theta.b": torch.randn(4, generator=g, dtype=torch.float64),
        "theta.w_half": torch.randn(4, 4, generator=g).half(),
        "theta.w_bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "stats.age": torch.randint(0, 30000, (4, 4), generator=g, dtype=torch.int16),
        "stats.mask": torch.rand(4, 4, generator=g) > 0.5,
        "stats.bytes": torch.randint(0, 256, (7,), generator=g, dtype=torch.uint8),
        "optim.step": torch.tensor(17 + seed, dtype=torch.int64),  # 0-d
        "optim.w.exp_avg": torch.zeros(0, 3),  # no elements
    }


def _assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert got[name].device.type == "cpu", name
        assert torch.equal(got[name], tensor), name


def _files(folder: Path) -> dict[str, bytes]:
    """Every file in the folder, by name, with its content."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


# -- round trip ---------------------------------------------------------------


def test_round_trip_preserves_values_dtypes_shapes_and_meta(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    tensors = _tensors()
    meta = {"samples_trained": 123, "lr": 0.01, "nested": {"list": [1, "a", None, True]}, "text": "café"}
    info = store.save(tensors, meta)
    loaded = store.load_latest()
    assert loaded is not None
    _assert_same_tensors(loaded.tensors, tensors)
    assert loaded.meta == meta
    assert loaded.info == info
    assert info.seq == 1 and info.tensors_bytes == info.tensors_path.stat().st_size


def test_empty_tensor_dict_round_trips(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({}, {"note": "nothing yet"})
    loaded = store.load_latest()
    assert loaded is not None and loaded.tensors == {} and loaded.meta == {"note": "nothing yet"}


def test_save_leaves_the_callers_tensors_untouched(tmp_path: Path) -> None:
    """Non-contiguous views, views sharing storage and parameters are copied, never modified."""
    base = torch.arange(12.0).reshape(3, 4)
    param = torch.nn.Parameter(torch.ones(2, 2))
    tensors = {"transposed": base.t(), "row": base[1], "param": param}
    before = {name: t.detach().clone() for name, t in tensors.items()}
    CheckpointStore(tmp_path).save(tensors, {})
    assert not tensors["transposed"].is_contiguous()
    assert tensors["param"] is param and param.requires_grad
    _assert_same_tensors({n: t.detach() for n, t in tensors.items()}, before)
    loaded = CheckpointStore(tmp_path).load_latest()
    assert loaded is not None
    _assert_same_tensors(loaded.tensors, before)


def test_json_record_holds_the_documented_fields(tmp_path: Path) -> None:
    info = CheckpointStore(tmp_path).save({"a": torch.zeros(2, 3, dtype=torch.float16)}, {"k": 1})
    record = json.loads(info.json_path.read_text())
    tensors_bytes = info.tensors_path.read_bytes()
    assert info.json_path.name == "ckpt-0000000001.json"
    assert record == {
        "format": "plasticd-checkpoint",
        "version": FORMAT_VERSION,
        "seq": 1,
        "created": info.created,
        "tensors_file": "ckpt-0000000001.safetensors",
        "tensors_sha256": hashlib.sha256(tensors_bytes).hexdigest(),
        "tensors_bytes": len(tensors_bytes),
        "shapes": {"a": [2, 3]},
        "dtypes": {"a": "float16"},
        "meta": {"k": 1},
    }
    created = datetime.fromisoformat(info.created)
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def test_store_creates_a_missing_folder_and_an_empty_one_loads_none(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "checkpoints"
    store = CheckpointStore(folder)
    assert folder.is_dir()
    assert store.load_latest() is None
    assert store.list() == []


# -- sequence numbers and rotation ------------------------------------------


def test_seq_increases_and_list_is_oldest_first(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    infos = [store.save(_tensors(i), {"step": i}) for i in range(3)]
    assert [info.seq for info in infos] == [1, 2, 3]
    assert store.list() == infos
    loaded = store.load_latest()
    assert loaded is not None and loaded.info.seq == 3 and loaded.meta == {"step": 2}


def test_seq_of_an_orphan_tensors_file_is_never_reused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    first = store.save(_tensors(), {})
    (tmp_path / "ckpt-0000000005.safetensors").write_bytes(first.tensors_path.read_bytes())
    assert store.save(_tensors(), {}).seq == 6


def test_rotation_keeps_exactly_the_newest_keep(tmp_path: Path) -> None:
    (tmp_path / "LOCK").write_text("1234")
    store = CheckpointStore(tmp_path, keep=2)
    with capture_logs() as logs:
        for step in range(5):
            store.save(_tensors(step), {"step": step})
    assert sorted(_files(tmp_path)) == [
        "LOCK",
        "ckpt-0000000004.json",
        "ckpt-0000000004.safetensors",
        "ckpt-0000000005.json",
        "ckpt-0000000005.safetensors",
    ]
    assert [info.seq for info in store.list()] == [4, 5]
    assert [e["removed"] for e in events_named(logs, "checkpoint.rotated")] == [[1], [2], [3]]
    loaded = store.load_latest()
    assert loaded is not None and loaded.meta == {"step": 4}


def test_a_crash_mid_rotation_leaves_at_worst_an_orphan_tensors_file(tmp_path: Path, monkeypatch) -> None:
    """Rotation deletes the JSON before the tensors file, so dying between the two is harmless."""
    store = CheckpointStore(tmp_path, keep=1)
    store.save(_tensors(1), {"step": 1})
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".safetensors":
            raise _Crash
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(_Crash):
        store.save(_tensors(2), {"step": 2})
    monkeypatch.undo()
    assert sorted(_files(tmp_path)) == [
        "ckpt-0000000001.safetensors",
        "ckpt-0000000002.json",
        "ckpt-0000000002.safetensors",
    ]
    restarted = CheckpointStore(tmp_path, keep=1)
    assert restarted.clean_stray() == [tmp_path / "ckpt-0000000001.safetensors"]
    loaded = restarted.load_latest()
    assert loaded is not None and loaded.meta == {"step": 2}


def test_a_failed_rotation_does_not_fail_the_committed_save(tmp_path: Path, monkeypatch) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    store.save(_tensors(1), {"step": 1})

    def unlink(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    with capture_logs() as logs:
        info = store.save(_tensors(2), {"step": 2})
    monkeypatch.undo()
    assert info.seq == 2
    assert "Permission denied" in events_named(logs, "checkpoint.rotate_failed")[0]["error"]
    assert [i.seq for i in store.list()] == [1, 2]


# -- verification and fallback ------------------------------------------------


def _damage_tensors_byte(info) -> None:
    _flip_byte(info.tensors_path)


def _truncate_tensors(info) -> None:
    info.tensors_path.write_bytes(info.tensors_path.read_bytes()[:-7])


def _delete_tensors(info) -> None:
    info.tensors_path.unlink()


def _truncate_json(info) -> None:
    info.json_path.write_bytes(info.json_path.read_bytes()[:40])


def _garbage_json(info) -> None:
    info.json_path.write_bytes(b"\x00\xff\x13 not json at all")


def _json_array(info) -> None:
    info.json_path.write_text("[1, 2, 3]")


DAMAGE = {
    "flipped-byte-in-tensors": (_damage_tensors_byte, "sha256 is"),
    "truncated-tensors": (_truncate_tensors, "bytes, the JSON records"),
    "missing-tensors": (_delete_tensors, "is missing"),
    "truncated-json": (_truncate_json, "not valid JSON"),
    "garbage-json": (_garbage_json, "not valid JSON"),
    "json-not-an-object": (_json_array, "expected an object"),
    "foreign-format": (lambda i: _edit_json(i.json_path, lambda r: r.update(format="other")), "format is 'other'"),
    "missing-field": (lambda i: _edit_json(i.json_path, lambda r: r.pop("tensors_sha256")), "'tensors_sha256'"),
    "future-version": (
        lambda i: _edit_json(i.json_path, lambda r: r.update(version=FORMAT_VERSION + 1)),
        f"format version {FORMAT_VERSION + 1} is newer than this plasticd supports",
    ),
    "seq-mismatch": (lambda i: _edit_json(i.json_path, lambda r: r.update(seq=9)), "file name says 2"),
    "tensors-file-outside": (
        lambda i: _edit_json(i.json_path, lambda r: r.update(tensors_file="../elsewhere.safetensors")),
        "tensors_file is '../elsewhere.safetensors'",
    ),
    "shape-mismatch": (
        lambda i: _edit_json(i.json_path, lambda r: r["shapes"].update({"theta.w_in": [3, 5]})),
        "'theta.w_in' has shape [5, 3], the JSON records [3, 5]",
    ),
    "dtype-mismatch": (
        lambda i: _edit_json(i.json_path, lambda r: r["dtypes"].update({"stats.age": "int32"})),
        "'stats.age' is int16, the JSON records int32",
    ),
    "name-mismatch": (
        lambda i: _edit_json(i.json_path, lambda r: r["shapes"].update({"ghost": [1]})),
        "missing from the file ['ghost']",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_loudly(tmp_path: Path, damage) -> None:
    corrupt, reason = damage
    store = CheckpointStore(tmp_path)
    first = _tensors(1)
    store.save(first, {"step": 1})
    newest = store.save(_tensors(2), {"step": 2})
    corrupt(newest)
    with capture_logs() as logs:
        loaded = store.load_latest()
    assert loaded is not None and loaded.info.seq == 1 and loaded.meta == {"step": 1}
    _assert_same_tensors(loaded.tensors, first)
    [invalid] = events_named(logs, "checkpoint.invalid")
    assert invalid["log_level"] == "error" and invalid["path"] == str(newest.json_path)
    assert reason in invalid["reason"]
    [fallback] = events_named(logs, "checkpoint.fallback")
    assert fallback["log_level"] == "warning" and fallback["loaded"] == 1 and fallback["skipped"] == [2]


def test_list_does_not_verify_tensors_but_skips_unparseable_json(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    _, second, third = (store.save(_tensors(i), {}) for i in range(3))
    _flip_byte(second.tensors_path)
    _garbage_json(third)
    assert [info.seq for info in store.list()] == [1, 2]


def test_future_version_is_invalid_and_named_as_the_reason(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    info = store.save(_tensors(), {})
    _edit_json(info.json_path, lambda r: r.update(version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=r"version 2 is newer than this plasticd supports \(1\)"):
        store.load_latest()


def test_all_checkpoints_invalid_raises_listing_every_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    first, second = store.save(_tensors(1), {}), store.save(_tensors(2), {})
    _flip_byte(first.tensors_path)
    second.tensors_path.unlink()
    with capture_logs() as logs, pytest.raises(CheckpointError) as raised:
        store.load_latest()
    message = str(raised.value)
    assert f"{first.json_path}: ckpt-0000000001.safetensors sha256 is" in message
    assert f"{second.json_path}: tensors file ckpt-0000000002.safetensors is missing" in message
    assert "refuses to start from scratch" in message and f"mv {tmp_path} {tmp_path}.broken" in message
    assert len(events_named(logs, "checkpoint.invalid")) == 2 and not events_named(logs, "checkpoint.fallback")


def test_only_unparseable_json_raises_rather_than_starting_fresh(tmp_path: Path) -> None:
    (tmp_path / "ckpt-0000000001.json").write_text("{ truncated")
    with pytest.raises(CheckpointError, match="ckpt-0000000001.json: not valid JSON"):
        CheckpointStore(tmp_path).load_latest()


def test_an_orphan_tensors_file_alone_is_no_checkpoint(tmp_path: Path) -> None:
    """A crash during the very first save leaves tensors without a JSON: nothing was committed."""
    (tmp_path / "ckpt-0000000001.safetensors").write_bytes(b"partial")
    assert CheckpointStore(tmp_path).load_latest() is None


# -- stray files --------------------------------------------------------------


def test_clean_stray_removes_temp_files_and_orphans_only(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_tensors(1), {})
    store.save(_tensors(2), {})
    stray = [
        tmp_path / ".tmp-ckpt-0000000003.safetensors",
        tmp_path / ".tmp-ckpt-0000000003.json",
        tmp_path / "ckpt-0000000007.safetensors",
    ]
    for path in stray:
        path.write_bytes(b"leftover")
    keepers = {"LOCK": b"42", "notes.txt": b"mine", "ckpt-1.safetensors": b"not our name"}
    for name, data in keepers.items():
        (tmp_path / name).write_bytes(data)
    before = _files(tmp_path)
    with capture_logs() as logs:
        removed = store.clean_stray()
    assert sorted(removed) == sorted(stray)
    assert _files(tmp_path) == {name: data for name, data in before.items() if tmp_path / name not in stray}
    assert sorted(e["path"] for e in events_named(logs, "checkpoint.stray_removed")) == sorted(map(str, stray))
    assert store.clean_stray() == []
    loaded = store.load_latest()
    assert loaded is not None and loaded.info.seq == 2


# -- faults while saving ------------------------------------------------------


class _FillsTheDisk:
    """A file whose write stores the first half of the data, then fails with ENOSPC."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def __enter__(self) -> _FillsTheDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        raise no_space()


def _fail_write(monkeypatch, suffix: str) -> None:
    """The checkpoint module's ``open`` hands out a disk-filling file for temp files ending in ``suffix``."""

    def fake_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 (handed to the caller, who closes it)
        return _FillsTheDisk(handle) if str(path).endswith(suffix) else handle

    monkeypatch.setattr(checkpoint, "open", fake_open, raising=False)


def _nth_folder_fsync_fails(n: int) -> Callable[[Path], Callable[[str], bool]]:
    def wanted_for(folder: Path) -> Callable[[str], bool]:
        seen = []

        def wanted(path: str) -> bool:
            if path == os.path.realpath(folder):
                seen.append(path)
                return len(seen) == n
            return False

        return wanted

    return wanted_for


FAULTS: dict[str, Callable] = {
    "write-of-tensors-temp": lambda mp, folder: _fail_write(mp, ".safetensors"),
    "write-of-json-temp": lambda mp, folder: _fail_write(mp, ".json"),
    "fsync-of-tensors-temp": lambda mp, folder: fail_fsync(
        mp, lambda p: os.path.basename(p).startswith(".tmp-") and p.endswith(".safetensors")
    ),
    "fsync-of-json-temp": lambda mp, folder: fail_fsync(
        mp, lambda p: os.path.basename(p).startswith(".tmp-") and p.endswith(".json")
    ),
    "rename-of-tensors": lambda mp, folder: fail_rename(mp, ".safetensors", no_space()),
    "rename-of-json": lambda mp, folder: fail_rename(mp, ".json", no_space()),
    "folder-fsync-after-tensors": lambda mp, folder: fail_fsync(mp, _nth_folder_fsync_fails(1)(folder)),
    "folder-fsync-after-json": lambda mp, folder: fail_fsync(mp, _nth_folder_fsync_fails(2)(folder)),
}


@pytest.mark.parametrize("inject", FAULTS.values(), ids=FAULTS.keys())
def test_a_failed_save_raises_and_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch, inject) -> None:
    store = CheckpointStore(tmp_path)
    first = _tensors(1)
    store.save(first, {"step": 1})
    before = _files(tmp_path)
    inject(monkeypatch, tmp_path)
    with capture_logs() as logs, pytest.raises(CheckpointError) as raised:
        store.save(_tensors(2), {"step": 2})
    monkeypatch.undo()
    message = str(raised.value)
    assert "No space left on device" in message and str(tmp_path / "ckpt-0000000002") in message
    assert "older checkpoints are untouched" in message
    [failed] = events_named(logs, "checkpoint.save_failed")
    assert failed["log_level"] == "error" and failed["errno"] == errno.ENOSPC
    assert _files(tmp_path) == before  # no temp file, no half checkpoint, the old one byte for byte
    loaded = store.load_latest()
    assert loaded is not None and loaded.info.seq == 1 and loaded.meta == {"step": 1}
    _assert_same_tensors(loaded.tensors, first)
    assert store.save(_tensors(3), {"step": 3}).seq == 2  # the store works again once the disk does


def test_a_crash_between_tensors_rename_and_json_commit_is_recovered(tmp_path: Path, monkeypatch) -> None:
    store = CheckpointStore(tmp_path)
    first = _tensors(1)
    store.save(first, {"step": 1})
    fail_rename(monkeypatch, ".json", _Crash())
    with pytest.raises(_Crash):
        store.save(_tensors(2), {"step": 2})
    monkeypatch.undo()
    orphan, temp = tmp_path / "ckpt-0000000002.safetensors", tmp_path / ".tmp-ckpt-0000000002.json"
    assert orphan.is_file() and temp.is_file()

    restarted = CheckpointStore(tmp_path)
    with capture_logs() as logs:
        loaded = restarted.load_latest()
    assert loaded is not None and loaded.info.seq == 1 and loaded.meta == {"step": 1}
    _assert_same_tensors(loaded.tensors, first)
    assert not events_named(logs, "checkpoint.invalid")  # an uncommitted checkpoint is not a damaged one
    assert sorted(restarted.clean_stray()) == sorted([orphan, temp])
    assert sorted(_files(tmp_path)) == ["ckpt-0000000001.json", "ckpt-0000000001.safetensors"]


# -- bad arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensors", "meta", "match"),
    [
        ({"a": torch.zeros(1)}, {"x": object()}, "meta is not JSON-serialisable"),
        ({"a": torch.zeros(1)}, ["not", "a", "dict"], "meta must be a dict, got list"),
        ({"a": [1.0, 2.0]}, {}, "tensor 'a': expected a dense torch.Tensor, got list"),
        ({"__metadata__": torch.zeros(1)}, {}, "'__metadata__' is not allowed"),
        ({"s": torch.zeros(3).to_sparse()}, {}, "got layout torch.sparse_coo"),
    ],
    ids=["meta-not-serialisable", "meta-not-a-dict", "not-a-tensor", "reserved-name", "sparse"],
)
def test_bad_save_arguments_raise_before_anything_is_written(tmp_path: Path, tensors, meta, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        CheckpointStore(tmp_path).save(tensors, meta)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keep", [0, -1, 1.5])
def test_keep_must_be_a_positive_integer(tmp_path: Path, keep) -> None:
    with pytest.raises(CheckpointError, match="keep must be an integer >= 1"):
        CheckpointStore(tmp_path, keep=keep)
