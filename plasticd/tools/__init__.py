"""Operator tools: ``plasticd predict``, ``checkpoints``, ``rollback`` and ``export``.

Each module of this package registers its sub-commands with ``register(subparsers)``,
which returns the parsers it added; each parser sets ``run=``, a function
``run(settings, args) -> exit code``: the one way every command is registered
(``plasticd/commands.py``, ``add_commands``).

The modules are imported while the parser is built, for every ``plasticd``
command, so they keep torch and the engine inside the functions that run.
``loader.py`` is the exception to the package's rules: it imports nothing from
plasticd, so it can be copied next to an exported model and used on its own.
"""

from __future__ import annotations

from plasticd.config import Settings
from plasticd.errors import ConfigError
from plasticd.threads import set_threads

TOOLS = tuple(f"{__name__}.{m}" for m in ("predict", "rollback", "export"))  # in the order --help lists them


def setup(settings: Settings) -> None:
    """Logging on stderr (never into ``log.file``: a tool must not write the daemon's files) and torch's threads."""
    import torch

    from plasticd import log

    log.configure(level=settings.log.level, fmt=settings.log.format)
    if settings.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is cuda but torch sees no CUDA device; use --device auto or --device cpu")
    set_threads(settings.runtime.threads)
