"""Unexpected errors in the log: one bounded line each, whatever their traceback."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

TRACE_FRAMES = 3  # frames of an unhandled error's traceback that go into its log line


def log_unhandled(request: web.Request, exc: BaseException) -> None:
    """One log line for a bug, whatever the request: a deep traceback must not flood the log."""
    log.error("unhandled error on %s %.200s: %s", request.method, request.path, one_line(exc))
    log.debug("the traceback", exc_info=exc)


def one_line(exc: BaseException) -> str:
    """An exception as one bounded line: its type, message and last few frames."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACE_FRAMES:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames)
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text} (last frames: {where})"


class OneLineTracebacks(logging.Filter):
    """Fold a record's traceback into its message: what aiohttp's server logs about a
    request (a body that does not decode, a broken connection) stays one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {one_line(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


ONE_LINE_TRACEBACKS = OneLineTracebacks()
