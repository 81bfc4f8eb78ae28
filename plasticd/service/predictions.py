"""The predictions journal: one JSON line per sample, for programs to pick up.

Each record carries a stable ``id`` (``<claim key>#<index>``), the claim key
(``claim``, null for a stream's samples) and the producer's ``sample_id``: after a crash,
samples not yet covered by a checkpoint are processed again and their
predictions re-emitted with the same id, so consumers can de-duplicate.
The file is rotated by size (``predictions.jsonl.1`` … ``.N``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from plasticd.log import get_logger
from plasticd.service.results import PendingResults


def _drop_torn_tail(path: Path) -> None:
    """A kill -9 mid-write can leave half a line at the end: cut it, so every line parses."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            block = min(size, 1 << 20)
            f.seek(size - block)
            tail = f.read(block)
            cut = tail.rfind(b"\n")
            f.truncate(size - block + cut + 1 if cut >= 0 else (0 if block == size else size))
    except FileNotFoundError:
        return


class PredictionWriter:
    def __init__(self, path: Path, max_bytes: int = 256 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(path)
        self.results: PendingResults | None = None  # daemon.result_files: also keeps records until their file moves
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, records: list[dict]) -> None:
        """Append records and flush them to the OS (a crash loses nothing already written)."""
        if not records:
            return
        if os.fstat(self._file.fileno()).st_nlink == 0:  # deleted under us (state/ removed): records would vanish
            self._reopen()
        self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._file.flush()
        if self.results is not None:
            self.results.add(records)
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def _reopen(self) -> None:
        get_logger("predictions").warning("predictions.reopened", path=str(self.path), reason="the journal was deleted")
        self._file.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _rotate(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())  # what moves to .1 was written since the last sync; a checkpoint may cover it
        self._file.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def sync(self) -> None:
        """Make everything written so far durable (called with each checkpoint)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
