"""The log on a terminal (issue 20, section 4), through a real pseudo-terminal: readable event lines (no JSON, no
bare exception-name line), a one-line live status redrawn in place; ingest's log lines never overwrite its bar."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import drop, sample_json, wait_until, write_config

pytestmark = pytest.mark.slow


class Terminal:
    """A command whose stderr (and stdout) is a pseudo-terminal; ``text`` is what the terminal received."""

    def __init__(self, root: Path, *args: str) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
            cwd=root, stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        os.close(slave)
        self.raw = b""
        self.closed = False

    def read(self) -> str:
        while not self.closed and select.select([self.master], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            self.raw += chunk
        return self.raw.decode(errors="replace")

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read()
        self.read()
        os.close(self.master)
        self.closed = True
        return self.proc.wait(timeout=5)


def _config(root: Path) -> None:
    write_config(root)
    cfg = root / "plasticd.toml"
    cfg.write_text(cfg.read_text().replace('format = "json"\n', 'format = "auto"\n'))


def test_the_daemon_on_a_terminal_is_readable_with_a_live_status_line(tmp_path: Path) -> None:
    _config(tmp_path)
    term = Terminal(tmp_path, "run")
    try:
        wait_until(lambda: "daemon.ready" in term.read(), 120, "daemon.ready on the terminal")
        rng = np.random.default_rng(0)
        for i in range(5):
            drop(tmp_path / "data_inbox", f"f{i}.json", sample_json(rng))
        drop(tmp_path / "data_inbox", "broken.json", "{nope")
        wait_until(lambda: "sample.quarantined" in term.read() and "checkpoint.saved" in term.read(), 60, "work")
        wait_until(lambda: "● idle" in term.read(), 30, "the live status line")
    finally:
        term.proc.send_signal(signal.SIGTERM)
        code = term.finish()
    assert code == 0
    text = term.read()
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    assert not [line for line in lines if line.lstrip("\r").startswith("{")], "JSON on a terminal"
    assert not [line for line in lines if line.strip() in ("SampleError", "plasticd.errors.SampleError")], "a bare line"
    (quarantined,) = [line for line in lines if "sample.quarantined" in line]
    assert "file=broken.json" in quarantined and "exception=SampleError" in quarantined
    assert "component=" not in quarantined
    assert "\r\x1b[K" in text, "the status line is cleared before an event line, not scrolled"
    assert "samples" in text.split("● ")[-1].split("\r")[0]


def test_ingest_log_lines_go_above_its_progress_bar(tmp_path: Path) -> None:
    _config(tmp_path)
    rng = np.random.default_rng(1)
    for i in range(30):
        drop(tmp_path / "todo", f"f{i:02d}.json", sample_json(rng))
    drop(tmp_path / "todo", "broken.json", "{nope")
    term = Terminal(tmp_path, "ingest", "todo", "--to", "done", "--allow-failures")
    code = term.finish(120)
    assert code == 0
    text = term.read().replace("\r\n", "\n")
    (quarantined,) = [line for line in text.split("\n") if "sample.quarantined" in line]
    assert "file" in quarantined and "/31" not in quarantined, "the bar was drawn over by the log line"
    summary = text.index("this run processed")
    assert "file/s" not in text[summary:] and "it/s" not in text[summary:], "the bar was redrawn after the summary"
