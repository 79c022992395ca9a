"""``PASSCODE_LOG_FORMAT=json``: each log record one JSON object on one line.

Fields: ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger``, ``message``, and
``exception``/``stack`` when the record has one; an access-log line adds ``request_id``,
``method``, ``route`` (the template), ``status``, ``bytes``, ``duration`` (s) and ``peer``
(:mod:`passcode.api.accesslog` passes them as the record's extras). The message, traceback
and stack are the ones the handler's :class:`~passcode.domain.redact.RedactingFilter` has
already redacted (filters run before the formatter), so JSON lines carry no more than text ones.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

# The extras an access-log record carries, written as fields of their own when present.
ACCESS_FIELDS = ("request_id", "method", "route", "status", "bytes", "duration", "peer")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``orjson`` escapes newlines, so a line is a record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in ACCESS_FIELDS:
            if name in fields:
                line[name] = fields[name]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()
