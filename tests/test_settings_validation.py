"""Settings are checked at start (issue 22, item 6): every numeric setting has a range, and
``elk-resolver`` exits 2 with one line per bad value saying what is allowed, never a
traceback; a busy HTTP port is named with its setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pydantic import ValidationError

from elk_resolver.settings import Settings, explain, make_settings
from tests.support.run_process import run_once

NUMERIC = sorted(n for n, f in Settings.model_fields.items() if f.annotation in (int, float))

# what the fault trial tried, and what each must say
BAD = {
    "HTTP_PORT": ("99999", "from 0 to 65535"),
    "KUBECTL_KINDS": ("notjson", "not JSON"),
    "HEARTBEAT_INTERVAL_MS": ("0", "from 100 to 600000"),
    "SESSION_TIMEOUT_MS": ("-5", "from 1000 to 1800000"),
    "RETRY_BACKOFF_INITIAL_S": ("-1", "more than 0 and up to 60"),
    "MONITOR_INTERVAL_S": ("0", "from 0.1 to 86400"),
    "COOLDOWN_S": ("-100", "from 0 to 604800"),
    "MAX_RUNS_PER_HOUR": ("-1", "from 1 to 10000"),
    "BREAKER_THRESHOLD": ("0", "from 1 to 1000"),
}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELK_RESOLVER_")}
    return subprocess.run([sys.executable, "-m", "elk_resolver.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_bad_settings_exit_2_with_one_line_each_saying_what_is_allowed(tmp_path):
    env = {f"ELK_RESOLVER_{k}": v for k, (v, _) in BAD.items()}
    env["ELK_RESOLVER_STATE_DIR"] = str(tmp_path)
    done = _cli(env, "run")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(BAD), lines
    for name, (value, allowed) in BAD.items():
        [line] = [x for x in lines if f"ELK_RESOLVER_{name}=" in x]
        assert line.startswith(f"elk-resolver: invalid setting ELK_RESOLVER_{name}={value}: ") and allowed in line, line


def test_heartbeat_must_fit_in_the_session_and_backoff_grow():
    with pytest.raises(ValidationError) as caught:
        make_settings(session_timeout_ms=6000, heartbeat_interval_ms=3000)
    [line] = explain(caught.value)
    assert "ELK_RESOLVER_HEARTBEAT_INTERVAL_MS=3000 must be at most a third of ELK_RESOLVER_SESSION_TIMEOUT_MS" in line
    with pytest.raises(ValidationError) as caught:
        make_settings(retry_backoff_initial_s=5, retry_backoff_max_s=1)
    assert "ELK_RESOLVER_RETRY_BACKOFF_INITIAL_S=5 must not exceed" in explain(caught.value)[0]


def test_every_numeric_setting_has_a_range():
    unbounded = []
    for name in NUMERIC:
        kinds = {k for m in Settings.model_fields[name].metadata for k in ("ge", "gt", "le", "lt")
                 if getattr(m, k, None) is not None}
        if not kinds & {"ge", "gt"} or not kinds & {"le", "lt"}:
            unbounded.append(name)
    assert unbounded == []


def _limits(name: str) -> tuple[float, bool, float, bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in Settings.model_fields[name].metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
        if getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


@pytest.mark.parametrize("name", NUMERIC)
@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_value_outside_its_range_is_refused_with_a_line_naming_it_and_one_inside_is_taken(name, data):
    lo, lo_open, hi, hi_open = _limits(name)
    assert lo is not None and hi is not None, f"{name} has no range"
    is_int = Settings.model_fields[name].annotation is int
    below = lo - 1 if is_int else lo - data.draw(st.floats(0.001, 1e6), label="below by")
    if lo_open:
        below = data.draw(st.sampled_from([lo, below]), label="below")
    above = hi + (1 if is_int else data.draw(st.floats(0.001, 1e6), label="above by"))
    for bad in (below, above):
        with pytest.raises(ValidationError) as caught:
            make_settings(**{name: bad})
        lines = [x for x in explain(caught.value) if f"ELK_RESOLVER_{name.upper()}=" in x]
        assert len(lines) == 1 and "must be" in lines[0] and ("from" in lines[0] or "more than" in lines[0]), lines
    inside = (data.draw(st.integers(int(lo) + (1 if lo_open else 0), int(hi) - (1 if hi_open else 0)))
              if is_int else data.draw(st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open)))
    # a value inside may still break a rule over two settings (heartbeat in session); set the
    # other side of the pair so the range itself is what is tested
    pairs = {"heartbeat_interval_ms": {"session_timeout_ms": 1_800_000},
             "session_timeout_ms": {"heartbeat_interval_ms": 100},
             "retry_backoff_initial_s": {"retry_backoff_max_s": 3600},
             "retry_backoff_max_s": {"retry_backoff_initial_s": min(0.001, inside)}}
    if name == "session_timeout_ms" and inside < 300:
        return  # no heartbeat fits in a session this short: the pair rule refuses it, rightly
    assert getattr(make_settings(**{name: inside, **pairs.get(name, {})}), name) == inside


async def test_a_busy_http_port_is_named_with_its_setting(settings, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await run_once(settings, tmp_path, "monitor", port=port)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"elk-resolver: HTTP port {port} on 127.0.0.1 is in use"), done.stderr[-2000:]
    assert "ELK_RESOLVER_HTTP_PORT" in last, done.stderr[-2000:]
    assert "cannot reach" not in done.stderr and "Traceback" not in done.stderr
