"""The lab's network: one router namespace joining three /24 subnets of the RFC 2544 benchmarking range.

This module owns the namespaces, links, addresses and routes of a lab run, the safety checks that keep lab
traffic inside them, and the removal of everything it created (also after a crash: `clean_leftovers`). It does
not start daemons (`services.py`), generate traffic (`benign.py`, `attacks.py`) or capture (`capture.py`).

Layout (every host is its own namespace; namespace names start with a per-run prefix `pcl<6 hex>-`):

    clients  198.18.1.0/24  ─┐
    servers  198.18.2.0/24  ─┼─ router (one bridge per subnet, IPv4 forwarding)
    attackers 198.18.3.0/24 ─┘   (the attacker subnet also holds the reflector, a third party's open server)

    reflectors 198.18.64.0/18   every address answered by the reflector host (a local route on its loopback)
    spoofed    198.18.128.0/17  no host: routed to the router and dropped there (a blackhole route)

Hosts get routes to the three lab subnets, the reflector block and the spoof block only, never a default route,
and no link to any host interface: every veth is created directly between two lab namespaces, so nothing of the
lab ever appears on the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CLIENT_NET = ipaddress.IPv4Network("198.18.1.0/24")
SERVER_NET = ipaddress.IPv4Network("198.18.2.0/24")
ATTACKER_NET = ipaddress.IPv4Network("198.18.3.0/24")
LAB_NETS: tuple[ipaddress.IPv4Network, ...] = (CLIENT_NET, SERVER_NET, ATTACKER_NET)
# Source addresses of floods "from many addresses" (attacks.py): a block of the same RFC 2544 range that no lab
# host uses, so every spoofed packet is labelled by construction and stays in the lab. Hosts route it to their
# router and the router drops it (blackhole), so a victim's SYN-ACKs to spoofed sources cross the sensor link,
# as backscatter does, and end there.
SPOOF_NET = ipaddress.IPv4Network("198.18.128.0/17")
# Addresses of the open servers that reflection floods bounce off (attacks.py): real ones arrive from thousands of
# reflectors, so the reflector host answers for every address of this block ("AnyIP": a local route of the whole
# block on its loopback), and its daemons answer each request from the address it was sent to. The router and
# every other host route the block to the reflector; no lab host uses it otherwise.
REFLECTOR_NET = ipaddress.IPv4Network("198.18.64.0/18")
# Loopback is allowed as a target: some tools talk to themselves, and it never leaves a namespace.
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")

PREFIX_PATTERN = re.compile(r"^pcl[0-9a-f]{6}$")
NAMESPACE_PATTERN = re.compile(r"^(pcl[0-9a-f]{6})-[a-z0-9]+$")

# The sensor's view is the router's server-facing bridge; the name is fixed inside the router namespace.
SERVER_BRIDGE = "br-srv"
# Unused server-subnet addresses resolve to this MAC on the router, so sweeps of them reach the sensor link
# instead of dying in an unanswered ARP request. Locally administered, never a real card.
DUMMY_NEIGHBOUR_MAC = "02:00:5e:00:53:ff"
# Fixed router MACs let tools that need the gateway's MAC (masscan --router-mac) be given it up front.
ROUTER_MACS = {
    "clients": "02:70:63:6c:01:01",
    "servers": "02:70:63:6c:02:01",
    "attackers": "02:70:63:6c:03:01",
}


class LabSafetyError(RuntimeError):
    """The lab would reach outside its own prefixes; nothing is sent."""


@dataclass(frozen=True)
class Host:
    """One lab host: a namespace with one interface (eth0) on one lab subnet."""

    name: str  # short name, also the namespace suffix: "web", "ws1", "att1"
    role: str  # attacker | benign_client | server | reflector (hosts.tsv roles)
    ip: str


@dataclass(frozen=True)
class Subnet:
    """One lab subnet: a bridge in the router namespace and the router's address on it."""

    name: str  # "clients" | "servers" | "attackers"
    network: ipaddress.IPv4Network
    bridge: str  # bridge device in the router namespace

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)


SUBNETS: dict[str, Subnet] = {
    "clients": Subnet("clients", CLIENT_NET, "br-cli"),
    "servers": Subnet("servers", SERVER_NET, SERVER_BRIDGE),
    "attackers": Subnet("attackers", ATTACKER_NET, "br-att"),
}
# A reflector (an open DNS/NTP server answering spoofed requests) sits with the attackers: requests spoofed in the
# victim's name reach it without crossing the sensor link, its answers to the victim cross it.
ROLE_SUBNET = {
    "benign_client": "clients",
    "server": "servers",
    "attacker": "attackers",
    "reflector": "attackers",
}

# The hosts of every lab. Server names are the `LabContext.servers` keys.
DEFAULT_HOSTS: tuple[Host, ...] = (
    Host("ws1", "benign_client", "198.18.1.11"),
    Host("ws2", "benign_client", "198.18.1.12"),
    Host("laptop", "benign_client", "198.18.1.13"),
    Host("iotcam", "benign_client", "198.18.1.21"),
    Host("iotsens", "benign_client", "198.18.1.22"),
    Host("web", "server", "198.18.2.10"),
    Host("web2", "server", "198.18.2.11"),
    Host("ssh", "server", "198.18.2.12"),
    Host("ftp", "server", "198.18.2.13"),
    Host("dns", "server", "198.18.2.14"),
    Host("mqtt", "server", "198.18.2.15"),
    Host("ntp", "server", "198.18.2.16"),
    Host("telnet", "server", "198.18.2.17"),
    Host("mail", "server", "198.18.2.18"),
    Host("db", "server", "198.18.2.19"),
    Host("att1", "attacker", "198.18.3.66"),
    Host("att2", "attacker", "198.18.3.67"),
    Host("att3", "attacker", "198.18.3.68"),
    Host("refl", "reflector", "198.18.3.53"),
)


def new_prefix() -> str:
    """A fresh per-run prefix, `pcl` + 6 hex digits (short enough for interface and user names)."""
    return "pcl" + secrets.token_hex(3)


def is_lab_address(text: str) -> bool:
    """True when `text` (an address or CIDR) lies entirely inside the lab subnets, the reflector block, the spoof
    block or loopback."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    if network.version != 4:
        return False
    return any(network.subnet_of(allowed) for allowed in (*LAB_NETS, REFLECTOR_NET, SPOOF_NET, LOOPBACK_NET))


def run_cmd(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a short administrative command; a failure names the command and its stderr."""
    log.debug("run: %s", " ".join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def list_namespaces() -> list[str]:
    """Names of all network namespaces on the host (`ip netns list`)."""
    out = run_cmd(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    return [entry["name"] for entry in json.loads(out)]


def namespace_pids(namespace: str) -> list[int]:
    """Processes whose network namespace is `namespace`."""
    out = run_cmd(["ip", "netns", "pids", namespace], check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def kill_namespace_processes(namespace: str, grace_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after `grace_s`, every process living in `namespace`; returns how many there were."""
    pids = namespace_pids(namespace)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and namespace_pids(namespace):
        time.sleep(0.1)
    for pid in namespace_pids(namespace):
        log.info("killing %d in %s after %.0fs grace", pid, namespace, grace_s)
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and namespace_pids(namespace):
        time.sleep(0.05)
    return len(pids)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def delete_namespace(namespace: str) -> None:
    """Kill what runs in `namespace`, then delete it (its veths go with it)."""
    kill_namespace_processes(namespace)
    run_cmd(["ip", "netns", "delete", namespace], check=False)


@dataclass
class Topology:
    """The namespaces and links of one lab run; `up()` builds them, `down()` removes them (idempotent)."""

    prefix: str = field(default_factory=new_prefix)
    hosts: tuple[Host, ...] = DEFAULT_HOSTS
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"lab prefix {self.prefix!r} must look like pcl<6 hex digits>")
        for host in self.hosts:
            subnet = SUBNETS[ROLE_SUBNET[host.role]]
            if ipaddress.IPv4Address(host.ip) not in subnet.network:
                raise ValueError(f"host {host.name} address {host.ip} is outside {subnet.network}")

    # -- names -------------------------------------------------------------------------------------------------
    @property
    def router_ns(self) -> str:
        return f"{self.prefix}-router"

    def ns(self, host_name: str) -> str:
        return f"{self.prefix}-{host_name}"

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no lab host named {name!r}")

    def hosts_with_role(self, role: str) -> list[Host]:
        return [host for host in self.hosts if host.role == role]

    @property
    def reflector_block_owner(self) -> Host | None:
        """The reflector host that answers for the whole REFLECTOR_NET (the first one); None: the block is not
        routed at all."""
        reflectors = self.hosts_with_role("reflector")
        return reflectors[0] if reflectors else None

    @property
    def namespaces(self) -> list[str]:
        return [self.router_ns, *(self.ns(host.name) for host in self.hosts)]

    # -- build -------------------------------------------------------------------------------------------------
    def up(self) -> None:
        """Create the router, the hosts and their links; on any failure remove what was made and re-raise."""
        try:
            self._make_router()
            for host in self.hosts:
                self._make_host(host)
            self._fill_unused_neighbours()
            self.assert_contained()
        except BaseException:
            self.down()
            raise
        log.info("lab %s up: %d namespaces", self.prefix, len(self.created))

    def _add_namespace(self, namespace: str) -> None:
        run_cmd(["ip", "netns", "add", namespace])
        self.created.append(namespace)
        self._exec(namespace, ["ip", "link", "set", "lo", "up"])
        # IPv4 only: IPv6 would add router solicitations and MLD chatter that no scenario asked for.
        self._exec(namespace, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        self._exec(namespace, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])

    def _exec(self, namespace: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run_cmd(["ip", "netns", "exec", namespace, *argv])

    def _make_router(self) -> None:
        self._add_namespace(self.router_ns)
        self._exec(self.router_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # Spoofed sources have no route back but the blackhole: reverse-path filtering would drop them on entry
        # (the host's value is inherited), so the router forwards them like a transit router that does no BCP 38.
        for conf in ("all", "default"):
            self._exec(self.router_ns, ["sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0"])
        for subnet in SUBNETS.values():
            ip_r = ["ip", "-n", self.router_ns]
            run_cmd([*ip_r, "link", "add", subnet.bridge, "type", "bridge", "stp_state", "0"])
            run_cmd([*ip_r, "link", "set", subnet.bridge, "address", ROUTER_MACS[subnet.name]])
            run_cmd(
                [*ip_r, "addr", "add", f"{subnet.gateway}/{subnet.network.prefixlen}", "dev", subnet.bridge]
            )
            run_cmd([*ip_r, "link", "set", subnet.bridge, "up"])
            self._exec(self.router_ns, ["sysctl", "-qw", f"net.ipv4.conf.{subnet.bridge}.rp_filter=0"])
        # Whatever is sent to a spoofed source ends here: dropped, never forwarded, never answered.
        run_cmd(["ip", "-n", self.router_ns, "route", "add", "blackhole", str(SPOOF_NET)])
        owner = self.reflector_block_owner
        if owner is not None:
            run_cmd(["ip", "-n", self.router_ns, "route", "add", str(REFLECTOR_NET), "via", owner.ip])

    def _make_host(self, host: Host) -> None:
        namespace = self.ns(host.name)
        subnet = SUBNETS[ROLE_SUBNET[host.role]]
        self._add_namespace(namespace)
        port = f"v-{host.name}"[:15]
        # Both ends are born inside lab namespaces: no interface of the lab ever exists on the host.
        run_cmd(
            [
                "ip",
                "-n",
                self.router_ns,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                namespace,
            ]
        )
        run_cmd(["ip", "-n", self.router_ns, "link", "set", port, "master", subnet.bridge, "up"])
        ip_h = ["ip", "-n", namespace]
        run_cmd([*ip_h, "addr", "add", f"{host.ip}/{subnet.network.prefixlen}", "dev", "eth0"])
        run_cmd([*ip_h, "link", "set", "eth0", "up"])
        for other in (*LAB_NETS, SPOOF_NET):
            if other != subnet.network:
                run_cmd([*ip_h, "route", "add", str(other), "via", subnet.gateway])
        owner = self.reflector_block_owner
        if owner == host:
            run_cmd([*ip_h, "route", "add", "local", str(REFLECTOR_NET), "dev", "lo"])
        elif owner is not None:
            run_cmd([*ip_h, "route", "add", str(REFLECTOR_NET), "via", subnet.gateway])

    def _fill_unused_neighbours(self) -> None:
        used = {host.ip for host in self.hosts} | {SUBNETS["servers"].gateway}
        batch = [
            f"neigh replace {address} lladdr {DUMMY_NEIGHBOUR_MAC} nud permanent dev {SERVER_BRIDGE}"
            for address in SERVER_NET.hosts()
            if str(address) not in used
        ]
        subprocess.run(
            ["ip", "-n", self.router_ns, "-batch", "-"],
            input="\n".join(batch) + "\n",
            text=True,
            check=True,
            capture_output=True,
        )

    # -- safety ------------------------------------------------------------------------------------------------
    def assert_contained(self) -> None:
        """Refuse (LabSafetyError) when any lab namespace has a route leaving the lab prefixes, or a link that is
        not a lab veth/bridge/loopback."""
        problems: list[str] = []
        for namespace in self.namespaces:
            problems.extend(route_problems(namespace))
            problems.extend(link_problems(namespace))
        if problems:
            raise LabSafetyError("lab is not contained: " + "; ".join(problems))

    # -- teardown ----------------------------------------------------------------------------------------------
    def down(self) -> None:
        """Kill every process in the lab's namespaces and delete them; safe to call twice."""
        for namespace in reversed(self.namespaces):
            if namespace in list_namespaces():
                delete_namespace(namespace)
        self.created.clear()
        log.info("lab %s down", self.prefix)


def route_problems(namespace: str) -> list[str]:
    """Routes of `namespace` (all tables, IPv4 and IPv6) whose destination is outside the lab prefixes."""
    problems = []
    for family in ("-4", "-6"):
        out = run_cmd(["ip", "-n", namespace, family, "-j", "route", "show", "table", "all"], check=False)
        for route in json.loads(out.stdout or "[]"):
            dst = route.get("dst", "")
            if route.get("type") in ("local", "broadcast") and dst != "default" and is_lab_address(dst):
                continue
            if dst == "default" or not is_lab_address(dst):
                problems.append(f"{namespace}: route to {dst or '?'} ({route.get('type', 'unicast')})")
    return problems


def link_problems(namespace: str) -> list[str]:
    """Links of `namespace` that are neither loopback, nor a bridge, nor a veth."""
    out = run_cmd(["ip", "-n", namespace, "-d", "-j", "link", "show"], check=False)
    problems = []
    for link in json.loads(out.stdout or "[]"):
        kind = link.get("linkinfo", {}).get("info_kind", "loopback" if link["ifname"] == "lo" else "?")
        if kind not in ("loopback", "bridge", "veth"):
            problems.append(f"{namespace}: unexpected link {link['ifname']} of kind {kind}")
    return problems


def assert_targets_inside(tokens: Iterable[str]) -> list[str]:
    """The IPv4 addresses and CIDRs named in `tokens` (argv words, URLs); LabSafetyError when any lies outside
    the lab prefixes or when none is named at all (an unverifiable target is refused too)."""
    found: list[str] = []
    for token in tokens:
        for match in re.finditer(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\d.])", token):
            text = match.group(0)
            if not is_lab_address(text):
                raise LabSafetyError(f"target {text} (in {token!r}) is outside the lab prefixes")
            found.append(text)
    if not found:
        raise LabSafetyError("command names no IPv4 target; refusing a target that cannot be checked")
    return found


def leftover_namespaces() -> list[str]:
    """Lab namespaces on this host (any run's), e.g. after a crash."""
    return [name for name in list_namespaces() if NAMESPACE_PATTERN.match(name)]


def clean_leftover_namespaces(keep: Collection[str] = ()) -> list[str]:
    """Remove every lab namespace of any run but the `keep` prefixes' (processes killed first); returns the names
    removed."""
    removed = []
    for namespace in leftover_namespaces():
        match = NAMESPACE_PATTERN.match(namespace)
        if match and match.group(1) in keep:
            continue
        delete_namespace(namespace)
        removed.append(namespace)
    return removed
