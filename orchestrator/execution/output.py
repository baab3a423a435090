"""Step outputs must be plain JSON that PostgreSQL's ``jsonb`` can store.

Refused, with an error naming the step and where in the output the problem is:
values ``json`` cannot encode (``datetime``, ``set``, objects), NaN and infinities,
object keys that are not strings (``json`` would silently turn ``1`` into ``"1"``), and
text holding NUL (``\\u0000``), which ``jsonb`` rejects. Refusing at the step, rather
than escaping, keeps what a step returns exactly what the next step and ``get`` see.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import InvalidOutput
from orchestrator.payload import plain_json_problem


def check_output(step: str, output: Any) -> None:
    """Raise ``InvalidOutput`` (naming ``step``) unless ``output`` is plain, storable JSON."""
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidOutput(f"step {step} returned output that is not plain JSON: {exc}") \
            from None
    problem = plain_json_problem(output, "output")
    if problem:
        raise InvalidOutput(f"step {step} returned output that is not plain JSON: {problem}")
