"""Growth policy: plateau detection, the capacity budget, no runaway growth, logging, the daemon message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from plasticd.config import Settings
from plasticd.learn.engine import Engine
from plasticd.learn.growth_policy import budget_allows, step_cost
from plasticd.learn.plateau import PlateauDetector
from plasticd.learn.reports import GrowthReport, log_growth
from plasticd.log import get_logger
from tests.helpers import small_settings


def _feed(detector: PlateauDetector, accuracies: list[float], chunk: int = 1000) -> None:
    labelled, correct = detector.mark
    for acc in accuracies:
        labelled += chunk
        correct += round(acc * chunk)
        detector.observe(labelled, correct)


def test_plateau_needs_two_horizons_and_tells_learning_from_a_plateau() -> None:
    d = PlateauDetector(horizon=3000, min_delta=0.005)
    _feed(d, [0.5, 0.6, 0.7, 0.75, 0.8])
    assert d.status().recent is None, "five chunks are not two horizons"
    _feed(d, [0.85])
    s = d.status()
    assert not s.plateau and s.recent == pytest.approx(0.8) and s.previous == pytest.approx(0.6)
    _feed(d, [0.9] * 6)
    assert d.status().plateau, "flat accuracy is a plateau"
    d.reset()
    assert d.status().recent is None


def test_plateau_gain_must_beat_the_noise() -> None:
    d = PlateauDetector(horizon=500, min_delta=0.0)
    _feed(d, [0.80, 0.82], chunk=500)  # +2 points on 500 samples each: within 2 standard errors (~5 points)
    assert d.status().plateau and d.status().noise > 0.04


def test_budget_caps_neurons_connections_and_cost() -> None:
    s = small_settings(growth={"max_neurons": 30})
    assert budget_allows(s.growth, s.model, 24, 300, 12) == (6, "max_neurons")
    assert budget_allows(s.growth, s.model, 30, 300, 12) == (0, "max_neurons")
    s = small_settings(growth={"max_active_connections": 400})
    allowed, limit = budget_allows(s.growth, s.model, 24, 288, 12)
    assert limit == "max_active_connections" and ((24 + allowed) / 24) ** 2 * 288 <= 400
    s = small_settings(growth={"max_cost_ratio": 2.0})
    allowed, limit = budget_allows(s.growth, s.model, 24, 288, 1000)
    m = s.model

    def cost(n: int) -> int:
        return step_cost(n, m.input_dim, m.num_classes, m.iterations)

    assert limit == "max_cost_ratio" and cost(24 + allowed) <= 2.0 * cost(24) < cost(25 + allowed)


def _noise_settings(**growth: object) -> Settings:
    """Random labels: accuracy never improves, so every check after two horizons sees a plateau."""
    return small_settings(
        growth={"enabled": True, "interval": 100, "horizon": 200, "retire": False, "patience": 100, **growth},
        train={"average_decay": 0.0},
    )


def _noise_engine(**growth: object) -> Engine:
    return Engine.from_settings(_noise_settings(**growth))


def _stream(engine: Engine, samples: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 12, generator=g)
    y = torch.randint(0, 4, (samples,), generator=g).numpy()
    for i in range(0, samples, 10):
        engine.step(x[i : i + 10], y[i : i + 10])


@pytest.mark.parametrize(
    "budget", [{"max_neurons": 40}, {"max_active_connections": 700}, {"max_cost_ratio": 1.5}], ids=lambda b: next(iter(b))
)
def test_policy_never_grows_beyond_the_budget(budget: dict) -> None:
    settings = _noise_settings(grow_fraction=0.5, **budget)
    engine = Engine.from_settings(settings)
    sizes = []
    for _ in range(8):
        _stream(engine, 400, seed=len(sizes))
        sizes.append(engine.cfg.neurons)
        m = settings.model
        assert engine.cfg.neurons <= budget.get("max_neurons", 10**9)
        if "max_cost_ratio" in budget:
            cost = step_cost(engine.cfg.neurons, m.input_dim, m.num_classes, m.iterations)
            assert cost <= budget["max_cost_ratio"] * step_cost(m.neurons, m.input_dim, m.num_classes, m.iterations)
    assert sizes[-1] > 24, "it did grow"
    reports = growth_reports(engine)
    assert any("budget" in r.reason for r in reports), "and then said the budget stopped it"
    if "max_active_connections" in budget:
        grown = [r for r in reports if r.gradmax + r.divided]
        assert grown and all(r.active_after <= budget["max_active_connections"] * 1.15 for r in grown)


def test_growth_stops_when_it_stops_paying() -> None:
    engine = _noise_engine(patience=2, max_neurons=10_000)
    _stream(engine, 4000)
    reports = growth_reports(engine)
    grown = [r for r in reports if r.divided + r.gradmax]
    assert 1 <= len(grown) <= 3, "at most patience+1 growths on a plateau that growth cannot lift"
    assert engine.growth.saturated
    assert "no gain" in reports[-1].reason


def test_growth_disabled_never_changes_the_size() -> None:
    engine = Engine.from_settings(small_settings(growth={"enabled": False, "interval": 100, "horizon": 200}))
    _stream(engine, 1000)
    assert engine.cfg.neurons == 24 and not growth_reports(engine)
    assert engine.grow("manual").decision == "skipped"


def test_check_retires_dead_neurons_and_keeps_predictions() -> None:
    engine = Engine.from_settings(small_settings(growth={"enabled": True, "interval": 0, "retire_min_age": 0, "min_neurons": 4}))
    _stream(engine, 200)
    engine.theta["w_in"][:, [2, 9]] = 0.0
    engine.theta["b_in"][:, [2, 9]] = -1.0
    engine.theta["w"][:, [2, 9], :] = 0.0  # dead on every input
    x = torch.randn(50, 12, generator=torch.Generator().manual_seed(5))
    before = engine.predict_logits(x)
    report = engine.grow("manual")
    assert report.retired >= 2 and engine.cfg.neurons == 24 - report.retired
    assert 2 not in engine.neuron_ids.tolist() and 9 not in engine.neuron_ids.tolist()
    assert torch.allclose(engine.predict_logits(x), before, atol=1e-5)


def test_growth_events_name_the_decision_and_the_sizes() -> None:
    engine = _noise_engine()
    _stream(engine, 600)
    report = next(r for r in growth_reports(engine) if r.changed)
    with capture_logs() as logs:
        log_growth(get_logger("test"), report)
    decided, applied = logs
    assert decided["event"] == "growth.decided" and decided["decision"] == "grew" and "plateau" in decided["reason"]
    assert applied["event"] == "growth.applied" and applied["neurons_after"] > applied["neurons_before"] == 24


def test_worker_handles_a_grow_message(tmp_path) -> None:
    from plasticd.service.messages import Grow
    from tests.helpers import worker_around

    settings = _noise_settings()
    engine = Engine.from_settings(settings)
    _stream(engine, 390)
    x, y = torch.randn(10, 12, generator=torch.Generator().manual_seed(6)), np.zeros(10, dtype=np.int64)
    engine.step(x, y, plasticity=False)  # two horizons seen, but no check ran inside step()
    engine.take_reports()
    worker = worker_around(settings, engine, tmp_path)  # an empty inbox: only the message reaches it
    with capture_logs() as logs:
        worker.handle(Grow("idle"))
    growth_logs = [e for e in logs if e["event"].startswith("growth.")]
    assert [e["event"] for e in growth_logs] == ["growth.decided", "growth.applied"]
    assert growth_logs[0]["trigger"] == "idle" and growth_logs[1]["neurons_after"] > 24 == settings.model.neurons
    assert worker.activity.unsaved_changes, "a size change asks for a checkpoint"


def test_growth_state_survives_a_checkpoint() -> None:
    settings = _noise_settings(patience=1)
    engine = Engine.from_settings(settings)
    _stream(engine, 2000)
    assert engine.growth.saturated
    resumed = Engine.from_settings(settings)
    resumed.load_state(*engine.state())
    assert resumed.growth.saturated and resumed.growth.detector.chunks == engine.growth.detector.chunks
    assert np.array_equal(resumed.neuron_born.numpy(), engine.neuron_born.numpy())


@pytest.mark.parametrize("enabled", [True, False])
def test_idle_scheduler_posts_grow_after_rewire_when_growth_is_on(enabled: bool) -> None:
    import time

    from plasticd.service.messages import Grow, Rewire
    from plasticd.service.scheduler import Activity, MaintenanceScheduler

    posted: list = []
    settings = small_settings(growth={"enabled": enabled}, daemon={"idle_seconds": 0.1})
    scheduler = MaintenanceScheduler(settings, Activity(last_sample=time.monotonic() - 1.0), posted.append, watch_inbox=False)
    scheduler.idle_check()
    scheduler.idle_check()  # once per idle period
    kinds = [type(m) for m in posted if isinstance(m, (Rewire, Grow))]
    assert kinds == ([Rewire, Grow] if enabled else [Rewire])


def test_daemon_grows_checkpoints_and_resumes_at_the_grown_size(tmp_path, fashion_mnist_dir) -> None:
    """The real process on the Fashion-MNIST stream: growth events, a grown checkpoint, a restart at that size."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "fm.toml"
    cfg.write_text(
        f'[paths]\ndataset = "{fashion_mnist_dir}"\n[runtime]\nthreads = 1\n[log]\nformat = "json"\n'
        "[model]\nneurons = 32\n[plasticity]\ninterval = 300\n"
        "[growth]\nenabled = true\ninterval = 100\nhorizon = 200\nmin_delta = 0.0\ngrow_fraction = 0.25\n"
    )

    def run(limit: int) -> list[dict]:
        out = subprocess.run(
            [sys.executable, "-m", "plasticd", "run", "--source", "fashion-mnist", "--limit", str(limit), "--config", str(cfg)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]

    events = run(1500)
    applied = [e for e in events if e["event"] == "growth.applied"]
    assert applied and all(e["neurons_after"] > e["neurons_before"] for e in applied), "it grew on the stream"
    decided = [e for e in events if e["event"] == "growth.decided"]
    assert len(decided) >= 10 and all(e["reason"] for e in decided)
    grown = applied[-1]["neurons_after"]
    ready = next(e for e in run(1500) if e["event"] == "daemon.ready")  # a restart: the checkpoint's size wins
    assert ready["neurons"] == grown > 32


def test_a_growth_pays_only_beyond_the_pre_growth_trend_and_is_judged_once() -> None:
    from plasticd.learn.growth_policy import GrowthPolicy
    from plasticd.learn.plateau import Plateau

    s = small_settings(growth={"enabled": True, "patience": 2, "max_neurons": 1000})
    policy = GrowthPolicy(s.growth, s.model)
    flat = Plateau(plateau=True, recent=0.80, previous=0.79, noise=0.01)
    assert policy.decide_growth(flat, 24, 300)[0] == 12  # first plateau: grow by half
    policy.grown_at_accuracy, policy.grown_at_trend = 0.80, 0.01  # what growth_check records
    # +2.5 points since the growth, but the trend alone predicted +2: not beyond the noise, a failure
    assert policy.decide_growth(Plateau(True, 0.825, 0.82, 0.01), 36, 600)[0] == 18 and policy.failures == 1
    policy.grown_at_accuracy, policy.grown_at_trend = 0.825, 0.005
    # +5 points, trend +1: it paid, the count starts over
    assert policy.decide_growth(Plateau(True, 0.875, 0.87, 0.01), 54, 900)[0] > 0 and policy.failures == 0
    policy.grown_at_accuracy, policy.grown_at_trend = 0.875, 0.0
    policy.settings = small_settings(growth={"enabled": True, "patience": 2, "max_neurons": 81}).growth
    for _ in range(3):  # the budget is spent: repeated checks do not count the same growth again
        wanted, reason = policy.decide_growth(Plateau(True, 0.876, 0.875, 0.01), 81, 1300)
        assert wanted == 0 and "budget" in reason and policy.failures == 1


@pytest.mark.slow
def test_bench_growth_compares_grown_with_fixed_networks(tmp_path, fashion_mnist_dir) -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "plasticd", "bench", "growth", "--samples", "600", "--growth-seeds", "1",
         "--start-neurons", "16", "--json", str(tmp_path / "g.json"), "--set", f'paths.dataset="{fashion_mnist_dir}"',
         "--set", "runtime.threads=1", "--set", "growth.horizon=100", "--set", "growth.interval=50",
         "--set", "growth.min_delta=0.0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "targets:" in out.stdout and "fixed-final" in out.stdout
    results = {r["name"]: r for r in json.loads((tmp_path / "g.json").read_text())["results"]}
    assert results["fixed-start"]["neurons"] == 16 and results["grown"]["neurons"] > 16, "it grew on the stream"
    assert results["fixed-final"]["neurons"] == results["grown"]["neurons"], "fixed-final runs at the grown size"
    assert results["grown"]["trace"][-1][1] == results["grown"]["neurons"]


def growth_reports(engine: Engine) -> list[GrowthReport]:
    """The growth checks the engine ran since the reports were last taken."""
    return [r for r in engine.take_reports() if isinstance(r, GrowthReport)]
