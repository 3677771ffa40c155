"""Shared pieces of the lab tests: the root/tools gate, and what a run must not leave behind on the host."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from packetclip_training.lab.runner import LAB_TOOLS
from packetclip_training.lab.secrets_and_names import LAB_USER, LAB_USER_GECOS


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, daemons, a lab account)"
    missing = sorted(name for name in LAB_TOOLS if shutil.which(name) is None)
    if missing:
        return f"lab tools missing: {', '.join(missing)}"
    return None


@pytest.fixture
def lab_ready() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


def _leftovers(prefix: str) -> dict[str, list[str]]:
    """Everything of the run `prefix` still present; all lists empty after a clean teardown."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    processes = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return {
        "namespaces": [name for name in namespaces if name.startswith(prefix)],
        "processes": [line for line in processes if prefix in line and "ps -eo" not in line],
        "users": [
            e.pw_name for e in pwd.getpwall() if e.pw_name == LAB_USER and e.pw_gecos == LAB_USER_GECOS
        ],
        "temp_dirs": [str(p) for p in Path(tempfile.gettempdir()).glob(f"{prefix}-*")],
        "veths_on_host": [
            line
            for line in subprocess.run(
                ["ip", "-o", "link"], capture_output=True, text=True
            ).stdout.splitlines()
            if "v-" in line.split(":")[1] or prefix in line
        ],
    }


@pytest.fixture
def leftovers() -> Callable[[str], dict[str, list[str]]]:
    """`leftovers(prefix)`: everything of run `prefix` still on the host (all lists empty when clean)."""
    return _leftovers
