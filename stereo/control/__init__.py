"""The control plane: the control socket's server, its clients (console, ctl, top) and the
commands they run (docs/architecture.md)."""
