"""The bundle's one entry point: `sd3desk` with no command opens the window, otherwise it is
the command line (`sd3desk-cli` is the same program, with a console on Windows)."""

import sys

from sd3desk.cli import main

if __name__ == "__main__":
    sys.exit(main())
