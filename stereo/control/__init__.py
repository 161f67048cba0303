"""The control plane: the control socket's server, its clients (console, ctl, top) and the
commands they run.

Client side: :mod:`.client` (the connection), :mod:`.syntax` (typed lines -> requests),
:mod:`.render` (results -> text), :mod:`.console`, :mod:`.top`, :mod:`.cli`. Master side:
:mod:`.server` (the socket), :mod:`.commands` (what each request does), :mod:`.sampler` (psutil).
Nothing here imports :mod:`stereo.master`: the commands read a running master through
:mod:`stereo.snapshot` and act on it through :class:`.commands.Target`, which the master
implements and hands to the server.
"""
