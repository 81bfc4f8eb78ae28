"""The compute budget: which challengers learn from a batch, and what a candidate costs.

Work is counted in multiply-adds per sample of one step, forward and backward
(``work_per_sample``), plus a fixed cost per step (``STEP_OVERHEAD``): deterministic, so which challenger learns from which
sample, and hence the whole population, continues bit-identically after a
restart. Each candidate's measured µs per sample is kept beside it (reported,
never decided on).

Sample leases, as ChaCha gives them: every batch the champion learns from
adds ``budget × its work`` to a credit; challengers, in turn from where the
last batch stopped, learn from the batch while the credit is positive, each
paying its own work. A challenger may overdraw by one step, which the next
batches pay back, so over any run the challengers' work stays within
``budget × the champion's work + one challenger step``. A full micro-batch
(the daemon under backlog) caps the budget at ``backlog_budget``, so the
throughput stays near 1 / (1 + backlog_budget) of evolution off.
"""

from __future__ import annotations

from dataclasses import dataclass

from plasticd.learn.engine import Engine

# A step's fixed cost (Python, dispatch, the host transfer), in multiply-add equivalents: ~0.6 ms per step at
# ~4 G multiply-adds/s on this machine's one core (measured across N 32..800, K 1..5, D 3..784, batches of 8).
STEP_OVERHEAD = 2.4e6


def step_cost(work: float, rows: int) -> float:
    """Modelled cost of one step over ``rows`` samples of a candidate whose work per sample is ``work``."""
    return work * rows + STEP_OVERHEAD


def work_per_sample(engine: Engine) -> float:
    """Multiply-adds of one labelled sample's step: forward D·N + (K-1)·active + N·C, backward about twice that."""
    cfg = engine.cfg
    forward = cfg.input_dim * cfg.neurons + (cfg.iterations - 1) * engine.active_connections + cfg.neurons * cfg.output_dim
    return 3.0 * forward


def active_parameters(engine: Engine) -> int:
    """Parameters of one copy that can be non-zero: input weights and biases, active connections, readout."""
    cfg = engine.cfg
    n = cfg.neurons
    return n * cfg.input_dim + n + engine.active_connections + cfg.output_dim * n + cfg.output_dim


@dataclass
class Budget:
    """The challengers' credit of work, and the totals that show the budget was kept."""

    fraction: float
    backlog_fraction: float
    full_batch: int  # train.max_batch: a batch this size means backlog
    credit: float = 0.0
    cursor: int = 0  # the challenger (by slot) the next batch starts from
    champion_work: float = 0.0  # total work of the champion's steps
    challenger_work: float = 0.0  # total work of the challengers' steps

    def fraction_for(self, rows: int) -> float:
        return min(self.fraction, self.backlog_fraction) if rows >= self.full_batch > 1 else self.fraction

    def grant(self, champion_work: float, rows: int) -> None:
        """The champion's step over ``rows`` samples cost ``champion_work`` (``step_cost``): credit the challengers."""
        self.champion_work += champion_work
        share = self.fraction_for(rows) * champion_work
        self.credit = min(self.credit + share, 4.0 * share)  # unspent credit does not pile up (a cap only lowers the total)

    def lease(self, slots: int) -> list[int]:
        """The order in which challengers may ask for the batch: from the cursor, round the slots once."""
        return [(self.cursor + i) % slots for i in range(slots)] if slots else []

    def can_pay(self) -> bool:
        return self.credit > 0.0

    def pay(self, work: float, slot: int, slots: int) -> None:
        self.credit -= work
        self.challenger_work += work
        self.cursor = (slot + 1) % max(slots, 1)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "credit": self.credit,
            "cursor": self.cursor,
            "champion_work": self.champion_work,
            "challenger_work": self.challenger_work,
        }

    def load(self, d: dict) -> None:
        self.credit, self.cursor = float(d["credit"]), int(d["cursor"])
        self.champion_work, self.challenger_work = float(d["champion_work"]), float(d["challenger_work"])
