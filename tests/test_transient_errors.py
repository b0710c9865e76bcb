"""One rule for "retry this, the database or broker will be back" across every stage."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaConnectionError

from elk_resolver.store.db import is_transient_db_error
from streams.record_worker import is_transient


def test_connection_failures_are_transient_and_data_errors_are_not():
    assert is_transient_db_error(ConnectionRefusedError(111, "refused"))
    assert is_transient_db_error(asyncpg.CannotConnectNowError("starting up"))
    assert is_transient_db_error(asyncpg.AdminShutdownError("shutting down"))
    assert is_transient_db_error(asyncpg.DeadlockDetectedError("deadlock"))
    assert is_transient_db_error(asyncpg.InterfaceError("connection is closed"))
    # DataError subclasses InterfaceError but is about the value: retrying can never help
    assert not is_transient_db_error(asyncpg.DataError("invalid input for query argument"))
    assert not is_transient_db_error(asyncpg.UniqueViolationError("duplicate key"))
    assert not is_transient_db_error(ValueError("bug"))


def test_the_per_record_stages_also_wait_out_a_broker_outage():
    assert is_transient(KafkaConnectionError())
    assert is_transient(asyncpg.CannotConnectNowError("starting up"))
    assert not is_transient(asyncpg.DataError("bad value"))
