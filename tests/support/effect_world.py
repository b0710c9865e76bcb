"""A world whose truth is known (issue 25, point 6): deployments fail, some of them stop failing by
themselves, and a restart fixes some of the rest, each with a probability the world sets. The
failures are published raw to the real broker as kubelet lines and carried through ingest,
analyze and execute in live mode with the recording kubectl; the world reads kubectl's record
to learn which deployments were restarted, and stops their errors when the restart fixed them.

Each kind of failure has its playbook (``pod-crashloopbackoff-restart``,
``out-of-memory-restart``), both on an observe-only trial: a random half of their eligible cases
are left alone. The estimate of each playbook's effect (``action_effects``) is compared with the
truth, and the two rankings with each other: by success rate (what the runs that did happen look
like) and by effect (what they changed). Used by tests/test_effect_world.py (small) and
``python -m bench --only effect`` (larger).

Every object's fate is drawn up front from the seed (will it stop by itself, and when; would a
restart fix it), and the trial's draw for each object is fixed by the seed too, so a run can be
repeated; only the pipeline's timing differs between runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.support.incident import kubelet_line, publish, rs_pod, running

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings
    from tests.support.fake_kubectl import FakeKubectl


@dataclass(frozen=True)
class Kind:
    """One kind of failure and the truth about it."""

    line: str  # kubelet_line's kind: crashloop or oom
    playbook: str
    self_rate: float  # share that stops by itself, untouched, within the horizon
    fix_rate: float  # share of the others a restart fixes

    @property
    def acted_rate(self) -> float:
        return self.fix_rate + (1 - self.fix_rate) * self.self_rate

    @property
    def uplift(self) -> float:
        return self.acted_rate - self.self_rate


# The issue's example: a restart that "succeeds" 90 % where 85 % resolve untouched, and one that
# succeeds 60 % where 10 % resolve alone.
CRASHLOOP = Kind("crashloop", "pod-crashloopbackoff-restart", self_rate=0.85, fix_rate=1 / 3)
OOM = Kind("oom", "out-of-memory-restart", self_rate=0.10, fix_rate=5 / 9)
NAMESPACES = ("shop", "payments", "dev")


@dataclass
class Obj:
    kind: Kind
    namespace: str
    deployment: str
    pod: str
    start: float
    self_stop: float | None  # seconds after start when it stops by itself (None: it does not)
    fixes: bool  # a restart fixes it
    restarted_at: float | None = None
    sent: int = 0

    @property
    def key(self) -> str:
        return f"k8s:{self.namespace}/deployment/{self.deployment}"

    def failing(self, now: float, horizon: float) -> bool:
        elapsed = now - self.start
        if elapsed < 0 or elapsed > horizon + 1.0:  # past the horizon: judged unresolved, stop sending
            return False
        if not self.sent:  # every failure is seen at least once
            return True
        if self.restarted_at is not None and self.fixes and now >= self.restarted_at:
            return False
        return self.self_stop is None or elapsed < self.self_stop


@dataclass
class World:
    objects: list[Obj]
    seed: int
    horizon: float
    tick: float = 0.4
    log: list[str] = field(default_factory=list)

    def draw_for(self, target_key: str | None) -> float:
        """The trial's draw for an object: fixed by the seed (uniform in [0, 1))."""
        digest = hashlib.sha256(f"{self.seed}:{target_key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def make_world(per_kind: int, seed: int, *, horizon: float, spread_s: float, kinds=(CRASHLOOP, OOM),
               prefix: str = "") -> World:  # fmt: skip
    """``per_kind`` deployments of each kind, starting over ``spread_s`` seconds; each object's
    fate drawn from ``seed``. Stopping by itself happens early (within 1.2 s), before a restart
    could run (settle_s), so a run on such an object "succeeds": exactly the case success_rate
    cannot tell from a real fix."""
    rng = random.Random(seed)
    objects = []
    t0 = 0.0  # start times are offsets until play() begins the world's clock
    for i in range(per_kind):
        for kind in kinds:
            namespace = NAMESPACES[rng.randrange(len(NAMESPACES))]
            deployment = f"{prefix}{kind.line}-{i:03d}"
            self_stop = rng.uniform(0.3, 1.2) if rng.random() < kind.self_rate else None
            fixes = rng.random() < kind.fix_rate
            start = t0 + rng.uniform(0, spread_s)
            objects.append(Obj(kind, namespace, deployment, rs_pod(deployment, rng), start, self_stop, fixes))
    return World(objects, seed, horizon)


def settings_for(settings: Settings, fake: FakeKubectl, *, window: float, horizon: float) -> Settings:
    """Live, every object in its own budget, no hold or breaker in the way: the world measures
    the actions, not the guards (each of those is tested on its own)."""
    from tests.support.incident import live_settings

    return live_settings(
        settings, fake, verification_window_s=window, effect_horizon_s=horizon, settle_s=1.5,
        fleet_max_actions=100_000, fleet_max_actions_per_namespace=100_000, systemic_hold_objects=100_000,
        node_hold_objects=100_000, breaker_threshold=1000, recurrence_to_person=False, effect_min_cases=1_000_000,
        trial_max_per_window=100_000, execution_maintenance_interval_s=0.3, execute_concurrency=128,
    )  # fmt: skip


def _restarted(fake: FakeKubectl) -> set[str]:
    out = set()
    for argv in fake.calls():
        if argv[:2] == ["rollout", "restart"] and "-n" in argv:
            kind, _, name = argv[2].partition("/")
            out.add(f"k8s:{argv[argv.index('-n') + 1]}/{kind}/{name}")
    return out


async def play(world: World, settings: Settings, pool: asyncpg.Pool, fake: FakeKubectl, *, timeout: float = 300,
               trial: float | None = 0.5) -> None:  # fmt: skip
    """Run the world through the pipeline until every case is judged; each kind's playbook on an
    observe-only trial of ``trial`` (None: no trial)."""
    from handlers import effect as effect_handler
    from handlers.execute import set_playbook_enabled
    from tests.support.polling import wait_for

    # one error per object (pattern, namespace, workload), as a team fingerprinting per workload
    # would: each object's request is decided on its own, not queued behind the others' settle time
    await pool.execute("UPDATE error_patterns SET fingerprint_fields = '{pattern,namespace,workload}'"
                       " WHERE pattern_name IN ('Pod CrashLoopBackOff', 'Out of Memory')")
    async with running(settings, pool) as p:
        await wait_for(lambda: all(st.ready for st in p.app.stages.values()), timeout=60, what="the stages ready")
        for kind in {o.kind for o in world.objects} if trial else ():
            await effect_handler.start_trial(kind.playbook, trial, "effect-world", pool=pool)
        # one action per kind of failure: the rollback (which needs a person) is not explored
        await set_playbook_enabled("pod-crashloopbackoff-rollback", False, "effect-world", pool=pool)
        base = time.monotonic()
        for o in world.objects:
            o.start += base
        end = max(o.start for o in world.objects) + world.horizon + 2.0
        while time.monotonic() < end:
            now = time.monotonic()
            restarted = _restarted(fake)
            batch = []
            for o in world.objects:
                if o.restarted_at is None and o.key in restarted:
                    o.restarted_at = now
                if o.failing(now, world.horizon):
                    uid = uuid.UUID(int=random.getrandbits(128), version=4)
                    batch.append(kubelet_line(o.kind.line, o.namespace, o.pod, uid, datetime.now(UTC)))
                    o.sent += 1
            if batch:
                await publish(settings, batch)
            await asyncio.sleep(max(0.0, world.tick - (time.monotonic() - now)))  # the world's clock

        async def judged() -> bool:
            open_cases = await pool.fetchval(
                "SELECT count(*) FROM planned_requests p LEFT JOIN request_outcomes o USING (request_id)"
                " WHERE o.state IS NULL OR o.state = 'open'"
            )
            return open_cases == 0

        await wait_for(judged, timeout=timeout, interval=0.5, what="every case judged")


async def results(world: World, pool: asyncpg.Pool, settings: Settings) -> list[dict[str, Any]]:
    """Per kind: the truth, the trial's estimate and interval, the success rate of the runs
    (verified: the error stayed away for the window), and the cases behind them."""
    from handlers.effect import refresh_effects

    await refresh_effects(pool=pool, settings=settings)
    rows = {(r["key"], r["comparison"]): dict(r) for r in await pool.fetch(
        "SELECT * FROM action_effects WHERE scope = 'playbook'")}  # fmt: skip
    success = {r["playbook_name"]: r for r in await pool.fetch(
        "SELECT s.playbook_name, sum(v.n) AS runs, sum(v.ok) AS resolved FROM solutions s"
        " JOIN LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE outcome = 'resolved') AS ok FROM verifications"
        " WHERE solution_id = s.id AND outcome <> 'pending') v ON TRUE GROUP BY s.playbook_name")}  # fmt: skip
    out = []
    for kind in sorted({o.kind for o in world.objects}, key=lambda k: k.playbook):
        trial = rows.get((kind.playbook, "trial"), {})
        s = success.get(kind.playbook)
        out.append({
            "playbook": kind.playbook, "true_self": kind.self_rate, "true_acted": kind.acted_rate,
            "true_uplift": kind.uplift, "acted_cases": trial.get("acted_cases", 0),
            "acted_resolved": trial.get("acted_resolved", 0), "left_cases": trial.get("left_cases", 0),
            "left_resolved": trial.get("left_resolved", 0), "uplift": trial.get("uplift"),
            "low": trial.get("uplift_low"), "high": trial.get("uplift_high"),
            "success_rate": (s["resolved"] / s["runs"]) if s and s["runs"] else None,
            "runs": s["runs"] if s else 0,
        })  # fmt: skip
    return out


def realized(world: World, fraction: float = 0.5) -> dict[str, dict[str, int]]:
    """What the world's own record says happened, per playbook and trial arm: the cases and how
    many resolved (stopped by itself, or fixed by a restart it got). The pipeline's measurement
    must equal it exactly; the truth is what it estimates."""
    out: dict[str, dict[str, int]] = {}
    for o in world.objects:
        left_alone = world.draw_for(o.key) < fraction
        resolved = o.self_stop is not None or (not left_alone and o.fixes)
        counts = out.setdefault(o.kind.playbook, {"acted_cases": 0, "acted_resolved": 0, "left_cases": 0, "left_resolved": 0})
        side = "left" if left_alone else "acted"
        counts[f"{side}_cases"] += 1
        counts[f"{side}_resolved"] += resolved
    return out


def choices(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Which playbook each ranking puts first: by success rate, by effect (lower bound of the
    uplift), and by the truth."""
    return {
        "success rate": max(rows, key=lambda r: r["success_rate"] or 0)["playbook"],
        "effect": max(rows, key=lambda r: r["low"] if r["low"] is not None else -2)["playbook"],
        "truth": max(rows, key=lambda r: r["true_uplift"])["playbook"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    def pts(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:+.1f}"

    lines = ["| playbook | truth: resolved untouched / acted / uplift | success rate of runs (verified) | trial: acted resolved | trial: left alone resolved | uplift estimate [95% CI] | truth inside |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        inside = r["low"] is not None and r["low"] <= r["true_uplift"] <= r["high"]
        lines.append(
            f"| {r['playbook']} | {r['true_self'] * 100:.0f}% / {r['true_acted'] * 100:.0f}% / {pts(r['true_uplift'])} pts"
            f" | {(r['success_rate'] or 0) * 100:.0f}% ({r['runs']} runs) | {r['acted_resolved']}/{r['acted_cases']}"
            f" | {r['left_resolved']}/{r['left_cases']} | {pts(r['uplift'])} [{pts(r['low'])}, {pts(r['high'])}] pts"
            f" | {'yes' if inside else 'NO'} |"
        )
    c = choices(rows)
    lines.append("")
    lines.append(f"first by success rate: {c['success rate']}; first by effect: {c['effect']}; truly better: {c['truth']}")
    return "\n".join(lines)
