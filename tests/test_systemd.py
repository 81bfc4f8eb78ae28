"""Issue 12, item 7: the README's systemd recipe works as written, as far as this machine allows.

The unit file is verified by ``systemd-analyze verify`` (with its paths pointed into this
checkout), and its ExecStart runs with the unit's Environment and WorkingDirectory (parsed
from the file) until READY=1, with the config file missing (PLASTICD_CONFIG=-...: optional)
and with the shipped one; ``plasticd status --config`` then finds the state from another directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "plasticd.service"
SHIPPED_CONFIG = REPO / "systemd" / "plasticd.toml"
VENV_PLASTICD = Path(sys.executable).parent / "plasticd"


def unit_service() -> dict[str, list[str]]:
    """The [Service] section: key -> values, in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def retarget(text: str, tmp: Path) -> str:
    """The recipe's absolute paths pointed into this machine's checkout and a temporary folder."""
    return (
        text.replace("/opt/plasticd/.venv/bin/plasticd", str(VENV_PLASTICD))
        .replace("/var/lib/plasticd", str(tmp / "var"))
        .replace("/etc/plasticd", str(tmp / "etc"))
    )


def test_the_unit_file_verifies() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd")
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(UNIT)], capture_output=True, text=True, timeout=120, check=False
    )
    text = out.stdout + out.stderr
    # On a machine without the recipe's checkout the only finding may be the missing ExecStart binary.
    assert out.returncode == 0 or all("/opt/plasticd" in line for line in text.splitlines() if line.strip()), text


def test_the_unit_file_verifies_with_its_paths_present(tmp_path: Path) -> None:
    unit = tmp_path / "plasticd.service"
    unit.write_text(retarget(UNIT.read_text(), tmp_path))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def start_like_systemd(tmp_path: Path) -> tuple[subprocess.Popen, socket.socket]:
    service = unit_service()
    assert service["Type"] == ["notify"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLASTICD_")}
    for assignment in service.get("Environment", []):
        key, _, value = retarget(assignment, tmp_path).partition("=")
        env[key] = value
    cwd = Path(retarget(service["WorkingDirectory"][0], tmp_path))
    cwd.mkdir(parents=True, exist_ok=True)  # useradd --create-home made it
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(120)
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    argv = shlex.split(retarget(service["ExecStart"][0], tmp_path))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(0o027))  # noqa: PLW1509 - UMask=0027 as the unit sets it
    return proc, notify


def wait_ready(proc: subprocess.Popen, notify: socket.socket) -> None:
    while True:
        message = notify.recv(4096).decode()
        if "READY=1" in message.split("\n"):
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_execstart_reaches_ready_without_a_config_file(tmp_path: Path) -> None:
    assert not (tmp_path / "etc" / "plasticd.toml").exists()  # the recipe's config file is optional
    proc, notify = start_like_systemd(tmp_path)
    try:
        wait_ready(proc, notify)
    finally:
        code, err = stop(proc)
        notify.close()
    assert code == 0, err
    assert (tmp_path / "var" / "data_inbox").is_dir() and (tmp_path / "var" / "state" / "status.json").is_file()
    assert '"daemon.ready"' in err and '"new_model": true' in err


def test_with_the_shipped_config_status_finds_the_service_from_any_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "plasticd.toml"
    config.write_text(retarget(SHIPPED_CONFIG.read_text(), tmp_path))
    proc, notify = start_like_systemd(tmp_path)
    try:
        wait_ready(proc, notify)
        elsewhere = tmp_path / "home"
        elsewhere.mkdir()
        status = subprocess.run(
            [str(VENV_PLASTICD), "status", "--config", str(config)], cwd=elsewhere, capture_output=True, text=True, timeout=60
        )
    finally:
        code, err = stop(proc)
        notify.close()
    assert code == 0, err
    assert status.returncode == 0 and "state:" in status.stdout, status.stdout + status.stderr
    mode = (tmp_path / "var" / "state" / "status.json").stat().st_mode & 0o777
    assert mode & 0o027 == 0  # UMask=0027: nothing group-writable or world-readable
