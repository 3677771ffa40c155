"""One live lab: topology, temp dir, secrets, word lists and services, torn down on exit whatever happens.

This module owns the lab's lifetime as a context manager (`LabSession`), the SIGTERM handling that turns a kill
into an orderly teardown, the removal of leftovers of crashed runs (`clean_leftovers`), and the root check.
It does not run episodes, capture or generate traffic.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType, TracebackType

from packetclip_training.lab.context import LabContext
from packetclip_training.lab.secrets_and_names import (
    DNS_ZONE,
    LAB_USER_GECOS,
    REFLECTOR_ZONE,
    LabSecrets,
    make_secrets,
    write_wordlists,
)
from packetclip_training.lab.services import Services
from packetclip_training.lab.topology import (
    REFLECTOR_NET,
    ROUTER_MACS,
    SERVER_NET,
    SUBNETS,
    Topology,
    clean_leftover_namespaces,
    run_cmd,
)

log = logging.getLogger(__name__)

TEMP_DIR_PATTERN = re.compile(r"^(pcl[0-9a-f]{6})-")
OWNER_FILE = "owner.pid"  # in a live session's temp dir: the process that owns the session


class LabTerminated(BaseException):
    """SIGTERM arrived; raised in the main thread so every `finally` and `__exit__` runs."""


class NotRootError(RuntimeError):
    """The lab needs root (namespaces, daemons on privileged ports, accounts)."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            "the traffic lab needs root (network namespaces, daemons, a lab account); run it as root"
        )


class LabSession:
    """`with LabSession(seed) as lab:` gives a running lab; leaving the block removes all of it."""

    def __init__(self, seed: int = 0, topology: Topology | None = None) -> None:
        self.seed = seed
        self.topology = topology or Topology()
        self.root: Path | None = None
        self.services: Services | None = None
        self.secrets: LabSecrets | None = None
        self._previous_sigterm: object = None

    def __enter__(self) -> LabSession:
        require_root()
        self._install_sigterm()
        try:
            self.root = Path(tempfile.mkdtemp(prefix=f"{self.topology.prefix}-"))
            self.root.chmod(0o755)  # daemons drop to www-data / the lab account and must read their files
            (self.root / OWNER_FILE).write_text(f"{os.getpid()}\n")  # `clean_leftovers` leaves a live lab be
            self.topology.up()
            server_ips = {host.name: host.ip for host in self.topology.hosts_with_role("server")}
            used = {host.ip for host in self.topology.hosts}
            spare = [str(a) for a in SERVER_NET.hosts() if str(a) not in used][1:120]
            self.secrets = make_secrets(self.seed, server_ips, spare)
            write_wordlists(self.wordlist_dir, self.secrets, self.seed)
            self.services = Services(self.topology, self.secrets, self.root, seed=self.seed)
            self.services.start()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._teardown()

    def _teardown(self) -> None:
        # Order matters: stop daemons (and remove the account) while their namespaces still exist.
        try:
            if self.services is not None:
                self.services.stop()
        finally:
            self.topology.down()
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
            self._restore_sigterm()

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            raise LabTerminated("SIGTERM")

        self._previous_sigterm = signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]
            self._previous_sigterm = None

    # -- what attacks and traffic need -------------------------------------------------------------------------
    @property
    def wordlist_dir(self) -> Path:
        assert self.root is not None
        return self.root / "wordlists"

    def context(self, attacker_ip: str, workdir: Path) -> LabContext:
        """The `LabContext` of an episode run from `attacker_ip` with scratch dir `workdir`."""
        assert self.secrets is not None
        return LabContext(
            attacker_ip=attacker_ip,
            servers={host.name: host.ip for host in self.topology.hosts_with_role("server")},
            sweep_cidr=str(SERVER_NET),
            dns_zone=DNS_ZONE,
            credentials=dict(self.secrets.credentials),
            wordlist_dir=self.wordlist_dir,
            workdir=workdir,
            attacker_ips=tuple(host.ip for host in self.topology.hosts_with_role("attacker")),
            gateway_ip=SUBNETS["attackers"].gateway,
            gateway_mac=ROUTER_MACS["attackers"],
            reflectors={
                service: host.ip
                for host in self.topology.hosts_with_role("reflector")
                for service in ("dns", "ntp")
            },
            reflector_zone=REFLECTOR_ZONE,
        )

    def hosts_rows(self) -> list[tuple[str, str, str]]:
        """(ip, role, name) of every lab host, the router once per subnet, and the reflector block as a row of its
        owner: the dataset labels answers from any of its addresses as it does the reflector's own."""
        rows = [(subnet.gateway, "router", "router") for subnet in SUBNETS.values()]
        rows += [(host.ip, host.role, host.name) for host in self.topology.hosts]
        owner = self.topology.reflector_block_owner
        if owner is not None:
            rows.append((str(REFLECTOR_NET), owner.role, owner.name))
        return rows


def live_labs() -> set[str]:
    """Topology prefixes of the lab sessions running now: a temp dir whose owner process is alive."""
    live = set()
    for path in Path(tempfile.gettempdir()).iterdir():
        match = TEMP_DIR_PATTERN.match(path.name)
        owner = path / OWNER_FILE
        if not match or not owner.is_file():
            continue
        try:
            os.kill(int(owner.read_text().strip()), 0)
        except (ValueError, ProcessLookupError):
            continue  # unreadable, or its process is gone: a crashed run's
        except PermissionError:
            pass  # alive, another user's
        live.add(match.group(1))
    return live


def clean_leftovers() -> dict[str, list[str]]:
    """Remove what crashed runs left: lab namespaces (and their processes), the lab account, lab temp dirs.
    A lab that is running (`live_labs`) keeps all of these; its prefix is listed under "running"."""
    require_root()
    running = live_labs()
    removed: dict[str, list[str]] = {
        "namespaces": clean_leftover_namespaces(keep=running),
        "users": [],
        "temp_dirs": [],
        "running": sorted(running),
    }
    for entry in pwd.getpwall():
        if entry.pw_gecos == LAB_USER_GECOS and not running:  # the account serves the live lab
            run_cmd(["userdel", entry.pw_name], check=False)
            removed["users"].append(entry.pw_name)
    temp = Path(tempfile.gettempdir())
    for path in temp.iterdir():
        match = TEMP_DIR_PATTERN.match(path.name)
        if match and match.group(1) not in running and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed["temp_dirs"].append(str(path))
    return removed
