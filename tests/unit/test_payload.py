"""Payload checks at the boundary, without any service."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from orchestrator.errors import InvalidPayload, PayloadTooLarge
from orchestrator.payload import validate


class Order(BaseModel):
    order_id: str
    quantity: int = 1


def test_valid_payload_gives_model_and_canonical_json() -> None:
    model, text = validate(Order, {"quantity": 2, "order_id": "A1"}, max_bytes=1024)
    assert isinstance(model, Order) and model.quantity == 2
    assert text == '{"order_id":"A1","quantity":2}'


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"order_id": "A", "quantity": float("inf")}, "not plain JSON"),
        ({"order_id": "A", "extra": {1, 2}}, "not plain JSON"),
        ({"order_id": "A", "nested": {2: "x"}}, "payload.nested has a non-string key 2"),
        ("order A1", "must be a JSON object"),
        ({"quantity": 1}, "order_id: Field required"),
    ],
)
def test_bad_payload_is_named(payload: object, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate(Order, payload, max_bytes=1024)
    assert fragment in str(caught.value)


def test_size_limit_counts_json_bytes() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 64"):
        validate(Order, {"order_id": "é" * 40}, max_bytes=64)
