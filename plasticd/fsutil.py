"""File-system helpers that every durable write in plasticd goes through.

Nothing here knows about samples or models: a folder fsync (renames made
durable), an atomic JSON write (readers never see half a file), and a move
that never overwrites (a taken name becomes ``stem~N.ext``).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from plasticd.errors import WorkAreaError

NAME_MAX = 255  # bytes, the usual limit of one path component
SEP = "~"  # between a name and its uniquifying counter (and a claim's sequence number)


def fsync_dir(folder: Path) -> None:
    """Make renames into or out of ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload: dict, durable: bool = True) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same folder: readers never see half a file.
    ``durable=False`` skips the fsync: for files rewritten often whose loss in a power cut costs nothing."""
    pid = f"-{os.getpid()}"
    tmp = path.with_name(fit_name(path.name, ".tmp-", reserve=len(pid)) + pid)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fit_name(name: str, prefix: str, reserve: int = 0) -> str:
    """``prefix + name``, ``name``'s stem shortened to fit NAME_MAX bytes with ``reserve`` bytes to spare
    (for a suffix the caller adds: a sidecar's ``.error.json``, a temp file's pid)."""
    raw = os.fsencode(name)
    room = NAME_MAX - len(os.fsencode(prefix)) - reserve
    if len(raw) > room:
        stem, ext = os.path.splitext(name)
        ext_raw = os.fsencode(ext)[:16]
        raw = os.fsencode(stem)[: room - len(ext_raw)] + ext_raw
    return prefix + os.fsdecode(raw)


def same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def move_no_overwrite(src: Path, folder: Path, name: str, reserve: int = 0) -> Path:
    """Move ``src`` into ``folder`` under ``name``, or ``stem~N.ext`` if that is taken; never overwrites.
    Names are shortened to leave ``reserve`` bytes of NAME_MAX for a suffix the caller will add.

    Uses ``link`` + ``unlink`` (``link`` fails if the target exists); falls back
    to ``rename`` for things that cannot be hard-linked (directories, some file systems).
    """
    stem, ext = os.path.splitext(name)
    for n in range(10_000):
        target = folder / fit_name(name if n == 0 else f"{stem}{SEP}{n}{ext}", "", reserve)
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            if same_file(src, target):  # a crash came between our link and unlink: finish that move
                os.unlink(src)
                return target
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EISDIR):
                raise
            if os.path.lexists(target):
                continue
            os.rename(src, target)
            return target
        os.unlink(src)
        return target
    raise WorkAreaError(f"no free name for {name!r} in {folder}")
