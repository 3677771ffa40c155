"""The lab's servers: real Debian daemons, each in its own server namespace, configured from a temp dir.

This module owns the daemons' configuration files, the lab's host account, TLS and SSH key material, the web
content, starting each daemon (no systemd) and waiting until its ports are open, and stopping them. It does
not build namespaces (`topology.py`) nor generate traffic.

Daemons: nginx (80, 443 with a lab-CA certificate, /admin/ basic auth, /api/ and /login proxied to the lab web
app), the lab web app on :8080, apache2 (:80 on web2), sshd (password and key auth), vsftpd (local users,
passive ports 40000-40019), dnsmasq (authoritative for the lab zone, NXDOMAIN for everything else), mosquitto
(1883), chronyd as an NTP server (-x: never touches the host clock), busybox telnetd (:23, logging in through
`telnet_login`, the lab account only), dovecot (IMAP :143 and POP3 :110 in clear text, one mailbox from a
passwd-file, no host account), MariaDB (:3306) and PostgreSQL (:5432, SCRAM passwords), each database created in
the run's temp dir when the lab starts, with one application user and a small table. On the reflector host (when
the topology has one): a second dnsmasq, an open server answering anyone with large TXT records for the reflector zone, and a
second chronyd answering anyone: the amplifiers that reflection episodes send spoofed requests to, at the
reflector's own address or at any address of the reflector block it owns (`topology.REFLECTOR_NET`).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from packetclip_training.lab.secrets_and_names import (
    DNS_ZONE,
    LAB_USER,
    LAB_USER_GECOS,
    MARIADB_DATABASE,
    POSTGRES_DATABASE,
    REFLECTOR_ZONE,
    LabSecrets,
)
from packetclip_training.lab.telnet_login import account_line
from packetclip_training.lab.topology import Topology, kill_namespace_processes, list_namespaces, run_cmd

log = logging.getLogger(__name__)

FTP_PASSIVE_PORTS = (40000, 40019)
# The reflector's TXT records: enough that one ~60-byte query with EDNS0 draws a ~1,200-byte answer (about 20x,
# the amplification of a real open resolver's large TXT/ANY answers), still below one Ethernet frame.
REFLECTOR_TXT_RECORDS = 8
REFLECTOR_TXT_LENGTH = 130
READY_TIMEOUT_S = 20.0
# Creating the two databases (mariadb-install-db, initdb) takes a few seconds, more on a busy machine.
DATABASE_INIT_TIMEOUT_S = 120.0
# Debian installs each PostgreSQL major version's server programs here, off PATH.
POSTGRES_LIB = Path("/usr/lib/postgresql")
# PostgreSQL's programs refuse to run as root; setpriv execs them as its account (no extra process).
AS_POSTGRES = ("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--")


def postgres_program(name: str) -> str:
    """Path of `name` (initdb, postgres) of the newest PostgreSQL installed, or the bare name when none is."""
    found = sorted(
        (path for path in POSTGRES_LIB.glob(f"*/bin/{name}") if path.parts[-3].isdigit()),
        key=lambda path: int(path.parts[-3]),
    )
    return str(found[-1]) if found else name


def sql_literal(text: str) -> str:
    """`text` as a single-quoted SQL literal. Quotes and backslashes, which MariaDB and PostgreSQL read
    differently, are refused: the lab's names and passwords never hold them."""
    if "'" in text or "\\" in text:
        raise ValueError(f"no quotes or backslashes in lab SQL values: {text!r}")
    return f"'{text}'"


@dataclass
class Daemon:
    """One service process in one namespace and the ports that prove it is ready."""

    name: str
    host: str  # lab host (namespace suffix)
    argv: list[str]
    ports: list[tuple[str, int]]  # ("tcp"|"udp", port) that must be listening
    # A command run in the daemon's namespace that exits 0 once the service answers (listening is not enough
    # for a database still starting up); None: listening ports suffice.
    probe: list[str] | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    version_of: str = ""  # the program whose version run.json records, when argv[0] is a launcher
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


@dataclass
class Services:
    """All daemons of one lab; `start()` writes configs, creates the account and waits for readiness."""

    topology: Topology
    secrets: LabSecrets
    root: Path  # the run's temp dir (world-readable: www-data and the lab user read from it)
    seed: int = 0
    daemons: list[Daemon] = field(default_factory=list)
    user_created: bool = False
    made_sshd_dir: bool = False

    @property
    def ca_cert(self) -> Path:
        return self.root / "tls" / "ca.crt"

    @property
    def client_key(self) -> Path:
        return self.root / "ssh" / "client_key"

    @property
    def home(self) -> Path:
        return self.root / "home" / LAB_USER

    def ip(self, host: str) -> str:
        return self.topology.host(host).ip

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Prepare everything, start every daemon, wait until all ports listen; stop everything on failure."""
        try:
            self._create_account()
            self._make_tls()
            self._make_ssh_keys()
            self._make_content()
            self._make_telnet_login()
            self._make_mailbox()
            self._make_mariadb()
            self._make_postgres()
            self.daemons = self._daemons()
            for daemon in self.daemons:
                self._launch(daemon)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every daemon (its stop signal to its process group, SIGKILL after a grace), then whatever its
        sessions left in the server namespaces (a Telnet shell runs in a session of its own), and remove the
        account."""
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                _kill_group(daemon.process, daemon.stop_signal)
        present = set(list_namespaces())
        for host in sorted({daemon.host for daemon in self.daemons}):
            if self.topology.ns(host) in present:
                kill_namespace_processes(self.topology.ns(host))
        if self.user_created:
            run_cmd(["userdel", LAB_USER], check=False)
            self.user_created = False
        if self.made_sshd_dir:
            # Only the empty privilege-separation dir sshd needs, and only when this run made it.
            Path("/run/sshd").rmdir()
            self.made_sshd_dir = False

    # -- preparation -------------------------------------------------------------------------------------------
    def _create_account(self) -> None:
        try:
            existing = pwd.getpwnam(LAB_USER)
        except KeyError:
            existing = None
        if existing is not None:
            raise RuntimeError(
                f"host account {LAB_USER!r} already exists ({existing.pw_gecos!r}); "
                "run `packetclip-train lab clean` if a crashed lab left it, else remove it yourself"
            )
        self.home.parent.mkdir(parents=True, exist_ok=True)
        run_cmd(["useradd", "-M", "-d", str(self.home), "-s", "/bin/bash", "-c", LAB_USER_GECOS, LAB_USER])
        self.user_created = True
        self.home.mkdir(mode=0o755)
        _, password = self.secrets.credentials["ssh"]
        subprocess.run(["chpasswd"], input=f"{LAB_USER}:{password}\n", text=True, check=True)
        rng = random.Random(f"ftp-files-{self.seed}")
        pub = self.home / "pub"
        pub.mkdir()
        for index in range(12):
            (pub / f"firmware-{index:02d}.bin").write_bytes(
                rng.randbytes(rng.choice((2, 16, 64, 200)) * 1024)
            )
        user = pwd.getpwnam(LAB_USER)
        for path in (self.home, pub, *pub.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)

    def _make_tls(self) -> None:
        tls = self.root / "tls"
        tls.mkdir()
        web_ip = self.ip("web")
        openssl = ["openssl"]
        run_cmd(
            [
                *openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(tls / "ca.key"),
                "-out",
                str(self.ca_cert),
                "-days",
                "3",
                "-subj",
                "/O=packetclip lab/CN=packetclip lab CA",
            ]
        )
        run_cmd(
            [
                *openssl,
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(tls / "web.key"),
                "-out",
                str(tls / "web.csr"),
                "-subj",
                f"/CN=web.{DNS_ZONE}",
            ]
        )
        (tls / "san.ext").write_text(f"subjectAltName=DNS:web.{DNS_ZONE},DNS:www.{DNS_ZONE},IP:{web_ip}\n")
        run_cmd(
            [
                *openssl,
                "x509",
                "-req",
                "-in",
                str(tls / "web.csr"),
                "-CA",
                str(self.ca_cert),
                "-CAkey",
                str(tls / "ca.key"),
                "-CAcreateserial",
                "-out",
                str(tls / "web.crt"),
                "-days",
                "3",
                "-extfile",
                str(tls / "san.ext"),
            ]
        )

    def _make_ssh_keys(self) -> None:
        ssh = self.root / "ssh"
        ssh.mkdir()
        for kind in ("ed25519", "rsa", "ecdsa"):
            run_cmd(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(ssh / f"host_{kind}")])
        run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)])
        (ssh / f"authorized_keys_{LAB_USER}").write_text((ssh / "client_key.pub").read_text())

    def _make_content(self) -> None:
        rng = random.Random(f"web-content-{self.seed}")
        www = self.root / "www"
        for sub in ("pages", "files", "admin", "static"):
            (www / sub).mkdir(parents=True)
        (www / "index.html").write_text("<html><body><h1>Lab intranet</h1></body></html>\n")
        (www / "admin" / "index.html").write_text("<html><body>admin console</body></html>\n")
        for index in range(40):
            words = " ".join(
                rng.choice(("alpha", "beta", "gamma", "delta", "status", "report")) for _ in range(20)
            )
            paragraphs = "".join(f"<p>{index} {words}</p>\n" for _ in range(rng.choice((2, 20, 200, 1500))))
            (www / "pages" / f"page-{index:02d}.html").write_text(f"<html><body>{paragraphs}</body></html>\n")
        for index in range(10):
            (www / "files" / f"blob-{index:02d}.bin").write_bytes(
                rng.randbytes(rng.choice((8, 64, 256, 1024)) * 1024)
            )
        for index in range(10):
            (www / "static" / f"config-{index:02d}.json").write_text(
                json.dumps({"version": index, "ok": True}) + "\n"
            )
        www2 = self.root / "www2"
        www2.mkdir()
        (www2 / "index.html").write_text("<html><body>legacy portal</body></html>\n")
        (self.root / "webapp.credentials").write_text(":".join(self.secrets.credentials["http_form"]) + "\n")
        user, password = self.secrets.credentials["http_basic"]
        hashed = run_cmd(["openssl", "passwd", "-apr1", password]).stdout.strip()
        (self.root / "htpasswd").write_text(f"{user}:{hashed}\n")

    def _make_telnet_login(self) -> None:
        """The accounts file and the login program busybox telnetd runs (it takes a program, no arguments)."""
        telnet = self.root / "telnet"
        telnet.mkdir()
        user, password = self.secrets.credentials["telnet"]
        accounts = telnet / "accounts"
        accounts.write_text(account_line(user, password, os.urandom(16)) + "\n")
        accounts.chmod(0o600)
        login = telnet / "login"
        login.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m packetclip_training.lab.telnet_login {accounts} telnet\n"
        )
        login.chmod(0o755)
        # What telnetd shows before the login prompt; /etc/issue would name the machine the lab runs on.
        (telnet / "issue").write_text("Debian GNU/Linux 12\n\n")

    def _make_mailbox(self) -> None:
        """The mailbox's password (SHA512-CRYPT, dovecot's passwd-file) and a Maildir of seeded messages, owned
        by the lab account (dovecot reads mail as some uid; the lab's is the one that exists)."""
        dovecot = self.root / "dovecot"
        dovecot.mkdir()
        user, password = self.secrets.credentials["imap"]
        hashed = run_cmd(["openssl", "passwd", "-6", password]).stdout.strip()
        (dovecot / "users").write_text(f"{user}:{hashed}::::::\n")
        rng = random.Random(f"mailbox-{self.seed}")
        maildir = self.root / "mail" / user / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        senders = ("billing@supplier.example", "alerts@monitoring.lab.internal", "hr@lab.internal")
        subjects = ("Invoice", "Disk usage report", "Backup finished", "Meeting notes", "Order confirmation")
        vocabulary = ("order", "status", "attached", "please", "review", "weekly", "total")
        started = int(time.time()) - 30 * 86400
        for index in range(24):
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.choice((20, 80, 400))))
            body = "\r\n".join(textwrap.wrap(words, 72))  # mail lines stay short (RFC 5322)
            stamp = started + index * 3600 * rng.randint(6, 30)
            message = (
                f"From: {rng.choice(senders)}\r\nTo: {user}@{DNS_ZONE}\r\n"
                f"Subject: {rng.choice(subjects)} #{index}\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(stamp))}\r\n"
                f"Message-ID: <{index}.{stamp}@{DNS_ZONE}>\r\n\r\n{body}\r\n"
            )
            # The last few are unread (new/), the others read (cur/ with the Seen flag).
            name = f"{stamp}.M{index}P1.mail"
            path = maildir / "new" / name if index >= 20 else maildir / "cur" / f"{name}:2,S"
            path.write_text(message)
        account = pwd.getpwnam(LAB_USER)
        for path in (maildir.parent, maildir, *maildir.rglob("*")):
            os.chown(path, account.pw_uid, account.pw_gid)

    def _make_mariadb(self) -> None:
        """A fresh data directory (mariadb-install-db, root by socket only), the lab database with a table, and
        the file of statements that creates the application user at every start (`--init-file`: users cannot
        be created while the tables are bootstrapped)."""
        d, ip = self.root / "mariadb", self.ip("db")
        d.mkdir()
        mysql = pwd.getpwnam("mysql")
        os.chown(d, mysql.pw_uid, mysql.pw_gid)
        self._conf(
            "mariadb.cnf",
            f"""[mariadbd]
user = mysql
datadir = {d}/data
socket = {d}/mariadbd.sock
pid-file = {d}/mariadbd.pid
tmpdir = {d}
bind-address = {ip}
port = 3306
skip-name-resolve
skip-log-bin
innodb_buffer_pool_size = 16M
innodb_log_file_size = 4M
max_connections = 300
# A stock server blocks an address after 100 interrupted connections until FLUSH HOSTS; guessing episodes of a
# whole run come from the same three attackers.
max_connect_errors = 1000000
""",
        )
        rng = random.Random(f"mariadb-rows-{self.seed}")
        rows = ",".join(
            f"({index},{sql_literal(rng.choice(('cable', 'switch', 'sensor', 'camera', 'battery')))},"
            f"{rng.randint(0, 40)})"
            for index in range(1, 61)
        )
        # mariadb-install-db runs one statement per line.
        self._conf(
            "mariadb-data.sql",
            f"""CREATE DATABASE {MARIADB_DATABASE};
CREATE TABLE {MARIADB_DATABASE}.items (id INT PRIMARY KEY, name VARCHAR(40), qty INT);
INSERT INTO {MARIADB_DATABASE}.items VALUES {rows};
""",
        )
        user, password = self.secrets.credentials["mysql"]
        users = self._conf(
            "mariadb-users.sql",
            f"""CREATE USER IF NOT EXISTS {sql_literal(user)}@'%' IDENTIFIED BY {sql_literal(password)};
GRANT SELECT, INSERT, UPDATE, DELETE ON {MARIADB_DATABASE}.* TO {sql_literal(user)}@'%';
""",
        )
        users.chmod(0o640)
        os.chown(users, 0, mysql.pw_gid)
        self._in_namespace(
            "db",
            [
                "mariadb-install-db",
                f"--defaults-file={self.root / 'conf' / 'mariadb.cnf'}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                f"--extra-file={self.root / 'conf' / 'mariadb-data.sql'}",
            ],
        )

    def _make_postgres(self) -> None:
        """A fresh cluster (initdb) with the lab database, its owner (a SCRAM password) and a table, all made in
        single-user mode before the server first listens."""
        d, ip = self.root / "postgres", self.ip("db")
        d.mkdir()
        postgres = pwd.getpwnam("postgres")
        os.chown(d, postgres.pw_uid, postgres.pw_gid)
        conf = self._conf(
            "postgresql.conf",
            f"""data_directory = '{d}/data'
hba_file = '{self.root}/conf/pg_hba.conf'
ident_file = '{self.root}/conf/pg_ident.conf'
listen_addresses = '{ip}'
port = 5432
# The readiness probe's socket; no lab traffic goes through it.
unix_socket_directories = '{d}'
password_encryption = 'scram-sha-256'
ssl = off
max_connections = 200
shared_buffers = 16MB
# Segments in the data directory, removed with the run (posix ones would outlive a killed server in /dev/shm).
dynamic_shared_memory_type = mmap
# A throwaway cluster: nothing here has to survive a crash of the machine.
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_destination = 'stderr'
""",
        )
        self._conf(
            "pg_hba.conf",
            "local all postgres peer\nhost all all 198.18.0.0/15 scram-sha-256\n",
        )
        self._conf("pg_ident.conf", "")
        initdb = [postgres_program("initdb"), "-D", f"{d}/data", "-U", "postgres", "-A", "peer", "-E", "UTF8"]
        self._in_namespace("db", [*AS_POSTGRES, *initdb, "--no-sync", "--no-instructions"])
        user, password = self.secrets.credentials["postgres"]
        rng = random.Random(f"postgres-rows-{self.seed}")
        rows = ",".join(
            f"({sql_literal(rng.choice(('boiler', 'hall', 'lab', 'roof')))},"
            f"now() - interval '{index} minutes',{rng.uniform(5, 35):.2f})"
            for index in range(120)
        )
        single = [*AS_POSTGRES, postgres_program("postgres"), "--single", "-c", f"config_file={conf}"]
        # Single-user mode runs one statement per line and reports errors without failing.
        for database, statements in (
            (
                "postgres",
                f"CREATE ROLE {user} LOGIN PASSWORD {sql_literal(password)};\n"
                f"CREATE DATABASE {POSTGRES_DATABASE} OWNER {user};\n",
            ),
            (
                POSTGRES_DATABASE,
                "CREATE TABLE readings (sensor text, taken timestamptz, value real);\n"
                f"INSERT INTO readings VALUES {rows};\n"
                f"ALTER TABLE readings OWNER TO {user};\n",
            ),
        ):
            out = self._in_namespace("db", [*single, database], stdin=statements)
            if "ERROR:" in out:
                raise RuntimeError(f"creating the PostgreSQL lab database failed: {out[-400:]}")

    def _in_namespace(self, host: str, argv: list[str], stdin: str | None = None) -> str:
        """Run a preparation command inside `host`'s namespace (nothing it might open reaches the host's
        network); its output, or RuntimeError naming it."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.topology.ns(host), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=DATABASE_INIT_TIMEOUT_S,
            check=False,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-400:]}"
            )
        return result.stdout + result.stderr

    # -- daemons -----------------------------------------------------------------------------------------------
    def _daemons(self) -> list[Daemon]:
        return [
            Daemon("nginx", "web", self._nginx(), [("tcp", 80), ("tcp", 443)]),
            Daemon(
                "webapp",
                "web",
                [
                    sys.executable,
                    "-m",
                    "packetclip_training.lab.webapp",
                    "--bind",
                    self.ip("web"),
                    "--port",
                    "8080",
                    "--credentials",
                    str(self.root / "webapp.credentials"),
                ],
                [("tcp", 8080)],
            ),
            Daemon("apache2", "web2", self._apache(), [("tcp", 80)]),
            Daemon("sshd", "ssh", self._sshd(), [("tcp", 22)]),
            Daemon("vsftpd", "ftp", self._vsftpd(), [("tcp", 21)]),
            Daemon("dnsmasq", "dns", self._dnsmasq(), [("udp", 53), ("tcp", 53)]),
            Daemon("mosquitto", "mqtt", self._mosquitto(), [("tcp", 1883)]),
            Daemon("chronyd", "ntp", self._chronyd(), [("udp", 123)]),
            Daemon("telnetd", "telnet", self._telnetd(), [("tcp", 23)], version_of="busybox"),
            Daemon("dovecot", "mail", self._dovecot(), [("tcp", 143), ("tcp", 110)]),
            self._mariadbd(),
            self._postgres(),
            *self._reflector_daemons(),
        ]

    def _reflector_daemons(self) -> list[Daemon]:
        return [
            daemon
            for host in self.topology.hosts_with_role("reflector")
            for daemon in (
                Daemon(f"dnsmasq-{host.name}", host.name, self._reflector_dnsmasq(host.name), [("udp", 53)]),
                Daemon(f"chronyd-{host.name}", host.name, self._reflector_chronyd(host.name), [("udp", 123)]),
            )
        ]

    def _conf(self, name: str, text: str) -> Path:
        path = self.root / "conf" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    def _nginx(self) -> list[str]:
        d, ip = self.root, self.ip("web")
        (d / "nginx").mkdir()
        temp_paths = "".join(
            f"  {kind}_temp_path {d}/nginx/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = self._conf(
            "nginx.conf",
            f"""user www-data;
worker_processes 1;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{ worker_connections 2048; }}
http {{
  access_log off;
{temp_paths}  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  keepalive_timeout 15;
  server {{
    listen {ip}:80;
    listen {ip}:443 ssl;
    server_name web.{DNS_ZONE} www.{DNS_ZONE};
    ssl_certificate {d}/tls/web.crt;
    ssl_certificate_key {d}/tls/web.key;
    root {d}/www;
    location /admin/ {{ auth_basic "lab admin"; auth_basic_user_file {d}/htpasswd; }}
    location /api/ {{ proxy_pass http://{ip}:8080; proxy_http_version 1.1; }}
    location = /login {{ proxy_pass http://{ip}:8080; }}
  }}
}}
""",
        )
        return [
            "nginx",
            "-c",
            str(conf),
            "-p",
            f"{d}/nginx",
            "-e",
            f"{d}/nginx/error.log",
            "-g",
            "daemon off;",
        ]

    def _apache(self) -> list[str]:
        d, ip = self.root, self.ip("web2")
        (d / "apache2").mkdir()
        modules = "".join(
            f"LoadModule {name}_module /usr/lib/apache2/modules/mod_{name}.so\n"
            for name in ("mpm_event", "authz_core", "mime", "dir", "reqtimeout")
        )
        conf = self._conf(
            "apache2.conf",
            f"""{modules}ServerRoot {d}/apache2
ServerName web2.{DNS_ZONE}
Listen {ip}:80
PidFile {d}/apache2/apache2.pid
ErrorLog {d}/apache2/error.log
DefaultRuntimeDir {d}/apache2
Mutex file:{d}/apache2 default
User www-data
Group www-data
TypesConfig /etc/mime.types
DocumentRoot {d}/www2
DirectoryIndex index.html
# A stock-looking server: the slow-request defaults of a Debian install, so Slowloris behaves as it would there.
Timeout 60
KeepAlive On
KeepAliveTimeout 5
RequestReadTimeout header=20-40,MinRate=500 body=20,MinRate=500
ServerLimit 4
ThreadsPerChild 25
MaxRequestWorkers 100
<Directory {d}/www2>
  Require all granted
</Directory>
""",
        )
        return ["apache2", "-f", str(conf), "-DFOREGROUND"]

    def _sshd(self) -> list[str]:
        d, ip = self.root, self.ip("ssh")
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(mode=0o755)
            self.made_sshd_dir = True
        host_keys = "".join(f"HostKey {d}/ssh/host_{kind}\n" for kind in ("ed25519", "ecdsa", "rsa"))
        conf = self._conf(
            "sshd_config",
            f"""ListenAddress {ip}
Port 22
{host_keys}PidFile {d}/ssh/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {d}/ssh/authorized_keys_%u
StrictModes no
UsePAM yes
PermitRootLogin no
AllowUsers {LAB_USER}
UseDNS no
PrintMotd no
LoginGraceTime 20
MaxAuthTries 6
# Room for dictionary attacks with many parallel tasks; beyond it sshd drops connections early, as real ones do.
MaxStartups 60:30:200
Subsystem sftp internal-sftp
""",
        )
        return ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)]

    def _vsftpd(self) -> list[str]:
        d, ip = self.root, self.ip("ftp")
        empty = d / "vsftpd-empty"
        empty.mkdir(mode=0o755)
        low, high = FTP_PASSIVE_PORTS
        conf = self._conf(
            "vsftpd.conf",
            f"""listen=YES
listen_ipv6=NO
listen_address={ip}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
pam_service_name=vsftpd
secure_chroot_dir={empty}
pasv_enable=YES
pasv_min_port={low}
pasv_max_port={high}
pasv_address={ip}
xferlog_enable=NO
vsftpd_log_file={d}/vsftpd.log
seccomp_sandbox=NO
max_clients=300
max_per_ip=100
ftpd_banner=FTP server ready.
""",
        )
        return ["vsftpd", str(conf)]

    def _dnsmasq(self) -> list[str]:
        d, ip = self.root, self.ip("dns")
        hosts = d / "lab.hosts"
        hosts.write_text("".join(f"{address} {name}\n" for name, address in self.secrets.dns_records.items()))
        conf = self._conf(
            "dnsmasq.conf",
            f"""port=53
listen-address={ip}
bind-interfaces
no-resolv
no-hosts
addn-hosts={hosts}
domain-needed
# No upstream at all: the lab zone is answered from the hosts file, every other name gets NXDOMAIN.
local=/{DNS_ZONE}/
address=/#/
cache-size=2000
dns-forward-max=1000
pid-file={d}/dnsmasq.pid
user=nobody
group=nogroup
""",
        )
        return ["dnsmasq", "-k", "-C", str(conf), "--log-facility=-"]

    def _reflector_dnsmasq(self, host: str) -> list[str]:
        d, ip = self.root, self.ip(host)
        rng = random.Random(f"reflector-txt-{self.seed}")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        # Verification tokens and key material, as the TXT sets that real reflection attacks ask for.
        records = "".join(
            f'txt-record={REFLECTOR_ZONE},"{prefix}{"".join(rng.choice(alphabet) for _ in range(length))}"\n'
            for prefix in ("v=DKIM1; k=rsa; p=", "site-verification=", "ms=", "key=")
            for length in [REFLECTOR_TXT_LENGTH - len(prefix)] * (REFLECTOR_TXT_RECORDS // 4)
        )
        # No listen-address/bind-interfaces: the wildcard socket also takes requests to every address of the
        # reflector block, and dnsmasq answers each from the address it was sent to (IP_PKTINFO), so a flood
        # through many reflector addresses reaches the victim from that many sources.
        conf = self._conf(
            f"dnsmasq-{host}.conf",
            f"""port=53
no-resolv
no-hosts
# An open server: it answers whoever asks, spoofed or not, for its zone and NXDOMAIN for the rest.
local=/{REFLECTOR_ZONE}/
address=/#/
host-record={REFLECTOR_ZONE},{ip}
{records}edns-packet-max=4096
pid-file={d}/dnsmasq-{host}.pid
user=nobody
group=nogroup
""",
        )
        return ["dnsmasq", "-k", "-C", str(conf), "--log-facility=-"]

    def _reflector_chronyd(self, host: str) -> list[str]:
        d = self.root
        # No bindaddress, as for the reflector's dnsmasq: chronyd answers from the address a request was sent to,
        # any of the reflector block's.
        conf = self._conf(
            f"chrony-{host}.conf",
            f"""# An NTP server open to the whole lab range; -x keeps chronyd away from the host's clock.
local stratum 9
allow 198.18.0.0/15
port 123
cmdport 0
pidfile {d}/chronyd-{host}.pid
""",
        )
        return ["chronyd", "-x", "-d", "-f", str(conf), "-u", "_chrony"]

    def _mosquitto(self) -> list[str]:
        ip = self.ip("mqtt")
        conf = self._conf(
            "mosquitto.conf",
            f"""listener 1883 {ip}
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
user mosquitto
""",
        )
        return ["mosquitto", "-c", str(conf)]

    def _chronyd(self) -> list[str]:
        d, ip = self.root, self.ip("ntp")
        conf = self._conf(
            "chrony.conf",
            f"""# Serve time from the local clock; -x on the command line keeps chronyd away from the host's clock.
local stratum 8
allow 198.18.0.0/16
bindaddress {ip}
port 123
cmdport 0
pidfile {d}/chronyd.pid
""",
        )
        return ["chronyd", "-x", "-d", "-f", str(conf), "-u", "_chrony"]

    def _telnetd(self) -> list[str]:
        telnet = self.root / "telnet"
        address = f"{self.ip('telnet')}:23"
        # -K: the connection closes when the login program (then the shell it became) exits.
        login, issue = str(telnet / "login"), str(telnet / "issue")
        return ["busybox", "telnetd", "-F", "-K", "-b", address, "-l", login, "-f", issue]

    def _mariadbd(self) -> Daemon:
        conf = self.root / "conf"
        argv = [
            "mariadbd",
            f"--defaults-file={conf / 'mariadb.cnf'}",
            f"--init-file={conf / 'mariadb-users.sql'}",
        ]
        # Asked over its socket as root (socket authentication): the probe sends nothing over the lab network.
        socket = f"--socket={self.root / 'mariadb' / 'mariadbd.sock'}"
        probe = ["mariadb-admin", "--no-defaults", socket, "--user=root", "--connect-timeout=2", "ping"]
        return Daemon("mariadbd", "db", argv, [("tcp", 3306)], probe=probe)

    def _postgres(self) -> Daemon:
        server = postgres_program("postgres")
        argv = [*AS_POSTGRES, server, "-c", f"config_file={self.root / 'conf' / 'postgresql.conf'}"]
        # Over its socket as the postgres account (peer authentication): nothing crosses the lab network, and
        # the server logs no refused connection.
        socket = ["-h", str(self.root / "postgres"), "-p", "5432", "-U", "postgres", "-d", "postgres"]
        probe = [*AS_POSTGRES, "pg_isready", "-q", *socket, "-t", "2"]
        # Fast shutdown: SIGTERM would wait for every client to leave, and a server killed outright leaves its
        # System V segment behind on the host.
        return Daemon(
            "postgres", "db", argv, [("tcp", 5432)], probe=probe, stop_signal=signal.SIGINT, version_of=server
        )

    def _dovecot(self) -> list[str]:
        d, ip = self.root / "dovecot", self.ip("mail")
        for sub in ("run", "state"):
            (d / sub).mkdir()
        account = pwd.getpwnam(LAB_USER)
        conf = self._conf(
            "dovecot.conf",
            f"""protocols = imap pop3
listen = {ip}
base_dir = {d}/run
state_dir = {d}/state
log_path = /dev/stderr
# Clear-text logins without TLS, as a small office server that never got a certificate.
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
login_greeting = Mail server ready.
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {d}/users
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={self.root}/mail/%u
}}
service imap-login {{
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3s {{
    port = 0
  }}
}}
""",
        )
        return ["dovecot", "-F", "-c", str(conf)]

    # -- process handling --------------------------------------------------------------------------------------
    def _launch(self, daemon: Daemon) -> None:
        namespace = self.topology.ns(daemon.host)
        daemon.log_path = self.root / "logs" / f"{daemon.name}.log"
        daemon.log_path.parent.mkdir(exist_ok=True)
        with daemon.log_path.open("wb") as out:
            daemon.process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *daemon.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as a whole, children included
                cwd=self.root,
            )
        log.info("started %s in %s (pid %d)", daemon.name, namespace, daemon.process.pid)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(self.daemons)
        while pending:
            for daemon in list(pending):
                assert daemon.process is not None
                if daemon.process.poll() is not None:
                    raise RuntimeError(
                        f"{daemon.name} exited ({daemon.process.returncode}): {self._tail(daemon)}"
                    )
                if all(self._listening(daemon.host, proto, port) for proto, port in daemon.ports) and (
                    daemon.probe is None or self._answers(daemon)
                ):
                    pending.remove(daemon)
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{d.name}: {self._tail(d)}" for d in pending)
                raise RuntimeError(f"services not ready after {READY_TIMEOUT_S:.0f}s: {names}")
            if pending:
                time.sleep(0.2)
        log.info("all %d services ready", len(self.daemons))

    def _listening(self, host: str, proto: str, port: int) -> bool:
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        out = run_cmd(
            ["ip", "netns", "exec", self.topology.ns(host), "ss", flag, f"sport = :{port}"], check=False
        )
        return bool(out.stdout.strip())

    def _answers(self, daemon: Daemon) -> bool:
        assert daemon.probe is not None
        argv = ["ip", "netns", "exec", self.topology.ns(daemon.host), *daemon.probe]
        return run_cmd(argv, check=False, timeout=10).returncode == 0

    @staticmethod
    def _tail(daemon: Daemon) -> str:
        if daemon.log_path is None or not daemon.log_path.exists():
            return "(no log)"
        return daemon.log_path.read_text(errors="replace")[-400:].strip() or "(empty log)"

    def versions(self) -> dict[str, str]:
        """Name -> version line of each daemon, for run.json."""
        return {daemon.name: tool_version(daemon.version_of or daemon.argv[0]) for daemon in self.daemons}


def _kill_group(
    process: subprocess.Popen[bytes], stop_signal: signal.Signals = signal.SIGTERM, grace_s: float = 3.0
) -> None:
    try:
        os.killpg(process.pid, stop_signal)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=grace_s)


VERSION_FLAGS: dict[str, list[str]] = {
    "nginx": ["-v"],
    "apache2": ["-v"],
    "sshd": ["-V"],
    "vsftpd": ["-v"],
    "dnsmasq": ["--version"],
    "mosquitto": ["-h"],
    "chronyd": ["-v"],
    "busybox": ["--help"],
    "dovecot": ["--version"],
    "mariadbd": ["--version"],
    "postgres": ["--version"],
    "tcpdump": ["--version"],
    "ssh": ["-V"],
    "hping3": ["--version"],
    "nmap": ["--version"],
    "masscan": ["--version"],
    "mausezahn": ["-V"],
    "slowhttptest": ["-h"],
    "dnsperf": ["-h"],
    "hydra": ["-h"],
    "medusa": ["-V"],
    "ncrack": ["--version"],
    "patator": ["--version"],
    "t50": ["--version"],
    "fping": ["--version"],
    "curl": ["--version"],
    "dig": ["-v"],
    "ntpdig": ["--version"],
    "mosquitto_pub": ["--help"],
    "openssl": ["version"],
}


def tool_version(executable: str) -> str:
    """The first line that looks like a version of `executable`'s version output, or 'missing'."""
    name = Path(executable).name
    if name.startswith("python"):
        return sys.version.split()[0]
    flags = VERSION_FLAGS.get(name, ["--version"])
    try:
        result = subprocess.run(
            [executable, *flags], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        return "missing"
    except subprocess.TimeoutExpired:
        return "unknown (version query timed out)"
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
    for line in lines:
        if any(ch.isdigit() for ch in line) and ("version" in line.lower() or name in line.lower()):
            return line[:160]
    return lines[0][:160] if lines else "unknown"
