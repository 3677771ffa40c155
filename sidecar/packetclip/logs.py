"""Log lines of the long-running sidecars (`packetclip serve`, `packetclip suricata run`): text or JSON.

Owns the JSON line format and switching the handlers to it. One JSON object per line, for journald and log
shippers:

    {"time": "2026-11-27T02:09:05.055434Z", "ts": 1795745345.055434, "level": "warning",
     "logger": "packetclip.suricata.follow", "message": "eve: dropped a line longer than 16777216 bytes",
     "limit": 16777216, "count": 1}

`time` is ISO 8601 in UTC, `ts` the same instant in epoch seconds (what `serve` wrote first); every field a call
passes with `extra=` (counters, reasons, sizes) follows as a field of its own, and an exception's traceback is the
string field `exc`, never lines outside the object. The fixed fields win over an `extra` of the same name. A
text line says what it said before: extra fields stay in the JSON lines only.

It does not choose the level or install the first handler (`packetclip.cli.configure_logging` does, once per
command line), and it does not read settings: each command validates its own `log_format` against `LOG_FORMATS`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")

# what every LogRecord carries; anything else on a record came from `extra=` (or an `announce` call)
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, ts, level, logger, message, the `extra` fields, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra field that JSON cannot hold (a Path, an address) is written as its text; json.dumps
        # escapes newlines inside strings, so a message or a traceback never breaks the line
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json_logs() -> None:
    """Switch the root logger's handlers (set up by the `packetclip` group) to JSON lines."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonLogFormatter())


def announce(logger: logging.Logger, message: str, **fields: Any) -> None:
    """An info record that reaches the handlers whatever the level: what a command always prints on stderr (its
    closing statistics), as a log line with `fields` when the logs are JSON."""
    record = logger.makeRecord(logger.name, logging.INFO, "(announce)", 0, message, (), None, extra=fields)
    logger.handle(record)
