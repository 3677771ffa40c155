"""The Telnet server's login program without root: its account file checks passwords, and on a terminal it talks
as login(1) does (prompt with the lab host's name, no echo of the password, a delayed "Login incorrect")."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from packetclip_training.lab.telnet_login import (
    FAIL_DELAY_S,
    account_line,
    password_matches,
    read_accounts,
)


def _accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts"
    path.write_text(account_line("deploy", "Summer2024!", b"0123456789abcdef") + "\n")
    return path


def test_accounts_file_takes_the_right_password_only(tmp_path: Path) -> None:
    accounts = read_accounts(_accounts(tmp_path))
    assert password_matches(accounts, "deploy", "Summer2024!")
    assert not password_matches(accounts, "deploy", "Summer2024")
    assert not password_matches(accounts, "root", "Summer2024!")  # an account the file does not hold
    assert "Summer2024!" not in _accounts(tmp_path).read_text()


def _read_until(fd: int, marker: bytes, timeout_s: float = 10.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {marker!r} within {timeout_s}s; got {seen!r}")
        seen += os.read(fd, 1024)
    return seen


def test_a_wrong_password_on_a_terminal_is_refused_after_the_delay_without_echo(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    login = subprocess.Popen(
        [sys.executable, "-m", "packetclip_training.lab.telnet_login", str(_accounts(tmp_path)), "telnet"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    try:
        _read_until(controller, b"telnet login: ")
        os.write(controller, b"deploy\n")
        _read_until(controller, b"Password: ")
        os.write(controller, b"Winter99\n")
        started = time.monotonic()
        answer = _read_until(controller, b"login: ")
        assert time.monotonic() - started >= FAIL_DELAY_S - 0.1
        assert b"Login incorrect" in answer and b"Winter99" not in answer
    finally:
        login.kill()
        login.wait(timeout=5)
        os.close(controller)
