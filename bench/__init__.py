"""Benchmarks of the model services orchestrator against a real Mosquitto and the local Kubernetes API server.

``ci/bench.sh`` (``python -m bench``) runs them; ``docs/benchmarks.md`` says
what each figure means and holds the measured results.
"""
