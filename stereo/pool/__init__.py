"""The job pool (docs/pool.md): the caller's side (:mod:`.client`, inside every worker) and the
pool process (:mod:`.process`, ``python -m stereo.pool``, started by the master for --pool)."""
