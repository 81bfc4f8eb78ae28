"""Per-file results (issue 13, item 2): the producer's id echoed, ``<final name>.pred.json`` next to processed files."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from plasticd.errors import SampleError
from plasticd.samples import decode_bytes
from plasticd.service import results as results_module
from plasticd.service.claims import Claimer, WorkArea
from plasticd.service.predictions import PredictionWriter
from plasticd.service.results import RESULT_SUFFIX, PendingResults
from tests.helpers import DIM, Daemon, drop, files_in, predictions, sample_json, wait_until, work_files, write_config

ROW = [0.5, -1.0, 2.0, 3.0]
ON = {"PLASTICD_DAEMON__RESULT_FILES": "true"}


def decode(data: bytes, suffix: str = ".json"):
    return decode_bytes(data, suffix, 4, 3)


def reason(data: bytes, suffix: str = ".json") -> str:
    with pytest.raises(SampleError) as caught:
        decode(data, suffix)
    return caught.value.reason


# --- the id in every format ------------------------------------------------------------------------------------


def test_json_ids_one_for_the_file_or_one_per_sample() -> None:
    assert decode(json.dumps({"x": ROW}).encode()).ids is None
    assert decode(json.dumps({"x": ROW, "id": "order-17"}).encode()).ids == ("order-17",)
    assert decode(json.dumps({"x": [ROW, ROW], "id": "batch-3"}).encode()).ids == ("batch-3", "batch-3")
    assert decode(json.dumps({"x": [ROW, ROW], "y": [0, 1], "id": ["a", "b"]}).encode()).ids == ("a", "b")
    assert decode(json.dumps({"x": ROW, "id": ["only"]}).encode()).ids == ("only",)


def test_bad_ids_are_refused_with_a_reason() -> None:
    assert reason(json.dumps({"x": [ROW, ROW], "id": ["a"]}).encode()) == "wrong_length"
    assert reason(json.dumps({"x": [ROW, ROW], "id": ["a", 2]}).encode()) == "wrong_dtype"
    assert reason(json.dumps({"x": ROW, "id": 7}).encode()) == "wrong_dtype"
    assert reason(json.dumps({"x": ROW, "id": {"a": 1}}).encode()) == "wrong_dtype"
    many = [ROW] * 5000
    assert reason(json.dumps({"x": many, "id": "i" * 300}).encode()) == "too_large"  # 1.5M characters echoed


def test_pt_and_npz_ids() -> None:
    buffer = io.BytesIO()
    torch.save({"x": torch.tensor([ROW, ROW]), "y": [0, 1], "id": ["p-1", "p-2"]}, buffer)
    assert decode(buffer.getvalue(), ".pt").ids == ("p-1", "p-2")
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([ROW, ROW]), id=np.array(["n-1", "n-2"]))
    assert decode(buffer.getvalue(), ".npz").ids == ("n-1", "n-2")
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([ROW, ROW]), id=np.array("file-id"))
    assert decode(buffer.getvalue(), ".npz").ids == ("file-id", "file-id")
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([ROW, ROW]), id=np.array([1, 2]))
    assert reason(buffer.getvalue(), ".npz") == "wrong_dtype"


# --- the result next to the file, crash-safe (in process) ------------------------------------------------------


def _claim_in(tmp_path: Path, name: str, content: bytes = b"{}"):
    work = WorkArea(tmp_path / "work", tmp_path / "failed", tmp_path / "ckpt")
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    session = work.open_session(inbox, tmp_path / "processed")
    (inbox / name).write_bytes(content)
    claim = Claimer(session).claim(inbox / name)
    assert claim is not None
    return claim


def _records(claim, n: int) -> list[dict]:
    return [
        {"id": f"{claim.key}#{i}", "claim": claim.key, "sample_id": f"s{i}", "index": i, "predicted": i % 3} for i in range(n)
    ]


def test_a_crash_between_the_result_and_the_move_is_finished_from_the_journal(tmp_path: Path, monkeypatch) -> None:
    """kill -9 after the result is placed and before the file is linked: the next run reuses the result it finds
    under the same name and moves the file there; nothing is overwritten, nothing is left alone."""
    processed = tmp_path / "processed"
    processed.mkdir()
    (processed / "same.json").write_text("an earlier file")  # taken: this claim goes to same~1.json
    claim = _claim_in(tmp_path, "same.json", b'{"x": [1]}')
    journal = PredictionWriter(tmp_path / "state" / "predictions.jsonl")
    journal.results = PendingResults(journal.path, journal.keep)
    journal.write(_records(claim, 3))
    real_link = results_module.link_new

    class Killed(BaseException):
        pass

    def link_then_die(src: Path, target: Path) -> None:
        if not target.name.endswith(RESULT_SUFFIX):
            raise Killed
        real_link(src, target)

    monkeypatch.setattr(results_module, "link_new", link_then_die)
    with pytest.raises(Killed):
        journal.results.move(claim, processed)
    assert (processed / "same~1.json.pred.json").exists() and not (processed / "same~1.json").exists()
    assert claim.path.exists()
    monkeypatch.setattr(results_module, "link_new", real_link)

    fresh = PendingResults(journal.path, journal.keep)  # the next process: nothing in memory
    fresh.recover([claim.key])
    assert [r["index"] for r in fresh.records[claim.key]] == [0, 1, 2]
    final = fresh.move(claim, processed)
    assert final == processed / "same~1.json" and final.read_bytes() == b'{"x": [1]}' and not claim.path.exists()
    result = json.loads((processed / "same~1.json.pred.json").read_text())
    assert result["processed"] == "same~1.json" and result["claim"] == claim.key and result["file"] == "same.json"
    assert [r["sample_id"] for r in result["predictions"]] == ["s0", "s1", "s2"]
    assert (processed / "same.json").read_text() == "an earlier file"
    assert sorted(p.name for p in processed.iterdir()) == ["same.json", "same~1.json", "same~1.json.pred.json"]
    journal.close()


def test_a_result_name_taken_by_someone_else_is_never_overwritten(tmp_path: Path) -> None:
    processed = tmp_path / "processed"
    processed.mkdir()
    (processed / "a.json.pred.json").write_text('{"claim": "not ours"}')  # a producer's own file
    claim = _claim_in(tmp_path, "a.json")
    results = PendingResults(tmp_path / "predictions.jsonl", 3)
    results.add(_records(claim, 1))
    assert results.move(claim, processed) == processed / "a~1.json"
    assert (processed / "a.json.pred.json").read_text() == '{"claim": "not ours"}'
    assert json.loads((processed / "a~1.json.pred.json").read_text())["predictions"][0]["sample_id"] == "s0"
    assert not (processed / "a.json").exists() and len(results) == 0


def test_journal_recovery_keeps_the_last_record_of_each_id(tmp_path: Path) -> None:
    """A file learned again after a crash has its records written twice with the same ids: the last ones count."""
    claim = _claim_in(tmp_path, "b.json")
    journal = tmp_path / "predictions.jsonl"
    first, again = _records(claim, 2), [{**r, "predicted": 9} for r in _records(claim, 2)]
    other = [{"id": "s0/00000001~x.json#0", "claim": "s0/00000001~x.json", "index": 0}]
    (tmp_path / "predictions.jsonl.1").write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in first))
    journal.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in other + again) + '{"id":"torn')
    results = PendingResults(journal, 3)
    results.recover([claim.key])
    assert [r["predicted"] for r in results.records[claim.key]] == [9, 9]
    assert "s0/00000001~x.json" not in results.records


# --- against the real daemon -----------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_config(tmp_path)
    return tmp_path


def _results(folder: Path) -> dict[str, dict]:
    return {p.name.removesuffix(RESULT_SUFFIX): json.loads(p.read_text()) for p in folder.glob(f"*{RESULT_SUFFIX}")}


@pytest.mark.slow
def test_daemon_echoes_ids_and_writes_a_result_next_to_each_processed_file(root: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, DIM)).round(4).tolist()
    d = Daemon(root, "--log-level", "debug", env=ON)
    try:
        d.wait_for_event("daemon.ready")
        drop(root / "data_inbox", "one.json", json.dumps({"x": x[0], "y": 1, "id": "order-17"}))
        drop(root / "data_inbox", "batch.json", json.dumps({"x": x, "y": [0, 1, 2], "id": ["b-0", "b-1", "b-2"]}))
        drop(root / "data_inbox", "plain.json", sample_json(rng, n=2))
        drop(root / "data_inbox", "same.json", json.dumps({"x": x[1], "id": "first"}))
        wait_until(lambda: (root / "data_processed" / "same.json").exists(), 60, "the first same.json processed")
        drop(root / "data_inbox", "same.json", json.dumps({"x": x[2], "id": "second"}))
        wait_until(lambda: len(files_in(root / "data_processed")) == 10, 60, "5 files and their 5 results")
    finally:
        exit_code = d.stop()
    assert exit_code == 0, d.tail()
    journal = predictions(root)
    by_file: dict[str, list[dict]] = {}
    for record in journal:
        by_file.setdefault(record["claim"], []).append(record)
    assert len(by_file) == 5  # the two same.json have two claims
    results = _results(root / "data_processed")
    assert sorted(results) == ["batch.json", "one.json", "plain.json", "same.json", "same~1.json"]
    for name, result in results.items():
        assert (root / "data_processed" / name).is_file() and result["processed"] == name
        assert result["predictions"] == by_file[result["claim"]], name  # the journal's records, exactly
    assert [r["sample_id"] for r in results["one.json"]["predictions"]] == ["order-17"]
    assert [r["sample_id"] for r in results["batch.json"]["predictions"]] == ["b-0", "b-1", "b-2"]
    assert [r["sample_id"] for r in results["plain.json"]["predictions"]] == [None, None]
    assert results["same.json"]["predictions"][0]["sample_id"] == "first"
    assert results["same~1.json"]["predictions"][0]["sample_id"] == "second"
    assert results["same.json"]["claim"] != results["same~1.json"]["claim"]
    assert {r["file"] for r in results["same~1.json"]["predictions"]} == {"same.json"}
    logged = [e for e in d.events() if e["event"] == "sample.processed"]
    assert sorted((e["id"], e["sample_id"]) for e in logged) == sorted((r["id"], r["sample_id"]) for r in journal)


@pytest.mark.slow
def test_without_the_setting_no_result_files_and_ids_still_echoed(root: Path) -> None:
    d = Daemon(root)
    try:
        d.wait_for_event("daemon.ready")
        drop(root / "data_inbox", "a.json", json.dumps({"x": [0.1] * DIM, "id": "tag"}))
        wait_until(lambda: files_in(root / "data_processed"), 60, "a.json processed")
    finally:
        assert d.stop() == 0, d.tail()
    assert [p.name for p in files_in(root / "data_processed")] == ["a.json"]
    assert [(r["sample_id"], r["file"]) for r in predictions(root)] == [("tag", "a.json")]


@pytest.mark.slow
def test_kill_9_never_leaves_a_file_without_its_result_or_a_result_without_its_file(root: Path) -> None:
    """Files flow while the daemon is killed at random moments (sometimes during the moves of a checkpoint);
    after a clean last run every processed file has its result, every result its file, with the journal's records."""
    rng, chance = np.random.default_rng(5), random.Random(5)
    names = [f"f{i:03d}.json" for i in range(60)]
    for i, name in enumerate(names):
        drop(root / "data_inbox", name, json.dumps({"x": rng.normal(size=DIM).round(4).tolist(), "y": i % 3, "id": name}))
    for _ in range(4):
        d = Daemon(root, env=ON)
        d.wait_for_event("daemon.ready", timeout=120)
        time.sleep(chance.uniform(0.0, 1.0))
        d.kill()
    final = Daemon(root, env=ON)
    try:
        final.wait_for_event("daemon.ready", timeout=120)
        wait_until(lambda: not files_in(root / "data_inbox") and not work_files(root), 180, "inbox and work area drained")
    finally:
        assert final.stop(signal.SIGTERM) == 0, final.tail()
    processed = root / "data_processed"
    files = {p.name for p in files_in(processed) if not p.name.endswith(RESULT_SUFFIX)}
    results = _results(processed)
    assert files == set(names) and set(results) == files, "a file or a result is missing or extra"
    assert not [p for p in processed.iterdir() if p.name.startswith(".")], "a temp file was left behind"
    last: dict[str, dict] = {}
    for record in predictions(root):
        last[record["id"]] = record
    for name, result in results.items():
        assert [r["sample_id"] for r in result["predictions"]] == [name]
        assert result["predictions"] == [last[r["id"]] for r in result["predictions"]]
    assert os.listdir(root / "data_failed") == []
