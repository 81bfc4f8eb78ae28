"""When and how much the network grows or shrinks: capacity budget, policy, one check (the plateau: plateau.py).

A *check* (every ``growth.interval`` learned samples, and from the daemon's
idle scheduler) does, on the recent-sample buffer:

1. **retire** (once per ``horizon`` while training, at every idle check)
   neurons at least ``retire_min_age`` samples old that are dead
   (never active on the buffer: exact on those inputs; for relu a dead
   neuron gets no gradient, so it stays dead) or whose outgoing weights
   vanished in every copy (exact when they are 0);
2. **grow** when learning has plateaued: the accuracy of the last
   ``horizon`` labelled samples is not above that of the ``horizon``
   before them by more than ``max(min_delta, 2 standard errors)``. It adds
   ``grow_fraction · N`` neurons within the budget (max neurons, max
   active connections, max per-sample cost): a ``division_share`` by
   dividing the neurons carrying the largest share of the squared
   pre-activation gradient (the *load*), the rest by GradMax.
   A growth is judged at the next plateau: if accuracy did not rise since
   it by more than the noise plus what the pre-growth trend predicts (twice
   the last gain per horizon: the judging window ends about two horizons
   after the growth), it did not pay; after ``patience`` such growths in a
   row the policy stops growing (no runaway growth), until accuracy drops
   (a new task or drift) and re-arms it.

GradMax with relu: a neuron with zero incoming weights has h = 0 and,
with relu'(0) = 0, never gets a gradient: it would be dead forever. So for
relu the new neurons take the *transposed* GradMax: incoming weights along
the top right singular vectors of the gradient across their position
(sign chosen so they fire on most recent samples), outgoing weights 0. The
output is unchanged exactly, and the outgoing weights get a gradient at
the very next step. For tanh (tanh'(0) = 1) it is the paper's GradMax:
zero incoming, outgoing along the top left singular vectors.

Everything here is a function of what it is given (weights, mask, the
normalised buffer, counters, the policy's own state): it never sees the
Engine. A check returns the size changes (``Resize``, from model/growth.py)
in the order they were made, and ``Engine.grow`` applies them through its
one door, ``Engine.resize``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from plasticd.config import GrowthSettings, ModelSettings
from plasticd.learn.plateau import Plateau, PlateauDetector
from plasticd.learn.reports import GrowthReport
from plasticd.model import growth as surgery
from plasticd.model.growth import Resize
from plasticd.model.plastic_net import (
    LIVE,
    NetConfig,
    cross_entropy_grad,
    forward,
    pre_activation_grads,
)


def step_cost(n: int, input_dim: int, output_dim: int, iterations: int) -> int:
    """Multiply-adds per sample and copy of the forward pass (W is stored dense): N·D + (K-1)·N² + C·N."""
    return n * input_dim + (iterations - 1) * n * n + output_dim * n


def budget_allows(g: GrowthSettings, m: ModelSettings, n: int, active: int, wanted: int) -> tuple[int, str]:
    """How many of ``wanted`` new neurons the capacity budget allows at size ``n``, and which limit bound.

    ``m`` is the configured model: its size is the base of ``max_cost_ratio``.
    """
    allowed, limit = min(wanted, g.max_neurons - n), "max_neurons"
    if allowed == wanted:
        limit = ""
    if g.max_active_connections and active > 0:
        # New neurons get the current density, so the active count scales with (N'/N)².
        cap = math.floor(n * math.sqrt(g.max_active_connections / active)) - n
        if cap < allowed:
            allowed, limit = cap, "max_active_connections"
    if g.max_cost_ratio:
        budget = g.max_cost_ratio * step_cost(m.neurons, m.input_dim, m.num_classes, m.iterations)
        a, b = m.iterations - 1, m.input_dim + m.num_classes
        n_max = math.floor((-b + math.sqrt(b * b + 4 * a * budget)) / (2 * a)) if a else math.floor(budget / b)
        if n_max - n < allowed:
            allowed, limit = n_max - n, "max_cost_ratio"
    return max(allowed, 0), limit


class GrowthPolicy:
    """The growth state of one engine: plateau history and whether growth still pays."""

    def __init__(self, settings: GrowthSettings, model: ModelSettings) -> None:
        self.settings = settings
        self.model = model  # the configured sizes: the capacity budget is relative to them
        self.detector = PlateauDetector(settings.horizon, settings.min_delta)
        self.checked_at = 0  # labelled samples learned at the last check
        self.scanned_at = 0  # ... at the last retirement scan (one per horizon while training: it costs a buffer pass)
        self.grown_at_accuracy: float | None = None  # accuracy of the plateau the last growth was made on
        self.grown_at_trend = 0.0  # gain per horizon just before that growth (what learning did without it)
        self.failures = 0  # growths in a row that brought no gain
        self.saturated = False  # growth stopped: it no longer pays

    def due(self, trained: int) -> bool:
        g = self.settings
        return g.enabled and g.interval > 0 and trained - self.checked_at >= g.interval

    def decide_growth(self, plateau: Plateau, n: int, active: int) -> tuple[int, str]:
        """How many neurons to add now, and why (0 with the reason when none)."""
        g = self.settings
        if plateau.recent is None:
            return 0, "not enough samples since the last growth to judge a plateau"
        if self.saturated:
            if plateau.previous is not None and plateau.recent < plateau.previous - plateau.noise:
                self.saturated, self.failures, self.grown_at_accuracy = False, 0, None  # accuracy dropped: re-arm
            else:
                return 0, f"growth stopped: {self.failures} growths in a row brought no gain"
        if not plateau.plateau:
            return 0, f"still learning: accuracy {plateau.recent:.4f} vs {plateau.previous:.4f} (gain ≥ {plateau.noise:.4f})"
        if self.grown_at_accuracy is not None:
            # Paid: since the growth, accuracy rose by more than the pre-growth trend predicts (the judging
            # window ends ~2 horizons after the growth) plus the noise.
            expected = 2.0 * max(self.grown_at_trend, 0.0)
            paid = plateau.recent - self.grown_at_accuracy - expected >= plateau.noise
            self.failures = 0 if paid else self.failures + 1
            self.grown_at_accuracy = None  # each growth is judged once, even if the budget stops the next
            if self.failures >= g.patience:
                self.saturated = True
                return 0, f"plateau at {plateau.recent:.4f}, but the last {self.failures} growths brought no gain: stop growing"
        wanted = max(1, math.ceil(g.grow_fraction * n))
        allowed, limit = budget_allows(self.settings, self.model, n, active, wanted)
        if allowed == 0:
            return 0, f"plateau at {plateau.recent:.4f}, but the budget is spent ({limit})"
        why = f"plateau: accuracy {plateau.recent:.4f} vs {plateau.previous:.4f} (gain < {plateau.noise:.4f})"
        return allowed, why + (f"; limited by {limit}" if limit else "")

    def rearm(self) -> bool:
        """The concept changed (a drift alarm): judge plateaus afresh and grow again if growth had stopped.

        Returns whether growth had stopped (and so was re-armed)."""
        if not self.settings.enabled:
            return False
        was = self.saturated
        self.saturated, self.failures, self.grown_at_accuracy = False, 0, None
        self.detector.reset()
        return was

    def state_dict(self) -> dict:
        return {
            "detector": self.detector.state_dict(),
            "checked_at": self.checked_at,
            "scanned_at": self.scanned_at,
            "grown_at_accuracy": self.grown_at_accuracy,
            "grown_at_trend": self.grown_at_trend,
            "failures": self.failures,
            "saturated": self.saturated,
        }

    def load_state_dict(self, state: dict) -> None:
        self.detector.load_state_dict(state.get("detector", {}))
        self.checked_at = int(state.get("checked_at", 0))
        self.scanned_at = int(state.get("scanned_at", 0))
        self.grown_at_accuracy = state.get("grown_at_accuracy")
        self.grown_at_trend = float(state.get("grown_at_trend", 0.0))
        self.failures = int(state.get("failures", 0))
        self.saturated = bool(state.get("saturated", False))


# ------------------------------------------------------------------ the check


@dataclass(frozen=True)
class Network:
    """The network as growth sees it: every copy's weights (each (S, ...)), the (N, N) mask, the architecture."""

    theta: dict[str, Tensor]
    mask: Tensor
    cfg: NetConfig

    @property
    def live(self) -> dict[str, Tensor]:
        return {k: v[LIVE] for k, v in self.theta.items()}

    @property
    def active(self) -> int:
        return int(torch.count_nonzero(self.mask))

    def after(self, resize: Resize) -> Network:
        """The network a size change makes."""
        return Network(resize.theta, resize.mask, replace(self.cfg, neurons=resize.index.numel()))


@dataclass(frozen=True)
class Samples:
    """The recent-sample buffer a check is guided by: normalised inputs (B, D) and labels (B,)."""

    xn: Tensor
    y: Tensor
    label_smoothing: float


@dataclass(frozen=True)
class BufferPass:
    xn: Tensor  # (B, D) normalised buffer inputs
    dlogits: Tensor  # (B, C) of the live copy
    da: Tensor  # (K, B, N) dL/d(pre-activation) of the live copy


@dataclass(frozen=True)
class Growth:
    """New neurons: the size changes that add them, in order, and how many each way."""

    resizes: tuple[Resize, ...]
    divided: int = 0
    gradmax: int = 0


@dataclass(frozen=True)
class GrowthCheck:
    """One check's result: the size changes to apply in order, and its report."""

    resizes: tuple[Resize, ...]
    report: GrowthReport


@torch.no_grad()
def buffer_pass(net: Network, samples: Samples) -> BufferPass:
    """Forward and backward of the live copy over the recent-sample buffer: what growth is guided by."""
    trace = forward({k: v[LIVE : LIVE + 1] for k, v in net.theta.items()}, samples.xn, net.cfg)
    dlogits = cross_entropy_grad(trace.logits[LIVE], samples.y, None, samples.label_smoothing)
    return BufferPass(xn=samples.xn, dlogits=dlogits, da=pre_activation_grads(net.live, trace, dlogits, net.cfg))


@torch.no_grad()
def buffer_activity(net: Network, samples: Samples) -> Tensor:
    """(N,) the largest |activation| of each neuron over the buffer, every iteration and every copy (the average predicts)."""
    return forward(net.theta, samples.xn, net.cfg).h.abs().amax(dim=(0, 1, 2))


def retire_candidates(g: GrowthSettings, net: Network, activity: Tensor, trained: int, born: Tensor) -> Tensor:
    """(N,) bool: neurons old enough that are dead on the buffer (in every copy) or whose outgoing weights vanished.

    ``trained`` is the labelled-sample count now, ``born`` (N,) its value at each neuron's birth.
    """
    n = net.cfg.neurons
    dead = activity == 0.0  # (N,) never active on the buffer, in any copy (``buffer_activity``)
    out = torch.maximum(net.theta["w"].abs().amax(dim=(0, 1)), net.theta["w_out"].abs().amax(dim=(0, 1)))  # (N,)
    silent = out <= g.retire_out_eps
    old = (trained - born) >= g.retire_min_age  # (N,) on the CPU
    candidates = (dead | silent).cpu() & old
    cap = min(math.floor(g.max_retire_fraction * n), n - g.min_neurons)
    if int(candidates.sum()) > max(cap, 0):  # keep the quietest: smallest outgoing weights go first
        order = torch.argsort(torch.where(candidates, out.cpu(), torch.inf))
        candidates = torch.zeros(n, dtype=torch.bool)
        candidates[order[: max(cap, 0)]] = True
    return candidates


def grow_by_division(g: GrowthSettings, net: Network, bp: BufferPass, count: int, generator: torch.Generator) -> Resize | None:
    """Divide the ``count`` most loaded neurons (never a dead one); None when none carries load."""
    load = surgery.gradient_load(bp.da).cpu()  # (N,)
    count = min(count, int((load > 0).sum()))
    if count == 0:
        return None
    parents = torch.topk(load, count).indices
    return surgery.divide(net.theta, net.mask, parents, g.split_jitter, g.in_noise, generator)


def grow_by_gradmax(g: GrowthSettings, net: Network, bp: BufferPass, count: int, generator: torch.Generator) -> Resize | None:
    """Up to ``count`` GradMax neurons (transposed for relu; see the module docstring); None when there is no direction."""
    n, d = net.cfg.neurons, net.cfg.input_dim
    left, right = surgery.gradmax_directions(bp.xn, bp.da, bp.dlogits, count)  # (P, N+C), (P, D+1)
    p = left.shape[0]
    if p == 0:
        return None
    scale = g.gradmax_scale
    density = net.active / float(n * n)
    rows, cols = surgery.random_connections(n, p, density, generator)
    live = net.live
    c = net.cfg.output_dim
    if net.cfg.activation == "relu":
        fan_in = torch.cat((live["w_in"], live["b_in"].unsqueeze(1)), dim=1).norm(dim=1).mean()  # mean ‖[w_in_j, b_j]‖
        v = right * (scale * fan_in)  # (P, D+1)
        pre = bp.xn @ v[:, :d].t() + v[:, d]  # (B, P)
        v = v * torch.where((pre > 0).sum(dim=0) >= pre.shape[0] / 2, 1.0, -1.0).unsqueeze(1)  # fire on most samples
        w_in, b_in = v[:, :d], v[:, d]
        w_out, w_col = torch.zeros((c, p)), torch.zeros((n, p))
    else:
        fan_out = torch.cat((live["w"], live["w_out"]), dim=0).norm(dim=0).mean()  # mean ‖outgoing_j‖
        o = left.t().cpu() * torch.cat((cols.float(), torch.ones((c, p))), dim=0)  # (N+C, P) only existing connections
        o = o / o.norm(dim=0, keepdim=True).clamp_min(1e-12) * float(scale * fan_out)
        w_in, b_in = torch.zeros((p, d)), torch.zeros(p)
        w_out, w_col = o[n:], o[:n]
    return surgery.add_neurons(net.theta, net.mask, w_in, b_in, w_out, w_col, (rows, cols))


@torch.no_grad()
def grow_neurons(
    g: GrowthSettings, net: Network, samples: Samples, wanted: int, divide: int, generator: torch.Generator
) -> Growth:
    """Up to ``wanted`` new neurons: up to ``divide`` by dividing the most loaded, the rest by GradMax.

    Each step is guided by a buffer pass over the network the previous one made.
    """
    resizes: list[Resize] = []
    divided = gradmax = 0
    if divide:
        resize = grow_by_division(g, net, buffer_pass(net, samples), divide, generator)
        if resize is not None:
            divided = resize.index.numel() - net.cfg.neurons
            resizes.append(resize)
            net = net.after(resize)
    if wanted > divided:
        resize = grow_by_gradmax(g, net, buffer_pass(net, samples), wanted - divided, generator)
        if resize is not None:
            gradmax = resize.index.numel() - net.cfg.neurons
            resizes.append(resize)
    return Growth(tuple(resizes), divided=divided, gradmax=gradmax)


def retire_if_due(
    g: GrowthSettings, policy: GrowthPolicy, net: Network, samples: Samples, trained: int, born: Tensor, trigger: str
) -> Resize | None:
    """Retire dead/silent neurons: at every idle or manual check, once per horizon while training."""
    due = trigger != "interval" or trained - policy.scanned_at >= g.horizon
    if not (g.retire and due and bool(((trained - born) >= g.retire_min_age).any())):
        return None
    policy.scanned_at = trained
    keep = ~retire_candidates(g, net, buffer_activity(net, samples), trained, born)
    return surgery.retire(net.theta, net.mask, keep) if not bool(keep.all()) else None


@torch.no_grad()
def growth_check(
    policy: GrowthPolicy,
    trigger: str,
    net: Network,
    samples: Samples | None,
    counts: tuple[int, int, int],
    born: Tensor,
    generator: torch.Generator,
) -> GrowthCheck:
    """One check: retire what carries nothing, then grow on a plateau within the budget.

    ``counts`` is (trained, labelled, correct) from the prequential metrics,
    ``samples`` the normalised recent-sample buffer (None when empty), ``born``
    (N,) the labelled-sample count at each neuron's birth. Updates the policy's
    own history; returns the size changes for the Engine to apply, in order.
    """
    t0 = time.perf_counter()
    g = policy.settings
    trained, labelled, correct = counts
    policy.checked_at = trained
    policy.detector.observe(labelled, correct)
    n0, a0 = net.cfg.neurons, net.active
    if not g.enabled or samples is None:
        reason = "growth disabled" if not g.enabled else "no labelled samples yet"
        report = GrowthReport(trigger, "skipped", reason, n0, n0, a0, a0)
        return GrowthCheck((), report)
    resizes: list[Resize] = []
    retire = retire_if_due(g, policy, net, samples, trained, born, trigger)
    retired = 0
    if retire is not None:
        retired = net.cfg.neurons - retire.index.numel()
        resizes.append(retire)
        net = net.after(retire)
    plateau = policy.detector.status()
    wanted, reason = policy.decide_growth(plateau, net.cfg.neurons, net.active)
    divided = gradmax = 0
    if wanted:
        grown = grow_neurons(g, net, samples, wanted, round(wanted * g.division_share), generator)
        divided, gradmax = grown.divided, grown.gradmax
        for resize in grown.resizes:
            resizes.append(resize)
            net = net.after(resize)
        assert plateau.recent is not None  # decide_growth grows only on a judged plateau
        policy.grown_at_accuracy = plateau.recent
        policy.grown_at_trend = plateau.recent - (plateau.previous or plateau.recent)
        policy.detector.reset()
    grew = divided + gradmax > 0
    decision = {(True, True): "grew+retired", (True, False): "grew", (False, True): "retired"}.get((grew, retired > 0), "none")
    if retired:
        reason = f"retired {retired} dead or silent neuron(s); " + reason
    report = GrowthReport(
        trigger=trigger, decision=decision, reason=reason, neurons_before=n0, neurons_after=net.cfg.neurons,
        active_before=a0, active_after=net.active, divided=divided, gradmax=gradmax, retired=retired,
        recent_accuracy=plateau.recent, previous_accuracy=plateau.previous, check_ms=(time.perf_counter() - t0) * 1e3,
    )  # fmt: skip
    return GrowthCheck(tuple(resizes), report)
