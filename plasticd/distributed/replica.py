"""Assembly of one replica of ``plasticd run`` under torchrun (the inbox daemon; not ingest, not the stream).

What differs from the single daemon (``service/daemon.py``):

* the process group is formed first (``group.join``); a replica that cannot
  reach it exits with code 1;
* only rank 0 takes the model lock, serves metrics and talks to systemd;
* each replica has its own ``paths.state`` (rank 0 the configured one, so
  ``plasticd status`` reads the group's leader; rank r ``<state>/replica-r``):
  its own status file and predictions journal;
* the scheduler only posts rescans: idle maintenance and timed checkpoints
  are the group's decisions, taken at its barriers (``coordinator``).

The shared folders (inbox, work, processed, failed, checkpoints) must be on
one file system that renames atomically and sees every replica's renames at
once: a local disk for replicas on one host; across hosts NFSv4 (rename is
atomic on the server, and of two clients renaming the same name one gets
ENOENT), never an eventually consistent object store or a FUSE mount
without atomic rename.
"""

from __future__ import annotations

import contextlib
import queue
from pathlib import Path

import torch

from plasticd.config import Settings
from plasticd.distributed import group
from plasticd.distributed.coordinator import Coordinator
from plasticd.learn.engine import resolve_device
from plasticd.service.daemon import RunCount, build_file_worker, check_folders, model_lock
from plasticd.service.messages import Message, Rescan, Wake
from plasticd.service.notify import Notifier
from plasticd.service.prometheus import start_exporter
from plasticd.service.scheduler import MaintenanceScheduler
from plasticd.service.sources import InboxSource
from plasticd.service.worker import Worker

REPLICA_STATE = "replica-{rank}"  # under paths.state, for ranks above 0


def own_settings(settings: Settings, replica: group.Replica) -> Settings:
    """``settings`` with this replica's own ``paths.state`` (rank 0 keeps the configured one)."""
    if replica.leader:
        return settings
    state = settings.paths.state / REPLICA_STATE.format(rank=replica.rank)
    return settings.model_copy(update={"paths": settings.paths.model_copy(update={"state": state})})


def rescans_only(worker: Worker):  # noqa: ANN201 - a post function
    """The scheduler's post, keeping only rescans and wakes: maintenance and checkpoints are the group's."""

    def post(message: Message) -> None:
        if isinstance(message, Rescan | Wake):
            worker.post(message)

    return post


def run_replica(settings: Settings, replica: group.Replica) -> int:
    """One replica of the inbox daemon, until the group agrees to stop; returns the exit code."""
    device = resolve_device(settings.runtime.device)
    backend = group.join(replica, settings, device)
    comm_device = device if backend != "gloo" else torch.device("cpu")
    try:
        settings = own_settings(settings, replica)
        p = settings.paths
        folders = {f"paths.{n}": getattr(p, n) for n in ("inbox", "processed", "failed", "work", "checkpoints", "state")}
        check_folders(folders, "paths.inbox")
        lock = model_lock(p.checkpoints) if replica.leader else contextlib.nullcontext()
        with lock:
            return _serve(settings, replica, comm_device, backend)
    finally:
        group.leave()


def _serve(settings: Settings, replica: group.Replica, comm_device: torch.device, backend: str) -> int:
    p = settings.paths
    messages: queue.SimpleQueue[Message] = queue.SimpleQueue()  # the worker's: the watcher's wake-ups go there
    source = InboxSource(p.inbox, settings.daemon.settle_seconds, wake=lambda: messages.put(Wake()))
    notifier = None if replica.leader else Notifier("")  # systemd hears rank 0 only
    worker = build_file_worker(
        settings, source, p.processed, messages=messages, replica=(replica.rank, replica.world_size), notifier=notifier
    )
    worker.heartbeat.ready_facts.update(watching=str(Path(p.inbox).absolute()), destination=str(Path(p.processed).absolute()))
    coordinator = Coordinator(worker, replica, settings, comm_device, backend)
    worker.on_batch.append(RunCount())
    exporter = start_exporter(worker, settings.metrics) if replica.leader else None
    scheduler = MaintenanceScheduler(settings, worker.activity, rescans_only(worker), watch_inbox=True)
    source.start()
    scheduler.start()
    try:
        return coordinator.run()
    finally:
        if exporter is not None:
            exporter.stop()
        scheduler.stop()
        source.stop()
        worker.predictions.close()
        worker.notifier.close()
        if worker.work is not None and worker.session is not None:
            worker.work.remove_if_empty(worker.session)
