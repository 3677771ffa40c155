"""The lab's accounts, word lists and DNS names, all derived from the run's seed.

This module owns what the services are configured with (users, right passwords, zone records) and what the
attack catalogue reads (usernames.txt, passwords.txt, dns_queries.txt). It creates no account on the host
(`services.py` does) and starts nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

DNS_ZONE = "lab.internal"
# The zone the reflector's DNS server answers for (services.py): large TXT records, the amplifier of DNS
# reflection episodes (attacks.py).
REFLECTOR_ZONE = "mirror.internal"
# The one host account of the lab (SSH, FTP and Telnet). A common server-account name, so a dictionary attack's
# user list looks ordinary; created per run and removed at the end, refused when the host already has it.
LAB_USER = "deploy"
# Accounts that exist only in the lab's own service files (no host account): the mailbox IMAP and POP3 log in to,
# and the application users of the two SQL servers.
MAIL_USER = "info"
MARIADB_USER = "webapp"
POSTGRES_USER = "analytics"
# The database each SQL server is created with and its application user works in.
MARIADB_DATABASE = "inventory"
POSTGRES_DATABASE = "metrics"
# GECOS marker that tells `lab clean` an account is the lab's own.
LAB_USER_GECOS = "packetclip lab user"

COMMON_USERNAMES = [
    "root",
    "admin",
    "administrator",
    "user",
    "test",
    "guest",
    "oracle",
    "postgres",
    "mysql",
    "ftp",
    "ftpuser",
    "www",
    "www-data",
    "backup",
    "operator",
    "support",
    "info",
    "webmaster",
    "ubuntu",
    "debian",
    "pi",
    "git",
    "jenkins",
    "ansible",
    "nagios",
    "service",
    "demo",
    "alice",
    "bob",
    "deploy",
    "dev",
    "devops",
    "sysadmin",
    "manager",
    "office",
]
PASSWORD_STEMS = [
    "password",
    "letmein",
    "welcome",
    "qwerty",
    "dragon",
    "monkey",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "shadow",
    "master",
    "superman",
    "michael",
    "jessica",
    "charlie",
    "trustno1",
    "hunter",
    "summer",
    "winter",
    "autumn",
    "spring",
    "secret",
    "admin",
    "changeme",
    "access",
    "freedom",
    "whatever",
    "starwars",
    "computer",
    "internet",
    "server",
    "network",
    "orange",
    "banana",
    "cookie",
    "pepper",
]
PASSWORD_SUFFIXES = ("", "1", "12", "123", "1234", "!", "2023", "2024", "01", "99", "#1", "007")
DNS_NAME_STEMS = [
    "host",
    "printer",
    "cam",
    "sensor",
    "nas",
    "fileserver",
    "intranet",
    "wiki",
    "mail",
    "smtp",
    "imap",
    "vpn",
    "gw",
    "switch",
    "ap",
    "plc",
    "hmi",
    "thermostat",
    "door",
    "badge",
    "backup",
    "db",
    "api",
    "app",
]


@dataclass(frozen=True)
class LabSecrets:
    """Accounts and names of one lab run."""

    credentials: dict[str, tuple[str, str]]  # service -> (user, right password)
    dns_records: dict[str, str]  # fully qualified name -> IPv4 address
    missing_names: tuple[str, ...]  # plausible names of the zone that do not exist (NXDOMAIN)


def make_secrets(seed: int, server_ips: dict[str, str], spare_ips: list[str]) -> LabSecrets:
    """Choose passwords and zone records from `seed`; `spare_ips` feed the many extra names of the zone."""
    rng = random.Random(f"secrets-{seed}")
    credentials = {
        "ssh": (LAB_USER, _password(rng)),
        "http_basic": ("admin", _password(rng)),
        "http_form": ("alice", _password(rng)),
    }
    # FTP logs in with the same host account as SSH: one account, two services, as on a small server.
    credentials["ftp"] = credentials["ssh"]
    records = {f"{name}.{DNS_ZONE}": ip for name, ip in server_ips.items()}
    records[f"www.{DNS_ZONE}"] = server_ips["web"]
    for index in range(400):
        records[f"{rng.choice(DNS_NAME_STEMS)}-{index:03d}.{DNS_ZONE}"] = rng.choice(spare_ips)
    missing = tuple(f"{rng.choice(DNS_NAME_STEMS)}-{index:03d}x.{DNS_ZONE}" for index in range(200))
    # Drawn after the zone, so a seed keeps the passwords and names it gave before these services existed.
    credentials["telnet"] = credentials["ssh"]  # login(1)-style access to the same host account
    credentials["imap"] = (MAIL_USER, _password(rng))
    credentials["pop3"] = credentials["imap"]  # one mailbox, read over either protocol
    credentials["mysql"] = (MARIADB_USER, _password(rng))
    credentials["postgres"] = (POSTGRES_USER, _password(rng))
    return LabSecrets(credentials, records, missing)


def _password(rng: random.Random) -> str:
    return rng.choice(PASSWORD_STEMS).capitalize() + rng.choice(
        ("2024!", "_77", "_lab9", "42!")
    )  # URL-safe: tools take them in URLs


def write_wordlists(directory: Path, secrets: LabSecrets, seed: int) -> None:
    """usernames.txt, passwords.txt (right passwords late in the list) and dns_queries.txt (dnsperf format)."""
    rng = random.Random(f"wordlists-{seed}")
    directory.mkdir(parents=True, exist_ok=True)
    right_users = {user for user, _ in secrets.credentials.values()}
    usernames = [name for name in COMMON_USERNAMES if name not in right_users]
    rng.shuffle(usernames)
    # The right users sit in the second half: an attack tries several wrong accounts before a right one.
    for user in sorted(right_users):
        usernames.insert(rng.randint(len(usernames) // 2, len(usernames)), user)
    (directory / "usernames.txt").write_text("\n".join(usernames) + "\n")

    wrong = sorted({stem + suffix for stem in PASSWORD_STEMS for suffix in PASSWORD_SUFFIXES})
    rng.shuffle(wrong)
    passwords = wrong[:300]
    right_passwords = sorted({password for _, password in secrets.credentials.values()})
    for password in right_passwords:
        # Late in the list: most guesses fail, as in a real dictionary attack, and the episode ends before
        # the tool reaches the end only when the scale is small.
        passwords.insert(rng.randint(int(len(passwords) * 0.8), len(passwords)), password)
    (directory / "passwords.txt").write_text("\n".join(passwords) + "\n")

    names = list(secrets.dns_records) + list(secrets.missing_names)
    rng.shuffle(names)
    lines = [f"{name} {rng.choice(('A', 'A', 'A', 'AAAA', 'TXT', 'MX'))}" for name in names]
    (directory / "dns_queries.txt").write_text("\n".join(lines) + "\n")
