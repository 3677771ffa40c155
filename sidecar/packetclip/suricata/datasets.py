"""Verdicts back into Suricata: flagged originators in a dataset its rules test, for a limited time.

Owns which verdicts flag their originator (label other than benign with `score >= threshold`, and not allowed by
the allowlist: `packetclip.allowlist`; an allowed verdict flags nothing, and an address that other verdicts
flagged stays flagged until its time is up), keeping each
flagged address for `ttl` seconds after its latest flagging verdict, and mirroring that set into Suricata's
datasets over the command socket: `dataset-add` when an address is flagged, `dataset-remove` when its time is up
(a host is not flagged forever). IPv4 and IPv6 addresses go to two datasets (Suricata's `ipv4` and `ipv6` types);
`rules/suricata/packetclip.rules` alerts on them with ``ip.src; dataset:isset,...``.

The sidecar is the owner of the expiry: Suricata's datasets have no per-entry timeout in 7.0. When the command
socket was reconnected (Suricata restarted and lost its in-memory sets), every address still flagged is added
again (a liveness check every `check_every` seconds notices the restart while addresses are flagged). Failures are counted and retried on the next verdict or expiry pass, never raised into the sidecar loop.
It does not talk the socket protocol itself (`packetclip.suricata.control`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from packetclip.suricata.control import CommandRefused, ControlError, SuricataControl
from packetclip.verdict import Verdict

log = logging.getLogger(__name__)

DEFAULT_SET_V4 = "packetclip-flagged-v4"
DEFAULT_SET_V6 = "packetclip-flagged-v6"
BENIGN = "benign"


@dataclass
class FeedbackCounts:
    flagging_verdicts: int = 0
    allowed: int = 0  # verdicts that would have flagged their originator, had the allowlist not allowed them
    added: int = 0
    refreshed: int = 0  # verdicts that extended an address already flagged
    removed: int = 0
    resynced: int = 0  # addresses added again after Suricata restarted
    failures: Counter[str] = field(default_factory=Counter)  # command -> failures

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = dict(vars(self))
        data["failures"] = dict(self.failures)
        return data


class DatasetFeedback:
    def __init__(
        self,
        control: SuricataControl,
        threshold: float = 0.5,
        ttl: float = 3600.0,
        set_v4: str = DEFAULT_SET_V4,
        set_v6: str = DEFAULT_SET_V6,
        clock: Callable[[], float] = time.monotonic,
        check_every: float = 5.0,
    ) -> None:
        self.control = control
        self.threshold = threshold  # a verdict below this score flags nothing: one uncertain verdict is noise
        self.ttl = ttl  # seconds an address stays flagged after its latest flagging verdict
        self.set_v4, self.set_v6 = set_v4, set_v6
        self.clock = clock
        self.check_every = check_every  # seconds between liveness checks while addresses are flagged
        self._last_check = 0.0
        self.counts = FeedbackCounts()
        self.expires: dict[str, float] = {}  # flagged address -> clock time it leaves the dataset
        self._in_suricata: set[str] = set()  # addresses Suricata has confirmed holding
        self._generation = 0

    def calls_for_flag(self, verdict: Verdict) -> bool:
        """An attack verdict at the threshold or above."""
        return verdict.label not in (BENIGN, "error") and verdict.score >= self.threshold

    def flags(self, verdict: Verdict) -> bool:
        """Whether the verdict flags its originator: one that calls for it, unless the allowlist allowed it."""
        return not verdict.allowed and self.calls_for_flag(verdict)

    def observe(self, verdicts: list[Verdict]) -> None:
        """Flag the originators of the verdicts that call for it, then push what Suricata lacks."""
        now = self.clock()
        for verdict in verdicts:
            if not self.calls_for_flag(verdict):
                continue
            if verdict.allowed:  # expected traffic: the record keeps the verdict, Suricata is not told
                self.counts.allowed += 1
                continue
            self.counts.flagging_verdicts += 1
            if verdict.orig_h in self.expires:
                self.counts.refreshed += 1
            self.expires[verdict.orig_h] = now + self.ttl
        self.sync()

    def expire(self) -> None:
        """Drop addresses whose time is up, and tell Suricata."""
        now = self.clock()
        for address in [a for a, until in self.expires.items() if until <= now]:
            del self.expires[address]
        if self.expires and now - self._last_check >= self.check_every:
            # a restarted Suricata forgot its in-memory datasets; a cheap command reconnects and tells
            self._last_check = now
            try:
                self.control.command("uptime")
            except (ControlError, CommandRefused) as exc:
                self.counts.failures["uptime"] += 1
                log.debug("liveness check: %s", exc)
        self.sync()

    def sync(self) -> None:
        """Make Suricata's datasets hold exactly the flagged addresses (as far as this sidecar put them there).
        When the socket reconnects on the way (Suricata restarted), the pass runs again against a clean slate."""
        for _ in range(2):
            generation = self.control.generation
            if generation != self._generation and self._generation:
                self._in_suricata.clear()  # a new connection: Suricata may have restarted and forgotten them
                self.counts.resynced += len(self.expires)
            self._generation = generation
            self._push()
            if self.control.generation == generation:
                return

    def _push(self) -> None:
        for address in [a for a in self._in_suricata if a not in self.expires]:
            if self._send("dataset-remove", address, missing_ok=True):
                self._in_suricata.discard(address)
                self.counts.removed += 1
        for address in [a for a in self.expires if a not in self._in_suricata]:
            if self._send("dataset-add", address, missing_ok=False):
                self._in_suricata.add(address)
                self.counts.added += 1

    def _send(self, command: str, address: str, missing_ok: bool) -> bool:
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            self.counts.failures[f"{command}:not_an_address"] += 1
            return True  # nothing Suricata could hold; do not retry forever
        setname, settype = (self.set_v4, "ipv4") if version == 4 else (self.set_v6, "ipv6")
        arguments = {"setname": setname, "settype": settype, "datavalue": address}
        try:
            self.control.command(command, arguments)
        except CommandRefused as exc:
            if missing_ok:
                return True  # removing what is not there (Suricata restarted meanwhile) is done
            self.counts.failures[command] += 1
            log.warning(
                "Suricata refused %s %s: %s",
                command,
                address,
                exc.message,
                extra={"command": command, "address": address, "count": self.counts.failures[command]},
            )
            return False
        except ControlError as exc:
            self.counts.failures[command] += 1
            log.warning(
                "%s",
                exc,
                extra={"command": command, "address": address, "count": self.counts.failures[command]},
            )
            return False
        return True
