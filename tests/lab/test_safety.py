"""The lab's containment rules, without root: targets outside the lab prefixes are refused, inside accepted."""

from __future__ import annotations

import pytest

from packetclip_training.lab.runner import describe_target
from packetclip_training.lab.topology import LabSafetyError, assert_targets_inside, is_lab_address


@pytest.mark.parametrize(
    "argv",
    [
        ["hping3", "-S", "8.8.8.8"],
        ["nmap", "-sS", "198.18.2.10", "10.0.0.0/8"],
        ["hydra", "-l", "root", "ssh://192.168.1.5"],
        ["nmap", "198.18.0.0/15"],  # wider than the lab: reaches 198.19.x
        ["curl", "http://198.18.4.1/"],  # benchmarking range, but not a lab subnet
        ["nping", "--udp", "-S", "198.18.2.10", "198.18.64.0/17"],  # wider than the reflector block
        ["nping", "--udp", "-S", "198.18.2.10", "198.18.60.0/22"],  # next to it, outside
    ],
)
def test_target_outside_lab_is_refused(argv: list[str]) -> None:
    with pytest.raises(LabSafetyError):
        assert_targets_inside(argv)


def test_command_without_any_target_is_refused() -> None:
    with pytest.raises(LabSafetyError, match="names no IPv4 target"):
        assert_targets_inside(["hping3", "--flood", "web.lab.internal"])


def test_lab_targets_are_accepted_and_reported() -> None:
    argv = ["hydra", "-L", "u.txt", "ssh://198.18.2.12", "-s", "22"]
    assert assert_targets_inside(argv) == ["198.18.2.12"]
    assert assert_targets_inside(["nmap", "-sn", "198.18.2.0/24"]) == ["198.18.2.0/24"]
    assert assert_targets_inside(["nmap", "198.18.2.1-254"]) == ["198.18.2.1"]
    reflect = ["python3", "-m", "x", "reflect", "198.18.2.11", "--reflector-net", "198.18.64.0/21"]
    assert assert_targets_inside(reflect) == ["198.18.2.11", "198.18.64.0/21"]


def test_address_checks() -> None:
    assert is_lab_address("198.18.3.66")
    assert is_lab_address("127.0.0.1")
    assert is_lab_address("198.18.64.0/18") and is_lab_address("198.18.127.255")
    assert not is_lab_address("198.18.63.255")
    assert not is_lab_address("198.18.0.1")
    assert not is_lab_address("fd00::1")
    assert not is_lab_address("not-an-address")


def test_target_description() -> None:
    assert describe_target(["198.18.3.66", "198.18.2.10"], "198.18.3.66") == "198.18.2.10"
    assert describe_target(["198.18.2.10", "198.18.2.12"], "198.18.3.66") == "198.18.2.0/24"
