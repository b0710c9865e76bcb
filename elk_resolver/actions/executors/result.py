"""What running one command produced, and how its output is bounded and masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["success", "failed", "timeout"]

# Read a little past the limit so a secret that straddles the cut is still whole when masked.
CAPTURE_MARGIN = 8192


@dataclass(frozen=True)
class CommandResult:
    """``status`` is the execution_history value. ``refused`` and ``dry_run`` results never ran:
    they are ``failed`` and ``success`` respectively, and the caller decides how to record them.
    ``exit_code`` is the process exit code, or the HTTP status for http and elasticsearch."""

    type: str
    command: str
    status: Status
    exit_code: int | None
    output: str
    duration_s: float
    critical: bool = False
    refused: bool = False
    dry_run: bool = False
    reason: str = ""


def bound_output(data: bytes, limit: int, *, total: int | None = None) -> str:
    """Decode, mask and truncate captured output to ``limit`` bytes with a marker.

    ``data`` may hold up to ``limit + CAPTURE_MARGIN`` bytes; ``total`` is how many bytes the
    command really produced. Masking runs before the cut (on the whole captured window), so a
    secret crossing the limit is masked whole instead of leaking as an unrecognisable prefix.
    """
    from elk_resolver.events.masking import mask_text

    total = len(data) if total is None else total
    text = mask_text(data.decode("utf-8", errors="replace"))
    encoded = text.encode("utf-8")
    if total <= limit and len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n...[output truncated: {total} bytes, kept {len(kept.encode())}]"


def bound_text(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return bound_output(data[: limit + CAPTURE_MARGIN], limit, total=len(data))
