"""kill -9 at random moments, restart, and check the daemon's own records: nothing lost, nothing trained twice."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from plasticd.samples import decode_file
from tests.helpers import CLASSES, DIM, Daemon, drop, files_in, predictions, wait_until, write_config

pytestmark = pytest.mark.slow

KILLS = 12
FILES = 3000


def _prefill(inbox: Path, rng: np.random.Generator) -> tuple[dict[str, int], dict[str, int]]:
    """Files of 1-3 samples, some unlabelled, 1 in 50 broken. Returns samples and labelled samples per good file."""
    samples, labelled = {}, {}
    for i in range(FILES):
        name = f"f{i:05d}.json"
        if i % 50 == 49:
            drop(inbox, name, '{"x": [1, 2')
            continue
        n = 1 + i % 3
        x = rng.normal(size=(n, DIM)).round(3)
        y = [int(v) if i % 5 else None for v in rng.integers(0, CLASSES, n)]
        drop(inbox, name, json.dumps({"x": x.tolist(), "y": y}))
        samples[name], labelled[name] = n, sum(v is not None for v in y)
    return samples, labelled


def test_kill_9_at_random_moments_loses_nothing_and_trains_each_sample_once(tmp_path: Path) -> None:
    write_config(tmp_path)
    cfg = tmp_path / "plasticd.toml"
    cfg.write_text(cfg.read_text().replace("every_samples = 50", "every_samples = 40"))  # many checkpoint writes to hit
    rng = np.random.default_rng(11)
    expected_samples, expected_labelled = _prefill(tmp_path / "data_inbox", rng)
    chance = random.Random(5)
    seen: Counter[str] = Counter()
    for k in range(KILLS):
        d = Daemon(tmp_path)
        if k % 3 == 2:  # sometimes during start-up: loading, recovery moves, the first scan
            time.sleep(chance.uniform(0.5, 2.5))
        else:
            d.wait_for_event("daemon.ready", timeout=120)
            time.sleep(chance.uniform(0.0, 0.8))
        d.kill()  # SIGKILL: no handler runs
        for e in d.events():
            seen[e["event"]] += 1
    final = Daemon(tmp_path)
    try:
        final.wait_for_event("daemon.ready", timeout=120)
        work = tmp_path / "data_work"
        wait_until(
            lambda: (
                not files_in(tmp_path / "data_inbox")
                and not [p for p in work.rglob("*") if p.is_file() and p.name not in ("OWNER", "session.json")]
            ),
            180,
            "inbox and work area drained",
        )
    finally:
        exit_code = final.stop(signal.SIGTERM)
    assert exit_code == 0, final.tail()
    for e in final.events():
        seen[e["event"]] += 1

    processed = {p.name for p in files_in(tmp_path / "data_processed")}
    failed = {p.name for p in files_in(tmp_path / "data_failed") if not p.name.endswith(".error.json")}
    everything = {f"f{i:05d}.json" for i in range(FILES)}
    assert processed | failed == everything, "a file was lost"
    assert not processed & failed, "a file is in two places"
    assert processed == set(expected_samples), "a good file was quarantined or a bad one processed"
    # exactly-once training, from the model's own counters in its last checkpoint
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["samples_trained"] == sum(expected_labelled.values())
    assert status["samples_seen"] == sum(expected_samples.values())
    # what is in data_processed is what was learned (the files are intact)
    recount = sum(int((decode_file(tmp_path / "data_processed" / n, DIM, CLASSES).y >= 0).sum()) for n in processed)
    assert recount == status["samples_trained"]
    # every sample has a prediction; re-emitted ones carry the same id
    ids = {p["id"] for p in predictions(tmp_path)}
    assert len(ids) == sum(expected_samples.values())
    print(
        f"\nkill -9 points: {KILLS}; events across runs: "
        + json.dumps({k: seen[k] for k in sorted(seen) if k.split(".")[0] in ("checkpoint", "recovery")})
    )
