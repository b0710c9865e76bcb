"""The monitor logs a component that is not healthy when its state changes, not at every check
(issue 26, item 8: an unreachable component was logged every 6 s)."""

from __future__ import annotations

import logging

from elk_resolver.health.components import ERROR, HEALTHY, WARNING, ComponentStatus
from elk_resolver.settings import make_settings
from streams.monitor import MonitorStage


def test_an_unreachable_component_is_logged_once_per_state_change(caplog):
    stage = MonitorStage(make_settings(), pool=None)
    kibana_down = ComponentStatus("kibana", ERROR, {"error": "ConnectError: connection refused"})
    checks = [[kibana_down, ComponentStatus("kafka", HEALTHY)]] * 20  # two minutes of 6 s checks
    checks += [[ComponentStatus("kibana", WARNING)], [ComponentStatus("kibana", HEALTHY)]] + [[ComponentStatus("kibana", HEALTHY)]] * 5
    with caplog.at_level(logging.INFO, logger="elk_resolver.monitor"):
        lines = [line for results in checks for line in stage._log_changes(results)]  # noqa: SLF001
    assert lines == ["monitor: kibana=error: ConnectError: connection refused", "monitor: kibana=warning",
                     "monitor: kibana is healthy again (was warning)"]
    assert [r.getMessage() for r in caplog.records] == lines
