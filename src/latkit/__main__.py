"""`python -m latkit` runs the command line."""

import sys

from latkit.cli import main

if __name__ == "__main__":  # a spawned worker re-imports this module; it must not re-run the CLI
    sys.exit(main())
