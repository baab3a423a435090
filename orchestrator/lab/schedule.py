"""The arrival schedule: seeded, so the same ``--seed`` gives every profile the same
traffic (times, customers, tickets, messages)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.lab.scenario import Scenario

MESSAGES = (
    "I was charged twice for my subscription this month.",
    "My parcel has not arrived and tracking stopped updating.",
    "The app crashes when I upload a photo.",
    "How do I change the email address on my account?",
    "I want a refund for a damaged item.",
)


@dataclass(frozen=True)
class Arrival:
    """One invocation to submit ``at`` seconds after the run starts."""

    index: int
    at: float
    customer_id: str
    ticket_id: str
    message: str

    def payload(self, run: str) -> dict[str, str]:
        return {"customer_id": f"{run}-{self.customer_id}",
                "ticket_id": f"{run}-{self.ticket_id}", "message": self.message}


def arrivals(scn: Scenario, seed: int) -> list[Arrival]:
    """A non-homogeneous Poisson process over the run (thinning against the peak rate),
    each arrival for a customer drawn uniformly: deterministic for ``(scn, seed)``."""
    rng = random.Random(seed)
    peak = scn.rate * scn.peak_shape()
    found: list[Arrival] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= scn.seconds:
            break
        if rng.random() * scn.peak_shape() > scn.shape(t):
            continue
        n = len(found)
        found.append(Arrival(n, round(t, 4), f"c{rng.randrange(scn.customers)}",
                             f"t{n}", MESSAGES[rng.randrange(len(MESSAGES))]))
    return found
