"""The lab's topology and lifetime: contained routes, and nothing left behind, also after an exception."""

from __future__ import annotations

import subprocess
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
