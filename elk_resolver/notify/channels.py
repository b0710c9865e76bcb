"""Where messages go: apprise for the chat, paging and mail services, and a signed JSON webhook.

Apprise (a well-kept library that speaks Slack, Microsoft Teams, e-mail, PagerDuty, Opsgenie
and a hundred more) carries every ``notify_urls`` entry. The generic webhook is ours because
apprise's ``json://`` cannot sign: the receiver verifies
``X-Elk-Resolver-Signature: sha256=HMAC_SHA256(secret, timestamp + "." + body)`` with the
``X-Elk-Resolver-Timestamp`` header, and de-duplicates on ``X-Elk-Resolver-Delivery``.

A channel's name is its scheme and a short hash of its URL: the URL carries tokens, so it is
never stored, logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from elk_resolver.settings import Settings

SEND_TIMEOUT_S = 15.0


class SendError(RuntimeError):
    """A channel did not accept the message (the text never contains the channel's URL)."""


class Channel(Protocol):
    name: str

    async def send(self, key: str, message: dict[str, Any]) -> None: ...


def channel_name(url: str) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else "url"
    return f"{scheme}:{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass
class AppriseChannel:
    url: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = channel_name(self.url)

    async def send(self, key: str, message: dict[str, Any]) -> None:
        import apprise

        sender = apprise.Apprise()
        if not sender.add(self.url):
            raise SendError(f"{self.name}: apprise does not understand this URL")
        ok = await sender.async_notify(
            title=message["title"], body=message["text"], body_format=apprise.NotifyFormat.TEXT
        )
        if not ok:
            raise SendError(f"{self.name}: the service did not accept the message")


@dataclass
class SignedWebhook:
    url: str
    secret: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = "webhook:" + channel_name(self.url).split(":", 1)[1]

    async def send(self, key: str, message: dict[str, Any]) -> None:
        import httpx

        body = orjson.dumps({"delivery": key, **message})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Elk-Resolver-Delivery": key,
            "X-Elk-Resolver-Event": message.get("kind", ""),
            "X-Elk-Resolver-Timestamp": timestamp,
            "X-Elk-Resolver-Signature": sign(self.secret, timestamp, body),
        }
        try:
            async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(f"{self.name}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise SendError(f"{self.name}: HTTP {response.status_code}")


def configured_channels(settings: Settings) -> list[Channel]:
    """Every channel the settings name; an empty list means nothing is ever sent."""
    channels: list[Channel] = [AppriseChannel(url) for url in settings.notify_urls]
    if settings.notify_webhook_url:
        if not settings.notify_webhook_secret:
            raise ValueError("notify_webhook_url needs notify_webhook_secret: the receiver must be able to verify")
        channels.append(SignedWebhook(settings.notify_webhook_url, settings.notify_webhook_secret or ""))
    return channels
