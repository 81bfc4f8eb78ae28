"""``plasticd run --replicas N``: the group's launcher, torch's elastic agent inside one plasticd process.

The launcher is what ``torchrun`` is (one ``LocalElasticAgent`` per host,
c10d rendezvous, restarts after a replica dies, up to ``--max-restarts``),
with the operator's contract of the plain daemon:

* the first SIGTERM/SIGINT is passed to every replica (torch's agent sends
  it to each replica's session); they meet once more, checkpoint and exit
  0, and then the launcher exits 0 (torchrun raises ``SignalException`` and
  exits 1 after a clean stop). It exits 1 when a replica did not stop
  cleanly within ``replicas.timeout_seconds`` + ``STOP_GRACE_S`` (then it is
  killed), or when the group failed more often than ``--max-restarts``;
* the agent's own messages go through plasticd's log (``library.log``
  events, JSON lines in JSON mode), the replicas write their JSON lines to
  the same stderr, and nothing else is printed: no torchrun banner, no
  traceback;
* each replica runs ``python -m plasticd run`` with the same arguments
  (without the launcher's) and torchrun's environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``TORCHELASTIC_RESTART_COUNT``), one torch
  thread unless ``OMP_NUM_THREADS`` says otherwise.

Across hosts, run one launcher per host with the same ``--nnodes``,
``--rdzv-endpoint`` (node 0's address) and ``--rdzv-id``.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from plasticd.errors import ConfigError
from plasticd.log import get_logger

STOP_GRACE_S = 30  # beyond replicas.timeout_seconds, for the final sync and checkpoint after a stop signal
LAUNCHER_OPTIONS = ("--replicas", "--nnodes", "--rdzv-endpoint", "--rdzv-id", "--max-restarts")  # each takes a value


@dataclass(frozen=True)
class Launch:
    """How the launcher forms the group (``plasticd run --replicas``)."""

    replicas: int  # on this host
    nnodes: int = 1
    endpoint: str = ""  # host:port of the rendezvous; "" on one host: a free local port
    run_id: str = ""  # the group's name at the rendezvous; "" on one host: a fresh one
    max_restarts: int = 3
    stop_seconds: int = 60  # how long the replicas may take to stop after the signal


def worker_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` (after the program name) without the launcher's options: what each replica runs."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCHER_OPTIONS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _agent_class():  # noqa: ANN202 - torch's class, imported late (slow)
    from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
    from torch.distributed.elastic.multiprocessing.api import SubprocessContext

    class GroupAgent(LocalElasticAgent):
        """torch's agent, remembering how each replica exited when it stopped them (after a signal: clean or not)."""

        exit_codes: dict[int, int | None] = {}  # noqa: RUF012 - replaced per instance by each shutdown

        def _shutdown(self, death_sig: signal.Signals = signal.SIGTERM, timeout: int = 30) -> None:
            super()._shutdown(death_sig, timeout)
            context = self._pcontext
            if isinstance(context, SubprocessContext):
                self.exit_codes = {rank: h.proc.returncode for rank, h in context.subprocess_handlers.items()}

        def stop_now(self, sig: signal.Signals) -> None:
            """A second signal cut the graceful stop short: pass it on (a replica exits at once on its second)."""
            for sig_num in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig_num, signal.SIG_IGN)
            if self._pcontext is not None:
                self._pcontext.close(sig, 5)

    return GroupAgent


def launch(launch: Launch, argv: Sequence[str]) -> int:
    """Run the group until it stops; 0 when every replica stopped cleanly (after a signal, or on its own), else 1."""
    from torch.distributed.elastic.agent.server.api import WorkerSpec
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous import registry as rdzv_registry

    from plasticd.service import signals

    log = get_logger("launcher")
    if signals.take_early() is not None:
        log.info("launcher.stopped", replicas=0, message="a stop signal came before the group started")
        return 0
    if launch.nnodes > 1 and not launch.endpoint:
        raise ConfigError("--nnodes above 1 needs --rdzv-endpoint HOST:PORT (node 0's address, the same on every host)")
    endpoint = launch.endpoint or "127.0.0.1:0"
    params = RendezvousParameters(
        backend="c10d",
        endpoint=endpoint,
        run_id=launch.run_id or f"plasticd-{uuid.uuid4().hex[:12]}",
        min_nodes=launch.nnodes,
        max_nodes=launch.nnodes,
    )
    spec = WorkerSpec(
        role="plasticd",
        local_world_size=launch.replicas,
        entrypoint=sys.executable,
        args=("-m", "plasticd", *worker_argv(argv)),
        rdzv_handler=rdzv_registry.get_rendezvous_handler(params),
        max_restarts=launch.max_restarts,
        monitor_interval=0.5,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun does for several replicas; the replicas inherit it
    os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGTERM,SIGINT,SIGHUP,SIGQUIT"
    agent = _agent_class()(spec=spec, logs_specs=DefaultLogsSpecs(), start_method="spawn", shutdown_timeout=launch.stop_seconds)
    log.info(
        "launcher.started", replicas=launch.replicas, nnodes=launch.nnodes, endpoint=endpoint,
        max_restarts=launch.max_restarts, pid=os.getpid(),
    )  # fmt: skip
    stopped_by: str | None = None
    try:
        result = agent.run()
    except SignalException as exc:
        stopped_by = signal.Signals(exc.sigval).name
        codes = agent.exit_codes
        if not codes:  # a second signal came while the replicas were stopping
            agent.stop_now(signal.Signals(exc.sigval))
        clean = bool(codes) and all(code == 0 for code in codes.values())
        log.info("launcher.stopped", signal=stopped_by, exit_codes={str(k): v for k, v in sorted(codes.items())}, clean=clean)
        return 0 if clean else 1
    finally:
        if stopped_by is None:  # torch keeps the rendezvous open after a signal (other hosts may still scale)
            spec.rdzv_handler.shutdown()
    if result.is_failed():
        failures = {str(rank): f.exitcode for rank, f in sorted(result.failures.items())}
        log.error(
            "launcher.failed", exit_codes=failures, max_restarts=launch.max_restarts,
            message=f"the group failed more often than --max-restarts {launch.max_restarts}: see the replicas' plasticd.failed",
        )  # fmt: skip
        return 1
    log.info("launcher.stopped", clean=True)
    return 0
