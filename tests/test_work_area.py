"""The work area's session folders when two processes of a group tidy them at once (replicas share paths.work)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticd.service import claims
from plasticd.service.claims import SESSION_FILE, WorkArea


def _work(tmp_path: Path) -> WorkArea:
    return WorkArea(tmp_path / "work", tmp_path / "failed", tmp_path / "checkpoints")


def test_removing_an_empty_session_that_another_replica_removes_first_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race seen in a group's shutdown: this process lists the folder (only the record left) and unlinks the
    # record; the other replica's sessions() then finds a folder without record, empty, and removes it; this
    # process's rmdir found nothing and the replica died with FileNotFoundError.
    work = _work(tmp_path)
    session = work.open_session(tmp_path / "inbox", tmp_path / "processed")
    real_listdir = claims.os.listdir

    def listdir_then_the_other_replica_tidies(path: Path) -> list[str]:
        names = real_listdir(path)
        if Path(path) == session.folder:
            (session.folder / SESSION_FILE).unlink()
            assert work.sessions() == []  # the other replica's view: an empty folder without a record, tidied
        return names

    monkeypatch.setattr(claims.os, "listdir", listdir_then_the_other_replica_tidies)
    assert work.remove_if_empty(session)
    assert not session.folder.exists()


def test_listing_sessions_while_another_replica_removes_one_skips_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = _work(tmp_path)
    gone = work.open_session(tmp_path / "inbox", tmp_path / "processed")
    kept = work.open_session(tmp_path / "inbox", tmp_path / "processed")
    (gone.folder / SESSION_FILE).unlink()  # the other replica is half-way through remove_if_empty(gone)
    real_iterdir = Path.iterdir

    def iterdir_after_the_other_replica_removed_it(self: Path):  # type: ignore[no-untyped-def]
        if self == gone.folder and self.exists():
            self.rmdir()  # ... and finishes it just before this process looks inside
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir_after_the_other_replica_removed_it)
    assert [s.id for s in work.sessions()] == [kept.id]
    assert not gone.folder.exists()
