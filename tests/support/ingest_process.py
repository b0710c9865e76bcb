"""The ingest stage alone in its own process, configured by ``ELK_RESOLVER_*`` variables.

``--kill-after-db-commit`` SIGKILLs the process right after its first database commit, before
anything is published or any offset committed: the crash the exactly-once counting must survive.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from streams.ingest import main


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(after_db_commit=_kill if "--kill-after-db-commit" in sys.argv else None))
