"""Test helpers: a real Suricata 7 in unix-socket pcap mode with packetclip's rules, and captures for it.

`SuricataProcess` starts `suricata --unix-socket` with `rules/suricata/suricata-packetclip.yaml` in a temporary
directory, feeds it captures with `pcap-file`, and always stops it (kill on timeout)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from packetclip.suricata.control import ControlError, SuricataControl

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "suricata"
CONFIG = RULES / "suricata-packetclip.yaml"
LAB = REPO / "samples" / "lab-quick"
SURICATA = shutil.which("suricata")


class SuricataProcess:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logdir = workdir / "log"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "command.socket"
        self.process: subprocess.Popen[bytes] | None = None
        self.control = SuricataControl(self.socket, timeout=10.0)

    @property
    def eve(self) -> Path:
        return self.logdir / "eve.json"

    def start(self, timeout: float = 30.0) -> None:
        assert SURICATA is not None
        self.socket.unlink(missing_ok=True)
        command = [
            SURICATA,
            "-c",
            str(CONFIG),
            "--set",
            f"default-rule-path={RULES}",
            "--set",
            "unix-command.enabled=yes",
            "-l",
            str(self.logdir),
            "-k",
            "none",
            f"--unix-socket={self.socket}",
        ]
        stderr = (self.workdir / "suricata.out").open("ab")
        self.process = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"suricata exited: {(self.workdir / 'suricata.out').read_text()[-2000:]}")
            with contextlib.suppress(ControlError):
                if self.socket.exists():
                    self.control.command("uptime")
                    return
            time.sleep(0.2)
        raise RuntimeError("suricata's command socket did not come up")

    def replay(self, capture: Path, timeout: float = 60.0) -> None:
        """Run one capture through Suricata and wait until it is done with it (its flows are logged)."""
        self.control.command("pcap-file", {"filename": str(capture), "output-dir": str(self.logdir)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.control.command("pcap-file-number") == 0
                and self.control.command("pcap-current") == "None"
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"suricata did not finish {capture}")

    def crash(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.control.close()

    def stop(self) -> None:
        self.control.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.socket.unlink(missing_ok=True)


def eve_records(path: Path, event_type: str) -> list[dict]:
    records = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event_type") == event_type:
                records.append(record)
    return records
