"""The featurizer's configuration and version.

Owns `FEATURIZER_VERSION` and `FeaturizerConfig`. Changing a default that alters the bytes fed to a model
(max_packets, snaplen, window, what is masked) requires bumping FEATURIZER_VERSION so old models refuse new
features. A bundle records the max_packets, snaplen and window it was trained with, and every sensor path cuts
connections with the bundle's values.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURIZER_VERSION = "2"


@dataclass(frozen=True)
class FeaturizerConfig:
    """How connections are cut and how much of each is kept."""

    max_packets: int = (
        30  # packets kept per connection; the first ones carry handshakes and the attack's shape
    )
    snaplen: int = 128  # bytes from the IP header; covers IP+TCP options and the first payload record
    tcp_inactivity: float = (
        300.0  # Zeek's tcp_inactivity_timeout: an idle TCP connection ends after this long
    )
    udp_inactivity: float = 60.0  # Zeek's udp_inactivity_timeout
    icmp_inactivity: float = 60.0  # Zeek's icmp_inactivity_timeout
    tcp_close_delay: float = (
        5.0  # Zeek's tcp_close_delay/tcp_reset_delay: late ACKs after FIN/RST still belong
    )
    max_pending_fragments: int = 4096  # first fragments remembered to attach later fragments; bounds memory
    # open connections the offline tracker follows at most (each costs up to a few KB: a spoofed SYN flood opens
    # one per packet and TCP's inactivity timeout keeps them 5 min); above it the one idle longest ends now, with
    # the record of what it saw, and is counted (`ConnectionTracker.evicted`)
    max_open: int = 1_000_000
    # Seconds after a connection's first packet during which its packets are kept (None: no limit, only
    # max_packets). A sensor hands a connection over at max_packets packets or this long after its first
    # packet, whichever comes first; with the window the model sees the same packets whichever path collected
    # them (offline tracker, Zeek's scripts, Suricata's flows) and training replays that rule. Bundles record it.
    # A packet at first + window exactly is past it (Zeek's timer due then fires before that packet is processed).
    window: float | None = None

    def __post_init__(self) -> None:
        if self.max_packets < 1 or self.snaplen < 20:
            raise ValueError(
                f"max_packets must be >= 1 and snaplen >= 20 (got {self.max_packets}, {self.snaplen})"
            )
        if self.max_open < 1:
            raise ValueError(f"max_open must be >= 1 (got {self.max_open})")
        if self.window is not None and not (0.0 < self.window < float("inf")):
            raise ValueError(f"window must be a positive number of seconds or None (got {self.window})")

    def inactivity(self, proto: int) -> float:
        if proto == 6:
            return self.tcp_inactivity
        if proto == 17:
            return self.udp_inactivity
        return self.icmp_inactivity
