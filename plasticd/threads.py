"""torch's intra-op threads: the one place plasticd sets them (``runtime.threads``; benchmarks pin their own).

Kept free of a module-level torch import, so a command module can import it while the parser is built.
"""

from __future__ import annotations


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads from now on (0: leave torch's default, one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
