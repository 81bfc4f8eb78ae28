"""Online architecture evolution (plasticd/evolution/): evidence for promotion, inheritance, budget, restart, repair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plasticd.config import Settings
from plasticd.evolution.budget import STEP_OVERHEAD, step_cost
from plasticd.evolution.genome import LADDERS, Genome
from plasticd.evolution.mutation import crossover, mutate, spawn
from plasticd.evolution.pareto import champion_rule, dominates, fronts
from plasticd.evolution.population import PREFIX, Population
from plasticd.evolution.promotion import Score, judge
from plasticd.evolution.repair import diagnose, repair
from plasticd.learn.engine import Engine
from plasticd.service.checkpoint_store import CheckpointStore

torch.set_num_threads(1)


def _settings(**evolution) -> Settings:
    return Settings(
        model={"input_dim": 6, "num_classes": 4, "neurons": 32, "iterations": 2},
        plasticity={"interval": 300},
        evolution={"enabled": True, "population": 0, "min_samples": 300, "check_every": 100, **evolution},
        runtime={"device": "cpu", "seed": 3},
    )


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four classes by quadrant of (x0, x1), four noise features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) * 2 + (x[:, 1] > 0).astype(np.int64)
    return x, y


def _run(pop: Population | Engine, x: np.ndarray, y: np.ndarray, batch: int = 4) -> list[np.ndarray]:
    out = []
    for i in range(0, len(y), batch):
        out.append(pop.step(torch.from_numpy(x[i : i + batch]), y[i : i + batch]).predicted)
    return out


# ------------------------------------------------------------------ promotion


def _bernoulli_score(n: int, p_challenger: float, p_champion: float, seed: int) -> Score:
    rng = np.random.default_rng(seed)
    s = Score()
    s.add(int((rng.random(n) < p_challenger).sum()), int((rng.random(n) < p_champion).sum()), n, 0.0)
    return s


@pytest.mark.parametrize("seed", range(5))
def test_a_challenger_better_by_noise_is_not_promoted_a_clearly_better_one_is(seed: int) -> None:
    """ChaCha's rule on seeded 0/1 errors: one point better over 3,000 samples stays inside the bound; 15 points cross it."""
    noise = judge(_bernoulli_score(3000, 0.29, 0.30, seed), 0.0, 500, 0.05)
    clear = judge(_bernoulli_score(3000, 0.15, 0.30, seed), 0.0, 500, 0.05)
    early = judge(_bernoulli_score(400, 0.05, 0.40, seed), 0.0, 500, 0.05)
    assert not noise.promote and not noise.worse
    assert clear.promote and clear.upper < clear.champion_lower
    assert not early.promote, "never before min_samples, however good"


def test_the_cost_rule_charges_a_dearer_challenger() -> None:
    s = _bernoulli_score(5000, 0.20, 0.30, 0)
    assert judge(s, 0.0, 500, 0.05).promote
    assert not judge(s, 0.15, 500, 0.05).promote, "15 points of cost penalty outweigh a 10-point gain"


def test_population_does_not_promote_a_same_genome_rival_but_promotes_a_clearly_better_one() -> None:
    """On a seeded stream: a fresh network of the champion's own genome (better or worse only by its seed) stays a
    challenger; a network with the capacity the task needs (the champion has 2 neurons, it 16) takes over,
    with an ``evolution.promoted`` event naming both genomes, the windows and the bounds."""
    base = _settings(cost_weight=0.0, check_every=100)
    rival = Population(base)
    rival.add_challenger(Genome.from_settings(base), inherit=False)
    x, y = _stream(3000, seed=1)
    _run(rival, x, y)
    assert rival.promotions == 0
    assert [e.event for e in rival.take_events()].count("evolution.promoted") == 0

    weak = base.model_copy(update={
        "model": base.model.model_copy(update={"neurons": 2, "iterations": 1}),
        "evolution": base.evolution.model_copy(update={"budget": 4.0}),  # the strong one costs 8x the weak champion
    })  # fmt: skip
    pop = Population(weak)
    strong = Genome.from_settings(weak).with_gene("neurons", 16)
    pop.add_challenger(strong, inherit=False)
    _run(pop, x, y)
    promoted = [e for e in pop.take_events() if e.event == "evolution.promoted"]
    assert pop.promotions >= 1 and promoted
    f = promoted[0].fields
    assert f["champion"]["genome"]["neurons"] == 16 and f["previous"]["genome"]["neurons"] == 2
    assert f["bounds"]["upper"] < f["bounds"]["champion_lower"] and f["bounds"]["n"] >= 300
    assert f["champion"]["work_per_sample"] > f["previous"]["work_per_sample"] > 0
    assert pop.candidates[0].genome.neurons == 16


# ------------------------------------------------------------------ genomes and the front


def test_mutation_changes_exactly_one_gene_and_crossover_takes_each_gene_from_a_parent() -> None:
    rng = np.random.default_rng(0)
    g = Genome()
    for _ in range(50):
        child, gene = mutate(g, rng, max_neurons=800)
        assert child.differs(g) == (gene,)
        assert getattr(child, gene) in LADDERS[gene]
    a, b = Genome(neurons=64, iterations=1), Genome(neurons=800, activation="tanh", lr_scale=3.0)
    for _ in range(20):
        c = crossover(a, b, rng)
        assert all(getattr(c, k) in (getattr(a, k), getattr(b, k)) for k in LADDERS)


def test_non_dominated_sorting_and_the_champion_rule() -> None:
    points = [(0.10, 100.0, 10.0), (0.12, 50.0, 5.0), (0.11, 200.0, 20.0), (0.20, 60.0, 6.0)]
    assert dominates(points[0], points[2]) and not dominates(points[0], points[1])
    assert fronts(points) == [[0, 1], [2, 3]]
    assert champion_rule(points, reference_work=100.0, cost_weight=0.0) == 0  # accuracy alone
    assert champion_rule(points, reference_work=100.0, cost_weight=5.0) == 1  # 5 points per halving: the cheap one


# ------------------------------------------------------------------ inheritance


def _trained_engine(settings: Settings) -> Engine:
    engine = Engine.from_settings(settings, device="cpu")
    x, y = _stream(600, seed=2)
    _run(engine, x, y)
    return engine


@pytest.mark.parametrize(
    ("gene", "value", "how"),
    [("rewire_rule", "coactivation", "state"), ("rewiring", False, "state"), ("lr_scale", 3.0, "state"),
     ("growth", True, "state"), ("neurons", 64, "state+divided")],
)  # fmt: skip
def test_a_child_inherits_its_parents_function_where_the_mutation_is_function_preserving(gene, value, how) -> None:
    settings = _settings()
    parent = _trained_engine(settings)
    genome = Genome.from_settings(settings).with_gene(gene, value)
    child = spawn(settings, genome, seed=99, device=torch.device("cpu"), parent=(parent, Genome.from_settings(settings), 32))
    assert child.inherited == how
    x = torch.from_numpy(_stream(256, seed=5)[0])
    before, after = parent.predict_logits(x), child.engine.predict_logits(x)
    if how == "state":
        assert torch.equal(before, after)
    else:
        assert child.engine.cfg.neurons == 64
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert child.engine.theta["w"].data_ptr() != parent.theta["w"].data_ptr(), "the child owns its weights"


def test_a_child_of_another_iteration_count_starts_fresh_and_fewer_neurons_keep_most_of_the_function() -> None:
    settings = _settings()
    parent = _trained_engine(settings)
    first = Genome.from_settings(settings)
    fresh = spawn(settings, first.with_gene("iterations", 3), 7, torch.device("cpu"), (parent, first, 32))
    assert fresh.inherited == "fresh" and fresh.engine.metrics.trained == 0
    fewer = spawn(settings, first.with_gene("neurons", 24), 7, torch.device("cpu"), (parent, first, 32))
    assert fewer.inherited == "state+retired" and fewer.engine.cfg.neurons == 24
    x, y = _stream(1000, seed=6)
    acc = {k: float((e.predict_logits(torch.from_numpy(x)).argmax(1).numpy() == y).mean()) for k, e in
           (("parent", parent), ("fewer", fewer.engine))}  # fmt: skip
    assert acc["fewer"] > acc["parent"] - 0.1, acc


# ------------------------------------------------------------------ budget


@pytest.mark.parametrize(("budget", "batch"), [(0.3, 1), (0.6, 1), (2.0, 8)])
def test_the_budget_is_respected(budget: float, batch: int) -> None:
    """The challengers' work stays within budget × the champion's work (+ one challenger batch), and is spent;
    full micro-batches (backlog) cap it at evolution.backlog_budget."""
    pop = Population(_settings(population=3, budget=budget, backlog_budget=0.4, check_every=200))
    x, y = _stream(1600, seed=4)
    _run(pop, x, y, batch=batch)
    b = pop.budget
    allowed = min(budget, 0.4) if batch == 8 else budget
    one_step = step_cost(max(c.work for c in pop.challengers), batch)
    assert b.champion_work == pytest.approx(pop.candidates[0].work * 1600 + STEP_OVERHEAD * 1600 / batch, rel=0.05)
    assert b.challenger_work <= allowed * b.champion_work + one_step
    assert b.challenger_work >= 0.8 * allowed * b.champion_work - one_step, "the budget is also spent"
    assert all(c.score.n > 0 for c in pop.challengers if c.born < 1200)


# ------------------------------------------------------------------ checkpoint


def test_a_checkpoint_round_trip_continues_the_population_bit_identically(tmp_path) -> None:
    settings = _settings(population=3, check_every=100, min_samples=200, repair_every=500)
    x, y = _stream(3000, seed=8)
    a = Population(settings)
    _run(a, x[:1500], y[:1500])
    store = CheckpointStore(tmp_path)
    store.save(*a.state())
    loaded = store.load_latest()
    assert loaded is not None and any(k.startswith(PREFIX) for k in loaded.tensors)
    b = Population(settings)
    b.load_state(loaded.tensors, loaded.meta)
    assert [c.genome for c in b.candidates] == [c.genome for c in a.candidates]
    a.take_events()
    pa, pb = _run(a, x[1500:], y[1500:]), _run(b, x[1500:], y[1500:])
    assert all(np.array_equal(p, q) for p, q in zip(pa, pb, strict=True))
    events = [[(e.event, e.fields.get("label")) for e in p.take_events()] for p in (a, b)]
    assert events[0] == events[1]
    ta, tb = a.state()[0], b.state()[0]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_a_plain_engine_checkpoint_resumes_the_champion() -> None:
    settings = _settings(population=2)
    engine = _trained_engine(settings)
    pop = Population(settings)
    pop.load_state(*engine.state())
    x = torch.from_numpy(_stream(64, seed=9)[0])
    assert torch.equal(pop.champion.predict_logits(x), engine.predict_logits(x))
    assert len(pop.challengers) == 0


# ------------------------------------------------------------------ repair


def test_repair_finds_and_fixes_a_neuron_killed_on_purpose() -> None:
    engine = _trained_engine(_settings())
    j = 5
    victim = int(engine.neuron_ids[j])
    with torch.no_grad():  # every copy: no input, no recurrent input, a bias far below zero -> relu never fires
        engine.theta["w_in"][:, j] = 0.0
        engine.theta["w"][:, j, :] = 0.0
        engine.theta["b_in"][:, j] = -100.0
    found, _ = diagnose(engine)
    assert victim in found.dead
    xb, _ = engine.buffer.contents()
    before = engine.predict_logits(xb)
    n = engine.cfg.neurons
    report = repair(engine)
    assert report is not None and victim in report.found.dead and report.retired >= 1
    assert report.regrown == report.retired and engine.cfg.neurons == n
    assert victim not in engine.neuron_ids.tolist()
    after, _ = diagnose(engine)
    assert len(after.dead) < len(found.dead)
    torch.testing.assert_close(engine.predict_logits(xb), before, rtol=1e-4, atol=1e-5)  # dead out, GradMax in: exact


# ------------------------------------------------------------------ the daemon


def test_the_daemon_refuses_evolution_with_a_message(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The population runs in process only: ``plasticd ingest`` with evolution.enabled is a usage error (2) saying so."""
    from plasticd import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "todo").mkdir()
    assert cli.main(["ingest", "todo", "--to", "done", "--set", "evolution.enabled=true", "--device", "cpu"]) == 2
    assert "evolution.enabled" in capsys.readouterr().err


def test_the_engine_and_the_population_are_both_learners() -> None:
    """One seam for the pipeline: build_learner gives a Population with evolution.enabled, else the Engine."""
    from plasticd.evolution.learner import Learner, build_learner

    on, off = build_learner(_settings(population=1), "cpu"), build_learner(_settings(enabled=False), "cpu")
    assert isinstance(on, Population) and isinstance(off, Engine)
    assert isinstance(on, Learner) and isinstance(off, Learner)
    x, y = _stream(64, seed=11)
    assert np.array_equal(np.concatenate(_run(on, x, y)), np.concatenate(_run(off, x, y))), "no promotion yet: the same champion"


# ------------------------------------------------------------------ the benchmark


def test_bench_evolve_runs_on_off_static_and_a_grid(tmp_path) -> None:
    """One tiny run of ``plasticd bench evolve``: every contender scored, the grid's hindsight best reported."""
    import json

    from plasticd.bench.evolve import EvolveOptions, run_evolve

    opts = EvolveOptions(
        streams=("sine-abrupt",), samples=400, grid_neurons=(16,), grid_iterations=(1, 2), grid_rewiring=(True,),
        grid_lr=(1.0,), json_out=tmp_path / "e.json", markdown_out=tmp_path / "e.md",
    )  # fmt: skip
    settings = Settings(evolution={"population": 1, "min_samples": 100, "check_every": 50}, runtime={"device": "cpu"})
    assert run_evolve(settings, opts) == 0
    results = json.loads((tmp_path / "e.json").read_text())["results"]
    assert {r["contender"] for r in results} == {"on", "off", "static", "grid:N16:K1:rw1:lr1", "grid:N16:K2:rw1:lr1"}
    assert all(0.0 <= r["prequential"] <= 1.0 and r["samples"] == 400 for r in results)
    on = next(r for r in results if r["contender"] == "on")
    assert on["extra"]["champion"]["label"] and on["extra"]["budget"]["challenger_work"] > 0
    assert "grid best (hindsight)" in (tmp_path / "e.md").read_text()


def test_repair_as_a_mutation_makes_a_repaired_copy_of_the_champion() -> None:
    """The child is the champion's state with the killed neuron replaced; the champion itself is left as it was."""
    pop = Population(_settings(population=0))
    x, y = _stream(600, seed=2)
    _run(pop, x, y)
    champion = pop.champion
    with torch.no_grad():
        champion.theta["w_in"][:, 3] = 0.0
        champion.theta["w"][:, 3, :] = 0.0
        champion.theta["b_in"][:, 3] = -100.0
    victim = int(champion.neuron_ids[3])
    child = pop.repaired_child(pop.candidates[0])
    assert child.origin == "repair" and child.inherited == "state"
    assert victim not in child.engine.neuron_ids.tolist() and victim in champion.neuron_ids.tolist()
    assert any(e.event == "evolution.repaired" and victim in e.fields["dead"] for e in pop.take_events())


def _paired_score(n: int, fix: float, spoil: float, seed: int) -> Score:
    """The champion wrong on 30%; the challenger fixes a share ``fix`` of those and spoils ``spoil`` of the rest."""
    rng = np.random.default_rng(seed)
    champion = rng.random(n) < 0.30
    challenger = np.where(champion, rng.random(n) >= fix, rng.random(n) < spoil)
    s = Score()
    s.add(int(challenger.sum()), int(champion.sum()), n, 0.0, int((challenger != champion).sum()))
    return s


@pytest.mark.parametrize("seed", range(5))
def test_the_paired_bound_is_tighter_yet_noise_still_does_not_promote(seed: int) -> None:
    """Same samples, mostly the same answers: the paired (empirical-Bernstein) rule promotes a 6-point gain after
    1,000 samples where ChaCha's two intervals cannot, and still never promotes a challenger that differs by noise."""
    clear = _paired_score(1000, fix=0.25, spoil=0.005, seed=seed)  # ~7.5 points fewer errors, ~0.35 new ones
    noise = _paired_score(3000, fix=0.03, spoil=0.013, seed=seed)  # as many fixed as spoiled, on average
    assert judge(clear, 0.0, 500, 0.05, "paired").promote and not judge(clear, 0.0, 500, 0.05).promote
    assert not judge(noise, 0.0, 500, 0.05, "paired").promote
    assert not judge(_paired_score(400, 0.9, 0.0, seed), 0.0, 500, 0.05, "paired").promote, "never before min_samples"


def test_a_drift_alarm_starts_a_fresh_challenger_of_the_champions_genome() -> None:
    """ARF's background learner: the champion's drift alarm (labels swapped halfway) spawns a fresh network of its
    genome, born at the alarm, in a full population's slot."""
    pop = Population(_settings(population=1, check_every=10_000))
    x, y = _stream(3000, seed=12)
    y = np.where(np.arange(3000) < 1500, y, (y + 1) % 4)
    _run(pop, x, y)
    drift = [e for e in pop.take_events() if e.event == "evolution.spawned" and e.fields["origin"] == "drift"]
    assert drift, "no challenger was spawned at the alarm"
    first = drift[0].fields
    assert first["inherited"] == "fresh" and first["born"] > 1500
    assert first["genome"] == pop.candidates[0].genome.to_dict()
    assert len(pop.challengers) == 1, "the drift child took the slot of the worst challenger"
