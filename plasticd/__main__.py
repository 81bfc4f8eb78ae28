"""``python -m plasticd`` and the ``plasticd`` command (``[project.scripts]``): stop signals are recorded first.

``main`` installs the early SIGTERM/SIGINT handlers before it imports the command line (pydantic, torch,
the benchmarks: seconds on a cold cache), so a stop during start-up is a clean exit 0, never a kill.
"""

import sys

from plasticd.service import signals


def main() -> int:
    signals.install_early(signals.worker_command(sys.argv[1:]))  # before the slow imports
    from plasticd.cli import main as cli_main  # after the early signal handlers, on purpose

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
