"""POST /predict: the live model's answers, from the snapshot the worker publishes, as ``plasticd predict`` prints them."""

from __future__ import annotations

import http.client
import io
import json
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Daemon, drop, files_in, small_settings, toy_data, wait_until, worker_around, write_config
from test_metrics_endpoint import scrape

from plasticd import cli
from plasticd.learn.engine import Engine
from plasticd.service.prometheus import Exporter

DIM = 12  # small_settings' input width


def post(port: int, body: bytes, headers: dict | None = None, method: str = "POST") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, "/predict", body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def doc(rng: np.random.Generator, n: int = 1, **extra: object) -> bytes:
    x = rng.normal(size=(n, DIM)).round(4)
    return json.dumps({"x": x[0].tolist() if n == 1 else x.tolist(), **extra}).encode()


def predict_cli(root: Path, body: bytes, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``plasticd predict -`` in this process on ``body``: its stdout."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    capsys.readouterr()
    code = cli.main(["predict", "-", "--config", str(root / "plasticd.toml")])
    out = capsys.readouterr().out
    assert code == 0, out
    return out.encode()


@pytest.fixture
def live(tmp_path: Path):
    """An exporter with POST /predict around a real worker whose engine learned a little, on a free port."""
    settings = small_settings(metrics={"enabled": True, "port": 0})
    engine = Engine.from_settings(settings)
    x, y = toy_data(40)
    engine.step(x, y)
    worker = worker_around(settings, engine, tmp_path)
    now = [1000.0]
    exp = Exporter(worker, settings.metrics)
    exp.live.clock = lambda: now[0]
    exp.start()
    try:
        yield exp, worker, now
    finally:
        exp.stop()


def test_before_the_first_snapshot_the_answer_is_503_naming_the_reason(live) -> None:
    exp, _, _ = live
    status, _, body = post(exp.port, doc(np.random.default_rng(0)))
    assert status == 503 and json.loads(body)["error"]["reason"] == "not_ready"


def test_answers_are_the_engines_own_from_a_snapshot_that_later_learning_does_not_change(live) -> None:
    exp, worker, now = live
    rng = np.random.default_rng(1)
    body = doc(rng, n=5, id="order-17")
    x = torch.tensor(json.loads(body)["x"], dtype=torch.float32)
    worker.activity.unsaved_samples = 40  # learned, not saved: the answer names no checkpoint
    exp.live.on_turn()  # the worker's end of turn publishes the first snapshot
    expected = torch.softmax(worker.engine.predict_logits(x), dim=1).numpy()
    status, headers, answer = post(exp.port, body)
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in answer.decode().splitlines()]
    assert [r["index"] for r in lines] == list(range(5))
    assert all(r["file"] == "-" and r["id"] == "order-17" and r["checkpoint"] is None for r in lines)
    assert [r["predicted"] for r in lines] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose([r["probabilities"] for r in lines], expected, atol=1e-6)
    seen = worker.engine.metrics.seen
    # the worker learns on: the published snapshot is unchanged until the next publish
    xs, ys = toy_data(200, seed=5)
    for i in range(0, 200, 8):
        worker.engine.step(xs[i : i + 8], ys[i : i + 8])
    assert post(exp.port, body)[2] == answer
    assert worker.engine.metrics.seen == seen + 200  # only the worker's own steps: the requests were never learned from
    exp.live.on_batch(_learned())
    now[0] += 0.25
    assert post(exp.port, body)[1]["X-Plasticd-Lag-Ms"] == "250.000"  # the model changed 250 ms ago, the snapshot lags
    exp.live.on_turn()  # the queue is empty: published at once
    after = post(exp.port, body)[2]
    assert after != answer
    fresh = torch.softmax(worker.engine.predict_logits(x), dim=1).numpy()
    np.testing.assert_allclose([json.loads(line)["probabilities"] for line in after.decode().splitlines()], fresh, atol=1e-6)
    m = scrape(exp.port)
    assert m[("plasticd_live_predictions_total", ())] == 4 * 5
    assert m[("plasticd_live_requests_total", (("code", "200"),))] == 4
    assert m[("plasticd_live_requests_total", (("code", "400"),))] == 0  # exported before any refusal
    assert m[("plasticd_live_snapshot_seconds_count", ())] == 2
    assert m[("plasticd_live_snapshot_lag_seconds", ())] == 0.0
    assert m[("plasticd_live_request_seconds_count", ())] == 4


def snapshots(exp: Exporter) -> float:
    return scrape(exp.port)[("plasticd_live_snapshot_seconds_count", ())]


def _learned():
    from plasticd.service.pipeline import Outcome

    return Outcome(samples=8)


def test_while_the_queue_is_full_a_snapshot_is_published_at_most_every_snapshot_ms(live, tmp_path: Path) -> None:
    exp, worker, now = live
    exp.live.on_turn()
    assert snapshots(exp) == 1
    for i in range(3):  # a backlog in the inbox: not empty, so the throttle holds
        drop(tmp_path / "inbox", f"b{i}.json", doc(np.random.default_rng(i)))
    worker.feed.scan()
    exp.live.on_batch(_learned())
    exp.live.clone_seconds = 0.0  # as if cloning were free: only metrics.snapshot_ms holds it back
    now[0] += 0.004
    exp.live.on_turn()
    assert exp.live.dirty and snapshots(exp) == 1
    now[0] += 0.002  # 6 ms > metrics.snapshot_ms (5)
    exp.live.on_turn()
    assert not exp.live.dirty and snapshots(exp) == 2
    # a clone that took 1 ms: the next one waits 20 ms (the worker spends at most 1/20 of its time cloning)
    exp.live.on_batch(_learned())
    exp.live.clone_seconds = 0.001
    now[0] += 0.010
    exp.live.on_turn()
    assert exp.live.dirty and snapshots(exp) == 2
    now[0] += 0.011
    exp.live.on_turn()
    assert not exp.live.dirty and snapshots(exp) == 3


@pytest.mark.parametrize(
    ("body", "headers", "method", "status", "reason"),
    [
        (b'{"x": [1, 2]}', {}, "POST", 400, "wrong_length"),
        (b'{"x": [1, 2', {}, "POST", 400, "truncated"),
        (b'{"x": [' + b"1," * 11 + b'1], "x": [1]}', {}, "POST", 400, "duplicate_key"),
        (b"", {}, "POST", 400, "empty"),
        (b"{}", {"Content-Type": "text/plain"}, "POST", 415, "unsupported_media_type"),
        (b"", {}, "GET", 405, "method_not_allowed"),
    ],
)
def test_a_refused_request_is_a_4xx_json_line_naming_the_reason(live, body, headers, method, status, reason) -> None:
    exp, worker, _ = live
    exp.live.on_turn()
    got, _, answer = post(exp.port, body, headers, method)
    refusal = json.loads(answer)
    assert got == status and refusal["file"] == "-" and refusal["error"]["reason"] == reason, answer
    assert scrape(exp.port)[("plasticd_live_requests_total", (("code", str(status)),))] == 1


def raw(port: int, request: bytes) -> str:
    """Send ``request`` as is; everything the server answers before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_an_oversized_body_is_refused_from_its_declared_length_before_it_is_read(live) -> None:
    exp, _, _ = live
    exp.live.on_turn()
    over = exp.live.limits.max_file_bytes + 1
    # the header announces one byte over the cap and no body follows: an answer proves nothing was waited for
    reply = raw(exp.port, f"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {over}\r\n\r\n".encode())
    assert " 413 " in reply.split("\r\n")[0], reply
    assert json.loads(reply.split("\r\n\r\n", 1)[1])["error"]["reason"] == "too_large"
    reply = raw(exp.port, b"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\n\r\n{}")
    assert " 411 " in reply.split("\r\n")[0] and "length_required" in reply


def test_predict_can_be_switched_off(tmp_path: Path) -> None:
    settings = small_settings(metrics={"enabled": True, "port": 0, "predict": False})
    worker = worker_around(settings, Engine.from_settings(settings), tmp_path)
    exp = Exporter(worker, settings.metrics)
    exp.start()
    try:
        exp.live.on_turn()
        status, _, body = post(exp.port, doc(np.random.default_rng(0)))
    finally:
        exp.stop()
    assert status == 503 and json.loads(body)["error"]["reason"] == "predict_disabled"


def test_once_saved_the_answer_names_the_checkpoint_and_is_the_bytes_plasticd_predict_prints(
    live, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, worker, _ = live
    worker.activity.unsaved_changes = True
    saved = worker.checkpoint("test")
    assert saved is not None
    exp.live.on_turn()  # the save marked the snapshot out of date: it now names the checkpoint
    body = doc(np.random.default_rng(7), n=3, id="a-1")
    status, _, answer = post(exp.port, body)
    assert status == 200 and all(json.loads(line)["checkpoint"] == saved.seq for line in answer.decode().splitlines())
    (tmp_path / "plasticd.toml").write_text(
        f'[paths]\ncheckpoints = "{tmp_path / "checkpoints"}"\n'
        '[model]\nneurons = 24\niterations = 3\ninput_dim = 12\nnum_classes = 4\n[runtime]\ndevice = "cpu"\nseed = 0\n'
        "[plasticity]\ninterval = 0\nmin_age = 0\nbuffer_size = 32\n"
    )
    assert predict_cli(tmp_path, body, capsys, monkeypatch) == answer


# ------------------------------------------------------------------ the real daemon, under load


def _answers(port: int, bodies: list[bytes], out: list, threads: int) -> None:
    """POST every body from ``threads`` threads; (status, body, samples trained) of each appended to ``out``, in order."""
    results: list = [None] * len(bodies)

    def client(k: int) -> None:
        for i in range(k, len(bodies), threads):
            status, headers, answer = post(port, bodies[i])
            results[i] = (status, answer, headers.get("X-Plasticd-Samples-Trained"))

    pool = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    out.extend(results)


@pytest.mark.slow
def test_under_load_while_it_learns_every_answer_is_plasticd_predict_on_the_checkpoint_it_names(tmp_path: Path) -> None:
    """A bounded load test on loopback: 4 client threads send 160 requests while a producer drops 300 files (the daemon
    learns them meanwhile), then 40 once it is quiet; every answer that names a checkpoint is byte for byte
    ``plasticd predict --checkpoint SEQ`` on the same body."""
    from helpers import DIM as DAEMON_DIM
    from helpers import sample_json
    from test_tools_predict import plasticd

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, f"[metrics]\nenabled = true\nport = {port}\n")
    text = config.read_text().replace("[checkpoint]\n", "[checkpoint]\nkeep = 100\n", 1)  # every checkpoint stays
    config.write_text(text.replace("idle_seconds = 0.5", "idle_seconds = 3600", 1))  # no idle maintenance: quiet is quiet
    rng = np.random.default_rng(11)
    files = [sample_json(rng, n=2) for _ in range(300)]
    bodies = [json.dumps({"x": rng.normal(size=(1 + i % 3, DAEMON_DIM)).round(4).tolist()}).encode() for i in range(200)]
    d = Daemon(tmp_path)
    busy: list = []
    quiet: list = []
    try:
        d.wait_for_event("metrics.listening")
        wait_until(lambda: post(port, bodies[0])[0] == 200, 60, f"the first snapshot\n{d.tail()}")
        producer = threading.Thread(
            target=lambda: [drop(tmp_path / "data_inbox", f"s{i:03d}.json", text) for i, text in enumerate(files)]
        )
        producer.start()
        _answers(port, bodies[:160], busy, threads=4)
        producer.join(timeout=120)
        wait_until(lambda: len(files_in(tmp_path / "data_processed")) == 300, 120, f"the backlog learned\n{d.tail()}")
        wait_until(lambda: json.loads(post(port, bodies[0])[2].splitlines()[0])["checkpoint"] is not None, 30, "quiet, saved")
        _answers(port, bodies[160:], quiet, threads=4)
        m = scrape(port)
    finally:
        code = d.stop()
    assert code == 0, d.tail()
    assert len({trained for _, _, trained in busy}) > 1, "the model never changed during the load"
    assert all(r is not None and r[0] == 200 for r in busy + quiet), [r for r in busy + quiet if r is None or r[0] != 200][:3]
    named: dict[int, list[int]] = {}
    for i, (_, answer, _) in enumerate(busy + quiet):
        records = [json.loads(line) for line in answer.decode().splitlines()]
        assert [r["index"] for r in records] == list(range(1 + i % 3))
        assert len({r["checkpoint"] for r in records}) == 1
        if records[0]["checkpoint"] is not None:
            named.setdefault(records[0]["checkpoint"], []).append(i)
    final = {json.loads(a.decode().splitlines()[0])["checkpoint"] for _, a, _ in quiet}
    assert len(final) == 1 and None not in final, final  # quiet: every answer from the one saved model
    for seq, indices in named.items():  # one predict process per checkpoint, every body it answered at once
        files = []
        for i in indices:
            files.append(tmp_path / f"q{i:03d}.json")
            files[-1].write_bytes(bodies[i])
        run = plasticd(tmp_path, "predict", "--checkpoint", str(seq), *map(str, files))
        assert run.returncode == 0, run.stderr
        by_file: dict[str, list[str]] = {}
        for line in run.stdout.splitlines():
            record = json.loads(line)
            by_file.setdefault(record.pop("file"), []).append(json.dumps({"file": "-", **record}, separators=(",", ":")))
        for i, path in zip(indices, files, strict=True):
            assert (busy + quiet)[i][1].decode() == "".join(line + "\n" for line in by_file[str(path)]), (seq, i)
    assert m[("plasticd_live_predictions_total", ())] >= sum(1 + i % 3 for i in range(200))
    assert m[("plasticd_samples_seen_total", ())] == 600  # the 300 files' samples: no request was learned from
