"""The service as a person starts it: the stages of ``streams/`` with the web console on their
HTTP port. ``elk-resolver run`` / ``up`` / ``demo`` and the console's tests build it here, so
the stages themselves never import a face.

    app = create_app(settings, stages=("ingest", "monitor"))    # as streams.app.create_app
    await run_service(settings)                                 # until SIGINT / SIGTERM
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from elk_resolver import console
from streams import app as stages_app

if TYPE_CHECKING:
    from elk_resolver.settings import Settings

STAGES = stages_app.STAGES


def create_app(settings: Settings, stages: Iterable[str] = STAGES, **options: Any) -> stages_app.App:
    """:func:`streams.app.create_app` with the web console on the HTTP port."""
    return stages_app.create_app(settings, stages, http_extensions=(console.install,), **options)


async def run_service(settings: Settings, stages: Iterable[str] = STAGES, **options: Any) -> int:
    """:func:`streams.app.run_service` with the web console on the HTTP port."""
    return await stages_app.run_service(settings, stages, http_extensions=(console.install,), **options)
