"""Qt widgets. Never imports torch; gets its models injected."""
