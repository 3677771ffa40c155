"""Every lab service answers a real client from a client namespace: HTTPS with the lab CA, basic auth, form
login, apache, SSH with the client key, FTP login, DNS (existing name and NXDOMAIN), MQTT pub/sub, NTP; and the
password services (Telnet, IMAP, POP3, MariaDB, PostgreSQL) take the benign clients' right logins, refuse wrong
ones, and listen on their lab addresses only, from their own namespaces; a browser-like page load looks like one."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import dpkt
import numpy as np
import pytest

from packetclip_training.lab.profiles import PROFILES
from packetclip_training.lab.runner import benign_configs
from packetclip_training.lab.session import LabSession
from packetclip_training.lab.topology import SERVER_BRIDGE
from tests.lab.captures import router_capture

pytestmark = pytest.mark.lab


def test_each_service_answers(lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]]) -> None:
    with LabSession(seed=5) as lab:
        assert lab.services is not None and lab.secrets is not None
        ns = lab.topology.ns("ws1")
        ip = {h.name: h.ip for h in lab.topology.hosts}
        creds = lab.secrets.credentials

        def run(*argv: str) -> str:
            result = subprocess.run(
                ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, f"{argv[0]}: {result.stderr}"
            return result.stdout

        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]
        https = [
            *curl,
            "--cacert",
            str(lab.services.ca_cert),
            "--resolve",
            f"web.lab.internal:443:{ip['web']}",
        ]
        assert run(*https, "https://web.lab.internal/") == "200"
        assert run(*https, "https://web.lab.internal/admin/") == "401"
        assert run(*https, "-u", ":".join(creds["http_basic"]), "https://web.lab.internal/admin/") == "200"
        user, password = creds["http_form"]
        assert (
            run(*curl, "-d", f"username={user}&password={password}", f"http://{ip['web']}:8080/login")
            == "200"
        )
        assert run(*curl, "-d", f"username={user}&password=wrong", f"http://{ip['web']}/login") == "403"
        assert run(*curl, f"http://{ip['web']}/api/items/42") == "200"
        assert run(*curl, f"http://{ip['web2']}/") == "200"

        ssh_opts = [
            "-i",
            str(lab.services.client_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ]
        ssh_opts += ["-o", "UserKnownHostsFile=/dev/null"]
        assert run("ssh", *ssh_opts, f"{creds['ssh'][0]}@{ip['ssh']}", "echo lab-ok").strip() == "lab-ok"

        ftp_user, ftp_password = creds["ftp"]
        listing = run("curl", "-sS", "--max-time", "10", f"ftp://{ftp_user}:{ftp_password}@{ip['ftp']}/pub/")
        assert "firmware-00.bin" in listing

        assert run("dig", "+short", f"@{ip['dns']}", "web.lab.internal").strip() == ip["web"]
        assert "NXDOMAIN" in run("dig", f"@{ip['dns']}", "no-such-host.lab.internal")

        subscriber = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "mosquitto_sub",
                "-h",
                ip["mqtt"],
                "-t",
                "t/x",
                "-C",
                "1",
                "-W",
                "10",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        run("mosquitto_pub", "-h", ip["mqtt"], "-t", "t/x", "-m", "hello-lab")
        assert subscriber.communicate(timeout=15)[0].strip() == "hello-lab"

        assert ip["ntp"] in run("ntpdig", "-t", "3", ip["ntp"])
        # The reflector answers at any address of its block, from that address (dig and ntpdig refuse a reply
        # from another one).
        assert run("dig", "+short", "+tries=1", "@198.18.70.9", "mirror.internal", "TXT").count('"') >= 16
        assert "198.18.90.200" in run("ntpdig", "-t", "3", "198.18.90.200")
        prefix = lab.topology.prefix
    assert not any(leftovers(prefix).values()), leftovers(prefix)


# Each password service, the benign client action that logs in to it, and what the service answers a wrong password
# with (the action's error carries it).
LOGIN_ACTIONS = {
    "telnet_session": "telnet login as",
    "imap_read": "AUTHENTICATIONFAILED",
    "pop3_read": "Authentication failed",
    "mariadb_query": "Access denied",
    "postgres_query": "password authentication failed",
}
# daemon -> (lab host, ports)
LOGIN_DAEMONS = {
    "telnetd": ("telnet", [23]),
    "dovecot": ("mail", [143, 110]),
    "mariadbd": ("db", [3306]),
    "postgres": ("db", [5432]),
}
# One benign action, run in a client namespace: `python -c CLIENT CONFIG.json ACTION`.
CLIENT = (
    "import json, sys\n"
    "from packetclip_training.lab.benign import Agent, AgentConfig\n"
    "getattr(Agent(AgentConfig(**json.loads(open(sys.argv[1]).read()))), sys.argv[2])()\n"
)


def test_login_services_listen_in_the_lab_and_take_only_the_right_password(
    lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]], tmp_path: Path
) -> None:
    with LabSession(seed=5) as lab:
        assert lab.services is not None
        daemons = {daemon.name: daemon for daemon in lab.services.daemons}
        for name, (host, ports) in LOGIN_DAEMONS.items():
            namespace = lab.topology.ns(host)
            process = daemons[name].process
            assert process is not None
            identify = subprocess.run(
                ["ip", "netns", "identify", str(process.pid)], capture_output=True, text=True
            )
            assert identify.stdout.strip() == namespace, name
            listening = subprocess.run(
                ["ip", "netns", "exec", namespace, "ss", "-Hltn"], capture_output=True, text=True
            ).stdout
            bound = {line.split()[3] for line in listening.splitlines()}
            for port in ports:
                # The server's lab address, never a wildcard.
                assert f"{lab.topology.host(host).ip}:{port}" in bound, (name, bound)
                assert not {f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"} & bound, (name, bound)

        config = asdict(benign_configs(lab, PROFILES["quick"], 5, tmp_path)[0])
        right = tmp_path / "right.json"
        right.write_text(json.dumps(config))
        wrong = tmp_path / "wrong.json"
        wrong_credentials = {
            service: [user, password + "9"] for service, (user, password) in config["credentials"].items()
        }
        wrong.write_text(json.dumps({**config, "credentials": wrong_credentials}))
        # Telnet opens lab accounts only: root is refused even with the lab account's password.
        not_lab = tmp_path / "root.json"
        root_credentials = {**config["credentials"], "telnet": ["root", config["credentials"]["telnet"][1]]}
        not_lab.write_text(json.dumps({**config, "credentials": root_credentials}))

        def start(config_path: Path, action: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    lab.topology.ns(config["host"]),
                    sys.executable,
                    "-c",
                    CLIENT,
                    str(config_path),
                    action,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "TMPDIR": str(tmp_path)},
            )

        for action in LOGIN_ACTIONS:
            accepted = start(right, action)
            _, errors = accepted.communicate(timeout=60)
            assert accepted.returncode == 0, f"{action}: {errors[-600:]}"
        # A refusal costs the server's delay (2 s for Telnet and dovecot): all of them at once.
        refusals = {(action, refusal): start(wrong, action) for action, refusal in LOGIN_ACTIONS.items()}
        refusals["telnet as root", "telnet login as root refused"] = start(not_lab, "telnet_session")
        for (action, refusal), client in refusals.items():
            _, errors = client.communicate(timeout=60)
            assert client.returncode != 0 and refusal in errors, f"{action}: {errors[-600:]}"
        prefix = lab.topology.prefix
    assert not any(leftovers(prefix).values()), leftovers(prefix)


def _connections_to(pcap: Path, server: str) -> list[tuple[float, int]]:
    """(first SYN time, payload bytes the client sent) of each TCP connection towards `server`, by start."""
    started: dict[tuple[bytes, int], float] = {}
    sent: dict[tuple[bytes, int], int] = {}
    target = socket.inet_aton(server)
    with pcap.open("rb") as handle:
        for ts, frame in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP) or ip.dst != target:
                continue
            key = (ip.src, ip.data.sport)
            if ip.data.flags & dpkt.tcp.TH_SYN:
                started.setdefault(key, ts)
            sent[key] = sent.get(key, 0) + len(ip.data.data)
    return sorted((ts, sent[key]) for key, ts in started.items())


def test_browser_page_opens_parallel_connections_and_unused_preconnects(
    lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]], tmp_path: Path
) -> None:
    """A browser-like page load: several connections to one server within milliseconds, and some connections
    opened ahead of need that carry nothing (both read as recon by a model that never saw a browser)."""
    pcap = tmp_path / "browser.pcap"
    with LabSession(seed=6) as lab:
        configs = benign_configs(lab, PROFILES["quick"], 6, tmp_path)
        config = next(asdict(c) for c in configs if c.kind == "workstation")
        web = lab.topology.host("web").ip
        tcpdump = ["tcpdump", "-i", SERVER_BRIDGE, "-s", "128", "--immediate-mode", "-U"]
        with router_capture(lab.topology, tcpdump, pcap, f"tcp and host {web}"):
            # https_pages too: its binary files once went to curl's standard output and failed the action
            for seed, action in itertools.product(range(8), ("browser_page", "https_pages")):
                path = tmp_path / f"browser-{seed}.json"
                path.write_text(json.dumps({**config, "seed": seed}))
                client = subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        lab.topology.ns(config["host"]),
                        sys.executable,
                        "-c",
                        CLIENT,
                        str(path),
                        action,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env={**os.environ, "TMPDIR": str(tmp_path)},
                )
                assert client.returncode == 0, client.stderr[-600:]
            time.sleep(0.5)
        prefix = lab.topology.prefix
    assert not any(leftovers(prefix).values()), leftovers(prefix)
    connections = _connections_to(pcap, web)
    starts = np.array([ts for ts, _ in connections])
    # some page load opened at least three connections within 50 ms of each other
    assert any((starts[i + 2] - starts[i]) < 0.05 for i in range(len(starts) - 2)), np.diff(starts)
    assert len(connections) >= 16  # every page load and every https_pages call connected at least once
    unused = sum(1 for _, sent in connections if sent == 0)
    assert unused >= 2 and unused < len(connections) // 2 + 1, (unused, len(connections))
