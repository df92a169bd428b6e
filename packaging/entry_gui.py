"""The windowed `sd3desk` executable of the bundle: the window, or `--self-test`."""

import sys

from sd3desk.app import main

if __name__ == "__main__":
    sys.exit(main())
