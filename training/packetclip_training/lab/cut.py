"""Cutting a small labelled sample out of a lab run: a run directory of its own, a few hundred kB.

Owns the choice of what the sample keeps — the first connections of one episode per fine class and of the benign
clients — and writing it as a lab run directory (capture.pcap, labels.tsv, hosts.tsv, run.json) that
`dataset build --lab-run` and `packetclip featurize` read like any other. A chosen connection keeps its frames from
the first on, up to `packets_per_connection` (a flood's one ICMP connection carries tens of thousands; a model
reads the first 30), and no frame of an unchosen connection is kept, so a sample is an excerpt of whole
connection starts rather than a cut through a stream.
Does not run a lab or relabel anything: label rows are copied from the parent run.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import shutil
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from packetclip.featurizer import read_frames
from packetclip.featurizer.frames import ICMP, ICMP6, P_DPORT, P_DST, P_PROTO, P_SPORT, P_SRC, parse_frame


@dataclass(frozen=True)
class CutConfig:
    connections_per_episode: int = 40  # connections kept of each chosen episode (floods make thousands)
    benign_connections: int = 150  # benign connections kept, the earliest of the run
    packets_per_connection: int = 60  # frames kept of each chosen connection, from its first
    snaplen: int = (
        256  # bytes kept of each frame (its original length stays in the record), as tcpdump -s does
    )
    include_heldout: bool = False  # a held-out variant shows a tool the default model never trained on


def _key(parsed: tuple) -> tuple:
    """Both directions of one connection map to one key (ICMP by addresses, as the featurizer's tracker does)."""
    a, b = (parsed[P_SRC], parsed[P_SPORT]), (parsed[P_DST], parsed[P_DPORT])
    if parsed[P_PROTO] in (ICMP, ICMP6):
        a, b = (parsed[P_SRC], 0), (parsed[P_DST], 0)
    return (parsed[P_PROTO], *sorted((a, b)))


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _write_tsv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _chosen_episodes(labels: list[dict[str, str]], config: CutConfig) -> list[dict[str, str]]:
    chosen: dict[str, dict[str, str]] = {}
    for row in sorted(labels, key=lambda r: float(r["start_ts"])):
        if row["heldout"] == "1" and not config.include_heldout:
            continue
        chosen.setdefault(row["fine"], row)
    return list(chosen.values())


def cut_run(run: Path, out: Path, config: CutConfig | None = None) -> dict:
    """Write a sample of lab run `run` into `out`; returns what was kept (also written to out/run.json)."""
    config = config or CutConfig()
    run, out = Path(run), Path(out)
    labels = _read_tsv(run / "labels.tsv")
    hosts = _read_tsv(run / "hosts.tsv")
    episodes = _chosen_episodes(labels, config)
    clients = {h["ip"] for h in hosts if h["role"] == "benign_client"}
    reflectors = [ipaddress.ip_network(h["ip"], strict=False) for h in hosts if h["role"] == "reflector"]
    windows = [
        (
            ipaddress.ip_network(e["attacker_ip"], strict=False),
            float(e["start_ts"]),
            float(e["end_ts"]),
            e["episode"],
        )
        for e in episodes
    ]

    owner: dict[tuple, str] = {}  # connection key -> episode id or "benign"
    budget = Counter({e["episode"]: config.connections_per_episode for e in episodes})
    budget["benign"] = config.benign_connections
    kept: Counter[str] = Counter()
    per_connection: Counter = Counter()
    out.mkdir(parents=True, exist_ok=True)
    link_type = None
    with open(out / "capture.pcap", "wb") as pcap:
        for ts, link, frame in read_frames(run / "capture.pcap"):
            parsed = parse_frame(link, frame)
            if len(parsed) == 2:  # not an IP packet of a tracked protocol (ARP, ...)
                continue
            key = _key(parsed)
            group = owner.get(key)
            if group is None:
                group = _group_of(parsed, ts, windows, clients, reflectors)
                if group is None or budget[group] == 0:
                    continue
                budget[group] -= 1
                owner[key] = group
            if per_connection[key] == config.packets_per_connection:
                continue
            per_connection[key] += 1
            if link_type is None:
                link_type = link
                pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, config.snaplen, link))
            elif link != link_type:
                continue  # a lab capture has one link type; a stray one cannot go into a classic pcap
            sec, usec = divmod(round(ts * 1_000_000), 1_000_000)
            captured = frame[: config.snaplen]
            pcap.write(struct.pack("<IIII", sec, usec, len(captured), len(frame)))
            pcap.write(captured)
            kept[group] += 1
    _write_tsv(out / "labels.tsv", episodes, list(labels[0].keys()) if labels else [])
    shutil.copyfile(run / "hosts.tsv", out / "hosts.tsv")
    summary = {
        "cut_from": run.name,
        "parent_run": json.loads((run / "run.json").read_text()).get("run_id"),
        "config": config.__dict__,
        "packets_per_group": dict(sorted(kept.items())),
        "episodes": {e["episode"]: e["variant"] for e in episodes},
    }
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _group_of(parsed: tuple, ts: float, windows: list, clients: set[str], reflectors: list) -> str | None:
    """The episode (or "benign") a new connection belongs to, by the same rule the dataset labels with: its
    source inside an episode's attacker address or block, or (reflected answers) a reflector as its destination."""
    family = socket.AF_INET if len(parsed[P_SRC]) == 4 else socket.AF_INET6
    src = socket.inet_ntop(family, parsed[P_SRC])
    dst = ipaddress.ip_address(socket.inet_ntop(family, parsed[P_DST]))
    source = ipaddress.ip_address(src)
    if parsed[P_PROTO] not in (ICMP, ICMP6) and any(dst in reflector for reflector in reflectors):
        source = dst
    for attacker, start, end, episode in windows:
        if source.version == attacker.version and source in attacker and start <= ts <= end:
            return episode
    if src in clients:
        return "benign"
    return None
