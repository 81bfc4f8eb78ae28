"""Replicas: several ``plasticd run`` processes, started by ``torchrun``, that learn one model.

Each replica claims files from the shared inbox into its own work-area
session (claim-by-rename gives each file to exactly one of them), learns
from them with in-step maintenance off, and every ``replicas.sync_samples``
labelled samples (counted over the group) or ``replicas.sync_seconds`` the
group meets: weights and input statistics are averaged (``averaging``),
rank 0 rewires, grows or merges the averaged model and the others follow
(``structure``), and rank 0 saves a checkpoint that covers every replica's
claims (``coordinator``). One replica (``WORLD_SIZE=1``) is the plain daemon.
"""
