"""The login program of the lab's Telnet server: login(1)'s prompts and pace, but only the lab's own accounts.

busybox telnetd (`services.py`) runs a login program on the terminal of every connection. /bin/login would
check a name against every account of the host through the host's PAM stack, so a lucky guess could open a
shell of any host account; this program checks it against the account file the lab writes into its run
directory and, on success, starts a shell as that (lab) account. It owns the file's format (`account_line`)
and the dialogue on the terminal; it opens no socket and knows nothing of attacks.

Run as `python -m packetclip_training.lab.telnet_login ACCOUNTS_FILE HOSTNAME` (by a wrapper script: telnetd
passes no arguments to its login program).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import signal
import sys
import termios
import time
from pathlib import Path
from types import FrameType

# What a wrong password costs, as pam_unix's default delay does; guessers see the pace of a real login.
FAIL_DELAY_S = 2.0
# login(1) closes the connection after this many wrong logins (LOGIN_RETRIES is 5; many devices allow 3).
ATTEMPTS = 3
# login(1)'s LOGIN_TIMEOUT: an idle connection is dropped.
LOGIN_TIMEOUT_S = 60
PBKDF2_ITERATIONS = 20_000  # about 10 ms a check: cheap next to FAIL_DELAY_S


def account_line(user: str, password: str, salt: bytes) -> str:
    """One line of the accounts file: user, salt, iterations and PBKDF2-SHA256 digest (hex), colon-separated."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"{user}:{salt.hex()}:{PBKDF2_ITERATIONS}:{digest.hex()}"


def read_accounts(path: Path) -> dict[str, tuple[bytes, int, bytes]]:
    """user -> (salt, iterations, digest) from an accounts file."""
    accounts = {}
    for line in path.read_text().splitlines():
        if line.strip():
            user, salt, iterations, digest = line.split(":")
            accounts[user] = (bytes.fromhex(salt), int(iterations), bytes.fromhex(digest))
    return accounts


def password_matches(accounts: dict[str, tuple[bytes, int, bytes]], user: str, password: str) -> bool:
    """True for a known user and the right password; an unknown user costs the same hashing."""
    salt, iterations, digest = accounts.get(user, (b"unknown-user", PBKDF2_ITERATIONS, b""))
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(errors="replace"), salt, iterations)
    return user in accounts and hmac.compare_digest(candidate, digest)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _ask(prompt: str, echo: bool = True) -> str | None:
    """One line typed on the terminal after `prompt` (echo off for passwords); None when the peer has gone."""
    saved = None
    if not echo and os.isatty(0):
        # Off before the prompt shows: a guesser types its password the moment it sees "Password:".
        saved = termios.tcgetattr(0)
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(0, termios.TCSANOW, quiet)
    _write(prompt)
    try:
        line = sys.stdin.buffer.readline()
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSANOW, saved)
            _write("\n")
    if not line:
        return None
    return line.decode(errors="replace").strip("\r\n\0")


def _timed_out(signum: int, frame: FrameType | None) -> None:
    _write(f"\nLogin timed out after {LOGIN_TIMEOUT_S} seconds.\n")
    sys.exit(1)


def _start_shell(user: str, hostname: str) -> None:
    """Become `user` and replace this process with an interactive shell in its home directory."""
    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.chdir(entry.pw_dir)
    env = {
        "HOME": entry.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TERM": os.environ.get("TERM", "vt100"),
        # The lab host's name, not the machine's: the prompt crosses the sensor in clear text.
        "PS1": f"\\u@{hostname}:\\w\\$ ",
    }
    os.execve("/bin/bash", ["bash", "--noprofile", "--norc", "-i"], env)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m packetclip_training.lab.telnet_login ACCOUNTS_FILE HOSTNAME", file=sys.stderr)
        return 2
    accounts = read_accounts(Path(args[0]))
    hostname = args[1]
    signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(LOGIN_TIMEOUT_S)
    failures = 0
    while failures < ATTEMPTS:
        user = _ask(f"{hostname} login: ")
        if user is None:
            return 1
        if not user:
            continue
        password = _ask("Password: ", echo=False)
        if password is None:
            return 1
        if password_matches(accounts, user, password):
            signal.alarm(0)
            _start_shell(user, hostname)
        failures += 1
        time.sleep(FAIL_DELAY_S)
        _write("\nLogin incorrect\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
