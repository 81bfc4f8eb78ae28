"""Issue 12 (an operable service): settings errors are messages, not tracebacks; paths.root; PLASTICD_CONFIG=-FILE."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plasticd.config import config_file_from_env, load_settings
from plasticd.config_text import describe_settings
from plasticd.errors import ConfigError


def test_a_malformed_list_in_the_environment_is_a_message_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASTICD_TRAIN__BETAS", "0.5,0.6")
    with pytest.raises(ConfigError, match=r"PLASTICD_TRAIN__BETAS='0\.5,0\.6'.*JSON"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "said"),
    [("PLASTICD_TRAN__LR", "no settings section 'tran'"), ("PLASTICD_TRAIN__LRATE", "section [train] has no field 'lrate'")],
)
def test_a_misspelled_environment_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, said: str) -> None:
    monkeypatch.setenv(name, "0.1")
    with pytest.raises(ConfigError, match=re.escape(name) + ".*" + re.escape(said)):
        load_settings()


def test_the_cli_turns_environment_errors_into_exit_code_2_without_a_traceback(tmp_path: Path) -> None:
    for env in ({"PLASTICD_TRAIN__BETAS": "0.5,0.6"}, {"PLASTICD_TRAN__LR": "0.1"}):
        out = subprocess.run(
            [sys.executable, "-m", "plasticd", "config"], cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True
        )
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and next(iter(env)) in out.stderr


def test_paths_root_anchors_every_relative_path(tmp_path: Path) -> None:
    s = load_settings(None, {"paths": {"root": str(tmp_path), "inbox": "in", "failed": "/elsewhere/failed"}})
    assert s.paths.inbox == tmp_path / "in" and s.paths.state == tmp_path / "state"
    assert s.paths.failed == Path("/elsewhere/failed")  # absolute paths stay
    assert s.paths.dataset == Path("/usr/share/datasets/fashion-mnist")
    dumped = tmp_path / "dump.toml"
    dumped.write_text(describe_settings(s))
    assert load_settings(dumped).paths == s.paths  # 'plasticd config' output reloads to the same paths
    assert load_settings().paths.state == Path("state")  # unset: the working directory, as before


def test_a_dash_makes_plasticd_config_optional(tmp_path: Path) -> None:
    missing, present = tmp_path / "missing.toml", tmp_path / "present.toml"
    present.write_text("[model]\nneurons = 50\n")
    assert config_file_from_env({"PLASTICD_CONFIG": f"-{missing}"}) is None
    assert config_file_from_env({"PLASTICD_CONFIG": f"-{present}"}) == present
    assert config_file_from_env({"PLASTICD_CONFIG": str(missing)}) == missing  # without the dash: an error later
    out = subprocess.run(
        [sys.executable, "-m", "plasticd", "config"],
        cwd=tmp_path,
        env={**os.environ, "PLASTICD_CONFIG": f"-{missing}"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "plasticd", "config"],
        cwd=tmp_path,
        env={**os.environ, "PLASTICD_CONFIG": str(missing)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr
