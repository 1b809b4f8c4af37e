"""`python -m latkit.cli` runs the command line."""

import sys

from latkit.cli import main

sys.exit(main())
