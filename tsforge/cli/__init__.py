"""Command-line entry points (`tsforge ...`)."""
