"""checkpoint.max_time_share: under a backlog, sample-count checkpoints wait for the last save's cost to be
a small share of the time since; every file still ends covered and moved, once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import sample_json, write_config

from plasticd.config import load_settings
from plasticd.service.daemon import run_ingest


def _ingest(tmp_path: Path, share: float) -> tuple[list[dict], list[str]]:
    rng = np.random.default_rng(0)
    todo = tmp_path / "todo"
    todo.mkdir()
    for i in range(120):
        (todo / f"s{i:04d}.json").write_text(sample_json(rng))
    config = write_config(tmp_path)
    settings = load_settings(
        config,
        {
            "paths": {"root": str(tmp_path)},
            "checkpoint": {"every_samples": 10, "max_time_share": share},
            "train": {"max_batch": 1},
        },
    )
    run_ingest(settings, todo, tmp_path / "done", progress=False)
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "checkpoints").glob("ckpt-*.json"))]
    return metas, sorted(p.name for p in (tmp_path / "done").iterdir())


@pytest.mark.parametrize("share", [0.0, 1e-9])
def test_sample_checkpoints_are_held_back_by_the_time_share_and_nothing_is_lost(tmp_path: Path, share: float) -> None:
    metas, done = _ingest(tmp_path, share)
    assert done == [f"s{i:04d}.json" for i in range(120)]  # every file learned and moved, none twice
    seqs, reasons = [m["seq"] for m in metas], [m["meta"]["reason"] for m in metas]
    if share == 0.0:  # no bound: one save per 10 samples (whichever of them retention kept)
        assert seqs[-1] == 12 and set(reasons) == {"samples"}
    else:  # a save can never cost a 1e-9 share of the time since it began: after the first, only the final one
        assert seqs[-2:] == [1, 2] and reasons[-2:] == ["samples", "shutdown"]
