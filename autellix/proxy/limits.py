"""The proxy's bounds on waiting calls and its per-call deadline (autellix/deadlines.py's rules).

Theory of operation
-------------------
The proxy holds every call from its arrival to the end of its reply; while a call waits in a
sidecar's queue the proxy holds it too. Two bounds keep a burst (or one noisy client) from growing
that without limit, and every call gets a deadline. Counting is per replica: replicas share nothing
for this (a bound of N per replica is N times the replicas for the fleet, as with vLLM
production-stack's and LiteLLM's per-instance limits), which keeps it off Redis's path.

1. Per tenant (``--max-queued-per-key``): a tenant is the API key a call came with (its key id,
   tenants.py rule 1: a SHA-256 prefix, never the key), or one tenant for everyone when the proxy
   checks no keys. A call beyond the
   tenant's bound is a 429 (deadlines.py rule 4) before it is routed: the table never sees it.
2. Per engine (``--max-queued-per-engine``): the calls this replica has on one backend (waiting in its
   sidecar's queue or running). A full engine is left out of routing, as an unhealthy one is, so the
   call goes to another engine; when every engine that serves the model is full the call is a 429.
   Its ``Retry-After`` is ``--retry-after`` seconds: the proxy cannot know when a slot frees up.
3. 0 turns a bound off. The defaults (1024 per tenant, 2048 per engine) are above anything a single
   engine serves at once, so they only stop a runaway client, never normal traffic.
4. Deadline: :func:`~autellix.deadlines.call_timeout` of the request's headers against
   ``--max-call-seconds``, held as an event-loop time (``loop.time()``, monotonic) for the steps of
   the call (exchange.py and relay.py read what is left).

Pure: the counts are plain data, changed by ``enter``/``leave``; the shell (calls.py) calls them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from autellix.api_errors import ApiError
from autellix.deadlines import queue_full

DEFAULT_TENANT = "-"  # rule 1: the tenant of a proxy that checks no keys


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_queued_per_key: int = 1024
    max_queued_per_engine: int = 2048
    retry_after: float = 1.0
    max_call_seconds: float = 3600.0


class CallLimits:
    """Rules 1-3: who has how many calls, and whether one more may come in."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self._tenants: Counter[str] = Counter()

    def tenant_calls(self, tenant: str) -> int:
        return self._tenants[tenant]

    def enter(self, tenant: str) -> None:
        """Rule 1: count the call in, or raise the 429 (the call is then not counted)."""
        bound = self.settings.max_queued_per_key
        if bound > 0 and self._tenants[tenant] >= bound:
            raise queue_full(
                f"Too many calls in progress for this API key ({bound}, --max-queued-per-key); "
                "retry after the Retry-After seconds",
                self.settings.retry_after,
            )
        self._tenants[tenant] += 1

    def leave(self, tenant: str) -> None:
        left = self._tenants[tenant] - 1
        if left > 0:
            self._tenants[tenant] = left
        else:
            del self._tenants[tenant]

    def engine_full(self, in_flight: int) -> bool:
        """Rule 2: whether an engine with ``in_flight`` calls of this replica takes no more."""
        bound = self.settings.max_queued_per_engine
        return bound > 0 and in_flight >= bound

    def engines_full(self) -> ApiError:
        """Rule 2: every engine that serves the model is at its bound."""
        return queue_full(
            f"Every engine serving this model has {self.settings.max_queued_per_engine} calls in progress "
            "(--max-queued-per-engine); retry after the Retry-After seconds",
            self.settings.retry_after,
        )
