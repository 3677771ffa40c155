"""The lab's topology and lifetime: contained routes, and nothing left behind, also after an exception."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from packetclip_training.lab.session import LabSession
from packetclip_training.lab.topology import LabSafetyError, Topology

pytestmark = pytest.mark.lab


def _in_ns(namespace: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, timeout=20
    )


def test_topology_routes_inside_and_nowhere_else(
    lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]]
) -> None:
    topology = Topology()
    topology.up()
    try:
        client = topology.ns("ws1")
        assert _in_ns(client, "ping", "-c", "1", "-W", "2", "198.18.2.10").returncode == 0
        # Every address of the reflector block is the reflector's, reached from any subnet through the router.
        for host, address in (("ws1", "198.18.64.1"), ("web", "198.18.100.7"), ("att1", "198.18.127.254")):
            assert _in_ns(topology.ns(host), "ping", "-c", "1", "-W", "2", address).returncode == 0, address
        local = _in_ns(topology.ns("refl"), "ip", "route", "show", "table", "local", "198.18.64.0/18").stdout
        assert local.startswith("local 198.18.64.0/18 dev lo"), local
        unreachable = _in_ns(client, "ping", "-c", "1", "-W", "1", "9.9.9.9")
        assert "unreachable" in unreachable.stderr.lower()
        # A route leaving the lab makes the safety check refuse the lab.
        _in_ns(client, "ip", "route", "add", "default", "via", "198.18.1.1")
        with pytest.raises(LabSafetyError, match="route to default"):
            topology.assert_contained()
    finally:
        topology.down()
    assert not any(leftovers(topology.prefix).values()), leftovers(topology.prefix)


def test_exception_inside_session_leaves_nothing(
    lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]]
) -> None:
    session = LabSession(seed=3)
    with pytest.raises(RuntimeError, match="boom"), session:
        assert session.root is not None and session.root.exists()
        assert leftovers(session.topology.prefix)["namespaces"]
        raise RuntimeError("boom")
    assert not any(leftovers(session.topology.prefix).values()), leftovers(session.topology.prefix)


def test_spoofed_sources_reach_the_victim_and_its_answers_end_at_the_router(
    lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]]
) -> None:
    """A SYN flood from the spoof block gets through (the router does no reverse-path filtering), the victim's
    SYN-ACKs cross the server link and are dropped by the router's blackhole: none reaches another lab link."""
    topology = Topology()
    topology.up()
    captures: list[subprocess.Popen[str]] = []
    try:
        router = topology.router_ns
        routes = subprocess.run(["ip", "-n", router, "route", "show"], capture_output=True, text=True).stdout
        assert "blackhole 198.18.128.0/17" in routes and "default" not in routes, routes
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                topology.ns("web"),
                "python3",
                "-c",
                "import socket,time; s=socket.socket(); s.bind(('198.18.2.10',80)); s.listen(512); time.sleep(20)",
            ],
        )
        for bridge in ("br-srv", "br-att", "br-cli"):
            captures.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        router,
                        "tcpdump",
                        "-i",
                        bridge,
                        "-n",
                        "-l",
                        "-q",
                        "net",
                        "198.18.128.0/17",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        time.sleep(1.5)
        flood = _in_ns(
            topology.ns("att1"),
            "python3",
            "-m",
            "packetclip_training.lab.attacks",
            "synflood",
            "198.18.2.10",
            "--dport",
            "80",
            "--source-net",
            "198.18.128.0/19",
            "--count",
            "200",
            "--rate",
            "400",
        )
        assert flood.returncode == 0, flood.stderr
        time.sleep(1.5)
        listener.kill()
        seen = {}
        for bridge, capture in zip(("br-srv", "br-att", "br-cli"), captures, strict=True):
            capture.terminate()
            seen[bridge] = [line for line in capture.communicate(timeout=10)[0].splitlines() if line.strip()]
        towards_spoofed = [line for line in seen["br-srv"] if "198.18.2.10.80 >" in line]
        assert len([line for line in seen["br-srv"] if "> 198.18.2.10.80" in line]) == 200
        assert towards_spoofed, "the victim's SYN-ACKs should cross the server link"
        assert seen["br-att"] == [line for line in seen["br-att"] if "> 198.18.2.10.80" in line]
        assert seen["br-cli"] == []
    finally:
        for capture in captures:
            if capture.poll() is None:
                capture.kill()
        topology.down()
    assert not any(leftovers(topology.prefix).values()), leftovers(topology.prefix)
