"""One way for a long-running component to run its event loop: uvloop when installed, else asyncio."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


def run_service(main: Coroutine[Any, Any, Any], log: logging.Logger) -> int:
    """Run ``main`` to the end; 0 on a clean stop, 1 (logged) when a socket cannot be bound (``OSError``)."""
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    try:
        if uvloop is not None:
            uvloop.run(main)
        else:
            asyncio.run(main)
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0
