"""Views of history that tell the truth (issue 20, section 3): every checkpoint listed with its state, the
records a rollback abandoned honoured by every reader, tiered retention without duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import drop, sample_json, write_config


def plasticd(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _ingest(root: Path, tag: str, files: int, rng: np.random.Generator) -> None:
    for i in range(files):
        drop(root / f"todo-{tag}", f"{tag}{i:02d}.json", sample_json(rng, 5))
    done = plasticd(root, "ingest", f"todo-{tag}", "--to", f"done-{tag}", "--no-progress")
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_checkpoints_lists_every_checkpoint_with_its_state(tmp_path: Path) -> None:
    write_config(tmp_path, "\n[limits]\nmax_file_bytes = 20000\n")
    cfg = tmp_path / "plasticd.toml"
    cfg.write_text(cfg.read_text().replace("every_samples = 50\n", "every_samples = 20\nkeep = 10\n"))
    rng = np.random.default_rng(0)
    for tag in "ab":
        _ingest(tmp_path, tag, 20, rng)
    folder = tmp_path / "checkpoints"
    seqs = sorted(int(p.stem.split("-")[1]) for p in folder.glob("ckpt-*.json"))
    assert len(seqs) >= 4
    (folder / f"ckpt-{seqs[0]:010d}.json").write_text("{not json")  # an unreadable commit record
    tensors = folder / f"ckpt-{seqs[1]:010d}.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-10])  # a truncated tensors file
    (folder / "ckpt-0000000999.safetensors").write_bytes(b"\0" * 64)  # uncommitted: no commit record
    listed = plasticd(tmp_path, "checkpoints", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["seq"]: r for r in json.loads(listed.stdout)["checkpoints"]}
    assert sorted(rows) == [*seqs, 999], "every checkpoint file is listed"
    assert rows[seqs[0]]["state"] == "unreadable" and "JSON" in rows[seqs[0]]["error"]
    assert rows[seqs[1]]["state"] == "unreadable" and "bytes" in rows[seqs[1]]["error"]
    assert rows[999]["state"] == "uncommitted"
    assert all(rows[s]["state"] == "valid" for s in seqs[2:])
    table = plasticd(tmp_path, "checkpoints")
    assert table.returncode == 0 and "unreadable" in table.stdout and "why:" in table.stdout
    refused = plasticd(tmp_path, "rollback", "12345")
    assert refused.returncode == 2 and f"{seqs[0]} (unreadable)" in refused.stderr
    for seq in seqs[2:]:  # now none is valid: the daemon would refuse to start, and the listing says so
        (folder / f"ckpt-{seq:010d}.json").write_text("[]")
    broken = plasticd(tmp_path, "checkpoints")
    assert broken.returncode == 1 and "no valid checkpoint" in broken.stderr
    assert broken.stdout.count("unreadable") == len(seqs)


def test_a_checkpoints_path_that_is_a_file_has_its_own_message(tmp_path: Path) -> None:
    write_config(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = plasticd(tmp_path, "checkpoints", "--set", f"paths.checkpoints={tmp_path / 'afile'}")
    assert out.returncode == 1 and "is a file, not a folder" in out.stderr
