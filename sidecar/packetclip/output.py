"""Verdict records as files: Zeek's ASCII-writer layout (the default) and JSON lines.

Owns the verdict-record contract of docs/design.md as it is written out: the field names, their order and Zeek types,
the `scores` object of JSON records, and Zeek's escaping. It does not compute verdicts (`packetclip.engine`), define
them or the fields a record has only when they apply (`packetclip.verdict`), or decide where records go (the
commands open the stream).

Zeek layout, as Zeek's ASCII log writer produces it with its default options:

    #separator \\x09                        the field separator, written hex-escaped
    #set_separator<TAB>,
    #empty_field<TAB>(empty)
    #unset_field<TAB>-
    #path<TAB>packetclip
    #open<TAB>YYYY-MM-DD-HH-MM-SS          local time the file was opened
    #fields<TAB>ts<TAB>uid<TAB>...
    #types<TAB>time<TAB>string<TAB>...
    <one row per verdict>
    #close<TAB>YYYY-MM-DD-HH-MM-SS

Values: `time` and `double` with six decimals, `port` and `count` as integers, `bool` as T or F, strings escaped as
Zeek does: a backslash, ASCII control characters (the tab separator among them) and DEL become ``\\xNN`` per byte;
other UTF-8 passes through (Zeek's `LogAscii::enable_utf_8`, on by default; `utf8=False` escapes every non-ASCII byte).
An empty string is written `(empty)`, an unset value `-`, and a string that *equals* one of those markers has its
first character escaped so that it cannot be mistaken for them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TextIO

from packetclip.verdict import Verdict, optional_fields

log = logging.getLogger(__name__)

LOG_PATH = "packetclip"
SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY_FIELD = "(empty)"
UNSET_FIELD = "-"

# (Zeek field name, Zeek type), in the contract's order; `scores` (and `allow_reason` of an allowed verdict, and
# `missions`, the user-written missions' scores when there are any) exist in JSON records only.
ZEEK_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("community_id", "string"),
    ("label", "string"),
    ("attack", "string"),
    ("score", "double"),
    ("explanation", "string"),
    ("model", "string"),
    ("missions", "vector[string]"),
    ("allowed", "bool"),
)
JSON_FIELDS: tuple[str, ...] = (
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "community_id",
    "label",
    "attack",
    "score",
    "scores",
    "explanation",
    "model",
    "allowed",
)
FORMATS = ("zeek", "json")

# the Verdict attribute behind each record field whose name differs from it
_ATTRIBUTES = {"id.orig_h": "orig_h", "id.orig_p": "orig_p", "id.resp_h": "resp_h", "id.resp_p": "resp_p"}
# Zeek types whose values repeat across records (addresses, protocol, labels, model): their escaped text is kept
_REPEATING = frozenset(("addr", "enum"))
_REPEATING_FIELDS = frozenset(("label", "attack", "model"))
_MEMO_SIZE = 4096  # distinct values remembered per repeating field (emptied when full)

_ASCII_ESCAPED = re.compile(r"[\x00-\x1f\x7f\\]")
_NON_ASCII_OR_ESCAPED = re.compile(r"[\x00-\x1f\x7f\\]|[^\x00-\x7f]")


def verdict_record(verdict: Verdict) -> dict[str, Any]:
    """The contract's record of one verdict (JSON field names and order)."""
    record = {name: getattr(verdict, _ATTRIBUTES.get(name, name)) for name in JSON_FIELDS}
    record["scores"] = dict(verdict.scores)  # a copy: the record is the caller's to change
    record.update(optional_fields(verdict))  # allow_reason, missions: last, only when they apply
    return record


def _hex_bytes(match: re.Match[str]) -> str:
    return "".join(f"\\x{byte:02x}" for byte in match.group(0).encode("utf-8", "surrogatepass"))


def zeek_escape(text: str, utf8: bool = True) -> str:
    """A string value as Zeek's ASCII writer writes it (see the module docstring)."""
    if text == "":
        return EMPTY_FIELD
    pattern = _ASCII_ESCAPED if utf8 else _NON_ASCII_OR_ESCAPED
    escaped = pattern.sub(_hex_bytes, text)
    if escaped in (UNSET_FIELD, EMPTY_FIELD):
        escaped = f"\\x{ord(escaped[0]):02x}{escaped[1:]}"
    return escaped


def mission_entries(missions: dict[str, float]) -> list[str]:
    """User-written missions' scores as the Zeek log's `missions` column holds them: `name=score`, six decimals,
    as the package's `fmt("%s=%.6f", ...)` writes them."""
    return [f"{name}={float(score):.6f}" for name, score in missions.items()]


def zeek_value(value: Any, zeek_type: str, utf8: bool = True) -> str:
    """One field as Zeek's ASCII writer renders a value of `zeek_type`; a `vector[...]` value is a list (empty:
    Zeek's empty field) or None (unset)."""
    if value is None:
        return UNSET_FIELD
    if zeek_type.startswith("vector["):
        element = zeek_type[len("vector[") : -1]
        if not value:
            return EMPTY_FIELD
        # a separator inside an element is escaped, as Zeek's writer does
        return SET_SEPARATOR.join(
            zeek_value(item, element, utf8).replace(SET_SEPARATOR, "\\x2c") for item in value
        )
    if zeek_type in ("time", "double", "interval"):
        return f"{float(value):.6f}"
    if zeek_type in ("port", "count", "int"):
        return str(int(value))
    if zeek_type == "bool":
        return "T" if value else "F"
    return zeek_escape(str(value), utf8)


def _render_missions(render: Callable[[Any], str], missions: dict[str, float]) -> str:
    return render(mission_entries(missions) or None)


def zeek_timestamp(epoch: float) -> str:
    """The #open/#close stamp: local time, as Zeek writes it."""
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(epoch))


class VerdictWriter(Protocol):
    def write(self, verdict: Verdict) -> None: ...

    def close(self) -> None: ...


class ZeekWriter:
    """Verdicts in Zeek's ASCII-writer layout; the header goes out on creation, `#close` on `close()`."""

    def __init__(
        self,
        stream: TextIO,
        path: str = LOG_PATH,
        utf8: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stream = stream
        self.utf8 = utf8  # pass valid UTF-8 through, as Zeek does by default
        self.clock = clock  # injectable so that tests get stable #open/#close lines
        self.closed = False
        self.records = 0
        names = SEPARATOR.join(name for name, _ in ZEEK_FIELDS)
        types = SEPARATOR.join(kind for _, kind in ZEEK_FIELDS)
        stream.write(
            f"#separator \\x{ord(SEPARATOR):02x}\n"
            f"#set_separator{SEPARATOR}{SET_SEPARATOR}\n"
            f"#empty_field{SEPARATOR}{EMPTY_FIELD}\n"
            f"#unset_field{SEPARATOR}{UNSET_FIELD}\n"
            f"#path{SEPARATOR}{zeek_escape(path, utf8)}\n"
            f"#open{SEPARATOR}{zeek_timestamp(clock())}\n"
            f"#fields{SEPARATOR}{names}\n"
            f"#types{SEPARATOR}{types}\n"
        )
        # per field: the Verdict attribute and how its value is rendered
        fields = []
        for name, kind in ZEEK_FIELDS:
            repeats = kind in _REPEATING or name in _REPEATING_FIELDS
            render = self._renderer(kind, repeats)
            if name == "missions":  # no user missions: unset, as Zeek leaves the optional field
                render = partial(_render_missions, render)
            fields.append((_ATTRIBUTES.get(name, name), render))
        self._fields = tuple(fields)

    def write(self, verdict: Verdict) -> None:
        values = [render(getattr(verdict, attribute)) for attribute, render in self._fields]
        self.stream.write(SEPARATOR.join(values) + "\n")
        self.records += 1

    def _renderer(self, kind: str, repeats: bool) -> Callable[[Any], str]:
        """`zeek_value` for one field; for values that repeat from record to record (addresses, protocol,
        labels, model) the rendered text is remembered, up to `_MEMO_SIZE` values per field."""
        utf8 = self.utf8

        def render(value: Any) -> str:
            return zeek_value(value, kind, utf8)

        if not repeats:
            return render
        memo: dict[Any, str] = {}

        def remembered(value: Any) -> str:
            text = memo.get(value)
            if text is None:
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                text = memo[value] = render(value)
            return text

        return remembered

    def close(self) -> None:
        if not self.closed:
            self.stream.write(f"#close{SEPARATOR}{zeek_timestamp(self.clock())}\n")
            self.stream.flush()
            self.closed = True


class JsonWriter:
    """One JSON object per verdict per line, with the `scores` object; nothing before or after."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.records = 0

    def write(self, verdict: Verdict) -> None:
        # allow_nan=False: a NaN would make the line invalid JSON for every strict reader
        self.stream.write(json.dumps(verdict_record(verdict), separators=(",", ":"), allow_nan=False) + "\n")
        self.records += 1

    def close(self) -> None:
        self.stream.flush()


def open_writer(fmt: str, stream: TextIO) -> ZeekWriter | JsonWriter:
    """The writer for a `--format` value."""
    if fmt == "zeek":
        return ZeekWriter(stream)
    if fmt == "json":
        return JsonWriter(stream)
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
