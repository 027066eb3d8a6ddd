"""``sim``: the adapter for autellix's simulated engine (``autellix sim-engine``; DESIGN.md §4).

The simulated engine speaks vLLM's API and exports vLLM's metric names, so the adapter is vLLM's
(rules in vllm.py). It exists as its own kind so that the sidecar's logs and metrics say what it
fronts, and so that the simulated engine can grow its own extensions (e.g. telling its scheduling
policy, which ``auto`` priority detection would then pick up from ``/server_info``) without touching
the vLLM adapter.
"""

from __future__ import annotations

from autellix.engine_adapters.base import register_adapter
from autellix.engine_adapters.vllm import VllmAdapter


@register_adapter("sim")
class SimAdapter(VllmAdapter):
    """The simulated engine: vLLM-compatible in every respect the sidecar uses."""
