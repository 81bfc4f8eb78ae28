"""Joining the group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...).

The process group is torch.distributed's: gloo on the CPU, and NCCL for the
weights when the model lives on a GPU (``replicas.backend``). A replica
that cannot reach the group within ``replicas.timeout_seconds`` exits with a
message that says where it looked; the same timeout bounds every later wait
for a peer, so a dead or hung replica stops the others (torchrun then
restarts the group from the last agreed checkpoint) instead of blocking them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from plasticd.config import Settings
from plasticd.errors import PlasticdError


class ReplicaError(PlasticdError):
    """A replica cannot join or keep up with its group (exit code 1: torchrun restarts the group)."""


@dataclass(frozen=True)
class Replica:
    """This process's place in the group, as torchrun set it."""

    rank: int
    world_size: int
    local_rank: int
    master: str  # MASTER_ADDR:MASTER_PORT, for messages

    @property
    def leader(self) -> bool:
        """Rank 0: the one that holds the model lock, maintains the model and writes checkpoints."""
        return self.rank == 0


def from_env(environ: Mapping[str, str] | None = None) -> Replica | None:
    """The replica torchrun started (None outside torchrun); a malformed variable is a ReplicaError."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise ReplicaError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (torchrun sets them): {exc}") from None
    if not 0 <= rank < world:
        raise ReplicaError(f"RANK {rank} is outside 0..{world - 1} (WORLD_SIZE {world})")
    master = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    return Replica(rank=rank, world_size=world, local_rank=local, master=master)


def backend_for(settings: Settings, device: torch.device) -> str:
    """``gloo``, or gloo for control messages and NCCL for CUDA tensors (every replica must resolve the same)."""
    wanted = settings.replicas.backend
    if wanted == "gloo" or (wanted == "auto" and device.type != "cuda"):
        return "gloo"
    return "cpu:gloo,cuda:nccl"


def join(replica: Replica, settings: Settings, device: torch.device) -> str:
    """Form the process group (env:// rendezvous); returns the backend. ReplicaError when the group is out of reach."""
    backend = backend_for(settings, device)
    timeout = datetime.timedelta(seconds=settings.replicas.timeout_seconds)
    if device.type == "cuda":
        torch.cuda.set_device(replica.local_rank % max(torch.cuda.device_count(), 1))
    try:
        store, _, _ = next(dist.rendezvous("env://", replica.rank, replica.world_size, timeout=timeout))
        # torchrun's agent store outlives a restart: without a prefix per attempt the restarted replicas
        # read the dead ones' addresses and gloo's connectFullMesh is refused (seen with torch 2.13)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"plasticd/attempt-{attempt}", store)
        dist.init_process_group(backend=backend, store=store, rank=replica.rank, world_size=replica.world_size, timeout=timeout)
        dist.barrier()  # every replica is here: a missing one shows now, within the timeout, not at the first sync
    except (RuntimeError, ValueError, OSError) as exc:
        raise ReplicaError(
            f"replica {replica.rank} of {replica.world_size} cannot reach its group at {replica.master} within "
            f"{settings.replicas.timeout_seconds:g} s (replicas.timeout_seconds): {exc}. Start every replica with the "
            "same torchrun --nnodes/--nproc-per-node/--rdzv-endpoint, and check that the port is open between hosts"
        ) from None
    return backend


def leave() -> None:
    """Tear the process group down (quietly: after a peer died there may be nothing left to say goodbye to)."""
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError, ValueError):
            dist.destroy_process_group()
