"""Well-known service ports: the `service` guess of a connection and Zeek's "likely server port" idea.

Owns the port-to-name table. Names follow Zeek's service names where Zeek has one (ssl for TLS, dns, http ...).
It is a guess from the responder's port, not protocol detection.
"""

from __future__ import annotations

_TCP_SERVICES = {
    20: "ftp-data",
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    53: "dns",
    80: "http",
    110: "pop3",
    111: "sunrpc",
    135: "dce_rpc",
    139: "smb",
    143: "imap",
    179: "bgp",
    389: "ldap",
    443: "ssl",
    445: "smb",
    465: "smtp",
    502: "modbus",
    587: "smtp",
    636: "ldap",
    853: "ssl",
    993: "imap",
    995: "pop3",
    1433: "tds",
    1883: "mqtt",
    2404: "iec104",
    3306: "mysql",
    3389: "rdp",
    5060: "sip",
    5432: "postgresql",
    5900: "rfb",
    6379: "redis",
    6667: "irc",
    8080: "http",
    8443: "ssl",
    8883: "ssl",
    9200: "http",
    20000: "dnp3",
}
_UDP_SERVICES = {
    53: "dns",
    67: "dhcp",
    68: "dhcp",
    69: "tftp",
    123: "ntp",
    137: "netbios-ns",
    138: "netbios-dgm",
    161: "snmp",
    162: "snmp",
    443: "quic",
    500: "ipsec",
    514: "syslog",
    1194: "openvpn",
    1900: "ssdp",
    3478: "stun",
    4789: "vxlan",
    5060: "sip",
    5353: "dns",
    5355: "dns",
    6081: "geneve",
    51820: "wireguard",
}
_SERVICES = {6: _TCP_SERVICES, 17: _UDP_SERVICES}
# every name `service_name` can give: what an allowlist's `services` may name
SERVICE_NAMES: frozenset[str] = frozenset((*_TCP_SERVICES.values(), *_UDP_SERVICES.values()))


def service_name(proto: int, resp_port: int) -> str:
    """The service conventionally behind the responder's port, or "" when unknown (and for ICMP)."""
    table = _SERVICES.get(proto)
    return table.get(resp_port, "") if table else ""


def is_likely_server(proto: int, port: int) -> bool:
    """Whether a port is one servers listen on: a known service or, for TCP/UDP, a privileged port."""
    table = _SERVICES.get(proto)
    return table is not None and (port in table or 0 < port < 1024)
