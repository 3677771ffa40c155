"""The wording of each fine class: names for the activity, verbs, and the zero-shot class prompts.

Owns the per-class vocabulary the description grammar and `class_prompts` draw from. Concepts come from the
mission knowledge graphs (`rules/missions`), not from here; numbers never appear here.
"""

from __future__ import annotations

# fine class -> ways to name the activity (noun phrases, used after "part of", "typical of" ...)
HEADLINES: dict[str, tuple[str, ...]] = {
    "benign": (
        "ordinary traffic",
        "normal client and server traffic",
        "everyday network use",
        "a legitimate exchange",
        "routine application traffic",
    ),
    "icmp_flood": (
        "an ICMP flood",
        "a ping flood",
        "an ICMP echo flood",
        "a flood of echo requests",
        "an ICMP denial of service",
    ),
    "syn_flood": (
        "a SYN flood",
        "a TCP SYN flood",
        "a flood of connection requests",
        "a half-open connection flood",
        "a SYN denial of service",
    ),
    "udp_flood": (
        "a UDP flood",
        "a flood of UDP datagrams",
        "a datagram flood",
        "a UDP denial of service",
        "a connectionless packet flood",
    ),
    "dns_flood": (
        "a DNS flood",
        "a DNS query flood",
        "a flood of DNS queries",
        "a DNS water-torture attack",
        "a denial of service against a name server",
    ),
    "slowloris": (
        "a slowloris attack",
        "a slow HTTP denial of service",
        "a slow-headers attack",
        "a slow request attack",
        "an attempt to tie up a web server's connections",
    ),
    "port_scan": (
        "a port scan",
        "a TCP port scan",
        "a scan of many ports",
        "port scanning",
        "a sweep over service ports",
    ),
    "os_scan": (
        "an OS fingerprinting scan",
        "operating-system detection",
        "an OS scan",
        "TCP/IP stack fingerprinting",
        "a probe for the target's operating system",
    ),
    "vulnerability_scan": (
        "a vulnerability scan",
        "a service and vulnerability probe",
        "a scripted vulnerability check",
        "service version probing",
        "an automated weakness scan",
    ),
    "ping_sweep": (
        "a ping sweep",
        "host discovery",
        "an ICMP sweep of a network",
        "a sweep for live hosts",
        "a discovery scan of an address range",
    ),
    "dictionary_attack": (
        "a dictionary attack",
        "a brute-force login attempt",
        "password guessing",
        "an online password attack",
        "credential brute forcing",
    ),
}

# how a sentence links the connection to its activity; {headline} is a HEADLINES entry
LINKS = (
    "It looks like part of {headline}.",
    "This is typical of {headline}.",
    "The pattern matches {headline}.",
    "It fits {headline}.",
    "Such traffic is characteristic of {headline}.",
    "Taken together this points to {headline}.",
    "It belongs to {headline}.",
)

# how concepts enter a sentence; {a}, {b}, {c} are concepts of the class's mission KG
CONCEPT_SENTENCES = (
    "Signs of {a} and {b}.",
    "Key traits: {a}, {b} and {c}.",
    "It shows {a}, with {b}.",
    "Think {a} and {b}.",
    "Hallmarks include {a} and {b}.",
    "Analysts would call this {a}, {b}, {c}.",
    "Concepts involved: {a}; {b}; {c}.",
    "The traffic suggests {a} together with {b}.",
    "Notable: {a} and {b}.",
    "It combines {a} with {b} and {c}.",
)


def headlines(fine: str) -> tuple[str, ...]:
    """The names of a fine class's activity; a KeyError names unknown classes."""
    try:
        return HEADLINES[fine]
    except KeyError:
        raise KeyError(f"no wording for fine class {fine!r}; known: {', '.join(HEADLINES)}") from None
