"""The flusher's self-supervision without I/O: refused rows set apart from the batch,
errors of a round retried, a dead flushing thread reported."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg.errors
import pytest
import redis
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError

from orchestrator.state.flusher import Flusher, RoundResult, _row, cause, run_flushers
from orchestrator.state.writeback import Shard
from orchestrator.store.state_rows import RefusedRow, refusal, write_separating_refused

NUL = DataError("INSERT ...", {"rows": "secret value"},
                psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"))
DOWN = OperationalError("INSERT ...", {}, psycopg.OperationalError("connection refused"))


class FakeTable:
    """A ``write`` that refuses any batch holding NUL, as PostgreSQL's jsonb does."""

    def __init__(self, *, down: bool = False) -> None:
        self.rows: dict[str, Any] = {}
        self.statements = 0
        self.down = down

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.statements += 1
        if self.down:
            raise DOWN
        if any("\x00" in r["value"]["t"] for r in rows):
            raise NUL
        self.rows.update({r["key"]: r["value"] for r in rows})


def _rows(n: int, bad: set[int]) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "value": {"t": "a\x00b" if i in bad else "ok"}, "version": 1}
            for i in range(n)]


def test_refused_rows_are_set_apart_and_every_other_row_written() -> None:
    table = FakeTable()
    refused = write_separating_refused(_rows(500, {7, 260, 499}), table.write)
    assert [r.key for r in refused] == ["k7", "k260", "k499"]
    assert all("22P05" in r.reason and "unsupported Unicode" in r.reason for r in refused)
    assert len(table.rows) == 497 and "k8" in table.rows
    assert table.statements <= 1 + 3 * 2 * 9  # about 2 log2(n) per refused row


def test_a_clean_batch_is_one_statement() -> None:
    table = FakeTable()
    assert write_separating_refused(_rows(500, set()), table.write) == []
    assert table.statements == 1


def test_an_outage_is_raised_and_nothing_set_apart() -> None:
    table = FakeTable(down=True)
    with pytest.raises(OperationalError):
        write_separating_refused(_rows(10, {3}), table.write)
    assert table.statements == 1


def test_only_data_errors_blame_the_row() -> None:
    assert refusal(NUL) is not None
    assert refusal(DOWN) is None
    missing = ProgrammingError("INSERT ...", {},
                               psycopg.errors.UndefinedTable("relation does not exist"))
    assert refusal(missing) is None  # the schema's fault: every row would be refused
    lost = DataError("INSERT ...", {}, psycopg.errors.UntranslatableCharacter("x"),
                     connection_invalidated=True)
    assert refusal(lost) is None


def test_causes_never_quote_the_statement_parameters() -> None:
    assert cause(NUL) == "UntranslatableCharacter: unsupported Unicode escape sequence"
    assert "secret" not in cause(NUL) and "secret" in str(NUL)


@pytest.mark.parametrize(("version", "value", "why"), [
    (b"x", b"{}", "version is not a whole number"),
    (b"1", b"{nope", "value is not JSON"),
    (b"1", b"[1, 2]", "value is a JSON list, not an object"),
])
def test_records_that_cannot_be_rows(version: bytes, value: bytes, why: str) -> None:
    row, problem = _row("k", value, version)
    assert row is None and why in problem


class ScriptedFlusher(Flusher):
    """A flusher whose rounds follow a script: exceptions to raise, then success."""

    def __init__(self, outcomes: list[BaseException | None], stop: threading.Event, *,
                 forever: bool = False) -> None:
        shard = Shard("redis://127.0.0.1:9/0", redis.Redis.from_url("redis://127.0.0.1:9/0"))
        super().__init__(shard, rows=None, owner="test", interval=0.001,  # type: ignore[arg-type]
                         max_backoff=0.01)
        self.outcomes = outcomes
        self.forever = forever
        self.stop = stop
        self.rounds = 0

    def _hold_lease(self) -> bool:
        return True

    def _release_lease(self) -> None:
        pass

    def flush_once(self) -> RoundResult:
        self.rounds += 1
        if not self.outcomes:
            if not self.forever:
                self.stop.set()
            return RoundResult(0, 0)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return RoundResult(0, 0)


def test_every_kind_of_round_error_is_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    flusher = ScriptedFlusher([redis.ConnectionError("Connection refused"),
                               redis.ConnectionError("Connection refused"), DOWN, NUL,
                               ValueError("a bug"), None], stop)
    with caplog.at_level(logging.INFO, logger="orchestrator.state.flusher"):
        flusher.run(stop)  # returns: nothing escaped
    assert flusher.rounds == 7
    text = caplog.text
    assert "Redis shard 127.0.0.1:9/0 unavailable (ConnectionError: Connection refused)" in text
    assert text.count("Connection refused") == 1  # the same cause again is not re-logged
    assert "PostgreSQL unavailable (OperationalError: connection refused)" in text
    assert "PostgreSQL failed (UntranslatableCharacter" in text
    assert "round failed (ValueError: a bug)" in text
    assert "flushing again after 5 failed rounds" in text
    assert "secret value" not in text


class Died(BaseException):
    pass


def test_a_flushing_thread_that_dies_stops_the_others_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    dying = ScriptedFlusher([Died()], stop)
    healthy = ScriptedFlusher([], stop, forever=True)  # runs until stopped
    with caplog.at_level(logging.INFO, logger="orchestrator.state.flusher"):
        assert run_flushers([dying, healthy], stop) is False
    assert stop.is_set() and "died; stopping the others" in caplog.text


def test_flushers_stopped_on_request_report_success() -> None:
    stop = threading.Event()
    assert run_flushers([ScriptedFlusher([None] * 3, stop)], stop) is True


def test_refused_row_is_a_value() -> None:
    assert RefusedRow("k", "why") == RefusedRow("k", "why")
