"""The labelling rules: lab episodes, real-capture manifest rows and flow-CSV label strings."""

from __future__ import annotations

import pytest

from packetclip_training.dataset.labelling import (
    ACI_IOT_2023_LABELS,
    Drop,
    FlowLabelMap,
    Label,
    LabLabeller,
    ManifestLabeller,
)
from packetclip_training.dataset.sources import SourceError, load_lab_run
from tests.dataset.dataset_testdata import REAL, SSHGUESS, Key, episode, write_lab_run

ATTACKER, OTHER_ATTACKER, CLIENT, SERVER = "10.0.0.66", "10.0.0.77", "10.0.0.10", "10.0.0.20"


@pytest.fixture
def lab(tmp_path) -> LabLabeller:
    run = write_lab_run(
        tmp_path / "run",
        REAL / SSHGUESS,
        [
            episode("e1", "dictionary_attack", "bruteforce", ATTACKER, 100.0, 200.0),
            episode("e2", "port_scan", "recon", ATTACKER, 300.0, 400.0, heldout=1),
            episode("e3", "syn_flood", "dos", "10.9.0.0/16", 100.0, 200.0),
        ],
        [
            (ATTACKER, "attacker", "a"),
            (CLIENT, "benign_client", "c"),
            (SERVER, "server", "s"),
            (OTHER_ATTACKER, "attacker", "idle"),
        ],
        link=False,
    )
    (run / "capture.pcap").write_bytes(b"")
    return load_lab_run(run).labeller()


def test_lab_attacker_in_episode_gets_episode_labels(lab):
    label = lab.label(Key(150.0, ATTACKER, SERVER))
    assert label == Label("bruteforce", "dictionary_attack", "dictionary_attack-e1", False, "e1")
    held = lab.label(Key(300.0, ATTACKER, SERVER))  # the window's edges belong to the episode
    assert isinstance(held, Label) and held.fine == "port_scan" and held.heldout


def test_lab_attacker_cidr_covers_spoofed_sources(lab):
    assert lab.label(Key(150.0, "10.9.3.4", SERVER)).fine == "syn_flood"
    assert lab.label(Key(250.0, "10.9.3.4", SERVER)) == Drop("attacker_outside_episode")


def test_lab_drops_attacker_traffic_outside_episodes_and_towards_attackers(lab):
    assert lab.label(Key(250.0, ATTACKER, SERVER)) == Drop("attacker_outside_episode")
    assert lab.label(Key(150.0, OTHER_ATTACKER, SERVER)) == Drop("attacker_outside_episode")
    assert lab.label(Key(150.0, SERVER, ATTACKER)) == Drop("attacker_is_responder")


def test_lab_benign_between_hosts_and_unknown_hosts_dropped(lab):
    assert lab.label(Key(150.0, CLIENT, SERVER)).fine == "benign"
    assert lab.label(Key(150.0, CLIENT, "ff02::1")) == Drop("host_not_in_hosts")
    assert lab.label(Key(150.0, "fe80::1", SERVER)) == Drop("host_not_in_hosts")


def test_lab_overlapping_episodes_of_different_classes_drop(tmp_path):
    run = write_lab_run(
        tmp_path / "run",
        REAL / SSHGUESS,
        [
            episode("e1", "port_scan", "recon", ATTACKER, 0, 10),
            episode("e2", "os_scan", "recon", ATTACKER, 5, 20),
        ],
        [(ATTACKER, "attacker", "a"), (SERVER, "server", "s")],
        link=False,
    )
    (run / "capture.pcap").write_bytes(b"")
    labeller = load_lab_run(run).labeller()
    assert labeller.label(Key(7.0, ATTACKER, SERVER)) == Drop("overlapping_episodes")
    assert labeller.label(Key(15.0, ATTACKER, SERVER)).fine == "os_scan"


def test_lab_run_with_inconsistent_classes_is_refused(tmp_path):
    run = write_lab_run(
        tmp_path / "run", REAL / SSHGUESS, [episode("e1", "port_scan", "dos", ATTACKER, 0, 1)], [], link=False
    )
    (run / "capture.pcap").write_bytes(b"")
    with pytest.raises(SourceError, match="coarse 'dos' does not match"):
        load_lab_run(run)


def test_manifest_attacker_ip_rule():
    labeller = ManifestLabeller("x.pcap", "recon", "vulnerability_scan", "192.0.2.1")
    assert labeller.label(Key(0, "192.0.2.1", "192.0.2.9")).fine == "vulnerability_scan"
    assert labeller.label(Key(0, "192.0.2.5", "192.0.2.9")).fine == "benign"
    assert labeller.label(Key(0, "192.0.2.9", "192.0.2.1")) == Drop("attacker_is_responder")


def test_manifest_attack_file_without_attacker_labels_everything():
    labeller = ManifestLabeller("syn.pcap", "dos", "syn_flood", "")
    assert labeller.label(Key(0, "192.0.2.9", "192.0.2.1")).fine == "syn_flood"
    assert ManifestLabeller("b.pcap", "benign", "benign", "").label(Key(0, "a::1", "a::2")).fine == "benign"


def test_manifest_row_with_inconsistent_label_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        ManifestLabeller("x.pcap", "dos", "port_scan", "")
    with pytest.raises(ValueError, match="unknown attack class"):
        ManifestLabeller("x.pcap", "dos", "ddos", "")


def test_aci_iot_mapping_covers_every_fine_class_and_drops_arp():
    labels = FlowLabelMap(ACI_IOT_2023_LABELS, "aci")
    from packetclip.classes import FINE_CLASSES

    assert {labels.fine_of(raw) for raw in ACI_IOT_2023_LABELS if raw != "ARP Spoofing"} == set(FINE_CLASSES)
    assert labels.fine_of("ARP Spoofing") == Drop("label_mapped_to_drop")
    assert labels.fine_of("  port   SCAN ") == "port_scan"  # case and padding differ between releases
    assert labels.fine_of("Mirai") == Drop("unmapped_label")


def test_user_mapping_rejects_unknown_classes():
    with pytest.raises(ValueError, match="unknown class 'ddos'"):
        FlowLabelMap({"DDoS": "ddos"}, "user.yaml")


def test_lab_reflector_labels_its_answers_in_either_direction(tmp_path):
    reflector = "10.0.0.53"
    run = write_lab_run(
        tmp_path / "run",
        REAL / SSHGUESS,
        [episode("e1", "udp_flood", "dos", reflector, 100.0, 200.0)],
        [
            (ATTACKER, "attacker", "a"),
            (reflector, "reflector", "refl"),
            (CLIENT, "benign_client", "c"),
            (SERVER, "server", "s"),
        ],
        link=False,
    )
    (run / "capture.pcap").write_bytes(b"")
    labeller = load_lab_run(run).labeller()
    # An answer from :53 to the victim's ephemeral port: the tracker makes the victim the originator.
    flipped = Key(150.0, SERVER, reflector, orig_p=40000, resp_p=53, proto="udp")
    assert labeller.label(flipped).fine == "udp_flood"
    assert labeller.label(Key(150.0, reflector, SERVER, 53, 80, "udp")).fine == "udp_flood"
    # The victim's ICMP port unreachables are its reaction, dropped as for every other flood.
    assert labeller.label(Key(150.0, SERVER, reflector, 3, 3, "icmp")) == Drop("attacker_is_responder")
    assert labeller.label(Key(250.0, SERVER, reflector, 40000, 53, "udp")) == Drop("attacker_outside_episode")
    assert labeller.label(Key(150.0, CLIENT, SERVER)).fine == "benign"


def test_lab_reflector_block_labels_answers_from_any_of_its_addresses(tmp_path):
    """hosts.tsv may list a block of reflector addresses (one host answering from all of them); an episode names
    the part of the block it used, and answers from there are its attack."""
    run = write_lab_run(
        tmp_path / "run",
        REAL / SSHGUESS,
        [episode("e1", "udp_flood", "dos", "10.0.64.0/21", 100.0, 200.0)],
        [
            ("10.0.0.53", "reflector", "refl"),
            ("10.0.64.0/18", "reflector", "refl"),
            (CLIENT, "benign_client", "c"),
            (SERVER, "server", "s"),
        ],
        link=False,
    )
    (run / "capture.pcap").write_bytes(b"")
    labeller = load_lab_run(run).labeller()
    for reflector in ("10.0.64.1", "10.0.70.200"):
        assert labeller.label(Key(150.0, SERVER, reflector, 40000, 53, "udp")).fine == "udp_flood"
        assert labeller.label(Key(150.0, reflector, SERVER, 53, 40000, "udp")).fine == "udp_flood"
        assert labeller.label(Key(150.0, SERVER, reflector, 3, 3, "icmp")) == Drop("attacker_is_responder")
    # Another part of the block, or the episode's part outside its window: no episode covers it.
    assert labeller.label(Key(150.0, SERVER, "10.0.100.1", 40000, 53, "udp")) == Drop(
        "attacker_outside_episode"
    )
    assert labeller.label(Key(250.0, SERVER, "10.0.64.1", 40000, 53, "udp")) == Drop(
        "attacker_outside_episode"
    )
    assert labeller.label(Key(150.0, CLIENT, SERVER)).fine == "benign"
