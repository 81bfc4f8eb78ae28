"""``plasticd export``: a self-contained model file whose standalone loader predicts what the engine predicts."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import Daemon, drop, files_in, sample_json, wait_until, write_config
from safetensors import safe_open

from plasticd.config import load_settings
from plasticd.service.checkpoint_store import CheckpointStore
from plasticd.tools import loader
from plasticd.tools.saved import engine_from

LOADER = Path(loader.__file__)


def plasticd(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def standalone_proba(model: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    """The probabilities from a copy of loader.py run in a fresh interpreter where plasticd cannot be imported."""
    folder = tmp / "elsewhere"
    folder.mkdir()
    shutil.copy(LOADER, folder / "loader.py")
    np.save(folder / "x.npy", x)
    script = (
        "import sys; sys.modules['plasticd'] = None; sys.path.insert(0, sys.argv[1])\n"
        "import numpy as np, loader\n"
        "m = loader.load(sys.argv[2]); np.save(sys.argv[1] + '/p.npy', m.predict_proba(np.load(sys.argv[1] + '/x.npy')))\n"
        "assert not any(name.startswith('plasticd') and sys.modules[name] for name in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(model)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return np.load(folder / "p.npy")


def engine_proba(root: Path, seq: int, x: np.ndarray, *overrides: dict) -> np.ndarray:
    settings = load_settings(root / "plasticd.toml", overrides[0] if overrides else None)
    engine = engine_from(settings, CheckpointStore(root / "checkpoints").load(seq), device="cpu")
    return torch.softmax(engine.predict_logits(torch.from_numpy(x)), dim=1).numpy()


def test_the_loader_needs_nothing_from_plasticd() -> None:
    tree = ast.parse(LOADER.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "json", "dataclasses", "pathlib", "typing", "numpy", "safetensors"}, imported


def test_export_from_a_daemon_run_round_trips_through_the_standalone_loader(tmp_path: Path) -> None:
    write_config(tmp_path)
    rng = np.random.default_rng(2)
    daemon = Daemon(tmp_path)
    try:
        for i in range(30):
            drop(tmp_path / "data_inbox", f"s{i:02d}.json", sample_json(rng, n=8))
        wait_until(lambda: len(files_in(tmp_path / "data_processed")) == 30, 60, f"30 files processed\n{daemon.tail()}")
        out = tmp_path / "models" / "model.safetensors"
        out.parent.mkdir()  # export never creates folders (issue 20)
        exported = plasticd(tmp_path, "export", str(out))  # read-only: fine while the daemon runs
    finally:
        code = daemon.stop()
    assert code == 0
    assert exported.returncode == 0, exported.stderr
    with safe_open(str(out), framework="numpy") as f:
        header = json.loads(f.metadata()["plasticd"])
        names = set(f.keys())  # noqa: SIM118 - a safe_open handle
    assert names == {"w_in", "b_in", "w", "w_out", "b_out", "mask", "norm.mean", "norm.var"}
    assert header["format"] == "plasticd-model" and header["version"] == 1
    assert header["architecture"] == {"input_dim": 8, "classes": 3, "neurons": 32, "iterations": 2, "activation": "relu"}
    assert header["normalization"] == {"kind": "standardize", "eps": 0.01}
    seq = header["source"]["checkpoint"]

    # Real inputs: the samples the daemon learned from, every one of them.
    x = np.concatenate([np.atleast_2d(json.loads(p.read_text())["x"]) for p in files_in(tmp_path / "data_processed")])
    x = x.astype(np.float32)
    expected = engine_proba(tmp_path, seq, x)
    got = standalone_proba(out, x, tmp_path)
    assert got.shape == (240, 3)
    assert np.abs(got - expected).max() < 1e-5
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.99
    assert np.allclose(loader.load(out).predict_proba(x[0]), expected[:1], atol=1e-5)  # one sample (D,) too

    refused = plasticd(tmp_path, "export", str(out))
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert plasticd(tmp_path, "export", str(out), "--force", "--checkpoint", str(seq)).returncode == 0


def test_export_of_a_fashion_mnist_model_matches_the_engine_on_test_images(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    """The stream demo's model (784 inputs, tanh, the live or average copy, whichever predicts) on real images."""
    (tmp_path / "plasticd.toml").write_text(
        f'[paths]\ndataset = "{fashion_mnist_dir}"\n[model]\nneurons = 48\niterations = 3\nactivation = "tanh"\n'
        '[runtime]\ndevice = "cpu"\nthreads = 1\n[log]\nformat = "json"\nlevel = "warning"\n'
    )
    ran = plasticd(tmp_path, "run", "--source", "fashion-mnist", "--limit", "600")
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = tmp_path / "fm.safetensors"
    assert plasticd(tmp_path, "export", str(out)).returncode == 0
    from plasticd.data.fashion_mnist import load_split

    test = load_split(fashion_mnist_dir, "test")
    x = np.ascontiguousarray(test.x[:1000], dtype=np.float32)
    model = loader.load(out)
    assert model.header["architecture"]["activation"] == "tanh" and model.input_dim == 784
    expected = engine_proba(tmp_path, model.header["source"]["checkpoint"], x)
    got = standalone_proba(out, x, tmp_path)
    assert np.abs(got - expected).max() < 1e-5
    assert (got.argmax(1) == test.y[:1000]).mean() > 0.5  # it learned something real
