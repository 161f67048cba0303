"""Stereo's benchmark suite: relay throughput, latency, shared-socket serving and runtime costs.

Each workload runs for stereo and for what users would pick instead (a ZeroMQ proxy, Redis
pub/sub, Node.js ``cluster``) in the same run on the same machine, so the ratios mean something.
Run it with ``python -m bench``; docs/benchmarks.md describes the method.
"""
