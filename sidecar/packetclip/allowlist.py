"""Allowlists: traffic an operator expects (a scheduled scanner, a load-tested server), whose verdicts are kept but
marked allowed.

Owns the allowlist file, one TOML file of `[[allow]]` entries; checking it, with one-line errors that name the file,
the entry and the field; matching a verdict against the entries; and following the file while a sidecar runs
(`AllowlistFile`). Every sensor path goes through here once, in the engine: `packetclip classify`, `packetclip
serve` and `packetclip suricata run` mark the same verdicts.

    [[allow]]
    reason = "the security team's scanner"     required: why; appended to the verdict's explanation
    orig_nets = ["192.0.2.10", "2001:db8:5::/48"]   originator address or network (IPv4, IPv6)
    resp_nets = ["198.51.100.0/24"]             responder address or network
    nets = ["203.0.113.7"]                      either endpoint
    resp_ports = [53, "123/udp", "8000-8099/tcp"]   responder port, optionally a range and a protocol
    services = ["dns", "ntp"]                   the service named from the responder's port (the explanation's)
    classes = ["recon", "syn_flood"]            the verdict's label (coarse class) or attack (fine class)
    expires = 2027-03-31                        a date (through that day, UTC) or a date-time (UTC unless offset)

Fields of one entry must all match (AND); the values of one field are alternatives (OR); a field left out matches
anything, but an entry must name at least one of them. A list field also takes a single value. The first entry that
matches gives the reason. ICMP "ports" are Zeek's: the responder port of an echo request is 0 (the reply type).

A matching verdict keeps its label, attack and scores; `allowed` is set, `allow_reason` holds the entry's reason and
the explanation ends with "Allowed: <reason>." What an allowed verdict no longer does is its consumers' decision:
the Zeek scripts raise no notice for it, the Suricata feedback adds no dataset entry for it
(`packetclip.suricata.datasets`). Error verdicts never reach the engine and are never allowed.

Cost: with no allowlist configured the engine does nothing per verdict. With one, networks are kept as sets of
integer prefixes per prefix length, so an address is looked up in as many probes as there are distinct prefix
lengths, and an index of the entries by address and port (`_EntryIndex`) leaves only the entries a connection
could match to be checked; the file is looked at (one `stat`) at most every `check_every` seconds, never per
verdict.

Expiry is wall-clock time: an expired entry is ignored, and said once in the log and counted.

It does not choose the file (`packetclip.config` and the commands), and does not change a label, an attack or a
score.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import socket
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES
from packetclip.featurizer.services import SERVICE_NAMES
from packetclip.verdict import Verdict

if TYPE_CHECKING:
    from packetclip.featurizer import Connection

log = logging.getLogger(__name__)

TABLE = "allow"
NET_FIELDS = ("orig_nets", "resp_nets", "nets")
MATCH_FIELDS = (*NET_FIELDS, "resp_ports", "services", "classes")
FIELDS = ("reason", *MATCH_FIELDS, "expires")
PROTOCOLS = ("tcp", "udp", "icmp")
CLASS_NAMES = frozenset((*COARSE_CLASSES, *FINE_CLASSES))
# seconds between looks at the file: an edit is in force within that, at the cost of one stat each
DEFAULT_CHECK_EVERY = 2.0
_PORT = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/([a-z]+))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BITS = {4: 32, 6: 128}


class AllowlistError(ValueError):
    """An allowlist that cannot be used; the message is one line naming the file, the entry and the field."""


# --- matching -----------------------------------------------------------------------------------------------


def address_key(text: str) -> tuple[int, int] | None:
    """(IP version, the address as an integer), or None for text that is no address."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return version, int.from_bytes(socket.inet_pton(family, text), "big")
        except (OSError, ValueError):
            continue
    return None


class NetworkSet:
    """IPv4 and IPv6 networks; membership costs one set probe per distinct prefix length of the address's family."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.networks = tuple(networks)
        by_length: dict[tuple[int, int], set[int]] = {}
        for network in self.networks:
            bits = _BITS[network.version]
            prefix = int(network.network_address) >> (bits - network.prefixlen)
            by_length.setdefault((network.version, network.prefixlen), set()).add(prefix)
        # per IP version: (bits to shift an address right by, the prefixes of that length)
        self._tables: dict[int, tuple[tuple[int, frozenset[int]], ...]] = {
            version: tuple(
                (_BITS[version] - length, frozenset(prefixes))
                for (family, length), prefixes in sorted(by_length.items())
                if family == version
            )
            for version in (4, 6)
        }

    def __contains__(self, key: tuple[int, int] | None) -> bool:
        if key is None:
            return False
        version, value = key
        return any((value >> shift) in prefixes for shift, prefixes in self._tables[version])


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int
    proto: str | None  # None: any protocol

    def __contains__(self, port_and_proto: tuple[int, str]) -> bool:
        port, proto = port_and_proto
        return self.low <= port <= self.high and (self.proto is None or self.proto == proto)


@dataclass(frozen=True)
class AllowEntry:
    """One `[[allow]]` table, checked and compiled; a None field matches anything."""

    number: int  # 1-based position in the file, for messages
    reason: str
    orig_nets: NetworkSet | None = None
    resp_nets: NetworkSet | None = None
    nets: NetworkSet | None = None
    resp_ports: tuple[PortRange, ...] | None = None
    services: frozenset[str] | None = None
    classes: frozenset[str] | None = None
    expires: float | None = None  # epoch seconds from which the entry no longer applies; None: never

    def matches(
        self,
        orig: tuple[int, int] | None,
        resp: tuple[int, int] | None,
        resp_p: int,
        proto: str,
        service: str,
        label: str,
        attack: str,
    ) -> bool:
        # cheapest tests first: a miss on any field ends it
        if self.classes is not None and label not in self.classes and attack not in self.classes:
            return False
        if self.services is not None and service not in self.services:
            return False
        if self.resp_ports is not None and not any((resp_p, proto) in r for r in self.resp_ports):
            return False
        if self.orig_nets is not None and orig not in self.orig_nets:
            return False
        if self.resp_nets is not None and resp not in self.resp_nets:
            return False
        return self.nets is None or orig in self.nets or resp in self.nets

    def describe(self) -> str:
        return f"entry {self.number} ({self.reason!r})"


class _PrefixIndex:
    """Entry positions filed under the networks of one field: per IP version and prefix length, prefix -> entries."""

    def __init__(self) -> None:
        self._tables: dict[int, dict[int, dict[int, list[int]]]] = {4: {}, 6: {}}  # version -> shift -> ...

    def add(self, networks: NetworkSet, position: int) -> None:
        for network in networks.networks:
            shift = _BITS[network.version] - network.prefixlen
            by_prefix = self._tables[network.version].setdefault(shift, {})
            by_prefix.setdefault(int(network.network_address) >> shift, []).append(position)

    def collect(self, key: tuple[int, int] | None, found: set[int]) -> None:
        if key is None:
            return
        version, value = key
        for shift, by_prefix in self._tables[version].items():
            hit = by_prefix.get(value >> shift)
            if hit:
                found.update(hit)


class _EntryIndex:
    """Which entries a connection can match at all, found from its addresses and port rather than by trying every
    entry (a list of a thousand scanner hosts costs a few dictionary probes per verdict, not a thousand checks).

    Each entry is filed under one field every connection it matches must satisfy: its originator networks, else
    its responder networks, else its either-side networks, else its responder ports when they are single ports;
    an entry with none of these (classes or services alone, port ranges) is a candidate for every connection."""

    def __init__(self, entries: Sequence[AllowEntry]) -> None:
        self.orig, self.resp, self.either = _PrefixIndex(), _PrefixIndex(), _PrefixIndex()
        self.ports: dict[int, list[int]] = {}
        self.always: list[int] = []
        for position, entry in enumerate(entries):
            if entry.orig_nets is not None:
                self.orig.add(entry.orig_nets, position)
            elif entry.resp_nets is not None:
                self.resp.add(entry.resp_nets, position)
            elif entry.nets is not None:
                self.either.add(entry.nets, position)
            elif entry.resp_ports is not None and all(r.low == r.high for r in entry.resp_ports):
                for port in {r.low for r in entry.resp_ports}:
                    self.ports.setdefault(port, []).append(position)
            else:
                self.always.append(position)

    def candidates(
        self, orig: tuple[int, int] | None, resp: tuple[int, int] | None, resp_p: int
    ) -> list[int]:
        """Positions of the entries worth checking, in file order (the first match wins)."""
        found = set(self.always)
        self.orig.collect(orig, found)
        self.resp.collect(resp, found)
        self.either.collect(orig, found)
        self.either.collect(resp, found)
        found.update(self.ports.get(resp_p, ()))
        return sorted(found)


class Allowlist:
    """The entries of one version of the file, in file order, and their index."""

    def __init__(self, entries: Iterable[AllowEntry] = (), source: str = "") -> None:
        self.entries: tuple[AllowEntry, ...] = tuple(entries)
        self.source = source
        self._index = _EntryIndex(self.entries)

    def match(
        self, orig_h: str, resp_h: str, resp_p: int, proto: str, service: str, label: str, attack: str
    ) -> AllowEntry | None:
        """The first entry the connection and its verdict match, or None."""
        if not self.entries:
            return None
        orig, resp = address_key(orig_h), address_key(resp_h)
        entries = self.entries
        for position in self._index.candidates(orig, resp, resp_p):
            entry = entries[position]
            if entry.matches(orig, resp, resp_p, proto, service, label, attack):
                return entry
        return None

    def next_expiry(self) -> float:
        """The earliest expiry among the entries (inf: none expires)."""
        return min((e.expires for e in self.entries if e.expires is not None), default=float("inf"))

    def split_expired(self, now: float) -> tuple[Allowlist, list[AllowEntry]]:
        """The entries still in force at `now` and those that are not."""
        kept = tuple(e for e in self.entries if e.expires is None or e.expires > now)
        gone = [e for e in self.entries if e.expires is not None and e.expires <= now]
        return Allowlist(kept, self.source), gone


def allowed_explanation(explanation: str, reason: str) -> str:
    """The explanation with the allowlist's reason as its last sentence."""
    ending = "" if reason.endswith((".", "!", "?")) else "."
    return f"{explanation} Allowed: {reason}{ending}" if explanation else f"Allowed: {reason}{ending}"


# --- the file -----------------------------------------------------------------------------------------------


def parse_allowlist(text: str, source: str) -> Allowlist:
    """Check and compile the TOML text of an allowlist (`source` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AllowlistError(f"{source}: not valid TOML ({exc})") from None
    unknown = [key for key in data if key != TABLE]
    if unknown:
        raise AllowlistError(
            f"{source}: unknown top-level key {unknown[0]!r} (an allowlist holds [[{TABLE}]] tables only)"
        )
    tables = data.get(TABLE, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise AllowlistError(f"{source}: {TABLE!r} must be written as [[{TABLE}]] tables")
    return Allowlist(tuple(_entry(table, number, source) for number, table in enumerate(tables, 1)), source)


def load_allowlist(path: str | os.PathLike[str]) -> Allowlist:
    """Read, check and compile an allowlist file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AllowlistError(f"{path}: cannot read allowlist ({_why(exc)})") from None
    return parse_allowlist(text, str(path))


def _why(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _entry(table: dict[str, Any], number: int, source: str) -> AllowEntry:
    reason = table.get("reason")
    where = f"{source}: entry {number}"
    if isinstance(reason, str) and reason.strip():
        where += f" ({reason.strip()!r})"

    def fail(name: str, problem: str) -> AllowlistError:
        return AllowlistError(f"{where}: {name}: {problem}")

    for key in table:
        if key not in FIELDS:
            raise fail(key, f"unknown field (known: {', '.join(FIELDS)})")
    if reason is None:
        raise fail("reason", "missing: every entry says why its traffic is allowed")
    if not isinstance(reason, str) or not reason.strip():
        raise fail("reason", f"expected a non-empty string, got {reason!r}")
    if _CONTROL.search(reason):
        raise fail("reason", "must be one line of text (it becomes part of the explanation)")
    if not any(key in table for key in MATCH_FIELDS):
        raise AllowlistError(
            f"{where}: names no traffic: give at least one of {', '.join(MATCH_FIELDS)} "
            "(an entry without one would allow everything)"
        )
    values: dict[str, Any] = {}
    for name in NET_FIELDS:
        if name in table:
            values[name] = NetworkSet(_network(item, name, fail) for item in _items(table[name], name, fail))
    if "resp_ports" in table:
        values["resp_ports"] = tuple(
            _port_range(item, fail) for item in _items(table["resp_ports"], "resp_ports", fail)
        )
    if "services" in table:
        values["services"] = frozenset(
            _known(item, "services", SERVICE_NAMES, "service", fail)
            for item in _items(table["services"], "services", fail)
        )
    if "classes" in table:
        values["classes"] = frozenset(
            _known(item, "classes", CLASS_NAMES, "class", fail)
            for item in _items(table["classes"], "classes", fail)
        )
    if "expires" in table:
        values["expires"] = _expiry(table["expires"], fail)
    return AllowEntry(number, reason.strip(), **values)


Fail = Callable[[str, str], AllowlistError]


def _items(value: Any, name: str, fail: Fail) -> list[Any]:
    """A field's values: a list, or one value standing alone."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise fail(name, "an empty list matches nothing: leave the field out to match anything")
    return items


def _network(item: Any, name: str, fail: Fail) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(item, str):
        raise fail(name, f"expected an address or network as a string, got {item!r}")
    text = item.strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:  # an address with a prefix, host bits set: most likely the network was meant, but say so
        meant = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise fail(name, f"{item!r} is not an IPv4 or IPv6 address or network") from None
    raise fail(name, f"{item!r} has host bits set: write {str(meant)!r} for the network")


def _port_range(item: Any, fail: Fail) -> PortRange:
    problem = (
        f"{item!r} is not a port: give 0-65535, or a range LOW-HIGH, optionally followed by "
        f"/{', /'.join(PROTOCOLS)}"
    )
    if isinstance(item, bool):
        raise fail("resp_ports", problem)
    if isinstance(item, int):
        if not 0 <= item <= 65535:
            raise fail("resp_ports", problem)
        return PortRange(item, item, None)
    if not isinstance(item, str):
        raise fail("resp_ports", problem)
    match = _PORT.match(item.strip().lower())
    if match is None:
        raise fail("resp_ports", problem)
    low = int(match[1])
    high = int(match[2]) if match[2] is not None else low
    proto = match[3]
    if high > 65535 or low > high or (proto is not None and proto not in PROTOCOLS):
        raise fail("resp_ports", problem)
    return PortRange(low, high, proto)


def _known(item: Any, name: str, known: frozenset[str], kind: str, fail: Fail) -> str:
    if not isinstance(item, str) or item not in known:
        raise fail(name, f"unknown {kind} {item!r} (known: {', '.join(sorted(known))})")
    return item


def _expiry(value: Any, fail: Fail) -> float:
    """Epoch seconds at which the entry stops applying: the end of a date (UTC), or a date-time (UTC unless it
    carries an offset)."""
    problem = f"{value!r} is not a date (YYYY-MM-DD) or a date-time (YYYY-MM-DDTHH:MM:SS, optionally with an offset)"
    if isinstance(value, str):
        try:
            value = (dt.date if len(value.strip()) == 10 else dt.datetime).fromisoformat(value.strip())
        except ValueError:
            raise fail("expires", problem) from None
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    if isinstance(value, dt.date):
        day_after = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
        return day_after.timestamp()
    raise fail("expires", problem)


# --- following the file -------------------------------------------------------------------------------------


@dataclass
class AllowlistCounts:
    allowed: int = 0  # verdicts marked allowed
    reloads: int = 0  # edits of the file taken into force
    reload_errors: int = 0  # edits refused (unreadable or invalid): the list before them stayed in force
    expired: int = 0  # entries that have expired (each counted once)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class AllowlistFile:
    """An allowlist file and the list in force, re-read when the file changes (see the module docstring).

    Construction reads the file and raises `AllowlistError` when it is unusable: a sensor must not start on a list
    its operator did not mean. Later, an edit is taken when the file's modification time, size or inode changed
    and its bytes differ; an edit that cannot be read or checked leaves the list in force, is logged once as an
    error and counted (`counts.reload_errors`), and a later edit is tried again. Write the new version beside the
    file and rename it over the old one: an editor that writes in place can be caught halfway (that is one
    refused edit, then the complete file is taken)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        check_every: float = DEFAULT_CHECK_EVERY,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_every = check_every  # seconds between looks at the file
        self.clock = clock  # wall clock: expiry
        self.monotonic = monotonic  # when to look at the file again
        self.counts = AllowlistCounts()
        self.allowlist = Allowlist()
        # (mtime_ns, size, inode) of the version last looked at
        self._stamp: tuple[int, int, int] | None = None
        self._text = b""  # the bytes of the list in force
        self._next_expiry = float("inf")
        self._expired_seen: set[tuple[str, float | None]] = set()  # (reason, expiry) of entries said expired
        stamp, text = self._read()
        self._install(parse_allowlist(_decoded(text, self.path), str(self.path)), stamp, text)
        self._next_check = self.monotonic() + self.check_every
        log.info("allowlist %s: %d entries in force", self.path, len(self.allowlist.entries))

    def current(self) -> Allowlist:
        """The list in force now: the file is looked at when `check_every` has passed, and expired entries
        leave."""
        now = self.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_every
            self._refresh()
        if self._next_expiry <= self.clock():
            self._expire()
        return self.allowlist

    def mark(self, verdicts: Sequence[Verdict], connections: Sequence[Connection]) -> int:
        """Mark the verdicts whose connection (row for row) an entry allows; returns how many."""
        allowlist = self.current()
        if not allowlist.entries:
            return 0
        marked = 0
        for verdict, conn in zip(verdicts, connections, strict=True):
            entry = allowlist.match(
                verdict.orig_h,
                verdict.resp_h,
                verdict.resp_p,
                verdict.proto,
                conn.service,
                verdict.label,
                verdict.attack,
            )
            if entry is not None:
                verdict.allowed = True
                verdict.allow_reason = entry.reason
                verdict.explanation = allowed_explanation(verdict.explanation, entry.reason)
                marked += 1
        self.counts.allowed += marked
        return marked

    def _read(self) -> tuple[tuple[int, int, int], bytes]:
        try:
            status = os.stat(self.path)
            text = self.path.read_bytes()
        except OSError as exc:
            raise AllowlistError(f"{self.path}: cannot read allowlist ({_why(exc)})") from None
        return (status.st_mtime_ns, status.st_size, status.st_ino), text

    def _refresh(self) -> None:
        try:
            status = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (status.st_mtime_ns, status.st_size, status.st_ino)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        try:
            stamp_read, text = self._read()
            if text == self._text:  # touched or copied over with the same bytes
                self._stamp = stamp_read
                return
            allowlist = parse_allowlist(_decoded(text, self.path), str(self.path))
        except AllowlistError as exc:
            self._stamp = stamp  # one error per edit: the same broken file is not read again
            self.counts.reload_errors += 1
            log.error(
                "allowlist not reloaded, the %d entries before the edit stay in force: %s",
                len(self.allowlist.entries),
                exc,
            )
            return
        self._install(allowlist, stamp_read, text)
        self.counts.reloads += 1
        log.info("allowlist %s reloaded: %d entries in force", self.path, len(self.allowlist.entries))

    def _install(self, allowlist: Allowlist, stamp: tuple[int, int, int], text: bytes) -> None:
        self._stamp, self._text = stamp, text
        self.allowlist = allowlist
        self._next_expiry = allowlist.next_expiry()
        self._expire()

    def _expire(self) -> None:
        kept, gone = self.allowlist.split_expired(self.clock())
        for entry in gone:
            key = (entry.reason, entry.expires)
            if key in self._expired_seen:
                continue
            self._expired_seen.add(key)
            self.counts.expired += 1
            when = dt.datetime.fromtimestamp(entry.expires or 0.0, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            log.warning(
                "allowlist %s: %s expired at %s and no longer applies", self.path, entry.describe(), when
            )
        self.allowlist = kept
        self._next_expiry = kept.next_expiry()


def _decoded(text: bytes, path: Path) -> str:
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AllowlistError(f"{path}: cannot read allowlist (not UTF-8: {exc})") from None
