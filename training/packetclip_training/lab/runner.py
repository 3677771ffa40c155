"""A lab run: build the lab, capture, benign background, attack episodes, and the run's output files.

This module owns the episode schedule (which variant, from which attacker, when), running each episode in its
attacker namespace in its own process group with a hard time bound, the target safety check of every command,
and writing `capture.pcap`, `labels.tsv`, `hosts.tsv` and `run.json` (CONTRACTS.md section 2). Labels are written
by construction from the schedule, never inferred from the capture. It does not define attacks (`attacks.py`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import platform
import random
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from packetclip.classes import FINE_CLASSES, FINE_TO_COARSE
from packetclip_training import __version__
from packetclip_training.dataset.sources import LABELS_COLUMNS
from packetclip_training.lab.benign import AgentConfig, BenignTraffic
from packetclip_training.lab.capture import Capture
from packetclip_training.lab.context import LabContext
from packetclip_training.lab.profiles import Profile
from packetclip_training.lab.services import postgres_program, tool_version
from packetclip_training.lab.session import LabSession, require_root
from packetclip_training.lab.topology import SERVER_NET, LabSafetyError, assert_targets_inside

log = logging.getLogger(__name__)

# Tools the lab itself runs (services, benign traffic, capture); the catalogue adds its own.
LAB_TOOLS = (
    "ip",
    "tcpdump",
    "nginx",
    "apache2",
    "/usr/sbin/sshd",
    "vsftpd",
    "dnsmasq",
    "mosquitto",
    "chronyd",
    "openssl",
    "ssh-keygen",
    "ssh",
    "scp",
    "sftp",
    "curl",
    "dig",
    "ntpdig",
    "mosquitto_pub",
    "mosquitto_sub",
    "ss",
    "timeout",
    "useradd",
    "userdel",
    "chpasswd",
    "busybox",
    "dovecot",
    "mariadbd",
    "mariadb-install-db",
    "mariadb-admin",
    "mariadb",
    postgres_program("initdb"),
    postgres_program("postgres"),
    "pg_isready",
    "psql",
    "setpriv",
)
# Administrative helpers whose versions run.json need not record.
UNVERSIONED_TOOLS = (
    "ip",
    "ss",
    "timeout",
    "useradd",
    "userdel",
    "chpasswd",
    "setpriv",
    "mariadb-install-db",
    "mariadb-admin",
    "pg_isready",
    postgres_program("initdb"),
)
KILL_GRACE_S = 2.0  # SIGTERM to SIGKILL for an episode past its bound


class VariantLike(Protocol):
    """What the runner uses of an attack variant (see attacks.Variant); read-only, as the frozen Variant is."""

    @property
    def fine(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tool(self) -> str: ...
    @property
    def heldout(self) -> bool: ...
    @property
    def max_seconds(self) -> float: ...

    def command(self, lab: LabContext, scale: float) -> list[str]: ...


def episode_bound(variant: VariantLike, scale: float) -> float:
    """Seconds after which an episode is killed: the variant's own deadline when it has one."""
    deadline = getattr(variant, "deadline", None)
    return float(deadline(scale)) if callable(deadline) else variant.max_seconds * scale


@dataclass
class Episode:
    """One run of one variant from one attacker; the row of labels.tsv and an entry of run.json."""

    episode: str
    variant: str
    fine: str
    tool: str
    heldout: bool
    attacker: str  # lab host name
    attacker_ip: str  # the source the sensor sees: the attacker's address, a spoof block or a reflector
    bound_s: float
    target: str = ""
    command: list[str] = field(default_factory=list)
    start_ts: float = 0.0
    end_ts: float = 0.0
    exit_status: int | None = None
    killed_at_bound: bool = False
    refused: str = ""  # why the safety check refused the command ("" when it ran)
    output_tail: str = ""

    def label_row(self, scenario: str) -> list[str]:
        command = " ".join(shlex.quote(word) for word in self.command).replace("\t", " ").replace("\n", " ")
        return [
            self.episode,
            scenario,
            self.variant,
            FINE_TO_COARSE[self.fine],
            self.fine,
            self.attacker_ip,
            self.target,
            f"{self.start_ts:.6f}",
            f"{self.end_ts:.6f}",
            self.tool,
            command,
            "1" if self.heldout else "0",
        ]


def choose_variants(
    catalogue: Sequence[VariantLike], profile: Profile, only: set[str] | None
) -> list[VariantLike]:
    """The profile's variants: all, or the first `variants_per_fine` of each fine class; `only` keeps the variants
    whose fine class or whose own name ("<fine>/<tool>-...") it names."""
    unknown = {v.fine for v in catalogue} - set(FINE_CLASSES)
    if unknown:
        raise ValueError(f"catalogue names unknown fine classes: {sorted(unknown)}")
    chosen: list[VariantLike] = []
    per_fine: dict[str, int] = {}
    for variant in catalogue:
        if only is not None and variant.fine not in only and variant.name not in only:
            continue
        if (
            profile.variants_per_fine is not None
            and per_fine.get(variant.fine, 0) >= profile.variants_per_fine
        ):
            continue
        per_fine[variant.fine] = per_fine.get(variant.fine, 0) + 1
        chosen.append(variant)
    return chosen


def describe_target(addresses: list[str], attacker_ip: str) -> str:
    """The labels.tsv target: the one address or CIDR named, else the server subnet that holds them all."""
    targets = sorted({a for a in addresses if a != attacker_ip})
    if len(targets) == 1:
        return targets[0]
    if targets and all(ipaddress.IPv4Network(t, strict=False).subnet_of(SERVER_NET) for t in targets):
        return str(SERVER_NET)
    return ",".join(targets)


def next_startable(pending: Sequence[VariantLike], busy_fines: set[str]) -> int | None:
    """Index of the first pending variant whose fine class is not busy (running, or in its quiet gap after an
    episode: `Profile.class_gap_s`), or None.

    Two episodes of one class at once would overlap in time, and the dataset's split drops an episode that runs
    when the next split's first episode of its class starts; attackers run different classes side by side."""
    for index, variant in enumerate(pending):
        if variant.fine not in busy_fines:
            return index
    return None


class EpisodeScheduler:
    """Runs episodes with at most one per attacker, `concurrent_attackers` at once and one per fine class at once,
    each bounded in time."""

    def __init__(self, lab: LabSession, profile: Profile, run_id: str, seed: int, capture: Capture) -> None:
        self.lab = lab
        self.profile = profile
        self.run_id = run_id
        self.rng = random.Random(f"schedule-{seed}")
        self.capture = capture
        attackers = lab.topology.hosts_with_role("attacker")
        self.attackers = attackers[: max(1, profile.concurrent_attackers)]
        self.episodes: list[Episode] = []
        self.skipped: list[str] = []  # variant names not run for lack of time or capture room
        self._running: dict[str, tuple[Episode, subprocess.Popen[bytes], float]] = {}  # attacker -> (...)
        self._free_at: dict[str, float] = {a.name: 0.0 for a in self.attackers}
        self._class_free_at: dict[str, float] = {}  # fine class -> when its quiet gap after an episode ends

    def plan(self, variants: list[VariantLike]) -> list[VariantLike]:
        order: list[VariantLike] = []
        for _ in range(self.profile.repetitions):
            shuffled = list(variants)
            self.rng.shuffle(shuffled)
            order.extend(shuffled)
        return order

    def run(self, variants: list[VariantLike]) -> list[Episode]:
        pending = self.plan(variants)
        started = time.monotonic()
        try:
            while pending or self._running:
                self._reap()
                over_budget = time.monotonic() - started > self.profile.attack_budget_s
                if pending and (over_budget or not self.capture.running):
                    reason = "attack time budget spent" if over_budget else "capture packet bound reached"
                    log.warning("%s: %d planned episodes not run", reason, len(pending))
                    self.skipped.extend(v.name for v in pending)
                    pending = []
                for attacker in self.attackers:
                    if attacker.name in self._running or time.monotonic() < self._free_at[attacker.name]:
                        continue
                    index = next_startable(pending, self._busy_fines())
                    if index is not None:
                        self._start(pending.pop(index), attacker.name, attacker.ip)
                time.sleep(0.05)
        finally:
            self._kill_all()
        return self.episodes

    def _start(self, variant: VariantLike, attacker: str, attacker_ip: str) -> None:
        number = len(self.episodes) + 1
        episode = Episode(
            episode=f"{self.run_id}-e{number:04d}",
            variant=variant.name,
            fine=variant.fine,
            tool=variant.tool,
            heldout=variant.heldout,
            attacker=attacker,
            attacker_ip=attacker_ip,
            bound_s=episode_bound(variant, self.profile.scale),
        )
        self.episodes.append(episode)
        assert self.lab.root is not None
        workdir = self.lab.root / "episodes" / episode.episode
        workdir.mkdir(parents=True)
        context = self.lab.context(attacker_ip, workdir)
        try:
            episode.command = [str(word) for word in variant.command(context, self.profile.scale)]
            named = assert_targets_inside(episode.command)
            # Spoofed floods and reflections reach the sensor from addresses other than the attacker's own
            # (a spoof block, a reflector): labels.tsv names those, so the dataset labels what the sensor sees.
            label_source = getattr(variant, "label_source", None)
            if label_source is not None:
                episode.attacker_ip = label_source(context)
                assert_targets_inside([episode.attacker_ip])
        except LabSafetyError as exc:
            episode.refused = str(exc)
            log.error("refused %s: %s", variant.name, exc)
            return
        episode.target = describe_target([a for a in named if a != episode.attacker_ip], attacker_ip)
        log.info(
            "episode %s: %s from %s for at most %.0fs",
            episode.episode,
            variant.name,
            attacker,
            episode.bound_s,
        )
        out = (workdir / "output.log").open("wb")
        episode.start_ts = time.time()
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.topology.ns(attacker), *episode.command],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,  # the episode's own process group: the bound kills the tool and its children
        )
        out.close()
        self._running[attacker] = (episode, process, time.monotonic() + episode.bound_s)

    def _busy_fines(self) -> set[str]:
        now = time.monotonic()
        resting = {fine for fine, free_at in self._class_free_at.items() if now < free_at}
        return resting | {e.fine for e, _, _ in self._running.values()}

    def _reap(self) -> None:
        for attacker, (episode, process, deadline) in list(self._running.items()):
            if process.poll() is None and time.monotonic() < deadline:
                continue
            if process.poll() is None:
                episode.killed_at_bound = True
                _kill_group(process)
            episode.end_ts = time.time()
            episode.exit_status = process.returncode
            self._finish(attacker, episode)

    def _finish(self, attacker: str, episode: Episode) -> None:
        assert self.lab.root is not None
        output = self.lab.root / "episodes" / episode.episode / "output.log"
        if output.exists():
            episode.output_tail = output.read_text(errors="replace")[-500:]
        del self._running[attacker]
        self._free_at[attacker] = time.monotonic() + self.profile.episode_gap_s
        self._class_free_at[episode.fine] = time.monotonic() + self.profile.class_gap_s

    def _kill_all(self) -> None:
        for attacker, (episode, process, _) in list(self._running.items()):
            _kill_group(process)
            episode.end_ts = time.time()
            episode.exit_status = process.returncode
            episode.killed_at_bound = True
            self._finish(attacker, episode)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=KILL_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    process.poll()


def benign_configs(lab: LabSession, profile: Profile, seed: int, stats_dir: Path) -> list[AgentConfig]:
    """One agent per client host; hosts named iot* behave as devices, the first workstation keeps a dashboard."""
    assert lab.secrets is not None and lab.services is not None
    existing = sorted(lab.secrets.dns_records)
    configs = []
    for index, host in enumerate(lab.topology.hosts_with_role("benign_client")):
        configs.append(
            AgentConfig(
                host=host.name,
                kind="iot" if host.name.startswith("iot") else "workstation",
                seed=seed,
                actions_per_second=profile.benign_actions_per_second,
                servers={h.name: h.ip for h in lab.topology.hosts_with_role("server")},
                dns_zone=lab.context(host.ip, stats_dir).dns_zone,
                existing_names=existing,
                missing_names=list(lab.secrets.missing_names),
                credentials={k: list(v) for k, v in lab.secrets.credentials.items()},
                ca_cert=str(lab.services.ca_cert),
                client_key=str(lab.services.client_key),
                stats_path=str(stats_dir / f"{host.name}.stats.json"),
                run_subscriber=index == 0,
            )
        )
    return configs


def tool_versions(variants: Sequence[VariantLike]) -> dict[str, str]:
    names = sorted({*LAB_TOOLS, *(v.tool for v in variants)})
    return {Path(name).name: tool_version(name) for name in names if name not in UNVERSIONED_TOOLS}


def run_lab(
    profile: Profile,
    out_dir: Path,
    seed: int = 1,
    only: set[str] | None = None,
    catalogue: Sequence[VariantLike] | None = None,
) -> dict[str, Any]:
    """Run one lab session per `profile` into `out_dir`; returns the run.json document."""
    require_root()
    if catalogue is None:
        from packetclip_training.lab.attacks import CATALOGUE

        catalogue = CATALOGUE
    variants = choose_variants(catalogue, profile, only)
    if not variants:
        raise ValueError(f"no attack variant left for classes {sorted(only or [])}")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    session = LabSession(seed=seed)
    run_id = session.topology.prefix
    document: dict[str, Any] = {
        "run_id": run_id,
        "profile": profile.as_dict(),
        "seed": seed,
        "only": sorted(only) if only else None,
        "packetclip_version": __version__,
        "started": started,
        "kernel": platform.release(),
    }
    with session as lab:
        assert lab.root is not None
        capture = Capture(
            lab.topology, out_dir / "capture.pcap", profile.max_packets, lab.root / "tcpdump.log"
        )
        capture.start()
        benign = BenignTraffic(
            benign_configs(lab, profile, seed, lab.root / "benign"),
            {h.name: lab.topology.ns(h.name) for h in lab.topology.hosts},
            lab.root / "benign",
        )
        benign_stats: dict[str, Any] = {}
        scheduler = EpisodeScheduler(lab, profile, run_id, seed, capture)
        try:
            benign.start()
            time.sleep(profile.warmup_s)
            lab.topology.assert_contained()
            scheduler.run(variants)
            time.sleep(profile.cooldown_s)
        finally:
            benign_stats = benign.stop()
            capture_stats = capture.stop()
        document["tool_versions"] = tool_versions(variants)
    document.update(
        ended=time.time(),
        wall_s=round(time.time() - started, 1),
        capture=capture_stats.as_dict(),
        benign=benign_stats,
        episodes=[asdict(e) for e in scheduler.episodes],
        skipped_variants=scheduler.skipped,
    )
    write_outputs(out_dir, run_id, scheduler.episodes, session.hosts_rows(), document)
    return document


def write_outputs(
    out_dir: Path,
    run_id: str,
    episodes: list[Episode],
    hosts: list[tuple[str, str, str]],
    document: dict[str, Any],
) -> None:
    """labels.tsv (episodes that ran), hosts.tsv and run.json."""
    scenario = f"lab-{document['profile']['name']}"
    # Plain tab-joined lines: every field is free of tabs and newlines (the command is flattened in label_row).
    with (out_dir / "labels.tsv").open("w") as handle:
        handle.write("\t".join(LABELS_COLUMNS) + "\n")
        for episode in episodes:
            if not episode.refused:
                handle.write("\t".join(episode.label_row(scenario)) + "\n")
    with (out_dir / "hosts.tsv").open("w") as handle:
        handle.write("ip\trole\tname\n")
        handle.writelines(f"{ip}\t{role}\t{name}\n" for ip, role, name in hosts)
    (out_dir / "run.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
