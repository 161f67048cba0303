"""The master side: everything that runs in the master process (docs/architecture.md)."""
