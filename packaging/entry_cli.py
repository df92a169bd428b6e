"""The console `sd3desk-cli` executable of the bundle: every `sd3desk` command."""

import sys

from sd3desk.cli import main

if __name__ == "__main__":
    sys.exit(main())
