"""The benchmark's accounting: percentiles, rates, ratios, peak RSS, and the Markdown table.

Nothing here measures time by itself except :class:`RssSampler`; everything else is pure so
the tests can check it on known data.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linear between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    position = (len(data) - 1) * p / 100
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def rate(count: int, seconds: float) -> float:
    """Events per second; 0 when nothing was timed."""
    if seconds <= 0:
        return 0.0
    return count / seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either side is missing or zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}×"


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}/s"


def fmt_number(value: float | int | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def met(value: float | None, *, at_least: float | None = None, at_most: float | None = None) -> str:
    """``met`` / ``NOT met`` / ``not measured`` for a target bound."""
    if value is None:
        return "not measured"
    if at_least is not None and value < at_least:
        return "NOT met"
    if at_most is not None and value > at_most:
        return "NOT met"
    return "met"


class RssSampler:
    """Peak resident memory of a set of processes, sampled on a thread every ``interval`` s.

    ``psutil`` is imported when used; a process that exits stops being sampled (its last
    sample still counts).
    """

    def __init__(self, pids: Iterable[int] = (), interval: float = 0.05) -> None:
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.children_peak: dict[int, int] = {}
        """Peak RSS of the sampled processes' own children (an ingest copy's merge-pass process)."""
        self.samples = 0
        self._pids = list(pids)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, pid: int) -> None:
        self._pids.append(pid)

    def sample_once(self) -> None:
        import psutil

        for pid in list(self._pids):
            try:
                process = psutil.Process(pid)
                rss = process.memory_info().rss
                children = [(c.pid, c.memory_info().rss) for c in process.children()]
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.peak[pid] = max(self.peak.get(pid, 0), rss)
            for child, child_rss in children:
                self.children_peak[child] = max(self.children_peak.get(child, 0), child_rss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mb(self) -> float | None:
        """The largest per-process peak, in MiB."""
        return max(self.peak.values()) / 2**20 if self.peak else None

    @property
    def children_peak_mb(self) -> float | None:
        """The largest peak of a sampled process's child, in MiB (None: no child seen)."""
        return max(self.children_peak.values()) / 2**20 if self.children_peak else None


@dataclass
class Timer:
    """Wall-clock seconds between ``start`` and ``stop`` (monotonic clock)."""

    started: float = field(default_factory=time.perf_counter)
    stopped: float | None = None

    def stop(self) -> float:
        self.stopped = time.perf_counter()
        return self.seconds

    @property
    def seconds(self) -> float:
        return (self.stopped if self.stopped is not None else time.perf_counter()) - self.started


# --- machine -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model (``/proc/cpuinfo``), RAM, kernel and Python of this machine."""
    import os
    import platform

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": None,
        "ram_gb": None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        info["nproc"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["ram_gb"] = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    return info


# --- the Markdown table ----------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; ``|`` inside a cell is escaped, ``None`` shows as ``n/a``."""

    def cell(value: Any) -> str:
        text = "n/a" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _get(results: dict[str, Any], path: str) -> Any:
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _decision_table(title: str, run: dict[str, Any], columns: tuple, extra: str) -> list[str]:
    """A probe's section: ``columns`` (heading, key, format) then p50, p99 and max, a line of
    ``extra`` and the run's note."""
    heads = tuple(c[0] for c in columns) + ("p50", "p99", "max")
    row = tuple(fmt(run.get(key)) for _, key, fmt in columns) + tuple(
        fmt_number(run.get(k), 1, " ms") for k in ("p50_ms", "p99_ms", "max_ms")
    )
    return [title, "", markdown_table(heads, [row]), "", extra, "", run.get("note", ""), ""]


def render_markdown(results: dict[str, Any]) -> str:
    """The report: run facts, every figure side by side, and each target with met / NOT met."""
    g = lambda path: _get(results, path)  # noqa: E731
    m = results.get("machine", {})
    out = [
        "# Benchmark results",
        "",
        f"- Date: {results.get('date', 'n/a')}",
        f"- Machine: {m.get('nproc', 'n/a')} CPUs ({m.get('cpu_model') or 'unknown CPU'}), "
        f"{m.get('ram_gb', 'n/a')} GB RAM, Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}",
        f"- Stack: {results.get('stack', 'n/a')}",
        f"- Command: `{results.get('command', 'python -m bench')}` ({fmt_number(g('duration_s'), 0, ' s')})",
        "",
    ]
    not_ok = {name: why for name, why in (results.get("sections_status") or {}).items() if why != "ok"}
    if not_ok:
        out += ["Sections not (fully) reported:", ""]
        out += [f"- {name}: {why}" for name, why in not_ok.items()]
        out.append("")

    th = g("throughput") or {}
    if th:
        events = th.get("events")
        out += ["## 1. Ingest throughput", "", f"{fmt_number(events)} events, {th.get('dataset', '')}", ""]
        rows = []
        for key, label in (
            ("project_1", "project ingest stage, 1 process"),
            ("project_2", "project ingest stage, 2 processes (one group)"),
            ("project_1_merges_off", "project ingest stage, 1 process, learned-merge pass off"),
            ("naive", "naive per-message FastStream consumer"),
            ("limit_consume", "limit: bare aiokafka consumption (getmany, no work)"),
            ("limit_upsert", "limit: bare bulk upsert (unnest, 1000 rows, no Kafka)"),
            ("project_sql", "project's own SQL, pre-built batches, no Kafka"),
        ):
            run = th.get(key)
            if run:
                rows.append((label, fmt_number(run.get("events")), fmt_number(run.get("seconds"), 2, " s"),
                             fmt_rate(run.get("rate")), fmt_number(run.get("cpu_us_per_event"), 1, " µs"),
                             run.get("note", "")))  # fmt: skip
        out += [markdown_table(("run", "events", "time", "rate", "CPU/event", "note"), rows), ""]
        ratios = th.get("ratios", {})
        out += [
            markdown_table(
                ("ratio", "value"),
                [(name, fmt_ratio(value)) for name, value in ratios.items()],
            ),
            "",
        ]

    lat = g("latency") or {}
    if lat:
        out += [
            "## 2. Latency at a steady rate",
            "",
            markdown_table(
                ("target rate", "achieved send rate", "events", "received", "p50", "p99", "max"),
                [(
                    fmt_rate(lat.get("target_rate")), fmt_rate(lat.get("send_rate")), fmt_number(lat.get("sent")),
                    fmt_number(lat.get("received")), fmt_number(lat.get("p50_ms"), 1, " ms"),
                    fmt_number(lat.get("p99_ms"), 1, " ms"), fmt_number(lat.get("max_ms"), 1, " ms"),
                )],
            ),  # fmt: skip
            "",
            lat.get("note", ""),
            "",
        ]

    dec = g("decision") or {}
    if dec:
        out += _decision_table(
            "## 2b. Raw event to execution decision (ingest, analyze, execute in one process, dry-run)",
            dec, (("target rate", "target_rate", fmt_rate), ("achieved send rate", "send_rate", fmt_rate),
                  ("events", "sent", fmt_number), ("errors", "errors", fmt_number), ("decided", "decided", fmt_number)),
            f"Outcomes on the results topic: {', '.join(f'{k} {v:,}' for k, v in (dec.get('outcomes') or {}).items())}.",
        )  # fmt: skip

    st = g("storm") or {}
    if st:
        to_request = st.get("to_request") or {}
        out += _decision_table(
            "## 2c. A new incident during a storm (ingest, analyze, execute in one process, dry-run)",
            st, (("storm rate", "rate", fmt_rate), ("achieved send rate", "send_rate", fmt_rate),
                 ("known errors", "known_errors", fmt_number), ("new errors", "new_errors", fmt_number),
                 ("decided", "decided", fmt_number)),
            f"Send to the analysis stage's request for the new object ({fmt_number(st.get('requested'))} requested):"
            f" p50 {fmt_number(to_request.get('p50_ms'), 1, ' ms')}, p99 {fmt_number(to_request.get('p99_ms'), 1, ' ms')}.",
        )  # fmt: skip

    mem = g("memory") or {}
    if mem:
        out += [
            "## 3. Peak resident memory (per process, in every section that starts one)",
            "",
            markdown_table(
                ("process", "peak RSS"),
                [(name, fmt_number(value, 1, " MiB")) for name, value in mem.items()],
            ),
            "",
        ]

    cls = g("classification") or {}
    if cls:
        per = cls.get("us_per_event", {})
        out += [
            "## 4. Classification cost (PatternSet.match over the generated messages)",
            "",
            markdown_table(
                ("patterns", "µs/event"),
                [(n, fmt_number(v, 2)) for n, v in per.items()],
            ),
            "",
            f"300/3 ratio: {fmt_ratio(cls.get('ratio_300_3'))}",
            "",
        ]

    trig = g("trigger") or {}
    if trig:
        rows = []
        for name in ("document", "incremental"):
            t = trig.get(name)
            if t:
                rows.append((name, fmt_rate(t.get("rate_0")), fmt_rate(t.get("rate_100k")), fmt_ratio(t.get("ratio"))))
        out += [
            "## 5. Trigger: execution_history inserts per second",
            "",
            markdown_table(("trigger", "0 history rows", f"{fmt_number(trig.get('history'))} history rows", "ratio"), rows),
            "",
            trig.get("note", ""),
            "",
        ]

    grp = g("grouping") or {}
    if grp:
        files = grp.get("files", {})
        columns = grp.get("columns", [])
        rows = [(name.split("_")[0], *(fmt_number(row.get(c), 3) for c in columns)) for name, row in files.items()]
        rows.append(("**average**", *(fmt_number(grp.get("average", {}).get(c), 3) for c in columns)))
        out += ["## 6. Grouping accuracy (LogHub-2k)", "", markdown_table(("system", *columns), rows), ""]

    gr = g("growth") or {}
    if gr.get("stage_full"):
        out += _growth_markdown(gr)

    ef = g("effect") or {}
    if ef.get("table"):  # did the fix help? (issue 25): a world whose truth is known
        out += ["## Effect of actions (a simulated world through the pipeline)", "", ef.get("world", ""), "", ef["table"], ""]

    targets = results.get("targets", [])
    if targets:
        out += [
            "## Targets",
            "",
            markdown_table(("target", "measured", "status"), [(t["target"], t["measured"], t["status"]) for t in targets]),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def _growth_markdown(gr: dict[str, Any]) -> list[str]:
    rows = []
    for kind, label in (("stage", "ingest stage, 1 process"), ("sql", "the stage's SQL alone (store_batch)")):
        empty, full = gr.get(f"{kind}_empty") or {}, gr.get(f"{kind}_full") or {}
        rows.append((label, fmt_rate(empty.get("rate")), fmt_rate(full.get("rate")), fmt_ratio(gr.get(f"ratio_{kind}"))))
    out = [
        f"## 7. Growth: ingest with {fmt_number(gr.get('preloaded'))} stored errors against empty tables",
        "",
        markdown_table(("run", "empty", f"{fmt_number(gr.get('preloaded'))} stored", "ratio"), rows),
        "",
    ]
    rounds = gr.get("stage_rounds")
    if rounds:
        out += [
            "Ingest stage rounds, in the order run (empty, full, full, empty): empty "
            + ", ".join(fmt_rate(r) for r in rounds.get("empty", []))
            + "; full "
            + ", ".join(fmt_rate(r) for r in rounds.get("full", []))
            + " (the best of each side is in the table).",
            "",
        ]
    sizes = gr.get("sizes_before", {})
    if sizes:
        size_rows = []
        for key, label in (
            ("error_logs_table_mb", "error_logs table"),
            ("error_logs_indexes_mb", "error_logs indexes"),
            ("occurrences_table_mb", "error_occurrences tables"),
            ("occurrences_indexes_mb", "error_occurrences indexes"),
        ):
            size_rows.append((label, *(fmt_number(sizes.get(side, {}).get(key), 1, " MiB") for side in ("empty", "full"))))
        out += [markdown_table(("relation (before the runs)", "empty", "full"), size_rows), ""]
    plan_rows = []
    for key, label in (("plan_new_errors", "1,000 new errors"), ("plan_known_errors", "1,000 repeats of stored errors")):
        for side in ("empty", "full"):
            u = ((gr.get(key) or {}).get(side) or {}).get("upsert") or {}
            if u:
                plan_rows.append((
                    label, side, fmt_number(u.get("execution_ms"), 1, " ms"), fmt_number(u.get("shared_hit"), 0),
                    fmt_number(u.get("shared_read"), 0), fmt_number(u.get("shared_dirtied"), 0),
                    fmt_number(u.get("shared_written"), 0), fmt_number(u.get("wal_fpi"), 0),
                    fmt_number((u.get("wal_bytes") or 0) / (1 << 20), 1, " MiB"),
                ))  # fmt: skip
    if plan_rows:
        out += [
            "The upsert's plan, EXPLAIN (ANALYZE, BUFFERS, WAL), one batch, rolled back:",
            "",
            markdown_table(("batch", "tables", "time", "hit", "read", "dirtied", "written", "WAL FPI", "WAL"), plan_rows),
            "",
        ]
    hot_rows = []
    for side in ("empty", "full"):
        for t in (gr.get("table_stats") or {}).get(side, []):
            if t.get("relname") == "error_logs":
                upd, hot = t.get("n_tup_upd") or 0, t.get("n_tup_hot_upd") or 0
                hot_rows.append((side, fmt_number(upd), fmt_number(hot), f"{hot / upd:.0%}" if upd else "n/a"))
    if hot_rows:
        out += [markdown_table(("error_logs", "updates", "HOT updates", "HOT share"), hot_rows), ""]
    scans = sorted({s for side in (gr.get("plan_known_errors") or {}).values() for s in (side.get("row_ids") or {}).get("scans", [])})
    if scans:
        out += [f"Row-id lookup (ingest-row-ids) access paths: {', '.join(scans)}.", ""]
    out += [gr.get("note", ""), ""]
    return out
