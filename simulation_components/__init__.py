"""What surrounds the orchestrator on one machine: a real control plane, Mosquitto, a fake model, the test kit.

Nothing here ships in the daemon's image; tests, the demo and the benchmarks use it.
"""
