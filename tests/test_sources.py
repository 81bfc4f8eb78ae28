"""The inbox watch: which file-system events make a file ready, without waiting for a rescan."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from plasticd.service.sources import InboxSource
from tests.helpers import wait_until


def test_renamed_in_and_closed_files_are_ready_at_once_a_file_being_written_is_not(tmp_path: Path) -> None:
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    staging.mkdir()
    ready: list[str] = []
    woke = threading.Event()
    source = InboxSource(inbox, settle_seconds=3600.0, wake=woke.set)  # no scan would take any of these
    source.start()
    try:
        (staging / "a.json").write_text("{}")
        os.rename(staging / "a.json", inbox / "a.json")  # moved in from another folder
        (inbox / ".b.json").write_text("{}")
        os.rename(inbox / ".b.json", inbox / "b.json")  # renamed inside the inbox
        (inbox / "c.json").write_text("{}")  # written in place and closed
        with open(inbox / "d.json", "w") as still_open:
            still_open.write("{")

            def three_ready() -> bool:
                ready.extend(p.name for p in source.take(10))
                return len(ready) >= 3

            wait_until(three_ready, 10, "the renamed and closed files")
            assert sorted(ready) == ["a.json", "b.json", "c.json"] and woke.is_set()
    finally:
        source.stop()
