"""Files requeued after a crash, shared across the live replicas.

At start-up rank 0 alone settles the sessions no live replica owns
(``Worker.adopts``): it moves on what the checkpoint covers, finishes
quarantines, and requeues every uncovered claim into its own feed. Left
there, rank 0 would learn all of them while the others wait for new files
(after a kill -9 under load: hundreds). So right after recovery rank 0
broadcasts the requeued claims (session id, file name, sequence number, in
its order) and replica r keeps the i-th for i mod W = r: each learns its
share first, rank 0 keeps its own and drops the rest from its feed. The
split is decided by rank 0 alone, after its recovery, so no claim is taken
twice or by nobody. A claim stays in the dead session's folder, under its
stable key, whoever learns it; the replica that learned it moves it on once
a checkpoint covers it, as it does its own claims.
"""

from __future__ import annotations

import torch.distributed as dist

from plasticd.distributed.group import Replica
from plasticd.service.claims import Claim
from plasticd.service.feeds import FileFeed
from plasticd.service.worker import Worker


def share(worker: Worker, replica: Replica) -> int:
    """Split rank 0's requeued claims across the group (collective); returns how many this replica took."""
    feed = worker.feed
    assert isinstance(feed, FileFeed), "replicas run the inbox daemon"
    box: list = [None]
    if replica.leader:
        box = [[(c.session.id, c.path.name, c.seq) for c in feed.recovered]]
    dist.broadcast_object_list(box, src=0)
    listed: list[tuple[str, str, int]] = box[0]
    mine = [entry for i, entry in enumerate(listed) if i % replica.world_size == replica.rank]
    if replica.leader:
        keep = {(sid, name) for sid, name, _ in mine}
        kept = [c for c in feed.recovered if (c.session.id, c.path.name) in keep]
        feed.recovered.clear()
        feed.recovered.extend(kept)
    elif mine:
        assert worker.work is not None, "replicas claim into a work area"
        sessions = {s.id: s for s in worker.work.sessions()}
        feed.requeue([Claim(session=sessions[sid], path=sessions[sid].folder / name, seq=seq) for sid, name, seq in mine])
    if listed:
        worker.log.info("recovery.shared", rank=replica.rank, requeued=len(listed), taken=len(mine))
    return len(mine)
