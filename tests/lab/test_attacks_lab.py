"""Every attack variant, run for real at a tiny scale inside a live lab (root, namespaces, daemons).

Proves per variant: the command runs in the attacker namespace, ends before the runner's deadline, and puts
attack traffic on the wire — packets from the attacker address (or from the source it names for labels.tsv: its
spoof block, or the reflector answering in its stead), counted by tcpdump on the router's attacker bridge — with
as many distinct connections as its `connections` kind promises; a password guesser's connections are answered
by the service it aims at, and a guesser that ends by itself has found the right password. The lab (LabSession) is built
once for the module and removed afterwards, also when a test fails.

Set PACKETCLIP_ATTACK_REPORT=path.json to keep the measured packets and connections per variant.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dpkt
import pytest

from packetclip_training.lab.attacks import CATALOGUE, Variant
from packetclip_training.lab.topology import SERVER_BRIDGE
from tests.lab.captures import router_capture

pytestmark = [pytest.mark.lab, pytest.mark.slow]

TINY_SCALE = 0.05
# Tools that need longer than a tiny episode before they show their pattern: ncrack probes SSH with one
# connection for about ten seconds before it opens parallel ones.
# hydra's single task reuses a connection for several attempts and waits between them (-c 2) or between
# connections (-W 4): its third connection comes after 20-30 s.
SLOW_STARTERS = {
    "dictionary_attack/ncrack-ssh-cl8": 0.25,
    "dictionary_attack/hydra-ftp-t1-c2": 0.25,
    "dictionary_attack/hydra-ssh-t1-W4": 0.3,
    # One connection every 3 s: a 12 s episode makes four.
    "dictionary_attack/hydra-postgres-t1-W3": 0.1,
}
# vsftpd delays every failed login, so these one-attempt-per-connection FTP guessers get shorter lists: at the
# tiny scale their lists still outlast the shortest episode (MIN_DEADLINE_S). patator's 2 users x 14 passwords
# (scale 0.02) once ran at 2 attempts/s and hit the 8 s bound; 2 x 7 (scale 0.005) still holds the right pair.
SLOW_GUESSERS = {"dictionary_attack/medusa-ftp-t6": 0.02, "dictionary_attack/patator-ftp-t8": 0.005}
# The Telnet login and dovecot delay every failed login by 2 s (dovecot more after many from one address): 2 users
# x 4 passwords (scale 0.01) leave each task two or three guesses.
SLOW_GUESSERS |= {
    f"dictionary_attack/hydra-{service}": 0.01 for service in ("telnet-t4", "pop3-t8", "imap-t8")
}
# Services whose servers delay failed logins: their guessers may still be guessing when a tiny episode ends.
DELAYING_SERVICES = ("ssh", "telnet", "pop3", "imap")
# One task, with waits: a tiny episode ends before such a guesser reaches the right pair (the quick profile's
# episodes are long enough to find it).
SINGLE_TASK_GUESSERS = {
    v.name for v in CATALOGUE if v.fine == "dictionary_attack" and re.search(r"-t1(-|$)", v.name)
}
ATTACKER = "att1"
ATTACKER_BRIDGE = "br-att"
# Snap length covers headers; a large kernel buffer keeps line-rate floods from being dropped, and immediate
# mode hands over every packet at once (otherwise packets of the last, unfilled buffer block are lost at stop).
TCPDUMP = ["tcpdump", "-i", ATTACKER_BRIDGE, "-s", "128", "-B", "16384", "--immediate-mode", "-U"]
REPORT: dict[str, dict[str, object]] = {}


@pytest.fixture(scope="module")
def lab_session() -> Iterator[object]:
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        pytest.skip("needs root and tcpdump")
    from packetclip_training.lab.session import LabSession

    with LabSession(seed=7) as session:
        yield session
    report_path = os.environ.get("PACKETCLIP_ATTACK_REPORT")
    if report_path:
        Path(report_path).write_text(json.dumps(REPORT, indent=1, sort_keys=True) + "\n")


@dataclass
class Outcome:
    seconds: float
    returncode: int
    killed: bool
    packets: int  # packets from the attacker address (its label source: spoof block, reflector)
    connections: int  # distinct 5-tuples (ICMP: addresses, type) the attacker originated
    output: str
    answered: int = 0  # of those TCP connections, how many got data back (captured for guessers only)


def _flows(pcap: Path, source: str) -> tuple[int, int, int]:
    """Packets sent from `source` (an address or a block), the distinct connection keys among them, and how many
    of its TCP connections carried data back to it (when the capture holds both directions)."""
    network = ipaddress.IPv4Network(source)
    packets = 0
    keys: set[tuple[object, ...]] = set()
    answered: set[tuple[object, ...]] = set()
    with pcap.open("rb") as handle:
        for _ts, frame in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            if ipaddress.IPv4Address(ip.src) not in network:
                reply = ip.data
                if isinstance(reply, dpkt.tcp.TCP) and reply.data:
                    answered.add((ip.p, ip.dst, ip.src, reply.dport, reply.sport))
                continue
            packets += 1
            transport = ip.data
            # The source is part of the key: a block's addresses (spoofed, reflectors) each make their own.
            if isinstance(transport, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                keys.add((ip.p, ip.src, ip.dst, transport.sport, transport.dport))
            elif isinstance(transport, dpkt.icmp.ICMP):
                keys.add((ip.p, ip.src, ip.dst, transport.type))
            else:
                keys.add((ip.p, ip.src, ip.dst))
    return packets, len(keys), len(keys & answered)


def _run_episode(session: object, variant: Variant, workdir: Path, scale: float) -> Outcome:
    topology = session.topology  # type: ignore[attr-defined]
    attacker_ip = topology.host(ATTACKER).ip
    context = session.context(attacker_ip, workdir)  # type: ignore[attr-defined]
    argv = variant.command(context, scale)
    source = variant.label_source(context) if variant.label_source is not None else attacker_ip
    pcap = workdir / "attack.pcap"
    # Guessers' captures hold the service's answers too: proof that the guesses reached a listening service.
    bpf = f"net {source}" if variant.fine == "dictionary_attack" else f"src net {source}"
    with router_capture(topology, TCPDUMP, pcap, bpf):
        started = time.monotonic()
        tool = subprocess.Popen(
            ["ip", "netns", "exec", topology.ns(ATTACKER), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,
        )
        killed = False
        try:
            output, _ = tool.communicate(timeout=variant.deadline(scale))
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(tool.pid, signal.SIGKILL)
            output, _ = tool.communicate()
        seconds = time.monotonic() - started
        time.sleep(0.5)
    packets, connections, answered = _flows(pcap, source)
    output_text = output.decode(errors="replace")
    return Outcome(seconds, tool.returncode, killed, packets, connections, output_text, answered)


@pytest.mark.parametrize("variant", CATALOGUE, ids=lambda v: v.name)
def test_variant_runs_in_time_and_sends_attack_traffic(
    variant: Variant, lab_session: object, tmp_path: Path
) -> None:
    workdir = tmp_path / "episode"
    workdir.mkdir()
    workdir.chmod(0o755)
    scale = SLOW_STARTERS.get(variant.name, SLOW_GUESSERS.get(variant.name, TINY_SCALE))
    outcome = _run_episode(lab_session, variant, workdir, scale)
    context = lab_session.context("198.18.3.66", workdir)  # type: ignore[attr-defined]
    right_passwords = {password for _, password in context.credentials.values()}
    REPORT[variant.name] = {
        "tool": variant.tool,
        "heldout": variant.heldout,
        "scale": scale,
        "seconds": round(outcome.seconds, 2),
        "returncode": outcome.returncode,
        "packets": outcome.packets,
        "connections": outcome.connections,
        "answered": outcome.answered,
    }
    detail = f"{variant.name}: {outcome.seconds:.1f}s rc={outcome.returncode} packets={outcome.packets} "
    detail += (
        f"connections={outcome.connections} answered={outcome.answered}; output: ...{outcome.output[-500:]}"
    )
    # Killed here means the runner would have had to kill it; the command's own `timeout` (exit 124) firing
    # before that is the bound working as designed (masscan's post-scan hang, slow nmap scripts at tiny scale).
    assert not outcome.killed, f"ran past its deadline {variant.deadline(scale):.0f}s: {detail}"
    # 127: the executable is missing; 126: not runnable; 125: timeout itself failed.
    assert outcome.returncode not in (125, 126, 127), detail
    assert outcome.packets >= 10, detail
    if variant.connections == "many":
        assert outcome.connections >= 3, detail
    else:
        # "few": a fixed handful of long connections (one ICMP flow, one socket per dnsperf client ...).
        assert 1 <= outcome.connections <= 32 and outcome.packets >= 5 * outcome.connections, detail
    if variant.fine == "dictionary_attack":
        assert outcome.answered >= min(3, outcome.connections), f"the service did not answer: {detail}"
        _assert_guessing_worked(variant, outcome, right_passwords, detail)


def _assert_guessing_worked(
    variant: Variant, outcome: Outcome, right_passwords: set[str], detail: str
) -> None:
    """A guessing run that ends by itself has tried its whole (tiny) list, which holds the right pair: the tool
    must report it, or it never really logged in (e.g. it gave up on the server's answers). Only SSH, whose
    server delays every failed password (as do Telnet's and the mail server's), and the single-task guessers, slow
    by design, may still be guessing when the episode's own bound stops it."""
    stopped_by_bound = outcome.returncode in (124, 137, -9)
    if stopped_by_bound:
        delayed = any(f"-{service}" in variant.name for service in DELAYING_SERVICES)
        assert delayed or variant.name in SINGLE_TASK_GUESSERS, (
            f"stopped by its bound before trying its list: {detail}"
        )
    else:
        assert any(password in outcome.output for password in right_passwords), (
            f"none of {sorted(right_passwords)} reported: {detail}"
        )


def test_reflection_through_a_reflector_block_reaches_the_victim_from_many_sources(
    lab_session: object, tmp_path: Path
) -> None:
    """What the sensor sees of a reflection through a block: one answer per request, each from its own reflector
    address inside the block, from :53 to the victim; the spoofed requests never cross the sensor link."""
    topology = lab_session.topology  # type: ignore[attr-defined]
    victim = topology.host("web2").ip
    block = ipaddress.IPv4Network("198.18.72.0/22")
    requests = 300
    payload = tmp_path / "query.bin"
    payload.write_bytes(dns.message.make_query("mirror.internal", "TXT", use_edns=0, payload=4096).to_wire())
    pcap = tmp_path / "sensor.pcap"
    sensor = ["tcpdump", "-i", SERVER_BRIDGE, *TCPDUMP[3:]]
    with router_capture(topology, sensor, pcap, f"udp and host {victim}"):
        sender = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                topology.ns(ATTACKER),
                "python3",
                "-m",
                "packetclip_training.lab.attacks",
                "reflect",
                victim,
                "--payload",
                str(payload),
                "--dport",
                "53",
                "--reflector-net",
                str(block),
                "--count",
                str(requests),
                "--rate",
                "500",
                "--seconds",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        time.sleep(1.0)
    assert sender.returncode == 0, sender.stderr
    seen: list[tuple[ipaddress.IPv4Address, int, ipaddress.IPv4Address, int]] = []
    with pcap.open("rb") as handle:
        for _ts, frame in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            seen.append((ipaddress.IPv4Address(ip.src), ip.data.sport, ipaddress.IPv4Address(ip.dst), ip.len))
    sources = {src for src, _, _, _ in seen}
    assert all(src in block and sport == 53 and str(dst) == victim for src, sport, dst, _ in seen), seen[:5]
    assert all(length > 1000 for *_, length in seen)  # the large TXT answers, not the requests
    assert len(seen) <= requests and len(sources) >= 0.95 * requests, (len(seen), len(sources))
