"""inferplane: an open inference platform.

Envoy is the data plane, ``inferplane.picker`` is a Gateway API Inference Extension endpoint
picker speaking Envoy ``ext_proc``, and ``inferplane.server`` is an OpenAI-compatible model server
exporting vLLM's metrics.
"""

__version__ = "0.1.0"
