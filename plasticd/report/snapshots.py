"""The checkpoints on disk, read for the network's size: neurons and active connections at each save.

Read-only and without the store (``CheckpointStore`` creates its folder and
verifies hashes; a report must do neither): each ``ckpt-<seq>.json`` commit
record gives the time, the samples seen (``meta.counters.samples``) and the
neuron count (``meta.architecture.neurons``); the active connections are the
set entries of the ``mask`` tensor, read from the safetensors file in blocks of
rows so a large network does not load whole. Only the last ``checkpoint.keep``
checkpoints exist, so these are a few points; the log's events fill the line in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
from safetensors import SafetensorError, safe_open

_NAME = re.compile(r"^ckpt-(\d{10})\.json$")
ROWS_PER_READ = 1024


@dataclass(frozen=True)
class Snapshot:
    seq: int  # the checkpoint's sequence number
    t: float  # POSIX seconds of its creation
    samples: int | None  # samples seen when it was saved
    neurons: int | None
    active: int | None  # active connections (None: tensors file unreadable)
    tensors_bytes: int


def _active_connections(path: Path) -> int | None:
    try:
        with safe_open(str(path), framework="np") as f:
            names = set(f.keys())
            if "mask" not in names:
                return None
            rows = f.get_slice("mask")
            n = rows.get_shape()[0]
            return sum(int(np.count_nonzero(rows[i : min(i + ROWS_PER_READ, n)])) for i in range(0, n, ROWS_PER_READ))
    except (OSError, SafetensorError):
        return None


def read_snapshots(folder: Path) -> list[Snapshot]:
    """One Snapshot per readable commit record in ``folder``, oldest first; none when the folder is absent."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not _NAME.match(path.name):
            continue
        try:
            record = orjson.loads(path.read_bytes())
            meta = record["meta"]
            t = datetime.fromisoformat(record["created"]).timestamp()
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        counters = meta.get("counters") if isinstance(meta.get("counters"), dict) else {}
        arch = meta.get("architecture") if isinstance(meta.get("architecture"), dict) else {}
        found.append(
            Snapshot(
                seq=int(record.get("seq", 0)),
                t=t,
                samples=counters.get("samples"),
                neurons=arch.get("neurons"),
                active=_active_connections(path.with_name(str(record.get("tensors_file", "")))),
                tensors_bytes=int(record.get("tensors_bytes", 0)),
            )
        )
    return found
