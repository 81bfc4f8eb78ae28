"""``plasticd predict`` against a real daemon: read-only, while it runs, the engine's own probabilities."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import DIM, Daemon, drop, files_in, sample_json, wait_until, write_config

from plasticd.config import load_settings
from plasticd.service.checkpoint_store import CheckpointStore
from plasticd.tools.saved import engine_from


def plasticd(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
        cwd=root, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def tree_state(*folders: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folders``: size, mtime and content hash (what 'nothing written' means)."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                st = path.stat()
                state[str(path)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def test_predict_reads_the_saved_model_while_the_daemon_runs_and_writes_nothing(tmp_path: Path) -> None:
    write_config(tmp_path)
    rng = np.random.default_rng(1)
    daemon = Daemon(tmp_path)
    try:
        for i in range(20):
            drop(tmp_path / "data_inbox", f"s{i:02d}.json", sample_json(rng, n=5))
        wait_until(lambda: len(files_in(tmp_path / "data_processed")) == 20, 60, f"20 files processed\n{daemon.tail()}")
        files = [str(p) for p in files_in(tmp_path / "data_processed")[:3]]
        x_stdin = rng.normal(size=DIM).round(4).tolist()
        drop(tmp_path, "bad.json", json.dumps({"x": [1.0, 2.0]}))  # wrong width: refused as the daemon would
        # The daemon holds the model lock all along: predict works without it.
        running = plasticd(
            tmp_path, "predict", *files, "-", str(tmp_path / "bad.json"), stdin=json.dumps({"x": x_stdin, "id": "order-17"})
        )
        assert daemon.proc.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0
    assert running.returncode == 1, running.stderr  # one file refused
    lines = [json.loads(line) for line in running.stdout.splitlines()]
    assert len(lines) == 3 * 5 + 1 + 1
    refused = lines[-1]
    assert refused["file"].endswith("bad.json") and refused["error"]["reason"] and "predicted" not in refused
    assert "bad.json refused" in running.stderr
    from_stdin = lines[-2]
    assert from_stdin["file"] == "-" and from_stdin["id"] == "order-17" and from_stdin["index"] == 0
    assert [(r["file"], r["index"]) for r in lines[:15]] == [(f, i) for f in files for i in range(5)]
    for r in lines[:-1]:
        assert len(r["probabilities"]) == 3 and abs(sum(r["probabilities"]) - 1) < 1e-5
        assert r["predicted"] == int(np.argmax(r["probabilities"])) and r["confidence"] == max(r["probabilities"])

    # The same numbers as the engine's own prediction from that checkpoint.
    settings = load_settings(tmp_path / "plasticd.toml", None)  # the engine needs only the model's sections
    store = CheckpointStore(tmp_path / "checkpoints")
    loaded = store.load(lines[0]["checkpoint"])
    engine = engine_from(settings, loaded, device="cpu")
    x = np.concatenate([np.atleast_2d(json.loads(Path(f).read_text())["x"]) for f in files] + [np.array([x_stdin])])
    probs = torch.softmax(engine.predict_logits(torch.from_numpy(x.astype(np.float32))), dim=1).numpy()
    assert np.allclose(probs, [r["probabilities"] for r in lines[:-1]], atol=1e-5)

    # Stopped daemon: predict again and compare every file the daemon owns, byte for byte, before and after.
    before = tree_state(tmp_path / "checkpoints", tmp_path / "state", tmp_path / "data_work", tmp_path / "data_processed")
    again = plasticd(tmp_path, "predict", *files)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == running.stdout.splitlines()[:15]
    after = tree_state(tmp_path / "checkpoints", tmp_path / "state", tmp_path / "data_work", tmp_path / "data_processed")
    assert after == before


def test_predict_usage_and_missing_model(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert plasticd(tmp_path, "predict").returncode == 2  # no FILE: usage
    helped = plasticd(tmp_path, "predict", "--help")
    assert helped.returncode == 0 and "read-only" in helped.stdout
    drop(tmp_path, "a.json", json.dumps({"x": [0.0] * DIM}))
    nothing = plasticd(tmp_path, "predict", str(tmp_path / "a.json"))
    assert nothing.returncode == 1 and "no checkpoint folder" in nothing.stderr
    assert not (tmp_path / "checkpoints").exists()  # looking created nothing
