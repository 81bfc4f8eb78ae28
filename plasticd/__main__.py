import sys

from plasticd.cli import main

sys.exit(main())
