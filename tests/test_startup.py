"""Start-up imports only what a command needs: no torch._dynamo, no scipy on the daemon's paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from plasticd.config import DriftSettings
from plasticd.learn.drift import make_detector

HEAVY = ("torch._dynamo", "scipy", "sympy", "river.drift")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_engine_learning_imports_neither_dynamo_nor_scipy() -> None:
    loaded = _modules_after(
        "import torch\n"
        "import plasticd.cli\n"
        "from plasticd.config import Settings\n"
        "from plasticd.learn.engine import Engine\n"
        "e = Engine.from_settings(Settings(), device='cpu')\n"
        "e.step(torch.rand(3, 784), [1, 2, -1])\n"
        "e.state()\n"
    )
    assert "plasticd.learn.engine" in loaded and "river._river_rust" in loaded  # the check saw a real step with ADWIN
    assert not [m for m in HEAVY if m in loaded]


def test_ingest_of_an_empty_folder_imports_neither_dynamo_nor_scipy(tmp_path: Path) -> None:
    (tmp_path / "todo").mkdir()
    args = ["ingest", str(tmp_path / "todo"), "--to", str(tmp_path / "done"), "--set", f"paths.root={tmp_path}"]
    loaded = _modules_after(
        f"import sys\nsys.argv = ['plasticd'] + {args!r} + ['--no-progress', '--log-level', 'error']\n"
        "from plasticd.cli import main\n"
        "assert main() == 0\n"
    )
    assert "plasticd.service.worker" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_adwin_detects_where_rivers_adwin_does() -> None:
    from river.drift import ADWIN

    rng = np.random.default_rng(0)
    errors = np.concatenate([rng.random(3000) < p for p in (0.1, 0.5, 0.2, 0.6)]).astype(float)
    ours, theirs = make_detector(DriftSettings(detector="adwin", delta=0.002)), ADWIN(delta=0.002)
    hits_ours, hits_theirs = [], []
    for i, e in enumerate(errors.tolist()):
        ours.update(e)
        theirs.update(e)
        assert ours.width == theirs.width
        if ours.drift_detected:
            hits_ours.append(i)
        if theirs.drift_detected:
            hits_theirs.append(i)
    assert len(hits_theirs) >= 3 and hits_ours == hits_theirs
