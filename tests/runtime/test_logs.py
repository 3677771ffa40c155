"""The JSON log lines of the long-running sidecars (`packetclip.logs`): one object per line with the time in ISO 8601
UTC, the level, the logger, the message, every `extra` field and the exception as a string field; the installer
switches the root handlers to it, and both sidecars use the one installer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from packetclip import logs
from packetclip.logs import JsonLogFormatter, announce, use_json_logs


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """The root logger with one text handler on a string buffer (as `packetclip.cli` sets it up), restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def record(message: str, *args: object, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    return logging.getLogger("packetclip.test").makeRecord(
        "packetclip.test", level, __file__, 1, message, args, None, extra=extra
    )


def test_a_line_holds_time_level_logger_message_and_the_extra_fields() -> None:
    entry = record("dropped %d lines\nof eve", 3, reason="not_json", count=3, path=Path("/var/log/eve.json"))
    line = JsonLogFormatter().format(entry)
    assert "\n" not in line  # the newline in the message is escaped inside the string
    fields = json.loads(line)
    assert fields == {
        "time": fields["time"],
        "ts": round(entry.created, 6),
        "level": "warning",
        "logger": "packetclip.test",
        "message": "dropped 3 lines\nof eve",
        "reason": "not_json",
        "count": 3,
        "path": "/var/log/eve.json",  # what JSON cannot hold is written as its text
    }
    assert fields["time"].endswith("Z")
    when = datetime.fromisoformat(fields["time"].replace("Z", "+00:00"))
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0
    assert abs(when.timestamp() - entry.created) < 1e-5


def test_the_fixed_fields_win_over_an_extra_of_the_same_name() -> None:
    fields = json.loads(JsonLogFormatter().format(record("m", time="then", logger="y", exc="z", reason="r")))
    assert fields["time"] != "then" and fields["logger"] == "packetclip.test" and fields["reason"] == "r"
    assert fields["exc"] == "z"  # no exception: the name is free for an extra


def test_an_exception_is_one_string_field_of_the_one_line(root_stream: io.StringIO) -> None:
    use_json_logs()
    log = logging.getLogger("packetclip.test")
    try:
        {}["flow_id"]
    except KeyError:
        log.exception("engine failed on a batch of %d flows", 7, extra={"flows": 7, "count": 1})
    lines = root_stream.getvalue().splitlines()
    assert len(lines) == 1
    fields = json.loads(lines[0])
    assert fields["message"] == "engine failed on a batch of 7 flows" and fields["level"] == "error"
    assert (fields["flows"], fields["count"]) == (7, 1)
    assert isinstance(fields["exc"], str)
    assert fields["exc"].startswith("Traceback") and fields["exc"].rstrip().endswith("KeyError: 'flow_id'")


def test_the_installer_switches_the_handlers_and_text_stays_as_it_was(root_stream: io.StringIO) -> None:
    log = logging.getLogger("packetclip.test")
    log.warning("eve: dropped an incomplete line of %d bytes", 12, extra={"bytes": 12, "count": 1})
    assert root_stream.getvalue() == "WARNING packetclip.test: eve: dropped an incomplete line of 12 bytes\n"
    use_json_logs()
    log.warning("eve: dropped an incomplete line of %d bytes", 12, extra={"bytes": 12, "count": 2})
    json_line = root_stream.getvalue().splitlines()[1]
    assert json.loads(json_line)["count"] == 2


def test_announce_reaches_the_handlers_below_the_level(root_stream: io.StringIO) -> None:
    """The closing statistics are always printed, as the text output always printed them."""
    use_json_logs()
    log = logging.getLogger("packetclip.test")
    log.info("not shown: the level is warning")
    announce(log, "finished", stats={"eve": {"malformed": {"not_json": 1}}})
    (line,) = root_stream.getvalue().splitlines()
    fields = json.loads(line)
    assert (fields["level"], fields["message"]) == ("info", "finished")
    assert fields["stats"] == {"eve": {"malformed": {"not_json": 1}}}


def test_both_sidecars_install_the_one_formatter() -> None:
    from packetclip.commands import serve, suricata

    assert serve.use_json_logs is logs.use_json_logs and suricata.use_json_logs is logs.use_json_logs
    assert not hasattr(serve, "JsonLogFormatter")  # moved, not copied
