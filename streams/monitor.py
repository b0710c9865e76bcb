"""The monitor stage: keeps ``system_status`` current, reopens errors whose resolution or
snooze no longer holds (:func:`elk_resolver.store.error_states.reopen_due`) and runs
``maintain`` once a day.

It consumes no topic, so "ready" means its loop is running. Every copy of the service runs
one; their upserts of the same component rows are harmless (last check wins), the reopening
pass is one UPDATE that reopens each error once whichever copy runs it first, and a database
advisory lock plus ``maintenance_runs`` make the daily maintenance run once, not once per copy.

A component that is not healthy is logged when its state changes (it goes bad, changes how
it is bad, or recovers), not at every check: an unreachable Kibana is one warning, not one
every ``monitor_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import asyncpg

from elk_resolver.health import components as monitor
from elk_resolver.settings import Settings
from elk_resolver.store.error_states import reopen_due
from elk_resolver.store.db import describe_db_failure
from elk_resolver.store.maintain import maintain, maintenance_due

log = logging.getLogger("elk_resolver.monitor")


class MonitorStage:
    name = "monitor"

    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool,
        stages: Iterable[Any] = (),
        maintenance_every: timedelta | None = timedelta(days=1),
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.stages = list(stages)  # the app sets the stages of this process after building them
        self.causes: Any = None  # the app sets it: () -> {stage: why it is not ready}
        self.maintenance_every = maintenance_every
        self.last_results: list[monitor.ComponentStatus] = []
        self.checks_done = 0
        self._task: asyncio.Task | None = None
        self._maintenance: asyncio.Task | None = None
        self.started = False
        self._logged: dict[str, str] = {}  # component -> the status last logged

    @property
    def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self.started = True
        self._task = asyncio.create_task(self._loop(), name="monitor")

    async def stop(self) -> None:
        self.started = False
        for task in (self._task, self._maintenance):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._maintenance = None

    async def check_once(self) -> list[monitor.ComponentStatus]:
        causes = self.causes() if self.causes is not None else None
        results = await monitor.check_and_record(self.settings, self.pool, stages=self.stages, causes=causes)
        self.last_results = results
        self.checks_done += 1
        return results

    async def _loop(self) -> None:
        while True:
            try:
                results = await self.check_once()
                self._log_changes(results)
                await reopen_due(self.pool)
                bad = [f"{r.component}={r.status}" for r in results if r.status != monitor.HEALTHY]
                if bad:
                    log.warning("monitor: %s", ", ".join(bad), extra={"coalesce": ", ".join(bad)})
                await self._maybe_maintain()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # the database is what we record into: nothing to record, try again next time
                words = describe_db_failure(exc)
                log.warning("monitor: could not record system_status: %s", words,
                            extra={"coalesce": words.split(":", 1)[0]})
            await asyncio.sleep(self.settings.monitor_interval_s)

    def _log_changes(self, results: list[monitor.ComponentStatus]) -> list[str]:
        """Log each component whose status changed since it was last logged; return the lines."""
        lines = []
        for r in results:
            before = self._logged.get(r.component, monitor.HEALTHY)
            if r.status == before:
                continue
            self._logged[r.component] = r.status
            cause = (r.details or {}).get("cause") or (r.details or {}).get("error") or ""
            if r.status == monitor.HEALTHY:
                lines.append(f"monitor: {r.component} is healthy again (was {before})")
                log.info(lines[-1])
            else:
                lines.append(f"monitor: {r.component}={r.status}" + (f": {cause}" if cause else ""))
                log.warning(lines[-1])
        return lines

    async def _maybe_maintain(self) -> None:
        if self.maintenance_every is None or (self._maintenance and not self._maintenance.done()):
            return
        if await maintenance_due(self.pool, self.maintenance_every):
            self._maintenance = asyncio.create_task(self._maintain(), name="maintain")

    async def _maintain(self) -> None:
        try:
            await maintain(self.pool, retention_days=self.settings.retention_days, wait_for_lock=False)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("monitor: daily maintenance failed: %s", describe_db_failure(exc))


def build_monitor(settings: Settings, *, pool: asyncpg.Pool, broker: Any = None, **kwargs: Any) -> MonitorStage:
    return MonitorStage(settings, pool=pool, **kwargs)
