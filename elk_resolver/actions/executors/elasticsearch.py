"""The allowlisted Elasticsearch actions (see ``policy.ES_ACTIONS``), through the official client.

    clear_read_only_block  PUT  /{index}/_settings {"index.blocks.read_only_allow_delete": null}
    cluster_reroute_retry_failed  POST /_cluster/reroute?retry_failed=true&metric=none
    ilm_retry              POST /{index}/_ilm/retry
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson
from elasticsearch import ApiError, AsyncElasticsearch, ConnectionTimeout, TransportError
from elasticsearch import ConnectionError as EsConnectionError

from elk_resolver.actions.executors.result import CommandResult, bound_text
from elk_resolver.actions.policy import Command, Verdict

if TYPE_CHECKING:
    from elk_resolver.settings import Settings


def make_client(settings: Settings) -> AsyncElasticsearch | None:
    """The client the executors use; None when no Elasticsearch is configured or no write
    action is opted in (elasticsearch_actions): a URL set for the monitor enables nothing."""
    if not settings.elasticsearch_url or not settings.elasticsearch_actions:
        return None
    auth: dict[str, Any] = {}
    if settings.elasticsearch_api_key:
        auth["api_key"] = settings.elasticsearch_api_key
    elif settings.elasticsearch_username:
        auth["basic_auth"] = (settings.elasticsearch_username, settings.elasticsearch_password or "")
    return AsyncElasticsearch(settings.elasticsearch_url, request_timeout=settings.command_timeout_s, **auth)


async def _call(es: AsyncElasticsearch, action: str, index: str | None) -> Any:
    if action == "clear_read_only_block":
        return await es.indices.put_settings(index=index, settings={"index.blocks.read_only_allow_delete": None})
    if action == "cluster_reroute_retry_failed":
        # metric=none: the response would otherwise carry the whole cluster state.
        return await es.cluster.reroute(retry_failed=True, metric="none")
    if action == "ilm_retry":
        return await es.ilm.retry(index=index)  # type: ignore[arg-type]
    raise ValueError(f"no executor for elasticsearch action {action!r}")


def _dump(body: Any) -> str:
    if isinstance(body, (dict, list)):
        return orjson.dumps(body).decode()
    return str(body)


async def run(
    cmd: Command,
    verdict: Verdict,
    *,
    timeout_s: float,
    output_limit: int,
    client: AsyncElasticsearch | None,
) -> CommandResult:
    if not verdict.allowed or verdict.type != "elasticsearch" or not verdict.action:
        raise ValueError(f"not an allowed elasticsearch verdict: {verdict.reason}")
    started = time.monotonic()

    def result(status: str, code: int | None, text: str) -> CommandResult:
        return CommandResult(
            type="elasticsearch",
            command=cmd.command,
            status=status,  # type: ignore[arg-type]
            exit_code=code,
            output=bound_text(text, output_limit),
            duration_s=time.monotonic() - started,
            critical=cmd.critical,
        )

    if client is None:
        return result("failed", None, "elasticsearch is not configured (elasticsearch_url is unset)")
    action, index = verdict.action["action"], verdict.action.get("index")
    try:
        async with asyncio.timeout(timeout_s):
            response = await _call(client.options(request_timeout=timeout_s, max_retries=0), action, index)
    except (TimeoutError, ConnectionTimeout):
        return result("timeout", None, f"{action}: no answer within {timeout_s:g}s")
    except ApiError as exc:
        return result("failed", exc.meta.status, f"{action}: HTTP {exc.meta.status} {_dump(exc.body)}")
    except (EsConnectionError, TransportError) as exc:
        return result("failed", None, f"{action}: {type(exc).__name__}: {exc}")
    body = response.body
    # An unacknowledged settings change or retry did not happen, whatever the status code says.
    acknowledged = not (isinstance(body, dict) and body.get("acknowledged") is False)
    code = response.meta.status
    status = "success" if 200 <= code < 300 and acknowledged else "failed"
    return result(status, code, f"{action}: HTTP {code} {_dump(body)}")
