"""Observability: the Prometheus exporter (``--metrics``) and the web dashboard (``stereo
dashboard``, ``--dashboard``), in a process of their own (docs/observability.md).

Nothing here runs in the master. This process reads the master through its control socket
(the ``snapshot`` command, and ``logs`` where the master has it) and acts on it with the same
commands as ``stereo ctl``; it measures worker CPU and memory itself with psutil. So a scrape
or an open dashboard costs the master's relay one control request per scrape or second.
"""
