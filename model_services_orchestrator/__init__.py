"""The model services orchestrator: runs the models of DOTS simulations as Kubernetes pods.

The package is split by concern: pure modules (``topics``, ``model_inventory``,
``pod_specs``, ``pod_observation``) decide, adapters (``k8s_api``,
``mqtt_application``) talk to the outside, and ``app`` wires them together.
"""

__version__ = "0.1.0"
