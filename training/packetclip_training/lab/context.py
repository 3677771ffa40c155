"""What an attack variant may know about a running lab: addresses, the lab zone, credentials, word lists.

This module owns the `LabContext` value handed to every `Variant.command` of the attack catalogue. It does not
build the lab (see `topology.py`) nor run episodes (see `runner.py`); it only describes a lab that is up.

Rule for attack command lines: every argv must name its target(s) as IPv4 addresses or CIDRs (bare or inside a
URL such as `http://198.18.2.10/` or `ssh://198.18.2.12`); the runner refuses a command naming an address
outside the lab prefixes, or naming none. The command runs with the attacker namespace's `workdir` as its
current directory, in its own process group, and is killed at `max_seconds * scale`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LabContext:
    """The facts of one running lab that an attack command line needs."""

    # Address of the attacker host the episode runs in; the runner hands each episode its own attacker.
    attacker_ip: str
    # Server name -> IPv4 address of the host serving it. Keys: web (nginx 80/443, /admin/ basic auth,
    # /login form on 8080), web2 (apache2 :80), ssh, ftp, dns, mqtt, ntp, telnet (:23), mail (IMAP :143,
    # POP3 :110), db (MariaDB :3306, PostgreSQL :5432).
    servers: dict[str, str]
    # The server subnet, for sweeps and scans: unused addresses in it are visible on the sensor link.
    sweep_cidr: str
    # The zone the lab's DNS server is authoritative for (e.g. "lab.internal").
    dns_zone: str
    # Service -> (user, right password): ssh, ftp, http_basic (/admin/), http_form (/login), telnet, imap,
    # pop3, mysql, postgres.
    credentials: dict[str, tuple[str, str]]
    # Holds usernames.txt, passwords.txt (the right password appears late in the list) and dns_queries.txt
    # (dnsperf format: "name type" per line, existing and non-existing names of dns_zone).
    wordlist_dir: Path
    # Scratch directory for tool output (removed with the lab).
    workdir: Path
    # Port of the form login endpoint on servers["web"] (POST /login with fields username, password;
    # 200 on success, 403 "Login failed" otherwise: hydra gives up on a 401, which means HTTP auth to it).
    login_port: int = 8080
    # All attacker addresses of the lab (the runner picks attacker_ip among them).
    attacker_ips: tuple[str, ...] = field(default_factory=tuple)
    # The attacker's interface, its router and the router's fixed MAC: tools that build their own frames
    # (masscan: --adapter, --router-mac) need them because lab hosts have no default route.
    attacker_iface: str = "eth0"
    gateway_ip: str = "198.18.3.1"
    gateway_mac: str = "02:70:63:6c:03:01"
    # Service -> address of the reflector serving it: an open server of a third party, on the attacker subnet,
    # that answers requests spoofed in a victim's name. Keys: dns (dnsmasq: large TXT/ANY answers for
    # `reflector_zone`), ntp (chronyd).
    reflectors: dict[str, str] = field(default_factory=dict)
    reflector_zone: str = "mirror.internal"

    @property
    def usernames_file(self) -> Path:
        return self.wordlist_dir / "usernames.txt"

    @property
    def passwords_file(self) -> Path:
        return self.wordlist_dir / "passwords.txt"

    @property
    def dns_queries_file(self) -> Path:
        return self.wordlist_dir / "dns_queries.txt"
