"""Every page and every API route of the console over the demo's data (the shipped events through
the real stages in dry-run mode, then people acting on them): what it did is visible in dry-run,
solutions read as this error's, an approval's object is its command's, search finds objects,
and the JSON API answers what the pages show, behind the same sign-in."""

from __future__ import annotations

import json
import re

import aiohttp
import pytest

from elk_resolver.console.api import ROUTES
from elk_resolver.console.auth import token_hash
from tests.support.console_data import demo_console
from tests.test_console import browser, login

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
async def demo(postgres, template_database, kafka, tmp_path_factory):
    async with demo_console(postgres, template_database, kafka, tmp_path_factory.mktemp("state")) as d:
        yield d


def pages(ids: dict) -> list[str]:
    return ["/", "/errors", f"/errors/{ids['index_error']}", f"/errors/{ids['pod_error']}", "/errors?state=acknowledged",
            "/errors?q=logstash-0", "/approvals", "/approvals?status=all", f"/approvals/{ids['approval']}", "/runs",
            "/runs?status=dry_run", "/patterns", "/playbooks", "/playbooks/out-of-memory-restart/effect", "/audit", "/audit?person=bob", "/api.html",
            "/asyncapi.html", "/sessions"]


def api_paths(ids: dict) -> list[str]:
    fill = {"/api/errors/{id:\\d+}": f"/api/errors/{ids['index_error']}",
            "/api/approvals/{id:\\d+}": f"/api/approvals/{ids['approval']}", "/api/incidents/{id:\\d+}": None}
    return [p for p in (fill.get(r.path, r.path) for r in ROUTES) if p]


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&lt;", "<").replace("&gt;", ">")


async def test_every_page_and_api_route_answers_signed_in(demo):
    async with browser() as alice:
        await login(alice, demo.base, "alice", "alice-pw")
        for path in pages(demo.ids):
            async with alice.get(demo.base + path) as r:
                html = await r.text()
            assert r.status == 200, (path, html[:1500])
            assert '<nav aria-label="pages">' in html and 'href="/incidents"' in html, path
        for path in [*api_paths(demo.ids), "/openapi.json"]:
            async with alice.get(demo.base + path) as r:
                assert r.status == 200, path
                assert r.headers["Content-Type"].startswith("application/json"), path
                assert isinstance(await r.json(), dict), path


async def test_dry_runs_show_in_runs_the_overview_the_report_and_the_approval(demo):
    """Was: Runs, the overview's recent runs and report empty after the demo; the approval page
    'no run (yet)' for ever after approve and run; no dry-run filter."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/api/runs?status=dry_run") as r:
            dry = (await r.json())["rows"]
        async with http.get(f"{demo.base}/runs?status=dry_run") as r:
            runs_page = await r.text()
        async with http.get(f"{demo.base}/") as r:
            overview = await r.text()
        async with http.get(f"{demo.base}/approvals/{demo.ids['approval']}") as r:
            approval = text_of(await r.text())
        async with http.get(f"{demo.base}/api/approvals/{demo.ids['approval']}") as r:
            outcome = (await r.json())["outcome"]
    assert dry and all(r["dry_run"] and r["execution_status"] == "dry_run" for r in dry)
    assert {r["executed_by"] for r in dry} >= {"alice", "auto-resolver"}
    assert all(r["execution_output"].startswith("dry run, nothing ran") for r in dry)
    assert runs_page.count('<tr class="dry">') == len(dry) and '<option value="dry_run" selected>' in runs_page
    assert '<tr class="dry">' in overview.split("Recent runs and dry runs", 1)[1]
    assert outcome["state"] == "dry_run" and outcome["final"]
    assert "dry run (execution mode dry-run): nothing ran; would have run: clear_read_only_block" in approval
    assert "no run (yet)" not in approval and "no run yet" not in approval
    from elk_resolver.operations import reading

    report = {name: rows for name, _, rows in await reading.report(demo.pool)}
    assert report["recent_executions"] == []  # the document's query, unchanged: nothing ran
    assert report["recent_dry_runs"] and all(r["execution_status"] == "dry_run (nothing ran)"
                                             for r in report["recent_dry_runs"])


async def test_a_solution_reads_with_this_errors_values_steps_as_a_list_and_never_run(demo):
    """Was: `{index}` on the page, manual steps in one paragraph, '0.00 %' for a solution that never ran."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/errors/{demo.ids['index_error']}") as r:
            html = await r.text()
    solutions = html.split('<div id="solutions">', 1)[1].split('<div id="error-live"', 1)[0]
    assert "clear_read_only_block index=logs-app-2024.05.01" in solutions
    assert "put index logs-app-2024.05.01 in read-only" in solutions
    assert not re.search(r"\{[a-z_]+\}", text_of(solutions)), "a placeholder is shown unfilled"
    steps = re.findall(r"<ol class=\"steps\">(.*?)</ol>", solutions, re.S)
    assert steps and steps[0].count("<li>") >= 1 and "Manual steps:" not in solutions
    assert "never run" in solutions and "0.00 %" not in solutions


async def test_an_approvals_object_is_the_object_its_command_acts_on(demo):
    """Was: 'on which object: logstash elk-stack/pod/logstash-0' above clear_read_only_block index=logs-app-..."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/approvals/{demo.ids['approval']}") as r:
            html = await r.text()
    obj = re.search(r'<dd id="object">(.*?)</dd>', html, re.S).group(1)
    commands = re.search(r'<dd id="commands">(.*?)</dd>', html, re.S).group(1)
    assert "es:index/logs-app-2024.05.01" in obj and "logstash-0" not in obj and "elk-stack" not in obj
    assert "index=logs-app-2024.05.01" in commands
    solution = text_of(re.search(r'<dd id="solution">(.*?)</dd>', html, re.S).group(1))
    assert "put index logs-app-2024.05.01 in read-only" in solution and "{index}" not in solution
    assert "never run" in solution and "0.00 %" not in solution


async def test_search_finds_the_error_that_names_an_object(demo):
    """Was: q=logstash-0 found nothing though an error lists that pod."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/api/errors?q=logstash-0") as r:
            found = [e["id"] for e in (await r.json())["rows"]]
        async with http.get(f"{demo.base}/api/errors?q=logs-app-2024.05.01") as r:
            by_index = [e["id"] for e in (await r.json())["rows"]]
    assert demo.ids["pod_error"] in found
    assert demo.ids["index_error"] in by_index


async def test_the_audit_log_has_every_decision_and_filters_by_person_object_and_time(demo):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/api/audit?people=1") as r:
            people = (await r.json())["rows"]
        async with http.get(f"{demo.base}/api/audit?person=BOB") as r:
            bob = (await r.json())["rows"]
        async with http.get(f"{demo.base}/api/audit?object=playbook:") as r:
            playbooks = (await r.json())["rows"]
        async with http.get(f"{demo.base}/api/audit?object=error:{demo.ids['index_error']}") as r:
            index_error = (await r.json())["rows"]
        async with http.get(f"{demo.base}/api/audit?until=1h") as r:
            an_hour_ago = (await r.json())["rows"]
        async with http.get(f"{demo.base}/api/audit?since=banana") as r:
            assert r.status == 400 and "not a time" in (await r.json())["error"]
        async with http.get(f"{demo.base}/api/audit") as r:
            everything = (await r.json())["rows"]
    seen = {(r["actor"], r["action"]) for r in people}
    for expected in [("alice", "approved"), ("alice", "dry_run"), ("bob", "kill switch on"), ("alice", "kill switch off"),
                     ("alice", "playbook disabled"), ("bob", "pattern auto-resolve off"), ("alice", "error acknowledged"),
                     ("alice", "error owner"), ("alice", "error note"), ("bob", "error resolved"), ("bob", "error muted"),
                     ("bob", "error snoozed")]:
        assert expected in seen, expected
    assert all(r["by_person"] for r in people)
    assert bob and {r["actor"] for r in bob} == {"bob"}
    assert [r["object"] for r in playbooks] == ["playbook:kafka-consumer-lag-scale"]
    assert {r["action"] for r in index_error} >= {"error acknowledged", "error owner", "error note"}
    assert an_hour_ago == []
    assert any(r["actor"] == "service" and r["action"] == "dry_run" for r in everything)


async def test_the_api_needs_a_person_from_elsewhere_and_takes_a_token(demo):
    """Reading from another address than loopback needs a person: a token works, nothing else."""
    from aiohttp.test_utils import make_mocked_request

    console = next(m.__self__ for m in demo.app._runner.app.middlewares if hasattr(m, "__self__"))  # noqa: SLF001
    s = demo.settings.model_copy(update={"console_tokens": {"bot": token_hash("tok-1")}})
    console.settings = console.gate.settings = s

    async def handler(request):
        return aiohttp.web.json_response({"ok": True})

    class Far:  # a transport whose peer is not loopback
        def get_extra_info(self, name, default=None):
            return ("10.1.2.3", 40000) if name == "peername" else default

    try:
        anonymous = make_mocked_request("GET", "/api/errors", transport=Far(), app=demo.app._runner.app)  # noqa: SLF001
        response = await console.middleware(anonymous, handler)
        assert response.status == 401 and "Bearer" in json.loads(response.body)["error"]
        with_token = make_mocked_request("GET", "/api/errors", headers={"Authorization": "Bearer tok-1"},
                                         transport=Far(), app=demo.app._runner.app)  # noqa: SLF001
        assert (await console.middleware(with_token, handler)).status == 200
    finally:
        console.settings = console.gate.settings = demo.settings


async def test_the_openapi_document_names_every_route_and_the_page_shows_them(demo):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/openapi.json") as r:
            doc = await r.json()
        async with http.get(f"{demo.base}/api.html") as r:
            page = await r.text()
        async with http.get(f"{demo.base}/api/nothing-here") as r:
            assert r.status == 404 and "openapi.json" in (await r.json())["error"]
    assert doc["openapi"].startswith("3.1") and "token" in doc["components"]["securitySchemes"]
    assert set(doc["paths"]) == {r.openapi_path for r in ROUTES}
    for route in ROUTES:
        assert f"<code>{route.openapi_path}</code>" in page


async def test_the_overview_chart_has_axes(demo):
    """Was: bars with no scale and no time."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{demo.base}/") as r:
            html = await r.text()
    chart = html.split('<figure class="chart"', 1)[1].split("</figure>", 1)[0]
    y = re.findall(r'<span class="t(\d)">([^<]+)</span>', chart)
    assert [k for k, _ in y] == ["2", "1", "0"] and y[-1][1] == "0" and int(y[0][1]) >= 1
    hours = re.findall(r'<text x="[\d.]+%" y="12" text-anchor="middle">(\d\d:00|[A-Z][a-z]{2} \d\d)</text>', chart)
    assert 3 <= len(hours) <= 7
    assert "y: occurrences in the hour" in chart and "x: hour (UTC)" in chart
    assert len(re.findall(r'<rect class="bar', chart)) == 25


async def test_an_unknown_page_has_the_layout_and_ways_back(demo):
    async with aiohttp.ClientSession() as http:
        for path, up in (("/no-such-page", None), ("/errors/999999", "/errors"), ("/approvals/424242", "/approvals")):
            async with http.get(demo.base + path) as r:
                html = await r.text()
            assert r.status == 404, path
            assert '<nav aria-label="pages">' in html and 'id="ways-back"' in html and '<a href="/">the overview</a>' in html
            if up:
                assert f'<a href="{up}">' in html.split('id="ways-back"', 1)[1]


async def test_a_failed_sign_in_keeps_the_name(demo):
    from tests.test_console import csrf_of

    async with browser() as http:
        async with http.get(f"{demo.base}/login") as r:
            token = csrf_of(await r.text())
        async with http.post(f"{demo.base}/login", data={"username": "alice", "password": "wrong", "csrf": token,
                                                          "next": "/"}) as r:
            html = await r.text()
    assert r.status == 401 and 'value="alice"' in html and "wrong name or password" in html
    assert 'id="password"' in html and "wrong" not in html.split('id="password"', 1)[1].split(">", 1)[0]


async def test_the_pattern_test_posts_the_line_and_keeps_it_out_of_the_address(demo):
    from tests.test_console import csrf_of

    line = "Connection refused: connect to db port 5432 password=hunter2"
    async with browser() as alice:
        token = await login(alice, demo.base, "alice", "alice-pw")
        async with alice.get(f"{demo.base}/patterns") as r:
            html = await r.text()
        assert '<form method="post" action="/patterns/test">' in html
        async with alice.post(f"{demo.base}/patterns/test", data={"message": line, "csrf": csrf_of(html)}) as r:
            result = await r.text()
            assert str(r.url).endswith("/patterns/test") and "hunter2" not in str(r.url)
    assert r.status == 200 and 'id="test-result"' in result and "hunter2" not in result
    assert token
