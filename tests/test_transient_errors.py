"""One rule for "retry this, the database or broker will be back" across every stage."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from elk_resolver.store.db import describe_db_failure, is_transient_db_error, sqlstate_is_transient
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


# Every SQLSTATE PostgreSQL documents that says "try again later" (issue 22): the work waits and
# retries; the event never goes to the dead-letter topic.
TRY_AGAIN_LATER = {
    "08": ["08000", "08003", "08006", "08001", "08004", "08007", "08P01"],  # connection exception
    "25 (read-only, sessions the server ended)": ["25006", "25P03", "25P04"],
    "40 (rollback; not 40002, a constraint the data breaks at commit)": ["40000", "40001", "40003", "40P01"],
    "53": ["53000", "53100", "53200", "53300", "53400"],  # insufficient resources
    "55P03": ["55P03"],  # lock not available
    "57 and 57P": ["57000", "57014", "57P01", "57P02", "57P03", "57P04", "57P05"],  # operator intervention
    "58": ["58000", "58030", "58P01", "58P02", "58P03"],  # system error (I/O)
    "setup (credentials, grants, schema)": ["28000", "28P01", "3D000", "3F000", "42501", "42P01", "42703", "42883"],
}
# What only the data can cause: the record is dead-lettered (db_rejected) instead.
DATA_ERRORS = {
    "22": ["22000", "22001", "22003", "22007", "22008", "22P02", "22P05", "22021"],  # data exception
    "23": ["23000", "23502", "23503", "23505", "23514", "23P01"],  # integrity constraint violation
    "40002": ["40002"],
    "54": ["54000", "54001"],  # program limit exceeded (a value too large for an index row)
    "25 (a bug, not the server)": ["25001", "25P01", "25P02"],
    "42 (syntax)": ["42601", "42804"],
    "P0001": ["P0001"],  # raised by a trigger for this row
}


@pytest.mark.parametrize("family", sorted(TRY_AGAIN_LATER))
def test_every_try_again_later_sqlstate_class_pauses_instead_of_dead_lettering(family):
    for code in TRY_AGAIN_LATER[family]:
        assert sqlstate_is_transient(code), code
        assert is_transient_db_error(_postgres_error(code)), code
        assert is_transient(_postgres_error(code)), code


@pytest.mark.parametrize("family", sorted(DATA_ERRORS))
def test_only_data_errors_dead_letter(family):
    for code in DATA_ERRORS[family]:
        assert not sqlstate_is_transient(code), code
        assert not is_transient_db_error(_postgres_error(code)), code


def test_every_sqlstate_asyncpg_knows_is_decided_by_its_class():
    """No SQLSTATE asyncpg names falls between the two lists by accident: the rule is the
    class, so a code this test never listed is decided like its class."""
    codes = {cls.sqlstate for cls in vars(asyncpg.exceptions).values()
             if isinstance(cls, type) and issubclass(cls, asyncpg.PostgresError) and getattr(cls, "sqlstate", None)}
    for code in codes:
        expected = (code[:2] in {"08", "53", "58"} or code.startswith("57") or (code[:2] == "40" and code != "40002")
                    or code in {"25006", "25P03", "25P04", "55P03", "28000", "28P01", "3D000", "3F000", "42501",
                                "42P01", "42703", "42883"})
        assert sqlstate_is_transient(code) == expected, code


def test_a_read_only_database_is_named_in_words_a_person_can_act_on():
    words = describe_db_failure(_postgres_error("25006", "cannot execute INSERT in a read-only transaction"))
    assert "read-only" in words and "failover" in words and "cannot execute INSERT" in words
    assert "refuses connections" in describe_db_failure(ConnectionRefusedError(111, "[Errno 111] Connect call failed"))
    assert "did not answer in time" in describe_db_failure(TimeoutError())


def _postgres_error(code: str, message: str = "x") -> asyncpg.PostgresError:
    """The exception asyncpg raises for ``code`` (its generic class when it has none)."""
    cls = asyncpg.PostgresError
    for candidate in vars(asyncpg.exceptions).values():
        if isinstance(candidate, type) and issubclass(candidate, asyncpg.PostgresError) \
                and getattr(candidate, "sqlstate", None) == code:
            cls = candidate
    exc = cls(message)
    exc.sqlstate = code
    return exc
