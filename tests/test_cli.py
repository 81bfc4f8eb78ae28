"""The command line, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from plasticd.bench import BENCHMARKS
from plasticd.bench.common import mean_std, run_record, write_results
from plasticd.cli import build_parser

TIMEOUT = 300


def plasticd(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["ingest"], ["status"], ["bench"], ["config"], *(["bench", name] for name in BENCHMARKS)],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    out = plasticd(*command, "--help")
    assert out.returncode == 0
    assert "usage: plasticd" in out.stdout and "PLASTICD_" in out.stdout


def test_bench_group_lists_every_benchmark_and_runs_none_without_one() -> None:
    out = plasticd("bench")
    assert out.returncode == 2
    assert all(name in out.stderr for name in BENCHMARKS)


@pytest.mark.parametrize("flag", ["--daemon", "--growth", "--continual"])
def test_old_bench_flags_name_their_sub_command(flag: str) -> None:
    out = plasticd("bench", flag, "--samples", "10")
    assert out.returncode == 2
    assert f"plasticd bench {flag[2:]}" in out.stderr


def test_each_benchmark_registers_its_sub_command_with_settings_and_a_runner() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "growth", "--micro-batch", "4", "--set", "model.neurons=20", "--json", "g.json"])
    assert callable(args.func) and callable(args.run) and args.benchmark == "growth"
    assert args.micro_batch == 4 and args.set == ["model.neurons=20"] and args.json == Path("g.json")
    old_spelling = parser.parse_args(["bench", "continual", "--continual-batch", "8"])
    assert old_spelling.micro_batch == 8


def test_every_command_is_registered_one_way_with_the_settings_options_and_a_runner() -> None:
    """commands.add_commands: each command's module registers its parser with run=; each gets --config/--set."""
    parser = build_parser()
    for argv in (["run"], ["ingest", "todo"], ["status"], ["config"], ["report"], ["predict", "-"], ["checkpoints"],
                 ["rollback", "3"], ["export", "m.safetensors"], ["bench", "learn"]):  # fmt: skip
        args = parser.parse_args([*argv, "--set", "model.neurons=20"])
        assert callable(args.func) and callable(args.run) and args.set == ["model.neurons=20"], argv


def test_version() -> None:
    out = plasticd("--version")
    assert out.returncode == 0 and out.stdout.startswith("plasticd ")


def test_invalid_setting_exits_2_naming_the_field() -> None:
    out = plasticd("config", "--set", "model.neurons=-3")
    assert out.returncode == 2
    assert "model.neurons" in out.stderr


def test_missing_dataset_exits_1_saying_how_to_get_it(tmp_path: Path) -> None:
    out = plasticd(
        "run", "--source", "fashion-mnist", "--limit", "10", "--set", f"paths.dataset={tmp_path / 'none'}", cwd=tmp_path
    )
    assert out.returncode == 1
    assert "apt-get install dataset-fashion-mnist" in out.stderr


@pytest.mark.slow
def test_run_streams_fashion_mnist_and_logs_json(fashion_mnist_dir: Path, tmp_path: Path) -> None:
    out = plasticd(
        "run", "--source", "fashion-mnist", "--limit", "1600", "--threads", "1", "--log-format", "json",
        "--set", f"paths.dataset={fashion_mnist_dir}", "--set", "plasticity.interval=500",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    evs = events(out.stderr)
    names = [e["event"] for e in evs]
    assert names[0] == "daemon.ready" and names[-1] == "stream.finished"
    assert names.count("plasticity.rewired") == 3  # every >= 500 samples, in micro-batches of 8: at 504, 1000, 1504
    done = evs[-1]
    assert done["samples"] == 1600 and done["trained"] == 1600
    assert done["prequential_accuracy"] > 0.5 and done["test_accuracy"] > 0.6  # chance is 0.1
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.json")), "no checkpoint was written"


@pytest.mark.slow
def test_bench_prints_a_table_with_ratios(fashion_mnist_dir: Path, tmp_path: Path) -> None:
    out = plasticd(
        "bench", "learn", "--samples", "300", "--set", f"paths.checkpoints={tmp_path / 'ck'}", "--micro-batch", "8",
        "--rewire-sizes", "32", "64", "--threads", "1",
        "--only", "plastic-b1", "plastic-b8", "mlp", "--json", str(tmp_path / "b.json"),
        "--set", f"paths.dataset={fashion_mnist_dir}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "× mlp" in out.stdout and "prune+regrow" in out.stdout and "targets:" in out.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    names = [c["name"] for c in report["contenders"]]
    assert names == ["plastic-b1", "plastic-b8", "mlp"]
    for c in report["contenders"]:
        assert 0.0 < c["test_accuracy"] <= 1.0 and c["samples_per_s"] > 0 and c["peak_rss_mb"] > 0
    assert [t["neurons"] for t in report["rewire"]] == [32, 64]


def test_every_bench_result_file_goes_through_one_writer(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Options:
        samples: int = 5
        json_out: Path | None = None

    record = run_record(Options(json_out=tmp_path / "r.json"), '{"model": {"neurons": 8}}', results=[{"acc": 0.5}])
    write_results(tmp_path / "r.json", record)
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == {
        "options": {"samples": 5, "json_out": str(tmp_path / "r.json")},
        "settings": {"model": {"neurons": 8}},
        "results": [{"acc": 0.5}],
    }


def test_mean_std_over_seeds() -> None:
    assert mean_std([0.25, 0.25]) == "0.2500 ± 0.0000"
    assert mean_std([0.1, 0.3], "{:.1f}", scale=100.0) == "20.0 ± 14.1"
    assert mean_std([64.0], "{:.0f}") == "64", "one seed has no spread to show"
