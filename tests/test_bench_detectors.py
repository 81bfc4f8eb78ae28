"""plasticd bench detectors: detectors scored on the same prequential errors, hits, delays and false alarms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from plasticd.bench.detectors import DETECTORS, alarms_of, tally
from plasticd.config import load_settings


def test_tally_counts_hits_delays_misses_and_false_alarms() -> None:
    t = tally([120, 140, 2100, 5000], drifts=(100, 3000), window=1000)
    assert (t.hits, t.missed, t.false, t.delays) == (1, 1, 2, [20])
    gradual = tally([2500, 9000], drifts=(3000,), window=1000, lead=1000)  # a gradual change is found before its centre
    assert (gradual.hits, gradual.false, gradual.delays) == (1, 1, [-500])


def test_the_rise_rule_silences_adwin_on_a_learning_curve_but_not_on_a_change() -> None:
    rng = np.random.default_rng(0)
    settings = load_settings()
    learning = np.concatenate([rng.random(2000) < 0.5, rng.random(8000) < 0.1]).astype(np.float64)
    assert alarms_of("adwin-raw", learning, settings), "ADWIN cuts its window when the error falls"
    assert alarms_of("adwin", learning, settings) == [], "plasticd only alarms on a rise"
    change = np.concatenate([rng.random(8000) < 0.1, rng.random(2000) < 0.5]).astype(np.float64)
    found = alarms_of("adwin", change, settings)
    assert len(found) == 1 and 8000 <= found[0] < 8200


def test_a_tiny_run_scores_every_detector_on_every_stream(tmp_path: Path) -> None:
    out = tmp_path / "detectors.json"
    result = subprocess.run(
        [sys.executable, "-m", "plasticd", "bench", "detectors", "--streams", "sine-abrupt", "control",
         "--samples", "1200", "--window", "300", "--json", str(out), "--set", "model.neurons=16"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data["streams"]) == {"sine-abrupt", "control"}
    assert data["streams"]["control"]["drifts"] == [] and len(data["streams"]["sine-abrupt"]["drifts"]) == 3
    for d in DETECTORS:
        s = data["summary"][d]
        assert s["hits"] + s["missed"] == 3, "every known change is either found or missed"
        assert s["false"] >= data["streams"]["control"][d]["false"] == len(data["streams"]["control"][d]["alarms"])
    assert "| `adwin` |" in result.stdout
