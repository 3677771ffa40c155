"""Counters of what the featurizer saw: every frame lands in exactly one bucket.

Owns `ParseStats`. It does not decide what is malformed; the reader, the frame parser and the tracker do, and
record it here so that a capture's summary always adds up: frames = parsed + non_ip + malformed + skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParseStats:
    """What happened to every frame (and every damaged container record) of the input."""

    frames: int = 0  # frames handed to the tracker
    parsed: int = 0  # IP frames with TCP/UDP/ICMP/ICMPv6 that were attributed to a connection
    non_ip: int = 0  # well-formed frames that carry no IP (ARP, LLDP, STP ...)
    truncated: int = 0  # parsed frames whose capture ended before the packet did (snaplen); not exclusive
    malformed: dict[str, int] = field(default_factory=dict)  # damaged frames by reason; skipped
    skipped: dict[str, int] = field(default_factory=dict)  # intact frames we deliberately do not track
    file_errors: dict[str, int] = field(default_factory=dict)  # damaged container records that ended a file

    def count_malformed(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def count_skipped(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def count_file_error(self, reason: str) -> None:
        self.file_errors[reason] = self.file_errors.get(reason, 0) + 1

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def is_balanced(self) -> bool:
        """True when every frame was accounted for exactly once."""
        return self.frames == self.parsed + self.non_ip + self.malformed_total + self.skipped_total

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "parsed": self.parsed,
            "non_ip": self.non_ip,
            "truncated": self.truncated,
            "malformed": dict(sorted(self.malformed.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "file_errors": dict(sorted(self.file_errors.items())),
        }

    def merge(self, other: ParseStats) -> None:
        """Add another run's counters to these (several files, several workers)."""
        self.frames += other.frames
        self.parsed += other.parsed
        self.non_ip += other.non_ip
        self.truncated += other.truncated
        for mine, theirs in (
            (self.malformed, other.malformed),
            (self.skipped, other.skipped),
            (self.file_errors, other.file_errors),
        ):
            for reason, count in theirs.items():
                mine[reason] = mine.get(reason, 0) + count
