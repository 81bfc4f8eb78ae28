"""Per-file results: ``<final name>.pred.json`` next to a processed file, holding that file's prediction records.

With ``daemon.result_files`` on, a producer that sees its file in the processed folder can read
its answer beside it instead of searching the journal. The result is placed *before* the file:

1. a candidate name ``N`` is chosen (``name``, ``name~1`` … as for any move) such that ``N`` is
   free (or already this claim's file) and ``N.pred.json`` is free (or already this claim's result);
2. the result is written to a temp file, made durable and linked to ``N.pred.json`` (never
   replacing anything), and the folder is synced;
3. the file is linked to ``N`` and its claim unlinked (``fsutil.link_new``, as ``move_no_overwrite``).

A kill -9 anywhere in between is finished at the next start: the claim is still in the work area
and covered, so it is moved again, and step 1 finds its own result under ``N.pred.json`` (by its
``claim``) and reuses it, or its own file already at ``N``. So a result is never lost and never
stays without its file; a file never appears without its result (unless the claim vanished).

The records come from memory (``PendingResults.add``, fed by the journal writer as predictions are
written). Claims covered by a checkpoint but not moved when the process died have none in memory:
their records are read back from the predictions journal (and its rotated files) by claim key the
first time they are needed, the last record of each id winning (a re-learned file's records are
written again with the same ids). Records rotated out of the journal's kept files are lost: the
result is then written with what was found, and ``result.records_missing`` says so.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import re
import time
from pathlib import Path

from plasticd.errors import WorkAreaError
from plasticd.fsutil import candidate_names, create_json, fsync_dir, link_new, same_file
from plasticd.log import get_logger
from plasticd.service.claims import Claim

RESULT_SUFFIX = ".pred.json"
_ID = re.compile(rb'^\{"id":("(?:[^"\\]|\\.)*")')  # every journal line starts with its id: "<claim key>#<index>"


class PendingResults:
    """The prediction records of claimed files not yet moved on, by claim key; they leave with the move."""

    def __init__(self, journal: Path, keep: int) -> None:
        self.journal = journal  # the predictions journal: its rotated files are ``<name>.1`` … ``<name>.<keep>``
        self.keep = keep
        self.records: dict[str, list[dict]] = {}
        self.log = get_logger("worker")

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: list[dict]) -> None:
        """Records just written to the journal; a stream's (no claim) are not kept."""
        for record in records:
            key = record.get("claim")
            if key is not None:
                self.records.setdefault(key, []).append(record)

    def recover(self, keys: list[str]) -> None:
        """Read back from the journal the records of ``keys`` not held in memory (a claim covered before a crash)."""
        wanted = {key for key in keys if key not in self.records}
        if not wanted:
            return
        started = time.monotonic()
        found: dict[str, dict[str, dict]] = {key: {} for key in wanted}  # key -> id -> its last record
        rotated = [self.journal.with_name(f"{self.journal.name}.{i}") for i in range(self.keep, 0, -1)]
        for path in [*rotated, self.journal]:  # oldest first: a later record of an id replaces an earlier one
            try:
                with open(path, "rb") as lines:
                    for line in lines:
                        match = _ID.match(line)
                        if match is None:
                            continue
                        sample_id = json.loads(match.group(1))
                        key = sample_id.rpartition("#")[0]
                        if key in found:
                            with contextlib.suppress(ValueError):  # a torn line: its sample's earlier record stays
                                found[key][sample_id] = json.loads(line)
            except FileNotFoundError:
                continue
        for key, by_id in found.items():
            self.records[key] = sorted(by_id.values(), key=lambda record: record.get("index", 0))
            if not by_id:
                self.log.warning("result.records_missing", claim=key, journal=str(self.journal))
        self.log.info("result.recovered", files=len(wanted), seconds=round(time.monotonic() - started, 3))

    def move(self, claim: Claim, destination: Path) -> Path:
        """Move ``claim`` into ``destination`` with its result placed first (see the module); returns the file's path.

        OSError (ENOSPC, EIO, a vanished claim) leaves the claim where it was, to be retried."""
        if not os.path.lexists(claim.path):
            raise FileNotFoundError(2, "claimed file vanished", str(claim.path))
        records = self.records.get(claim.key, [])
        for candidate in candidate_names(claim.original_name, reserve=len(RESULT_SUFFIX)):
            final = destination / candidate
            result = destination / (candidate + RESULT_SUFFIX)
            if os.path.lexists(final) and not _ours(claim, final, result):
                continue
            payload = {"file": claim.original_name, "processed": candidate, "claim": claim.key, "predictions": records}
            if not _place(result, payload, claim.key):
                continue
            fsync_dir(destination)  # the result is durable before the file appears
            try:
                link_new(claim.path, final)
            except FileExistsError:
                if not _ours(claim, final, result):  # taken meanwhile: our result goes, the next name is tried
                    result.unlink()
                    continue
            with contextlib.suppress(FileNotFoundError):  # renamed, not linked
                os.unlink(claim.path)
            self.records.pop(claim.key, None)
            self.log.debug("result.written", file=claim.original_name, claim=claim.key, path=str(result), samples=len(records))
            return final
        raise WorkAreaError(f"no free name for {claim.original_name!r} and its result in {destination}")

    def forget(self, claim: Claim) -> None:
        """A claim that left the work area without a move (it vanished): its records go."""
        self.records.pop(claim.key, None)


def _ours(claim: Claim, final: Path, result: Path) -> bool:
    """Whether ``final`` is this claim's file placed by an interrupted earlier try: a link to it, or (a destination
    on another file system) a complete copy next to this claim's result."""
    if same_file(claim.path, final):
        return True
    try:
        return _claim_of(result) == claim.key and filecmp.cmp(claim.path, final, shallow=False)
    except OSError:
        return False


def _claim_of(result: Path) -> str | None:
    """The claim key a result file names; None when there is none or it is not one of ours."""
    try:
        payload = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload.get("claim") if isinstance(payload, dict) else None


def _place(result: Path, payload: dict, key: str) -> bool:
    """Create ``result`` with ``payload`` unless the name is taken; True if it now holds this claim's result.

    A result of this claim found there (a crash came before its file was moved) is kept as it is."""
    if os.path.lexists(result):
        return _claim_of(result) == key
    try:
        create_json(result, payload)
    except FileExistsError:
        return _claim_of(result) == key
    return True
