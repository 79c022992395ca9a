"""Redaction of credentials and pass texts from text bound for a log.

The service's own log lines name no secret, but text it does not choose does: aiohttp's parser
quotes the header line it rejected, a traceback quotes the values in it. :class:`RedactingFilter`
runs :func:`redact` over every record's message, traceback and stack before it is written.

What is replaced (each by a marker naming its kind, so a log still says what was there):
the values of ``Authorization`` headers and bearer credentials (``Bearer <anything>``), terminal keys (``pt_…``), admin keys (``pa_…``),
JWTs (``eyJ…`` with up to two more dot-separated segments, or any three long base64url
segments), and the texts of passes, cards, venue codes and foreign certificates (``PC1:``,
``PP1:``, ``HC1:``, ``shc:/``).
"""

from __future__ import annotations

import logging
import re

# A record attribute (``extra={REDACTION_SAFE: True}``) by which a logger whose every field
# is the server's own vouches for its records, which the filter then passes untouched.
REDACTION_SAFE = "redaction_safe"

_B64URL = r"[A-Za-z0-9_-]"
_BASE45 = r"[0-9A-Z $%*+\-./:]"

# (kind, pattern, a literal every match contains): a pattern runs only on text holding its
# literal (sought case-blind for the patterns that ignore case), so a line with nothing to
# redact, such as an access-log line, costs a few substring searches rather than regex scans.
# Pass texts go first (Base45 has spaces, which end the other patterns' matches), and three
# long base64url segments before "eyJ…", which would otherwise cut them apart.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("pass", rf"\b(?:PC1|PP1|HC1):{_BASE45}*", "1:"),
    ("pass", r"\bshc:/[0-9]*", "shc:/"),
    (
        "credential",
        r"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?:[A-Za-z]+[ \t]+)?\S+",
        "authorization",
    ),
    ("credential", r"(?i:bearer)[ \t]+\S+", "bearer"),
    ("jwt", rf"{_B64URL}{{10,}}\.{_B64URL}{{10,}}\.{_B64URL}{{10,}}", "."),
    # A JOSE header is a JSON object: its base64url starts "eyJ" ('{"'), the rest may be cut.
    ("jwt", rf"\beyJ{_B64URL}*(?:\.{_B64URL}*){{0,2}}", "eyJ"),
    # Our keys: prefix and secrets.token_urlsafe(32) (passcode.store.terminals/admins); a
    # shorter tail still counts, as a truncated key in a quoted header line is still a secret.
    ("terminal-key", rf"\bpt_{_B64URL}{{8,}}", "pt_"),
    ("admin-key", rf"\bpa_{_B64URL}{{8,}}", "pa_"),
)
_FOLDED = frozenset({"authorization", "bearer"})
# Where "." is the literal, the pattern is worth running only where two long segments meet.
_LONG_SEGMENTS = re.compile(rf"\.{_B64URL}{{10,}}\.")
_COMPILED = tuple(
    (f"<{kind} redacted>", re.compile(pattern), needle, needle in _FOLDED)
    for kind, pattern, needle in _RULES
)


def redact(text: str) -> str:
    """``text`` with every credential, token and pass text replaced by a marker."""
    lowered = None
    for marker, pattern, needle, folded in _COMPILED:
        if folded:
            if lowered is None:
                lowered = text.lower()
            if needle not in lowered:
                continue
        elif needle not in text or (needle == "." and _LONG_SEGMENTS.search(text) is None):
            continue
        text = pattern.sub(marker, text)
        lowered = None
    return text


class RedactingFilter(logging.Filter):
    """Redacts each record's message, traceback and stack in place; drops nothing.

    Installed on the handlers (a logger's own filters do not see records propagated from its
    children), so it covers every logger, aiohttp's included. The traceback is formatted here
    and kept as ``exc_text``, which standard formatters print instead of formatting
    ``exc_info`` again.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get(REDACTION_SAFE):
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: the formatter will say so itself
            message = str(record.msg)
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
