"""Zeek's view of a TCP connection: per-endpoint states, the conn_state summary and the history letters.

Owns `Endpoint`, `tcp_transition`, `tcp_history_letters` and `conn_state`. The endpoint states and the
conn_state decision table follow Zeek's TCP analyzer and base/protocols/conn (S0, S1, SF, REJ, S2, S3, RSTO,
RSTR, RSTOS0, RSTRH, SH, SHR, OTH). Not modelled: checksum verification ('C') and content gaps ('G'), which
need payload reassembly; sequence-number validation of FIN/RST.
"""

from __future__ import annotations

import re

INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

# Letters that Zeek repeats as their count reaches 1, 10, 100, ... rather than recording once per direction.
_LOGARITHMIC_THRESHOLDS = frozenset(10**k for k in range(10))
_RSTOS0_HISTORY = re.compile(r"\^?S[^HAFGIQ]*R")


class Endpoint:
    """One side of a TCP connection as the tracker sees it."""

    __slots__ = ("isn", "max_end", "retransmissions", "state", "syn_seen", "zero_windows")

    def __init__(self) -> None:
        self.state = INACTIVE
        self.isn: int | None = None  # first sequence number seen from this side; the base of relative numbers
        self.syn_seen = False  # a SYN consumes one sequence number that is not payload
        self.max_end = 0  # highest relative sequence number + payload seen; payload bytes = max_end - syn
        self.retransmissions = 0
        self.zero_windows = 0

    def payload_bytes(self) -> int:
        return max(self.max_end - (1 if self.syn_seen else 0), 0)


def tcp_transition(sender: Endpoint, peer: Endpoint, flags: int) -> None:
    """Advance both endpoints' states for one segment from `sender`."""
    if flags & RST:
        sender.state = RESET
    elif flags & SYN:
        if flags & ACK:
            if sender.state in (INACTIVE, SYN_SENT):
                sender.state = SYN_ACK_SENT
            if peer.state == SYN_SENT:  # the SYN we answer was seen: its sender is now established
                peer.state = ESTABLISHED
        elif sender.state == INACTIVE:
            sender.state = SYN_SENT
        if flags & FIN:
            sender.state = CLOSED
    elif flags & FIN:
        if sender.state != RESET:
            sender.state = CLOSED
    elif sender.state == INACTIVE:
        sender.state = PARTIAL  # midstream: no SYN from this side
    elif flags & ACK and peer.state == SYN_ACK_SENT and sender.state in (ESTABLISHED, SYN_SENT):
        sender.state = ESTABLISHED  # the third packet of the handshake
        peer.state = ESTABLISHED
    elif sender.state == SYN_ACK_SENT and peer.state == ESTABLISHED:
        sender.state = ESTABLISHED  # the SYN-ACK side talks on after the handshake


def tcp_history_letters(
    sender: Endpoint, flags: int, seq: int, window: int, payload: int, history: str, is_orig: bool
) -> str:
    """Append this segment's history letters (upper case for the originator) and track retransmissions."""
    letters = ""
    if flags & SYN:
        if flags & RST:
            letters += "I"  # inconsistent: SYN and RST together
        elif flags & FIN:
            letters += "Q"  # multi-flag: SYN and FIN together
        else:
            letters += "H" if flags & ACK else "S"
    if flags & FIN:
        letters += "F"
    if flags & RST:
        letters += "R"
    if payload > 0:
        letters += "D"
    elif flags & ACK and not flags & (SYN | FIN | RST):
        letters += "A"
    out = ""
    for letter in letters:
        letter = letter if is_orig else letter.lower()
        if letter not in history and letter not in out:
            out += letter
    if payload > 0 and sender.isn is not None:
        relative = (seq - sender.isn) & 0xFFFFFFFF
        end = relative + payload
        if relative > 0x7FFFFFFF or end <= sender.max_end:  # before the first byte seen, or already seen
            sender.retransmissions += 1
            if sender.retransmissions in _LOGARITHMIC_THRESHOLDS:
                out += "T" if is_orig else "t"
        else:
            sender.max_end = end
    if window == 0 and not flags & (RST | SYN):
        sender.zero_windows += 1
        if sender.zero_windows in _LOGARITHMIC_THRESHOLDS:
            out += "W" if is_orig else "w"
    return out


def conn_state(
    proto: int, orig: Endpoint | None, resp: Endpoint | None, orig_pkts: int, resp_pkts: int, history: str
) -> str:
    """Zeek's conn_state for a finished connection."""
    if proto == 6 and orig is not None and resp is not None:
        return _tcp_conn_state(orig, resp, history)
    if proto == 17:
        if orig_pkts:
            return "SF" if resp_pkts else "S0"
        return "SHR" if resp_pkts else "OTH"
    return "OTH"


def _tcp_conn_state(orig: Endpoint, resp: Endpoint, history: str) -> str:
    os_, rs = orig.state, resp.state
    orig_inactive = os_ in (INACTIVE, PARTIAL)
    resp_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        no_payload = orig.payload_bytes() == 0 and resp.payload_bytes() == 0
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and no_payload):
            return "REJ"
        return "RSTRH" if orig_inactive else "RSTR"
    if os_ == RESET:
        if resp_inactive:
            return "RSTOS0" if _RSTOS0_HISTORY.match(history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if resp_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if orig_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"
