"""Stand-ins for the parts around the orchestrator: fake models, a fake SO and local cluster tooling.

Nothing here ships in the daemon's image; tests, the demo and the benchmarks use it.
"""
