"""Test data of the dataset tests: the real captures (the folder `real_captures` resolves) and lab-format run
dirs around them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packetclip_training.dataset.sources import HOSTS_COLUMNS, LABELS_COLUMNS
from tests.real_captures import REAL_DATA as REAL

FIXTURES = Path(__file__).parent / "fixtures"
SSHGUESS = "zeek/testing/btest/Traces/ssh/sshguess.pcap"
SSH_ATTACKER, SSH_SERVER = "192.168.56.1", "192.168.56.103"
# first-packet times of the 11 connections of sshguess.pcap (read with dpkt)
SSHGUESS_STARTS = {
    55470: 1427726689.213953,
    55471: 1427726698.242001,
    55472: 1427726703.853755,
    55473: 1427726708.60108,
    55474: 1427726713.139576,
    55475: 1427726720.292474,
    55476: 1427726731.556549,
    55477: 1427726736.375489,
    55478: 1427726741.153682,
    55479: 1427726749.917308,
    55480: 1427726755.562203,
}


@dataclass
class Key:
    """The connection fields labelling reads, without featurizing."""

    ts: float
    orig_h: str
    resp_h: str
    orig_p: int = 40000
    resp_p: int = 22
    proto: str = "tcp"


def ssh_key(port: int, reverse: bool = False) -> Key:
    ts = SSHGUESS_STARTS[port]
    if reverse:
        return Key(ts, SSH_SERVER, SSH_ATTACKER, 22, port)
    return Key(ts, SSH_ATTACKER, SSH_SERVER, port, 22)


def write_lab_run(
    run: Path, capture: Path, episodes: list[dict], hosts: list[tuple[str, str, str]], link: bool = True
) -> Path:
    """A run dir in the lab's format (CONTRACTS.md section 2) around an existing capture."""
    run.mkdir(parents=True, exist_ok=True)
    target = run / "capture.pcap"
    if link:
        target.symlink_to(capture)
    columns = LABELS_COLUMNS
    lines = ["\t".join(columns)] + ["\t".join(str(e[c]) for c in columns) for e in episodes]
    (run / "labels.tsv").write_text("\n".join(lines) + "\n")
    (run / "hosts.tsv").write_text(
        "\t".join(HOSTS_COLUMNS) + "\n" + "".join(f"{ip}\t{role}\t{name}\n" for ip, role, name in hosts)
    )
    (run / "run.json").write_text('{"profile": "fixture", "seed": 0}\n')
    return run


def episode(
    name: str, fine: str, coarse: str, attacker: str, start: float, end: float, heldout: int = 0
) -> dict:
    return {
        "episode": name,
        "scenario": fine,
        "variant": f"{fine}-{name}",
        "coarse": coarse,
        "fine": fine,
        "attacker_ip": attacker,
        "target": SSH_SERVER,
        "start_ts": start,
        "end_ts": end,
        "tool": "hydra",
        "command": "hydra -l root -P words ssh://target",
        "heldout": heldout,
    }


def make_sshguess_lab_run(run: Path) -> Path:
    """A lab-format run around the real sshguess.pcap: two hydra-like episodes of its real attacker, the second a
    held-out variant, and one connection (port 55478, at 741.15) left outside both."""
    base = 1427726600.0
    return write_lab_run(
        run,
        REAL / SSHGUESS,
        [
            episode("e1", "dictionary_attack", "bruteforce", SSH_ATTACKER, base + 89.0, base + 140.0),
            episode(
                "e2", "dictionary_attack", "bruteforce", SSH_ATTACKER, base + 149.0, base + 160.0, heldout=1
            ),
        ],
        [(SSH_ATTACKER, "attacker", "attacker1"), (SSH_SERVER, "server", "ssh-server")],
    )
