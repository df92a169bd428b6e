"""The only package that imports torch, diffusers and transformers (always lazily)."""

import os

# The ML libraries log import-time chatter (optional backends, deprecations) that users cannot
# act on; our own progress and errors say what matters. An explicit setting still wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
