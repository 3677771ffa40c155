"""Benign background traffic: one agent process per client namespace, randomised from a seed, rate bounded.

This module owns what a benign client does (HTTPS pages and API calls, pages loaded as a browser loads them,
logins, SSH sessions and file copies,
DNS lookups, MQTT telemetry, NTP queries, FTP downloads, Telnet sessions, mailbox reads over IMAP and POP3,
MariaDB and PostgreSQL queries) and the agents' lifecycle seen from the runner (`BenignTraffic`). It knows
nothing of attacks. An agent runs as `python -m packetclip_training.lab.benign CONFIG.json` inside its client
namespace, until SIGTERM; it then writes its counters to the stats file named in its config.
"""

from __future__ import annotations

import contextlib
import ftplib
import imaplib
import json
import logging
import os
import poplib
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from packetclip_training.lab.secrets_and_names import MARIADB_DATABASE, POSTGRES_DATABASE

log = logging.getLogger(__name__)

ACTION_TIMEOUT_S = 20.0  # one action never blocks an agent longer than this
# Share of password logins (Telnet, mail, databases) typed wrong once before the right password: people mistype,
# so one failed login is no attack by itself.
TYPO_RATE = 0.05
# what a lab page links to: other pages, small JSON documents and binary files of 8 KiB to 1 MiB (services.py)
PAGE_ASSETS = (
    *(f"pages/page-{i:02d}.html" for i in range(40)),
    *(f"static/config-{i:02d}.json" for i in range(10)),
    *(f"files/blob-{i:02d}.bin" for i in range(10)),
)
TELNET_PROMPT = b"$ "  # the end of the lab shell's prompt (telnet_login sets it)
TELNET_REFUSED = b"Login incorrect"


@dataclass
class AgentConfig:
    """Everything one agent needs; written as JSON by the runner."""

    host: str  # lab host name of the client
    kind: str  # "workstation" (all services) or "iot" (telemetry, time, names)
    seed: int
    actions_per_second: float  # mean rate of actions (Poisson); bounds the agent's load
    servers: dict[str, str]
    dns_zone: str
    existing_names: list[str]
    missing_names: list[str]
    credentials: dict[str, list[str]]
    ca_cert: str
    client_key: str
    stats_path: str
    run_subscriber: bool = False  # keep one long-lived MQTT subscription (a dashboard) open


@dataclass
class AgentStats:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


class Stop(Exception):
    """SIGTERM reached the agent."""


class Agent:
    """One benign client's behaviour."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.rng = random.Random(f"benign-{config.seed}-{config.host}")
        self.stats = AgentStats()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"benign-{config.host}-"))
        self.web = config.servers["web"]
        self.actions: list[tuple[float, Callable[[], None]]] = self._weighted_actions()

    def _weighted_actions(self) -> list[tuple[float, Callable[[], None]]]:
        if self.config.kind == "iot":
            return [
                (6, self.mqtt_publish),
                (2, self.dns_lookups),
                (1, self.ntp_query),
                (1, self.http_api_post),
            ]
        return [
            (4, self.https_pages),
            (2, self.browser_page),
            (2, self.http_api_get),
            (1.5, self.http_api_post),
            (1, self.form_login),
            (0.5, self.admin_page),
            (1, self.web2_page),
            (1.5, self.ssh_session),
            (1, self.scp_copy),
            (0.5, self.sftp_get),
            (4, self.dns_lookups),
            (1, self.dig_lookup),
            (1.5, self.mqtt_publish),
            (1, self.ntp_query),
            (1, self.ftp_download),
            (0.75, self.telnet_session),
            (0.9, self.imap_read),
            (0.6, self.pop3_read),
            (0.75, self.mariadb_query),
            (0.75, self.postgres_query),
        ]

    # -- loop --------------------------------------------------------------------------------------------------
    def run(self) -> None:
        weights = [weight for weight, _ in self.actions]
        subscriber = self._start_subscriber() if self.config.run_subscriber else None
        try:
            while True:
                time.sleep(max(0.02, self.rng.expovariate(self.config.actions_per_second)))
                (action,) = self.rng.choices([a for _, a in self.actions], weights)
                name = action.__name__
                try:
                    action()
                    self.stats.ok[name] += 1
                except Stop:
                    raise
                except Exception as exc:  # a failed benign action is counted, never fatal to the agent
                    self.stats.failed[name] += 1
                    log.debug("%s %s failed: %s", self.config.host, name, exc)
                if subscriber is not None and subscriber.poll() is not None:
                    subscriber = self._start_subscriber()
        except Stop:
            pass
        finally:
            if subscriber is not None and subscriber.poll() is None:
                subscriber.terminate()
                subscriber.wait(timeout=5)
            Path(self.config.stats_path).write_text(
                json.dumps({"ok": dict(self.stats.ok), "failed": dict(self.stats.failed)})
            )

    def _tool(self, argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=ACTION_TIMEOUT_S,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {result.returncode}: {result.stderr.strip()[-200:]}")
        return result.stdout

    def _curl(self, options: list[str], *urls: str) -> None:
        """curl with `options`, every URL's body discarded (one `-o` per URL: curl writes the bodies of URLs
        without one to its standard output)."""
        base = ["curl", "-sS", "-f", "--max-time", "15", "--cacert", self.config.ca_cert]
        # Names resolve as a browser's would, so TLS carries a server name (SNI) and the certificate matches.
        base += ["--resolve", f"web.{self.config.dns_zone}:443:{self.web}"]
        if self.rng.random() < 0.3:
            base += ["--http1.0"]  # an old client: one connection per request
        self._tool([*base, *options, *(arg for url in urls for arg in ("-o", "/dev/null", url))])

    # -- actions -----------------------------------------------------------------------------------------------
    def https_pages(self) -> None:
        urls = [
            f"https://web.{self.config.dns_zone}/pages/page-{self.rng.randrange(40):02d}.html"
            for _ in range(self.rng.randint(1, 4))
        ]
        if self.rng.random() < 0.3:
            urls.append(f"https://web.{self.config.dns_zone}/files/blob-{self.rng.randrange(10):02d}.bin")
        self._curl([], *urls)

    def browser_page(self) -> None:
        """A page loaded as a browser loads it: the document and its assets over up to six parallel connections
        to one server, opened within milliseconds of each other, and often a few connections opened ahead of
        need (preconnects) that carry nothing and are closed unused when the page is done."""
        scheme = self.rng.choice(("http", "https"))
        host = self.web if scheme == "http" else f"web.{self.config.dns_zone}"
        assets = [
            f"{scheme}://{host}/{asset}" for asset in self.rng.sample(PAGE_ASSETS, self.rng.randint(2, 12))
        ]
        spare: list[socket.socket] = []
        try:
            for _ in range(self.rng.choice((0, 0, 1, 2, 3, 4, 5))):
                spare.append(socket.create_connection((self.web, 80 if scheme == "http" else 443), timeout=5))
            parallel = ["--parallel", "--parallel-immediate", "--parallel-max", str(self.rng.randint(2, 6))]
            page = f"{scheme}://{host}/pages/page-{self.rng.randrange(40):02d}.html"
            self._curl(parallel, page, *assets)
            time.sleep(self.rng.uniform(0.05, 2.0))  # the reader looks at the page; the spare ones idle
        finally:
            for connection in spare:
                connection.close()

    def http_api_get(self) -> None:
        scheme = self.rng.choice(("http", "https"))
        host = self.web if scheme == "http" else f"web.{self.config.dns_zone}"
        urls = [
            f"{scheme}://{host}/api/items/{self.rng.randrange(1000)}" for _ in range(self.rng.randint(1, 3))
        ]
        self._curl([], *urls)

    def http_api_post(self) -> None:
        document = {
            "device": self.config.host,
            "ts": time.time(),
            "values": [round(self.rng.gauss(20, 5), 2) for _ in range(self.rng.randint(1, 60))],
        }
        scheme = self.rng.choice(("http", "https"))
        host = self.web if scheme == "http" else f"web.{self.config.dns_zone}"
        self._curl(
            [
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(document),
            ],
            f"{scheme}://{host}/api/telemetry",
        )

    def form_login(self) -> None:
        user, password = self.config.credentials["http_form"]
        self._curl(
            ["-d", f"username={user}&password={password}"], f"https://web.{self.config.dns_zone}/login"
        )

    def admin_page(self) -> None:
        user, password = self.config.credentials["http_basic"]
        self._curl(["-u", f"{user}:{password}"], f"https://web.{self.config.dns_zone}/admin/")

    def web2_page(self) -> None:
        self._tool(
            [
                "curl",
                "-sS",
                "-f",
                "-o",
                "/dev/null",
                "--max-time",
                "10",
                f"http://{self.config.servers['web2']}/",
            ]
        )

    def _ssh_options(self) -> list[str]:
        return [
            "-i",
            self.config.client_key,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ]

    def _ssh_target(self) -> str:
        return f"{self.config.credentials['ssh'][0]}@{self.config.servers['ssh']}"

    def ssh_session(self) -> None:
        commands = self.rng.sample(
            [
                "uptime",
                "df -h",
                "ls -la",
                "ps aux | head -20",
                "cat /etc/os-release",
                "free -m",
                "id",
                "ls pub | wc -l",
                "date",
                "uname -r",
            ],
            self.rng.randint(1, 4),
        )
        self._tool(["ssh", *self._ssh_options(), self._ssh_target(), "; ".join(commands)])

    def scp_copy(self) -> None:
        if self.rng.random() < 0.5:
            local = self.scratch / f"report-{self.rng.randrange(100)}.dat"
            local.write_bytes(self.rng.randbytes(self.rng.choice((1, 4, 32, 128, 256)) * 1024))
            self._tool(
                ["scp", "-q", *self._ssh_options(), str(local), f"{self._ssh_target()}:upload-{local.name}"]
            )
            local.unlink()
        else:
            remote = f"pub/firmware-{self.rng.randrange(12):02d}.bin"
            self._tool(
                [
                    "scp",
                    "-q",
                    *self._ssh_options(),
                    f"{self._ssh_target()}:{remote}",
                    str(self.scratch / "dl"),
                ]
            )

    def sftp_get(self) -> None:
        remote = f"pub/firmware-{self.rng.randrange(12):02d}.bin"
        self._tool(
            ["sftp", "-q", *self._ssh_options(), "-b", "-", self._ssh_target()],
            stdin=f"get {remote} {self.scratch / 'sftp.bin'}\nls pub\n",
        )

    def dns_lookups(self) -> None:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        for _ in range(self.rng.randint(1, 6)):
            names = self.config.existing_names if self.rng.random() < 0.8 else self.config.missing_names
            name = self.rng.choice(names)
            rdtype = self.rng.choice(("A", "A", "A", "AAAA", "MX", "TXT"))
            query = dns.message.make_query(name, rdtype)
            try:
                if self.rng.random() < 0.05:
                    dns.query.tcp(query, self.config.servers["dns"], timeout=3)
                else:
                    dns.query.udp(query, self.config.servers["dns"], timeout=3)
            except dns.exception.Timeout:
                self.stats.failed["dns_timeout"] += 1

    def dig_lookup(self) -> None:
        name = self.rng.choice(self.config.existing_names + self.config.missing_names[:20])
        self._tool(
            [
                "dig",
                "+tries=1",
                "+time=3",
                f"@{self.config.servers['dns']}",
                name,
                self.rng.choice(("A", "ANY", "SOA", "NS")),
            ]
        )

    def mqtt_publish(self) -> None:
        metric = self.rng.choice(("temperature", "humidity", "battery", "motion", "door"))
        payload = json.dumps(
            {"device": self.config.host, metric: round(self.rng.uniform(0, 100), 1), "ts": time.time()}
        )
        argv = [
            "mosquitto_pub",
            "-h",
            self.config.servers["mqtt"],
            "-t",
            f"telemetry/{self.config.host}/{metric}",
        ]
        argv += ["-m", payload, "-q", str(self.rng.choice((0, 0, 1))), "-i", f"{self.config.host}-{metric}"]
        if self.rng.random() < 0.2:
            argv.append("-r")  # retained: a dashboard gets the last value on subscribe
        self._tool(argv)

    def _start_subscriber(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                self.config.servers["mqtt"],
                "-t",
                "telemetry/#",
                "-i",
                f"{self.config.host}-dash",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ntp_query(self) -> None:
        if self.rng.random() < 0.5:
            self._tool(["ntpdig", "-t", "3", self.config.servers["ntp"]])
            return
        # A minimal SNTPv4 client request (mode 3), as small devices send.
        packet = struct.pack("!B39x", (0 << 6) | (4 << 3) | 3) + struct.pack(
            "!II", int(time.time()) + 2208988800, 0
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(packet, (self.config.servers["ntp"], 123))
            reply, _ = sock.recvfrom(512)
        if len(reply) < 48:
            raise RuntimeError(f"short NTP reply ({len(reply)} bytes)")

    def ftp_download(self) -> None:
        user, password = self.config.credentials["ftp"]
        with ftplib.FTP(self.config.servers["ftp"], timeout=10) as ftp:
            ftp.login(user, password)
            ftp.cwd("pub")
            if self.rng.random() < 0.5:
                ftp.nlst()
            name = f"firmware-{self.rng.randrange(12):02d}.bin"
            received = bytearray()
            ftp.retrbinary(f"RETR {name}", received.extend)

    # -- password logins: Telnet, mail, databases ---------------------------------------------------------------
    def _mistypes(self) -> bool:
        return self.rng.random() < TYPO_RATE

    @staticmethod
    def _mistyped(password: str) -> str:
        return password[:-1] if len(password) > 1 else password + "x"

    def telnet_session(self) -> None:
        """Log in on the Telnet server (after a typo now and then), run a command or two, log out."""
        user, password = self.config.credentials["telnet"]
        commands = self.rng.sample(
            ["uptime", "df -h", "ls -la", "free -m", "id", "date", "ls pub | wc -l"], 2
        )
        with TelnetClient(self.config.servers["telnet"]) as telnet:
            attempts = [self._mistyped(password), password] if self._mistypes() else [password]
            for index, attempt in enumerate(attempts):
                telnet.read_until(b"login: ")
                telnet.send_line(user)
                telnet.read_until(b"Password: ")
                telnet.send_line(attempt)
                answer = telnet.read_until(TELNET_PROMPT, TELNET_REFUSED)
                if answer == TELNET_REFUSED and index == len(attempts) - 1:
                    raise RuntimeError(f"telnet login as {user} refused")
            for command in commands[: self.rng.randint(1, 2)]:
                telnet.send_line(command)
                telnet.read_until(TELNET_PROMPT)
            telnet.send_line("exit")
            telnet.read_to_end()

    def imap_read(self) -> None:
        """Open the mailbox over IMAP: list it, fetch a few headers or whole messages (read-only or not)."""
        user, password = self.config.credentials["imap"]
        with imaplib.IMAP4(self.config.servers["mail"], timeout=10) as imap:
            if self._mistypes():
                with contextlib.suppress(imaplib.IMAP4.error):
                    imap.login(user, self._mistyped(password))
            imap.login(user, password)
            imap.select("INBOX", readonly=self.rng.random() < 0.5)
            _, found = imap.search(None, "ALL")
            numbers = found[0].split()
            part = self.rng.choice(("(BODY.PEEK[HEADER])", "(FLAGS BODY.PEEK[])"))
            for number in self.rng.sample(numbers, min(len(numbers), self.rng.randint(1, 4))):
                imap.fetch(number.decode(), part)

    def pop3_read(self) -> None:
        """Check the mailbox over POP3: stat, list, retrieve one to three messages and leave them there."""
        user, password = self.config.credentials["pop3"]
        pop = poplib.POP3(self.config.servers["mail"], timeout=10)
        try:
            if self._mistypes():
                pop.user(user)
                with contextlib.suppress(poplib.error_proto):
                    pop.pass_(self._mistyped(password))
            pop.user(user)
            pop.pass_(password)
            count, _ = pop.stat()
            pop.list()
            for number in self.rng.sample(range(1, count + 1), min(count, self.rng.randint(1, 3))):
                pop.retr(number)  # no DELE: the mailbox keeps its messages for the next reader
        finally:
            with contextlib.suppress(OSError, poplib.error_proto):
                pop.quit()

    def mariadb_query(self) -> None:
        """An application's few statements on MariaDB's inventory table (reads, now and then an update)."""
        user, password = self.config.credentials["mysql"]
        statements = self.rng.sample(
            [
                "SELECT COUNT(*) FROM items",
                f"SELECT * FROM items WHERE qty < {self.rng.randint(1, 10)}",
                f"SELECT name, qty FROM items WHERE id = {self.rng.randint(1, 60)}",
                f"UPDATE items SET qty = qty + 1 WHERE id = {self.rng.randint(1, 60)}",
                "SHOW TABLES",
            ],
            self.rng.randint(1, 3),
        )
        server = self.config.servers["db"]
        argv = [
            "mariadb",
            "--no-defaults",
            "--connect-timeout=10",
            "-h",
            server,
            "-u",
            user,
            "-D",
            MARIADB_DATABASE,
        ]
        if self._mistypes():
            with contextlib.suppress(RuntimeError):
                self._tool([*argv, "-e", "SELECT 1"], env={"MYSQL_PWD": self._mistyped(password)})
        self._tool([*argv, "-e", "; ".join(statements)], env={"MYSQL_PWD": password})

    def postgres_query(self) -> None:
        """A dashboard's few statements on PostgreSQL's readings table (aggregates, now and then an insert)."""
        user, password = self.config.credentials["postgres"]
        statements = self.rng.sample(
            [
                "SELECT sensor, avg(value) FROM readings GROUP BY sensor",
                "SELECT count(*) FROM readings WHERE taken > now() - interval '1 hour'",
                f"INSERT INTO readings VALUES ('{self.config.host}', now(), {self.rng.uniform(5, 35):.2f})",
                "SELECT * FROM readings ORDER BY taken DESC LIMIT 20",
            ],
            self.rng.randint(1, 3),
        )
        argv = [
            "psql",
            "-X",
            "-q",
            "-w",
            "-h",
            self.config.servers["db"],
            "-U",
            user,
            "-d",
            POSTGRES_DATABASE,
        ]
        if self._mistypes():
            with contextlib.suppress(RuntimeError):
                self._tool([*argv, "-c", "SELECT 1"], env={"PGPASSWORD": self._mistyped(password)})
        commands = [word for statement in statements for word in ("-c", statement)]
        self._tool([*argv, *commands], env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"})


class TelnetClient:
    """The little of a Telnet client that a scripted session needs: it refuses every option the server asks
    for except echo and suppress-go-ahead from the server's side (what interactive clients accept), and reads
    until one of some markers arrives."""

    IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
    ACCEPTED = frozenset({1, 3})  # the server may echo and suppress go-ahead

    def __init__(self, host: str, port: int = 23, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = bytearray()  # data bytes not consumed yet, negotiation removed
        self._pending = b""  # an incomplete command at the end of the last read

    def __enter__(self) -> TelnetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def read_until(self, *markers: bytes) -> bytes:
        """Read until one of `markers` has arrived; returns it, drops the data up to and including it."""
        while True:
            hits = [(self.buffer.find(m), m) for m in markers if m in self.buffer]
            if hits:
                position, marker = min(hits)
                del self.buffer[: position + len(marker)]
                return marker
            if not self._receive():
                raise RuntimeError(f"telnet connection closed before {markers!r}")

    def read_to_end(self) -> None:
        while self._receive():
            pass

    def _receive(self) -> bool:
        chunk = self.sock.recv(4096)
        if not chunk:
            return False
        data = self._pending + chunk
        self._pending = b""
        index = 0
        while index < len(data):
            byte = data[index]
            if byte != self.IAC:
                self.buffer.append(byte)
                index += 1
                continue
            if index + 1 >= len(data):
                self._pending = data[index:]
                break
            command = data[index + 1]
            if command == self.IAC:
                self.buffer.append(self.IAC)
                index += 2
            elif command in (self.DO, self.DONT, self.WILL, self.WONT):
                if index + 2 >= len(data):
                    self._pending = data[index:]
                    break
                self._answer(command, data[index + 2])
                index += 3
            elif command == self.SB:
                end = data.find(bytes([self.IAC, self.SE]), index)
                if end < 0:
                    self._pending = data[index:]
                    break
                index = end + 2
            else:
                index += 2
        return True

    def _answer(self, command: int, option: int) -> None:
        if command == self.DO:
            self.sock.sendall(bytes([self.IAC, self.WONT, option]))
        elif command == self.WILL:
            reply = self.DO if option in self.ACCEPTED else self.DONT
            self.sock.sendall(bytes([self.IAC, reply, option]))


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m packetclip_training.lab.benign CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AgentConfig(**json.loads(Path(args[0]).read_text()))
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    agent = Agent(config)
    try:
        agent.run()
    finally:
        for path in agent.scratch.iterdir():
            path.unlink()
        agent.scratch.rmdir()
    return 0


class BenignTraffic:
    """The runner's handle on all agents: start them in their namespaces, stop them, collect their counters."""

    def __init__(self, configs: list[AgentConfig], namespaces: dict[str, str], workdir: Path) -> None:
        self.configs = configs
        self.namespaces = namespaces  # host -> namespace
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for config in self.configs:
            config_path = self.workdir / f"{config.host}.json"
            config_path.write_text(json.dumps(asdict(config)))
            with (self.workdir / f"{config.host}.log").open("wb") as out:
                self.processes[config.host] = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        self.namespaces[config.host],
                        sys.executable,
                        "-m",
                        "packetclip_training.lab.benign",
                        str(config_path),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, "TMPDIR": str(self.workdir)},
                )
        log.info("benign traffic from %d clients", len(self.processes))

    def stop(self) -> dict[str, dict[str, dict[str, int]]]:
        """SIGTERM every agent's process group (children die with it), SIGKILL after a grace; counters by host."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for host, process in self.processes.items():
            try:
                process.wait(timeout=ACTION_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("benign agent %s ignored SIGTERM; killing it", host)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        stats = {}
        for config in self.configs:
            path = Path(config.stats_path)
            stats[config.host] = json.loads(path.read_text()) if path.exists() else {"ok": {}, "failed": {}}
        return stats


if __name__ == "__main__":
    sys.exit(main())
