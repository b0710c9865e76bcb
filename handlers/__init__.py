"""One plain module per stage: decoded events and a database connection in, what the stage
stores and emits out. No broker is imported here, so the CLI (replay, approvals) and the tests
call the handlers directly."""
