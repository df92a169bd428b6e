"""Core: plain Python (no Qt, no torch): requests, metadata, settings, the queue, the gallery."""
