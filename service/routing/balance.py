"""The order in which a call tries the targets of its route."""

from __future__ import annotations

import random

from service.routing.policy import RoutePolicy, RouteTarget, Strategy


def attempt_order(policy: RoutePolicy, rng: random.Random) -> list[RouteTarget]:
    """The route's targets in the order this call tries them.

    ``fallback`` strategy: as configured. ``weighted``: a weighted random permutation of
    ``targets`` (each target comes first with probability weight / total, and the others
    follow in the same way: Efraimidis-Spirakis keys), then ``fallback`` in order.
    """
    if policy.strategy is Strategy.WEIGHTED and len(policy.targets) > 1:
        keyed = sorted(
            policy.targets,
            key=lambda t: rng.random() ** (1.0 / t.weight),
            reverse=True,
        )
        return [*keyed, *policy.fallback]
    return [*policy.targets, *policy.fallback]
