import sys

from plasticd.service import signals

signals.install_early(signals.worker_command(sys.argv[1:]))  # before the slow imports: SIGTERM at start-up exits 0

from plasticd.cli import main  # noqa: E402 - after the early signal handlers, on purpose

sys.exit(main())
