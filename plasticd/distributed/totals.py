"""The group's totals: what every replica counted, gathered with each turn's agreement.

Each replica's counters start from the checkpoint it loaded (the group's
totals when it was saved) and then count only its own files, so on its own
a replica's ``files_processed`` is neither the group's nor its own. With
every turn's flags (``coordinator``) each replica also sends a row of what
it counted since the group started (files processed and failed, samples)
and since the last sync (samples seen, labelled, correct, trained), and its
queue; every replica then holds every row, so each can tell the group's
totals:

* ``files_processed``, ``files_failed``, ``samples``: the checkpoint's plus
  every replica's since the start (what the next checkpoint saves);
* ``samples_seen``, ``samples_labelled``, ``samples_trained`` and
  ``accuracy``: the last sync's (the group's, ``clocks``) plus every
  replica's since;
* ``replicas``: each replica's own counts since the group started, labelled
  with its rank (status file, ``/metrics`` ``plasticd_replica_*{rank}``,
  ``daemon.stopped``).

These replace the replica's own counts in its status file (so ``plasticd
status``, which reads rank 0's, and the metrics exporter, which serves rank
0's, show the group) and are added to ``daemon.stopped``.
"""

from __future__ import annotations

import torch

from plasticd.learn.replication import Counts
from plasticd.service.worker import Worker

COUNTERS = ("files_processed", "files_failed", "samples")  # since the group started
METRICS = ("seen", "labelled", "correct", "trained")  # since the last sync
ROW = len(COUNTERS) + len(METRICS) + 2  # and the queue depth, files waiting for a checkpoint


def row(worker: Worker, counters_at_start: dict[str, int], marks: Counts) -> torch.Tensor:
    """This replica's row (float64: counts are exact below 2^53)."""
    now = worker.counters.as_dict()
    m = worker.engine.counts()
    values = [now[k] - counters_at_start[k] for k in COUNTERS]
    values += [m.seen - marks.seen, m.labelled - marks.labelled, m.correct - marks.correct, m.trained - marks.trained]
    values += [worker.feed.backlog, worker.checkpoints.waiting]
    return torch.tensor(values, dtype=torch.float64)


class Totals:
    """The group's totals and each replica's counts, as the last gathered rows tell them."""

    def __init__(self, world_size: int, counters_at_start: dict[str, int]) -> None:
        self.world_size = world_size
        self.counters_at_start = dict(counters_at_start)
        self.rows = torch.zeros((world_size, ROW), dtype=torch.float64)
        self.marks: Counts | None = None

    def update(self, rows: torch.Tensor, marks: Counts) -> None:
        """Every replica's row (``(W, ROW)``, in rank order) and the counts agreed at the last sync."""
        self.rows, self.marks = rows.clone(), marks

    def update_counters(self, since_start: list[dict[str, int]]) -> None:
        """Every replica's counters since the start, as a checkpoint gathered them (fresher than the last turn's)."""
        for rank, counts in enumerate(since_start):
            for i, k in enumerate(COUNTERS):
                self.rows[rank, i] = float(counts[k])

    def group(self) -> dict:
        """The group's totals, keyed as the status file keys its own counts."""
        sums = self.rows.sum(dim=0).tolist()
        out: dict = {k: self.counters_at_start[k] + int(sums[i]) for i, k in enumerate(COUNTERS)}
        if self.marks is not None:
            base = len(COUNTERS)
            seen, labelled, correct, trained = (int(sums[base + i]) for i in range(len(METRICS)))
            mk = self.marks
            labelled += mk.labelled
            out |= {
                "samples_seen": mk.seen + seen,
                "samples_labelled": labelled,
                "samples_trained": mk.trained + trained,
                "accuracy": (mk.correct + correct) / labelled if labelled else None,
            }
        return out

    def each(self) -> list[dict]:
        """Each replica's own counts since the group started, its queue and files waiting, with its rank."""
        out = []
        for rank, values in enumerate(self.rows.tolist()):
            entry: dict = {"rank": rank} | {k: int(values[i]) for i, k in enumerate(COUNTERS)}
            entry |= {"queue_depth": int(values[-2]), "pending_files": int(values[-1])}
            out.append(entry)
        return out
