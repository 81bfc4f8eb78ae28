"""Views of history that tell the truth (issue 20, section 3): every checkpoint listed with its state, the
records a rollback abandoned honoured by every reader, tiered retention without duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import drop, plasticd, sample_json, write_config


def _two_ingests(root: Path, files: int, seed: int) -> None:
    """Two ingests of ``files`` 5-sample files each (folders todo-a, todo-b), a checkpoint every 20 samples, 10 kept."""
    write_config(root, "\n[limits]\nmax_file_bytes = 20000\n")
    cfg = root / "plasticd.toml"
    cfg.write_text(cfg.read_text().replace("every_samples = 50\n", "every_samples = 20\nkeep = 10\n"))
    rng = np.random.default_rng(seed)
    for tag in "ab":
        for i in range(files):
            drop(root / f"todo-{tag}", f"{tag}{i:02d}.json", sample_json(rng, 5))
        done = plasticd(root, "ingest", f"todo-{tag}", "--to", f"done-{tag}", "--no-progress")
        assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_checkpoints_lists_every_checkpoint_with_its_state(tmp_path: Path) -> None:
    _two_ingests(tmp_path, 20, seed=0)
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
    assert all("samples" in rows[s]["before"] for s in seqs[2:]), "each row says what came before it"
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


def _record(seq: int, correct: bool) -> dict:
    return {"id": f"c/{seq}#0", "seq": seq, "predicted": 1, "label": 1 if correct else 0, "correct": correct, "loss": 0.1}


def test_the_report_leaves_out_what_a_rollback_abandoned(tmp_path: Path) -> None:
    from plasticd.report.curves import build
    from plasticd.report.events import LogEvent, LogEvents
    from plasticd.report.journal import read_journal

    journal = tmp_path / "predictions.jsonl"
    lines = [_record(s, correct=s < 300) for s in range(600)]  # the run after checkpoint 3 went wrong from 300 on
    lines.append({"rollback": {"from_seq": 300, "rollback_of": 3, "checkpoint": 9, "t": 1e9}})
    lines += [_record(s, correct=True) for s in range(300, 400)]  # the new run after the rollback
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bins = read_journal(journal)
    assert bins.records == 400 and bins.abandoned == 300 and bins.skipped == 0
    assert [m["from_seq"] for m in bins.rollbacks] == [300]
    log = LogEvents(None, [
        LogEvent("plasticity.rewired", t=1e9 - 10, samples=450),  # in the abandoned run: not drawn
        LogEvent("plasticity.rewired", t=1e9 - 20, samples=200),  # before the rolled-back-to checkpoint: kept
        LogEvent("plasticity.rewired", t=1e9 + 10, samples=350),  # in the new run: kept
    ])  # fmt: skip
    curves = build(bins, log, [])
    assert sorted(curves.marks["plasticity.rewired"]) == [200.0, 350.0]
    assert curves.samples == 400
    assert float(curves.x[-1]) < 400, "the axis runs past what the model saw"
    assert curves.prequential[-1] == pytest.approx(1.0)  # the new run's accuracy, not the abandoned one's
    assert list(curves.marks["rollback"]) == [300.0]


@pytest.mark.slow
def test_rollback_marks_the_journal(tmp_path: Path) -> None:
    _two_ingests(tmp_path, 10, seed=1)
    listed = json.loads(plasticd(tmp_path, "checkpoints", "--json").stdout)["checkpoints"]
    target = listed[0]
    back = plasticd(tmp_path, "rollback", str(target["seq"]))
    assert back.returncode == 0, back.stderr
    journal = (tmp_path / "state" / "predictions.jsonl").read_text().splitlines()
    (marker,) = [json.loads(line)["rollback"] for line in journal if line.startswith('{"rollback":')]
    assert marker["from_seq"] == target["samples_seen"] and marker["rollback_of"] == target["seq"]
    assert json.loads(journal[-1]) == {"rollback": marker}


def _entries(spec: list[tuple[int, float, int | None]]) -> list:
    """(seq, hours before 2026-01-08T00:00Z, samples) -> retention entries, oldest first, 100 bytes each."""
    from datetime import UTC, datetime, timedelta

    from plasticd.service.retention import Entry

    end = datetime(2026, 1, 8, tzinfo=UTC)
    return [Entry(seq, (end - timedelta(hours=h)).isoformat(), 100, samples) for seq, h, samples in spec]


def test_tiered_retention_keeps_recent_hourly_and_daily_without_duplicates() -> None:
    from plasticd.service.retention import Retention, keep_plan

    # a week of checkpoints, one every 20 minutes, then an idle pair at the same sample count
    spec = [(i + 1, 7 * 24 - i / 3, i * 100) for i in range(7 * 24 * 3)]
    last = spec[-1][0]
    spec += [(last + 1, 0.0, spec[-1][2] + 50), (last + 2, 0.0, spec[-1][2] + 50)]  # two saves, same samples
    entries = _entries(spec)
    kept = keep_plan(entries, Retention(keep=3, hourly=24, daily=7))
    assert {last + 2, last + 1, last} <= kept  # the newest three, as they are
    assert len(kept) <= 3 + 24 + 7 and len(kept) >= 3 + 20
    oldest = min(kept)
    assert oldest <= 73, "rollback must reach back six days and more, not minutes"  # seq 73: 144 h before the end
    samples = [e.samples for e in entries if e.seq in kept and e.seq < last]
    assert len(samples) == len(set(samples)), "a duplicate in the tiers"
    # an older pair at one sample count: only the newer of the two can fill its hour
    dup = _entries([(1, 30.0, 10), (2, 29.9, 10), (3, 0.2, 20), (4, 0.1, 30), (5, 0.0, 40)])
    assert keep_plan(dup, Retention(keep=3, hourly=48)) == {2, 3, 4, 5}
    # a byte budget drops the oldest first, never the newest
    assert keep_plan(dup, Retention(keep=3, hourly=48, max_bytes=250)) == {4, 5}
    assert keep_plan(dup, Retention(keep=1, max_bytes=10)) == {5}
