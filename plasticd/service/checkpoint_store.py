"""Checkpoints on disk: safetensors weights plus a JSON commit record, atomic, rotated, verified.

On-disk protocol
----------------
A checkpoint with sequence number ``seq`` is two files in one folder, sharing
the stem ``ckpt-<seq:010d>``:

* ``<stem>.safetensors``: every tensor, in the safetensors format;
* ``<stem>.json``: the *commit record*: format name and version, ``seq``,
  creation time (ISO 8601, UTC), the tensors file's name, size and SHA-256,
  every tensor's shape and dtype, and the caller's ``meta`` dict.

``save`` writes the tensors file first and the JSON last, each one as
temp file (``.tmp-<name>``, same folder) → write → flush → fsync → rename,
with an fsync of the folder after each rename. A rename within one folder is
atomic, so every name that matches ``ckpt-*`` is either absent or complete.

The JSON is the commit record: **a checkpoint exists iff its JSON exists and
verifies**. It is renamed into place only once the tensors file it describes is
durable, and it carries that file's size and hash, so a crash (``kill -9``,
power loss) at any instant leaves one of three harmless states: stray
``.tmp-*`` files, an orphan tensors file without a JSON (an uncommitted
checkpoint), or a complete new checkpoint. The first two are invisible to
``load_latest`` and removed by ``clean_stray``. Bit rot, truncation or a
hand-edited file is caught on load by the size, hash and layout checks; the
loader then falls back to the next older checkpoint, loudly.

A save that finds its file system full (ENOSPC, EDQUOT) *makes room*: it
removes the oldest committed checkpoint older than the newest one that
verifies (never that one, never a corrupt one an operator may want to see),
logs ``checkpoint.space_made`` and tries again, until the new checkpoint fits
or only the newest valid checkpoint is left; then it raises
``CheckpointNoSpaceError`` with the bytes it needs.

Rotation runs only after a checkpoint is committed. It removes the JSON of
each old checkpoint before its tensors file, so a crash mid-rotation leaves at
worst an orphan tensors file.

One process writes a folder at a time (the daemon holds a lock for that);
``clean_stray`` must not run while a ``save`` is in progress.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from plasticd.errors import CheckpointError, CheckpointNoSpaceError
from plasticd.fsutil import fsync_dir
from plasticd.log import get_logger
from plasticd.service.retention import Entry, Retention, keep_plan

FORMAT_NAME = "plasticd-checkpoint"
FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full file system or quota: make room, then retry when space returns

_CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{10})\.(json|safetensors)$")
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "seq": int,
    "created": str,
    "tensors_file": str,
    "tensors_sha256": str,
    "tensors_bytes": int,
    "shapes": dict,
    "dtypes": dict,
    "meta": dict,
}


@dataclass(frozen=True)
class CheckpointInfo:
    seq: int  # sequence number, 1 for the first checkpoint of a folder
    json_path: Path  # the commit record
    tensors_path: Path  # the safetensors file it describes
    created: str  # ISO 8601, UTC
    tensors_bytes: int  # size of the tensors file the record expects
    samples: int | None = None  # samples seen at the save (meta.counters.samples), when the record says


@dataclass(frozen=True)
class LoadedCheckpoint:
    info: CheckpointInfo
    tensors: dict[str, torch.Tensor]  # on the CPU
    meta: dict  # the caller's dict, as saved


class CheckpointStore:
    """The checkpoints of one folder: ``save`` atomically, ``load_latest`` verified, keep the newest ``keep``."""

    def __init__(self, folder: Path, keep: int = 3, retention: Retention | None = None) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise CheckpointError(f"checkpoint keep must be an integer >= 1, got {keep!r}")
        self.retention = retention  # None: only the newest ``keep`` (see ``service.retention`` for the tiers)
        self.folder = Path(folder).absolute()  # messages name it unambiguously, whatever the working directory
        self.keep = keep
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"{self.folder}: cannot create the checkpoint folder: {exc}") from exc

    @property
    def _log(self) -> structlog.typing.FilteringBoundLogger:
        # Looked up per use, so events follow the logging set-up in force now.
        return get_logger("checkpoint")

    # -- writing ---------------------------------------------------------------

    def save(self, tensors: Mapping[str, torch.Tensor], meta: dict) -> CheckpointInfo:
        """Write a new checkpoint, commit it, then drop all but the newest ``keep``.

        Raises CheckpointError when the checkpoint cannot be written; every older
        checkpoint is then left as it was, and this one's files are removed.
        """
        started = time.monotonic()
        cpu = _cpu_copies(tensors)
        payload = safetensors_bytes(cpu)
        try:
            seq = self._next_seq()
        except OSError as exc:  # e.g. the folder itself is gone
            raise CheckpointError(f"checkpoint not saved: cannot list {self.folder}: {exc}") from exc
        stem = f"ckpt-{seq:010d}"
        tensors_path, json_path = self.folder / f"{stem}.safetensors", self.folder / f"{stem}.json"
        created = datetime.now(UTC).isoformat(timespec="milliseconds")
        record = _make_record(seq, created, tensors_path.name, cpu, payload, meta)
        removed = 0  # older checkpoints removed to make room for this one
        while True:
            written: list[Path] = []  # what this save put on disk, in order, for the roll-back
            target = tensors_path
            try:
                self._write_atomic(tensors_path, payload, written)
                target = json_path
                self._write_atomic(json_path, record, written)
                break
            except OSError as exc:
                self._roll_back(written)
                if exc.errno in NO_SPACE and self._make_room(seq, len(payload) + len(record)):
                    removed += 1
                    continue
                self._log.error("checkpoint.save_failed", seq=seq, path=str(target), error=str(exc), errno=exc.errno)
                message = f"checkpoint {seq} not saved: writing {target} failed: {exc}; " + (
                    f"{removed} older checkpoints were removed to make room, the newest valid one is kept"
                    if removed
                    else "older checkpoints are untouched"
                )
                if exc.errno in NO_SPACE:
                    raise CheckpointNoSpaceError(message, needed=len(payload) + len(record)) from exc
                raise CheckpointError(message) from exc
            except Exception:
                self._roll_back(written)
                raise
        # A BaseException (KeyboardInterrupt, SystemExit) skips the roll-back, like a crash would:
        # the protocol is crash-safe, and clean_stray tidies up at the next start.
        info = CheckpointInfo(seq, json_path, tensors_path, created, len(payload))
        self._log.debug(
            "checkpoint.written",
            seq=seq,
            path=str(json_path),
            tensors=len(cpu),
            bytes=len(payload),
            seconds=round(time.monotonic() - started, 4),
        )
        self._rotate()
        return info

    def _write_atomic(self, final: Path, data: bytes, written: list[Path]) -> None:
        """temp file → write → flush → fsync → rename → fsync the folder; records each path it creates."""
        temp = self.folder / f"{TEMP_PREFIX}{final.name}"
        written.append(temp)
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp, final)
        written.append(final)
        fsync_dir(self.folder)

    def _roll_back(self, written: list[Path]) -> None:
        """Remove what a failed save wrote, newest first (so the JSON goes before its tensors file)."""
        for path in reversed(written):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                self._log.warning("checkpoint.cleanup_failed", path=str(path), error=str(exc))

    def _make_room(self, seq: int, needed: int) -> bool:
        """Remove the oldest checkpoint older than the newest valid one (JSON first); False when there is none."""
        infos = self.list()
        if len(infos) < 2:  # nothing but the newest (or nothing at all): no room to make, nothing to verify
            return False
        newest_valid = next((info for info in reversed(infos) if _verifies(info.json_path)), None)
        if newest_valid is None:
            return False
        older = [info for info in infos if info.seq < newest_valid.seq]
        if not older:
            return False
        victim = older[0]
        try:
            victim.json_path.unlink(missing_ok=True)
            fsync_dir(self.folder)
            victim.tensors_path.unlink(missing_ok=True)
        except OSError as exc:
            self._log.warning("checkpoint.cleanup_failed", path=str(victim.json_path), error=str(exc))
            return False
        self._log.warning(
            "checkpoint.space_made", removed=victim.seq, freed_bytes=victim.tensors_bytes, saving=seq, needed_bytes=needed,
            kept_newest=newest_valid.seq, left=len(infos) - 1, folder=str(self.folder),
            message="the file system is full: the oldest checkpoint was removed to make room for the new one",
        )  # fmt: skip
        return True

    def _rotate(self) -> None:
        """Delete the committed checkpoints the retention policy does not keep (without one: all but the newest
        ``keep``): every JSON, an fsync, then the tensors."""
        try:
            infos = self.list()
            if self.retention is None:
                old = infos[: -self.keep]
            else:
                entries = [Entry(i.seq, i.created, i.tensors_bytes, i.samples) for i in infos]
                kept = keep_plan(entries, self.retention)
                old = [info for info in infos if info.seq not in kept]
            if not old:
                return
            for info in old:
                info.json_path.unlink(missing_ok=True)
            fsync_dir(self.folder)
            for info in old:
                info.tensors_path.unlink(missing_ok=True)
        except OSError as exc:
            # The new checkpoint is committed; an old one left behind costs disk space, not correctness.
            self._log.warning("checkpoint.rotate_failed", error=str(exc))
            return
        self._log.info("checkpoint.rotated", removed=[info.seq for info in old], kept=self.keep)

    def _next_seq(self) -> int:
        """1 + the highest seq of any checkpoint file, committed, corrupt or orphan (never reuse a seq)."""
        seqs = [seq for seq, _ in self._checkpoint_files("json")]
        seqs += [seq for seq, _ in self._checkpoint_files("safetensors")]
        return max(seqs, default=0) + 1

    # -- reading ---------------------------------------------------------------

    # Below this method, `list` in the class body names it, hence builtins.list in annotations.
    def list(self) -> builtins.list[CheckpointInfo]:
        """Committed checkpoints (JSON present and parseable), oldest first; tensors files are not verified."""
        infos = []
        for _, json_path in self._checkpoint_files("json"):
            try:
                infos.append(_info(json_path, _read_record(json_path)))
            except CheckpointError:
                continue  # not a usable record; load_latest reports it loudly
        return infos

    def load(self, seq: int) -> LoadedCheckpoint:
        """Checkpoint ``seq``, verified like ``load_latest`` (record, size, hash, layout); CheckpointError(reason) if not."""
        json_path = self.folder / f"ckpt-{seq:010d}.json"
        if not json_path.is_file():
            raise CheckpointError(f"no checkpoint {seq} in {self.folder}")
        try:
            return _verify(json_path)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {seq} ({json_path}) is not valid: {exc}") from exc

    def load_latest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint that verifies, or None when the folder holds no checkpoint JSON at all.

        Each checkpoint that fails verification is logged as ``checkpoint.invalid``;
        falling back past any is logged as ``checkpoint.fallback``. When checkpoint
        JSONs exist but none verifies, raises CheckpointError rather than let the
        daemon silently start from scratch.
        """
        candidates = self._checkpoint_files("json")[::-1]
        if not candidates:
            return None
        failures: builtins.list[tuple[int, Path, str]] = []
        for seq, json_path in candidates:
            try:
                loaded = _verify(json_path)
            except CheckpointError as exc:
                failures.append((seq, json_path, str(exc)))
                self._log.error("checkpoint.invalid", path=str(json_path), seq=seq, reason=str(exc))
                continue
            if failures:
                self._log.warning("checkpoint.fallback", loaded=seq, skipped=[s for s, _, _ in failures])
            self._log.debug("checkpoint.verified", seq=seq, path=str(json_path), tensors=len(loaded.tensors))
            return loaded
        raise CheckpointError(self._nothing_valid_message(failures))

    def _nothing_valid_message(self, failures: builtins.list[tuple[int, Path, str]]) -> str:
        lines = [f"no valid checkpoint in {self.folder}: all {len(failures)} failed verification:"]
        lines += [f"  {path}: {reason}" for _, path, reason in failures]
        lines.append(
            "plasticd refuses to start from scratch while checkpoints exist, as that would silently "
            "discard everything learned. To start fresh, stop plasticd and move the folder away "
            f"(mv {self.folder} {self.folder}.broken); to recover, put back a good pair of "
            "ckpt-<seq>.json and ckpt-<seq>.safetensors files."
        )
        return "\n".join(lines)

    # -- housekeeping ----------------------------------------------------------

    def clean_stray(self) -> builtins.list[Path]:
        """Remove ``.tmp-*`` files and tensors files without a JSON; returns the paths removed.

        Call it only while no save runs (at start-up). Other files are never touched.
        """
        committed = {seq for seq, _ in self._checkpoint_files("json")}
        stray: builtins.list[tuple[Path, str]] = []
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                stray.append((Path(entry.path), "temp"))
        for seq, tensors_path in self._checkpoint_files("safetensors"):
            if seq not in committed:
                stray.append((tensors_path, "orphan"))
        for path, kind in stray:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise CheckpointError(f"{path}: cannot remove stray checkpoint file: {exc}") from exc
            self._log.info("checkpoint.stray_removed", path=str(path), kind=kind)
        return [path for path, _ in stray]

    def _checkpoint_files(self, suffix: str) -> builtins.list[tuple[int, Path]]:
        """(seq, path) of the ``ckpt-<seq>.<suffix>`` regular files, oldest first."""
        found = []
        for entry in os.scandir(self.folder):
            match = _CHECKPOINT_NAME.match(entry.name)
            if match and match.group(2) == suffix and entry.is_file(follow_symlinks=False):
                found.append((int(match.group(1)), Path(entry.path)))
        return sorted(found)


# -- helpers (module level: no state) ---------------------------------------------


def _cpu_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (the caller's tensors are never touched), names and types checked."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"checkpoint tensors must be a mapping of name to tensor, got {type(tensors).__name__}")
    copies = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CheckpointError(f"checkpoint tensor name {name!r} is not allowed (a non-empty str, not __metadata__)")
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            found = f"layout {tensor.layout}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(f"checkpoint tensor {name!r}: expected a dense torch.Tensor, got {found}")
        copies[name] = tensor.detach().to(device="cpu", memory_format=torch.contiguous_format, copy=True)
    return copies


def _make_record(seq: int, created: str, tensors_file: str, cpu: dict[str, torch.Tensor], payload: bytes, meta: dict) -> bytes:
    """The JSON commit record, encoded; CheckpointError when ``meta`` is not a JSON-serialisable dict."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    record = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "seq": seq,
        "created": created,
        "tensors_file": tensors_file,
        "tensors_sha256": hashlib.sha256(payload).hexdigest(),
        "tensors_bytes": len(payload),
        "shapes": {name: list(t.shape) for name, t in cpu.items()},
        "dtypes": {name: _dtype_name(t.dtype) for name, t in cpu.items()},
        "meta": meta,
    }
    try:
        return (json.dumps(record, indent=2) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {exc}") from exc


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _read_record(json_path: Path) -> dict[str, Any]:
    """Parse one commit record and check its structure; CheckpointError(reason) when it is unusable."""
    try:
        record = json.loads(json_path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read the JSON: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CheckpointError(f"JSON holds a {type(record).__name__}, expected an object")
    if record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"format is {record.get('format')!r}, expected {FORMAT_NAME!r}")
    version = record.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"version is {version!r}, expected an integer >= 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"format version {version} is newer than this plasticd supports ({FORMAT_VERSION}); "
            "it was written by a newer plasticd: upgrade to load it"
        )
    for field, kind in _RECORD_FIELDS.items():
        value = record.get(field)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise CheckpointError(f"field {field!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    expected_seq, expected_file = _seq_of(json_path), json_path.with_suffix(".safetensors").name
    if record["seq"] != expected_seq:
        raise CheckpointError(f"seq {record['seq']} in the JSON, but the file name says {expected_seq}")
    if record["tensors_file"] != expected_file:
        raise CheckpointError(f"tensors_file is {record['tensors_file']!r}, expected {expected_file!r}")
    return record


def _seq_of(path: Path) -> int:
    match = _CHECKPOINT_NAME.match(path.name)
    assert match, f"{path.name} is not a checkpoint file name"
    return int(match.group(1))


def _info(json_path: Path, record: dict[str, Any]) -> CheckpointInfo:
    return CheckpointInfo(
        seq=record["seq"],
        json_path=json_path,
        tensors_path=json_path.with_name(record["tensors_file"]),
        created=record["created"],
        tensors_bytes=record["tensors_bytes"],
        samples=_samples_of(record["meta"]),
    )


def _samples_of(meta: dict) -> int | None:
    counters = meta.get("counters")
    samples = counters.get("samples") if isinstance(counters, dict) else None
    return samples if isinstance(samples, int) and not isinstance(samples, bool) else None


def _verify(json_path: Path) -> LoadedCheckpoint:
    """Load one checkpoint, checking record, size, hash and layout; CheckpointError(reason) at the first fault."""
    record = _read_record(json_path)
    info = _info(json_path, record)
    _check_tensors_file(info.tensors_path, record)
    try:
        tensors = load_file(info.tensors_path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{info.tensors_path.name}: not a readable safetensors file ({exc})") from exc
    _check_layout(tensors, record)
    return LoadedCheckpoint(info=info, tensors=tensors, meta=record["meta"])


def _verifies(json_path: Path) -> bool:
    """Whether the checkpoint of ``json_path`` verifies (record, size, hash, layout)."""
    try:
        _verify(json_path)
    except CheckpointError:
        return False
    return True


def _check_tensors_file(path: Path, record: dict[str, Any]) -> None:
    """Size first (cheap), then the SHA-256, streamed in chunks (the file may be several GB)."""
    try:
        size = path.stat().st_size
        if size != record["tensors_bytes"]:
            raise CheckpointError(f"{path.name} has {size} bytes, the JSON records {record['tensors_bytes']}")
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError as exc:
        raise CheckpointError(f"tensors file {path.name} is missing") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path.name}: {exc}") from exc
    if digest != record["tensors_sha256"]:
        raise CheckpointError(f"{path.name} sha256 is {digest}, the JSON records {record['tensors_sha256']}")


def _check_layout(tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """The tensors file holds exactly the names, shapes and dtypes the JSON lists."""
    shapes, dtypes = record["shapes"], record["dtypes"]
    names = set(tensors)
    for field in ("shapes", "dtypes"):
        listed = set(record[field])
        if listed != names:
            raise CheckpointError(
                f"tensor names differ from the JSON {field}: missing from the file {sorted(listed - names)[:5]}, "
                f"not in the JSON {sorted(names - listed)[:5]}"
            )
    for name, tensor in tensors.items():
        if list(tensor.shape) != shapes[name]:
            raise CheckpointError(f"tensor {name!r} has shape {list(tensor.shape)}, the JSON records {shapes[name]}")
        if _dtype_name(tensor.dtype) != dtypes[name]:
            raise CheckpointError(f"tensor {name!r} is {_dtype_name(tensor.dtype)}, the JSON records {dtypes[name]}")
