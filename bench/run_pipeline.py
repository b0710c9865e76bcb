"""``python -m bench.run_pipeline``: the ingest, analyze and execute stages in one process, dry-run.

The benchmark's decision section starts it to time raw event -> execution decision. Settings
come from the ``ELK_RESOLVER_*`` environment the benchmark sets (execution mode dry-run: every
decision is logged, nothing runs). One JSON line on stdout when the stages are ready; SIGTERM
or SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import orjson


async def run() -> None:
    from bench.events import _NAMESPACES
    from elk_resolver.actions.policy import ES_ACTIONS
    from elk_resolver.settings import make_settings
    from streams.app import create_app

    # Dry-run, and a policy that lets the generated errors' commands through, so the figure is
    # the time to a dry-run decision rather than to a refusal (nothing runs either way).
    settings = make_settings(
        execution_mode="dry-run",
        kubectl_namespaces=list(_NAMESPACES),
        elasticsearch_url="http://127.0.0.1:9",
        elasticsearch_actions=sorted(ES_ACTIONS),
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    app = create_app(settings, stages=("ingest", "analyze", "execute"), serve_http=False)
    await app.start()
    try:
        sys.stdout.buffer.write(orjson.dumps({"ready": True}) + b"\n")
        sys.stdout.flush()
        await stopped.wait()
    finally:
        await app.stop()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run())


if __name__ == "__main__":
    main()
