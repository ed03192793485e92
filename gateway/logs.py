"""Log records that a client cannot forge or inflate.

Client-supplied values (transactionID, alias names from the URL, subjects, reasons built from
them) reach log lines. A value with a line break could write a second, well-formed record
("... issued serial=..."), a NUL or an escape sequence could hide text from a terminal, and a
200 KB value costs 200 KB of log per unauthenticated request. So every record's message is
escaped and bounded as it is formatted, whatever module logged it, and the call sites that log
a client value clip it to a readable length as well.
"""

from __future__ import annotations

import logging
import re

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_MESSAGE = 4096
MAX_VALUE = 160


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``: always one line."""
    return _UNSAFE.sub(_escape, text)


def clip(value: object, limit: int = MAX_VALUE) -> str:
    """A client-supplied value for a log line: escaped, and cut to ``limit`` characters with
    the length of what was cut."""
    text = escape(str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


class SafeFormatter(logging.Formatter):
    """Escapes and bounds the message of every record; tracebacks (our own) stay as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clip(record.message, MAX_MESSAGE)
        return super().formatMessage(record)


def configure(level: str) -> None:
    """The process's logging: one line per record, with the process id, which tells the
    workers of `serve --workers` apart in one log."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        SafeFormatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations are routine, not news
