"""Raises at import, always: the app can never load."""

raise RuntimeError("simulated import-time failure")
