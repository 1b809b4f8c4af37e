"""`python -m latkit` runs the command line."""

import sys

from latkit.cli import main

sys.exit(main())
