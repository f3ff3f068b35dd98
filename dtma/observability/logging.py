"""structlog set-up: JSON lines in production, coloured console on a TTY.

Standard-library loggers (aiohttp, docker, asyncio) go through the same renderer so that one
process writes one log format. Context (toolbox, server, revision, operation, request_id) is bound
with structlog.contextvars and appears on every line logged inside that context.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from dtma.observability.redaction import REDACTOR

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(fmt: Literal["console", "json"], level: str = "info") -> None:
    """Configure structlog and the stdlib root logger. Idempotent; call once at start."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # Redaction runs after exceptions are formatted, so tracebacks are masked too.
        processors=[*shared, structlog.processors.format_exc_info, REDACTOR.processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                REDACTOR.processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))
    # aiohttp's access log duplicates our own request log lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The MCP SDK's HTTP client logs every request at INFO: one line per probe is noise.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
