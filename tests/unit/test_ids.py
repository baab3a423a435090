"""Invocation ids are version 7 UUIDs: unique, and ordered by creation time as text."""

from __future__ import annotations

import uuid

from orchestrator.ids import new_invocation_id, uuid7


def test_an_invocation_id_is_a_version_7_uuid_in_text_form() -> None:
    made = new_invocation_id()
    parsed = uuid.UUID(made)
    assert str(parsed) == made and len(made) == 36
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_ids_sort_by_their_millisecond_as_text() -> None:
    times = [1_700_000_000_000 + step for step in (0, 1, 2, 999, 1000, 86_400_000)]
    ids = [str(uuid7(ms)) for ms in times]
    assert sorted(ids) == ids
    # The millisecond is the first 48 bits, as RFC 9562 places it.
    assert [uuid.UUID(i).int >> 80 for i in ids] == times


def test_ids_of_one_millisecond_differ_in_their_random_bits() -> None:
    made = {str(uuid7(1_700_000_000_000)) for _ in range(5000)}
    assert len(made) == 5000
