"""Entry point for `python -m sd3desk`."""

from sd3desk.cli import main

raise SystemExit(main())
