"""Caller mistakes and their exit codes, one rule for stderr's format, messages without raw errno text (issue 20,
section 4). Each command runs as a real process with stderr a pipe (not a terminal)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import drop, plasticd, sample_json, write_config

pytestmark = pytest.mark.slow


def failed_event(result: subprocess.CompletedProcess) -> dict:
    """stderr is a pipe: the message is one JSON event, whatever the command."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result
    event = json.loads(lines[-1])
    assert event["event"] == "plasticd.failed" and event["exit_code"] == result.returncode, event
    assert "Traceback" not in result.stderr
    return event


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    write_config(root)
    rng = np.random.default_rng(0)
    for i in range(12):
        drop(root / "todo", f"f{i}.json", sample_json(rng, 4))
    done = plasticd(root, "ingest", str(root / "todo"), "--to", str(root / "done"), "--no-progress")
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["rollback", "99"], "no checkpoint 99"),
        (["predict", "--checkpoint", "77", "done/f1.json"], "no checkpoint 77"),
        (["ingest", "nothere"], "nothere does not exist"),
        (["config", "--set", "metrics.host=999.1.1.1"], "'999.1.1.1' is neither an IP address"),
        (["status", "--set", "metrics.host=999.1.1.1"], "'999.1.1.1' is neither an IP address"),
        (["export", "/nonexistent/dir/m.safetensors"], "/nonexistent/dir does not exist"),
        (["export", "done", "--force"], "is a folder"),
        (["report", "--journal", "nope.jsonl"], "--journal nope.jsonl does not exist"),
        (["report", "--out", "plasticd.toml"], "is a file, not a folder"),
    ],
)
def test_caller_mistakes_exit_2_with_one_json_message(model: Path, args: list[str], said: str) -> None:
    result = plasticd(model, *args)
    assert result.returncode == 2, result.stderr
    assert said in failed_event(result)["message"]
    assert not Path("/nonexistent").exists(), "export created the missing folder"


@pytest.mark.parametrize("window", ["0", "-5"])
def test_report_window_must_be_positive(model: Path, window: str) -> None:
    result = plasticd(model, "report", "--window", window, "--out", str(model / "rep"))
    assert result.returncode == 2 and "is not positive" in result.stderr
    assert not (model / "rep").exists()


def test_a_report_without_a_journal_fails(model: Path) -> None:
    result = plasticd(model, "report", "--set", "paths.state=elsewhere", "--out", str(model / "rep"))
    assert result.returncode == 1
    assert "no predictions journal" in failed_event(result)["message"]


def test_status_errors_follow_the_same_rule_as_every_command(model: Path) -> None:
    result = plasticd(model, "status", "--set", "paths.state=elsewhere")
    assert result.returncode == 1
    assert "no status file" in failed_event(result)["message"]  # JSON, as run's and ingest's errors are


def test_export_write_errors_name_the_reason_not_the_errno(model: Path) -> None:
    result = plasticd(model, "export", "/proc/m.safetensors")
    assert result.returncode == 1
    message = failed_event(result)["message"]
    assert "cannot write" in message and "/proc" in message and "[Errno" not in message and ".tmp-" not in message


def test_status_help_offers_no_model_flags(model: Path) -> None:
    helped = subprocess.run([sys.executable, "-m", "plasticd", "status", "--help"], capture_output=True, text=True, check=True)
    assert "--config" in helped.stdout
    for flag in ("--device", "--seed", "--threads"):
        assert flag not in helped.stdout
