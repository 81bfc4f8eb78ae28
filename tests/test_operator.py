"""Issue 12 (an operable service): user errors are messages with exit codes, logs stay JSON, ingest/status tell the truth."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import structlog
import torch
from helpers import Daemon, drop, events_named, sample_json, small_settings, toy_data, write_config

from plasticd import cli, log
from plasticd.errors import CheckpointError, ConfigError
from plasticd.learn.engine import Engine
from plasticd.learn.plateau import PlateauDetector
from plasticd.model.growth import remap
from plasticd.service import heartbeat as heartbeat_module
from plasticd.service.daemon import check_separate


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_config(tmp_path)
    return tmp_path


def plasticd(root: Path, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args], cwd=root, capture_output=True, text=True, timeout=timeout, **kw
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def fill(folder: Path, n: int, seed: int, bad: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        drop(folder, f"s{seed}-{i:02d}.json", sample_json(rng))
    for i in range(bad):
        drop(folder, f"bad{seed}-{i}.json", "{not json")


# ---------------------------------------------------------------- item 5: separate folders


@pytest.mark.parametrize(
    ("folders", "said"),
    [
        ({"paths.inbox": Path("a"), "paths.processed": Path("a")}, "are the same folder"),
        ({"paths.inbox": Path("a"), "paths.failed": Path("a/failed")}, "paths.failed lies inside paths.inbox"),
        ({"paths.work": Path("x/w/../w"), "paths.state": Path("x/w")}, "are the same folder"),
    ],
)
def test_overlapping_folders_are_refused_naming_both_settings(folders: dict, said: str) -> None:
    with pytest.raises(ConfigError, match=said) as err:
        check_separate(folders)
    assert all(name in str(err.value) for name in folders)


def test_run_and_ingest_refuse_overlapping_folders_with_exit_code_2(root: Path) -> None:
    out = plasticd(root, "run", "--config", "plasticd.toml", "--set", "paths.processed=data_inbox")
    assert out.returncode == 2 and "paths.inbox" in out.stderr and "paths.processed" in out.stderr, out.stderr
    fill(root / "todo", 2, 1)
    out = plasticd(root, "ingest", "todo", "--to", "todo/done", "--config", "plasticd.toml")
    assert out.returncode == 2 and "FOLDER" in out.stderr and "--to" in out.stderr, out.stderr
    assert len(list((root / "todo").glob("*.json"))) == 2  # nothing was taken


# ---------------------------------------------------------------- item 11: user errors


def test_ingest_from_another_file_system_copies_then_claims(root: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        assert os.stat(other).st_dev != os.stat(root).st_dev
        fill(Path(other), 2, 2)
        out = plasticd(root, "ingest", other, "--config", "plasticd.toml")
        assert out.returncode == 0, out.stderr  # issue 20: copied, then claimed (it was refused before)
        assert "ingest.copying" in out.stderr and "Traceback" not in out.stderr
        assert os.listdir(other) == []  # each source removed once its copy was durable
        assert len(list((root / "done").glob("*.json"))) == 2


def test_a_folder_that_cannot_be_created_is_a_message_and_exit_1(root: Path) -> None:
    (root / "afile").write_text("x")
    fill(root / "todo", 1, 3)
    out = plasticd(root, "ingest", "todo", "--config", "plasticd.toml", "--set", "paths.checkpoints=afile/ckpt")
    assert out.returncode == 1 and "paths.checkpoints" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_an_empty_status_file_is_a_message(root: Path) -> None:
    (root / "state").mkdir()
    (root / "state" / "status.json").write_text("")
    out = plasticd(root, "status", "--config", "plasticd.toml")
    assert out.returncode == 1 and "is empty" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_device_cuda_without_a_gpu_is_a_usage_error(root: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(root)
    (root / "todo").mkdir()
    assert cli.main(["ingest", "todo", "--config", "plasticd.toml", "--device", "cuda"]) == 2
    assert "runtime.device is cuda" in capsys.readouterr().err


def test_a_corrupt_dataset_file_is_a_message_and_exit_1(root: Path) -> None:
    data = root / "fm"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage")[:-6])  # truncated
    out = plasticd(root, "run", "--source", "fashion-mnist", "--config", "plasticd.toml", "--set", f"paths.dataset={data}")
    assert out.returncode == 1 and "cannot be read" in out.stderr and "Traceback" not in out.stderr, out.stderr


# ---------------------------------------------------------------- item 8: logs jq can read


def test_library_warnings_and_logging_are_json_events() -> None:
    code = (
        "import logging, warnings\n"
        "from plasticd import log\n"
        "log.configure(fmt='json')\n"
        "warnings.warn('torch says so')\n"
        "logging.getLogger('apscheduler.executors.default').warning('Run time of job %r was missed by %s', 'tick', '0:00:02')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = json_lines(out.stderr)  # every line parses
    assert [e["event"] for e in lines] == ["python.warning", "library.log"]
    assert "torch says so" in lines[0]["message"] and "was missed by 0:00:02" in lines[1]["message"]


def test_a_closed_stderr_does_not_stop_the_logger_and_the_file_says_so_once(tmp_path: Path) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    log.configure(fmt="json", file=tmp_path / "log.jsonl", stream=Closed())
    logger = log.get_logger("t")
    for i in range(3):
        logger.info("tick", i=i)
    events = json_lines((tmp_path / "log.jsonl").read_text())
    assert [e["event"] for e in events] == ["log.stream_closed", "tick", "tick", "tick"]


def test_the_log_file_is_json_while_the_terminal_keeps_its_format(tmp_path: Path) -> None:
    stream = io.StringIO()
    log.configure(fmt="console", file=tmp_path / "log.jsonl", stream=stream)
    log.get_logger("t").info("tick", i=1)
    assert not stream.getvalue().startswith("{") and "tick" in stream.getvalue()
    assert json_lines((tmp_path / "log.jsonl").read_text())[0]["event"] == "tick"


def test_ingest_survives_a_closed_stderr_pipe(root: Path) -> None:
    fill(root / "todo", 20, 4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "plasticd", "ingest", "todo", "--config", "plasticd.toml", "--log-level", "debug"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    proc.stderr.close()  # the reader goes away (| head, a dead jq)
    assert proc.wait(timeout=120) == 0
    assert len(list((root / "done").glob("*.json"))) == 20


def test_fatal_errors_are_json_when_the_log_is_json(root: Path) -> None:
    out = plasticd(root, "ingest", "nowhere", "--config", "plasticd.toml", "--log-format", "json")
    assert out.returncode == 2  # a caller mistake (issue 20)
    (event,) = json_lines(out.stderr)
    assert event["event"] == "plasticd.failed" and "nowhere" in event["message"] and event["exit_code"] == 2


def test_sample_processed_is_debug_under_the_daemon(root: Path) -> None:
    fill(root / "todo", 5, 5)
    out = plasticd(root, "ingest", "todo", "--config", "plasticd.toml")
    assert out.returncode == 0, out.stderr
    assert not [e for e in json_lines(out.stderr) if e["event"] == "sample.processed"]
    assert len((root / "state" / "predictions.jsonl").read_text().splitlines()) == 5  # each sample is still there


# ---------------------------------------------------------------- item 14: ingest and status tell the truth


def test_ingest_counts_this_run_and_exits_1_when_a_file_failed(root: Path) -> None:
    fill(root / "todo", 6, 6)
    first = plasticd(root, "ingest", "todo", "--config", "plasticd.toml")
    assert first.returncode == 0 and "this run processed 6 files" in first.stdout, first.stdout + first.stderr
    ready = events_named(json_lines(first.stderr), "daemon.ready")[0]
    assert ready["new_model"] is True and ready["watching"] == str(root / "todo")
    fill(root / "todo", 3, 7, bad=1)
    second = plasticd(root, "ingest", "todo", "--config", "plasticd.toml")
    assert second.returncode == 1, second.stderr
    assert "this run processed 3 files" in second.stdout and "failed 1" in second.stdout
    assert "learned 9 samples in total" in second.stdout
    ready = events_named(json_lines(second.stderr), "daemon.ready")[0]
    assert ready["new_model"] is False and ready["samples_seen"] == 6
    fill(root / "todo", 1, 8, bad=1)
    assert plasticd(root, "ingest", "todo", "--config", "plasticd.toml", "--allow-failures").returncode == 0


def test_status_exits_3_when_no_daemon_runs_and_0_while_one_does(root: Path) -> None:
    d = Daemon(root)
    try:
        d.wait_for_event("daemon.ready")
        running = plasticd(root, "status", "--config", "plasticd.toml")
    finally:
        code = d.stop()
    assert code == 0 and running.returncode == 0, running.stderr
    stopped = plasticd(root, "status", "--config", "plasticd.toml")
    assert stopped.returncode == 3 and "not running" in stopped.stdout


def test_progress_rate_after_a_restart_counts_only_new_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import worker_around

    settings = small_settings()
    engine = Engine.from_settings(settings)
    x, y = toy_data(300)
    engine.step(x, y)  # a resumed model: it has seen 300 samples before this run
    clock = types.SimpleNamespace(monotonic=lambda: 1000.0)
    monkeypatch.setattr(heartbeat_module, "time", clock)
    worker = worker_around(settings, engine, tmp_path)
    beat = worker.heartbeat
    with structlog.testing.capture_logs() as logs:
        beat.ready("daemon")
        beat.set_state(heartbeat_module.State.BUSY)
        clock.monotonic = lambda: 1010.0
        beat.beat()
    (progress,) = events_named(logs, "daemon.progress")
    assert progress["samples"] == 300 and progress["samples_per_s"] == 0.0  # nothing new in these 10 s


def test_the_demo_says_when_the_model_has_already_learned_the_stream(root: Path, fashion_mnist_dir: Path) -> None:
    args = ("run", "--source", "fashion-mnist", "--limit", "64", "--config", "plasticd.toml")
    extra = ("--set", "model.input_dim=784", "--set", "model.num_classes=10", "--set", f"paths.dataset={fashion_mnist_dir}")
    first = plasticd(root, *args, *extra, timeout=300)
    assert first.returncode == 0, first.stderr
    assert not events_named(json_lines(first.stderr), "stream.already_learned")
    again = plasticd(root, *args, *extra, timeout=300)
    assert again.returncode == 0, again.stderr
    (said,) = events_named(json_lines(again.stderr), "stream.already_learned")
    assert said["samples"] == 64 and "move the checkpoints folder aside" in said["message"]


# ---------------------------------------------------------------- item 12: settings against an existing model


@pytest.mark.parametrize(
    ("model", "setting"),
    [
        ({"neurons": 32}, "model.neurons = 32"),
        ({"iterations": 2}, "model.iterations = 2"),
        ({"activation": "tanh"}, "model.activation = 'tanh'"),
        ({"input_dim": 13}, "model.input_dim = 13"),
        ({"num_classes": 5}, "model.num_classes = 5"),
    ],
)
def test_an_architecture_change_is_refused_with_both_values_and_the_way_out(model: dict, setting: str) -> None:
    engine = Engine.from_settings(small_settings())
    x, y = toy_data(40)
    engine.step(x, y)
    tensors, meta = engine.state()
    changed = Engine.from_settings(small_settings(model=model))
    with pytest.raises(CheckpointError) as err:
        changed.load_state(tensors, meta)
    message = str(err.value)
    assert setting in message and "checkpoint's model was built with" in message and "move the checkpoints folder" in message


def test_a_grown_network_still_loads_under_its_configured_size_and_training_changes_are_reported() -> None:
    settings = small_settings()
    engine = Engine.from_settings(settings)
    x, y = toy_data(60)
    engine.step(x, y)
    index = torch.cat([torch.arange(engine.cfg.neurons), torch.full((4,), -1)])
    engine.resize(*remap(engine.theta, engine.mask, index), index)  # 24 -> 28 neurons, as growth would
    assert engine.cfg.neurons == 28
    tensors, meta = engine.state()
    resumed = Engine.from_settings(small_settings(train={"lr": 0.02}))  # model.neurons still 24: loads
    changes = resumed.load_state(tensors, meta)
    assert resumed.cfg.neurons == 28 and changes == {"train.lr": (None, 0.02)}
    with pytest.raises(CheckpointError, match="model.neurons = 40"):
        Engine.from_settings(small_settings(model={"neurons": 40})).load_state(tensors, meta)


# ---------------------------------------------------------------- item 15: growth with long check intervals


def test_the_plateau_detector_works_when_checks_are_two_horizons_apart() -> None:
    detector = PlateauDetector(horizon=100, min_delta=0.01)
    labelled = correct = 0
    for _ in range(3):  # growth.interval = 250 >= 2 x horizon
        labelled, correct = labelled + 250, correct + 200
        detector.observe(labelled, correct)
    status = detector.status()
    assert status.recent is not None and status.previous is not None and status.plateau


# ---------------------------------------------------------------- item 16: README accuracy (bench)


def test_bench_learn_accepts_rewire_sizes_none() -> None:
    args = cli.build_parser().parse_args(["bench", "learn", "--rewire-sizes", "none"])
    assert [n for n in args.rewire_sizes if n is not None] == []


def test_the_second_signal_message_is_json_when_the_log_is_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from helpers import worker_around

    from plasticd.service import worker as worker_module

    log.configure(fmt="json", stream=io.StringIO())
    written: list[bytes] = []

    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(worker_module, "os", types.SimpleNamespace(write=lambda fd, b: written.append(b), _exit=exit_now))
    settings = small_settings()
    worker = worker_around(settings, Engine.from_settings(settings), tmp_path)
    worker.request_stop(signal.SIGTERM)
    with pytest.raises(SystemExit):
        worker.request_stop(signal.SIGTERM)
    (event,) = json_lines(b"".join(written).decode())
    assert event["event"] == "daemon.exit_now" and "second SIGTERM" in event["message"]
