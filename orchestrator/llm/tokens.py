"""Token estimates for reserving TPM before a call (settled to real usage after)."""

from __future__ import annotations

import math


def estimate_prompt(messages: list[dict[str, str]]) -> int:
    """About four characters a token, plus a few tokens of framing per message."""
    return sum(math.ceil(len(m.get("content") or "") / 4) + 4 for m in messages) + 2
