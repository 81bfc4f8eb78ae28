"""The model as saved: an Engine loaded from a checkpoint, read-only, and the facts a listing shows.

The tools read the checkpoint folder while the daemon may be writing it, so
nothing here takes the model lock, creates a folder, removes stray files or
writes anything: a checkpoint is read through the store's verifying loaders,
and a read that loses a race with the daemon's rotation (the checkpoint it
picked was rotated away mid-read) simply tries again on the new newest.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plasticd.config import Settings
from plasticd.errors import CheckpointError, UsageError
from plasticd.service.checkpoint_store import CheckpointInfo, CheckpointStore, LoadedCheckpoint

if TYPE_CHECKING:
    from plasticd.learn.engine import Engine

RACE_RETRIES = 3  # reads of the newest checkpoint that lost a race with the daemon's rotation


def store_for_reading(settings: Settings) -> CheckpointStore:
    """The checkpoint store of ``paths.checkpoints``, which must exist (it is never created here)."""
    folder = settings.paths.checkpoints
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(
            f"paths.checkpoints {folder.absolute()} is a file, not a folder: point paths.checkpoints at the "
            "checkpoint folder (--set paths.checkpoints=DIR or the config file)"
        )
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint folder {folder.absolute()} (has the daemon run with these settings?)")
    return CheckpointStore(folder)


def load_checkpoint(store: CheckpointStore, seq: int | None = None) -> LoadedCheckpoint:
    """Checkpoint ``seq``, or the newest that verifies; CheckpointError when there is none."""
    if seq is not None:
        if not (store.folder / f"ckpt-{seq:010d}.json").is_file():
            listed = ", ".join(str(info.seq) for info in store.list()) or "none"
            raise UsageError(f"no checkpoint {seq} in {store.folder} (checkpoints: {listed}); see plasticd checkpoints")
        return store.load(seq)
    for attempt in range(RACE_RETRIES):
        before = [info.seq for info in store.list()]
        try:
            loaded = store.load_latest()
        except CheckpointError:
            if attempt + 1 < RACE_RETRIES and [info.seq for info in store.list()] != before:
                continue  # the daemon saved and rotated while we read: read the new newest
            raise
        if loaded is None:
            raise CheckpointError(f"no checkpoint in {store.folder} yet (the daemon saves one once it has learned)")
        return loaded
    raise AssertionError("unreachable")  # the last attempt returns or raises


def engine_from(settings: Settings, loaded: LoadedCheckpoint, device: str | None = None) -> Engine:
    """An Engine in the state ``loaded`` holds, as the daemon would resume it; it is only read from."""
    from plasticd.learn.engine import Engine

    engine = Engine.from_settings(settings, device=device)
    engine.load_state(loaded.tensors, loaded.meta)
    return engine


@dataclass(frozen=True)
class Facts:
    """What ``plasticd checkpoints`` shows of one checkpoint (None: not readable)."""

    seq: int
    created: str
    bytes: int
    reason: str | None
    samples_seen: int | None
    samples_trained: int | None
    accuracy: float | None  # prequential, over every labelled sample up to the save
    window_accuracy: float | None  # over the last train.window labelled samples before the save
    neurons: int | None
    rollback_of: int | None  # this checkpoint is a copy of that one, made by plasticd rollback
    error: str | None  # why the facts are missing, or why the checkpoint does not verify
    state: str = "valid"  # valid, unreadable (error says why: the daemon skips it), uncommitted (no commit record)
    before: str | None = None  # what came before it since the previous checkpoint (samples, rewiring, drift, ...)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def facts(info: CheckpointInfo) -> Facts:
    """The facts of one listed checkpoint, read from its JSON and its metrics tensors only (no hash check)."""
    from safetensors import safe_open

    try:
        record = json.loads(info.json_path.read_bytes())
        meta = record["meta"]
        with safe_open(str(info.tensors_path), framework="numpy") as f:  # reads only the tensors asked for
            ring = np.asarray(f.get_tensor("metrics.correct_ring"), dtype=np.bool_)
            _pos, seen, labelled, trained, correct = (int(v) for v in f.get_tensor("metrics.counters"))
    except Exception as exc:  # any unreadable part: the listing shows why and goes on
        return Facts(info.seq, info.created, info.tensors_bytes, None, None, None, None, None, None, None, error=str(exc))
    filled = min(labelled, len(ring))
    return Facts(
        seq=info.seq,
        created=info.created,
        bytes=info.tensors_bytes,
        reason=meta.get("reason"),
        samples_seen=seen,
        samples_trained=trained,
        accuracy=correct / labelled if labelled else None,
        window_accuracy=float(ring[:filled].mean()) if filled else None,
        neurons=meta.get("architecture", {}).get("neurons"),
        rollback_of=meta.get("rollback_of"),
        error=None,
        before=_before(meta),
    )


def _before(meta: dict) -> str | None:
    """What came before a checkpoint: ``rollback of 3``, or ``120 samples, rewire, drift×2`` (older ones: None)."""
    if meta.get("rollback_of") is not None:
        return f"rollback of {meta['rollback_of']}"
    since = meta.get("since_previous")
    if not isinstance(since, dict):
        return None
    parts = [f"{since.get('samples', 0)} samples"] if since.get("samples") else []
    for kind, n in (since.get("maintenance") or {}).items():
        parts.append(kind if n == 1 else f"{kind}×{n}")
    return ", ".join(parts) or "no change"


_CHECKPOINT_FILE = re.compile(r"^ckpt-(\d{10})\.(json|safetensors)$")


def survey(store: CheckpointStore) -> list[Facts]:
    """Every checkpoint in ``store``'s folder, oldest first, each verified as the daemon would load it: ``valid``,
    ``unreadable`` (``error`` says why) or ``uncommitted`` (a tensors file without its commit record)."""
    files: dict[int, set[str]] = {}
    for entry in os.scandir(store.folder):
        match = _CHECKPOINT_FILE.match(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            files.setdefault(int(match.group(1)), set()).add(match.group(2))
    listed = {info.seq: info for info in store.list()}
    rows = []
    for seq in sorted(files):
        tensors = store.folder / f"ckpt-{seq:010d}.safetensors"
        if "json" not in files[seq]:
            size = tensors.stat().st_size if tensors.exists() else 0
            why = "a tensors file without its commit record (a save cut short): removed at the daemon's next start"
            rows.append(_bare(seq, size, "uncommitted", why))
            continue
        info = listed.get(seq)
        try:
            store.load(seq)
            error = None
        except CheckpointError as exc:
            error = str(exc).split(" is not valid: ", 1)[-1]
        if info is None:
            rows.append(_bare(seq, 0, "unreadable", error or "the commit record cannot be read"))
            continue
        row = facts(info)
        rows.append(replace(row, state="unreadable" if error else "valid", error=error or row.error))
    return rows


def _bare(seq: int, size: int, state: str, error: str) -> Facts:
    return Facts(seq, "-", size, None, None, None, None, None, None, None, error=error, state=state)


def covered_claims(json_path: Path) -> list[str]:
    """The claim keys a checkpoint's record lists as covered (trained on, possibly not moved on yet)."""
    return list(json.loads(json_path.read_bytes())["meta"].get("covered", []))
