"""The model services orchestrator: runs the models of DOTS simulations as Kubernetes pods.

The package is split by concern: pure modules (``topics``, ``model_inventory``,
``pod_specs``, ``pod_observation``, ``simulation_records``) decide; the
``runtime`` carries their decisions out, one simulation at a time, through
adapters it knows only as small protocols (``k8s_api`` with ``kube_errors``,
``record_store``, ``mqtt_session``); ``daemon`` wires them together, and
``testing`` fakes them for in-process tests.
"""

__version__ = "0.1.0"
