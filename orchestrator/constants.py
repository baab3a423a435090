"""Every Redis key prefix the orchestrator writes, each with the reason it exists.

All keys live under ``orch:`` so an operator can find (and never collide with) ours.
"""

from __future__ import annotations

PREFIX = "orch:"

# An in-flight invocation's step records and claims (a hash). It lives beside the
# broker's messages because it is exactly as durable as they are: the messages carry
# the outputs, the hash says which steps are done and who runs which.
INFLIGHT = PREFIX + "inflight:{invocation_id}"

# How long an in-flight hash outlives its last write: longer than any redelivery can
# come late (the visibility timeout), so a late duplicate still finds "done".
INFLIGHT_MIN_TTL_SECONDS = 24 * 3600
