"""The lab commands that need root but no running lab: `lab check` and `lab clean` after a crashed run."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from packetclip_training.cli import main

pytestmark = pytest.mark.lab


def test_check_lists_every_tool_with_a_version(lab_ready, capsys):
    from packetclip_training.lab.attacks import CATALOGUE

    assert main(["lab", "check"]) == 0
    out = capsys.readouterr().out
    for tool in {v.tool for v in CATALOGUE} | {"tcpdump", "nginx", "vsftpd"}:
        assert any(line.split("\t")[0].endswith(tool) for line in out.splitlines()), tool
    assert "attack tools present" in out


def test_clean_removes_what_a_crashed_run_left(lab_ready, capsys):
    # what a run killed with SIGKILL leaves: a namespace with a process in it, and its temp dir
    namespace, temp_dir = "pcl0dead1-att1", Path(tempfile.gettempdir()) / "pcl0dead1-crashed"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "300"])
    temp_dir.mkdir()
    try:
        assert main(["lab", "clean"]) == 0
        removed = json.loads(capsys.readouterr().out)
        assert namespace in removed["namespaces"] and str(temp_dir) in removed["temp_dirs"]
        assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert sleeper.wait(timeout=10) is not None  # the process inside was ended with its namespace
        assert not temp_dir.exists()
    finally:
        sleeper.kill()
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


def test_clean_leaves_a_running_lab_alone(lab_ready, capsys):
    """A lab whose owner process lives keeps its namespaces, temp dir and account; a crashed one beside it goes."""
    live_ns, live_dir = "pcl0a11fe-att1", Path(tempfile.gettempdir()) / "pcl0a11fe-running"
    dead_ns, dead_dir = "pcl0dead2-att1", Path(tempfile.gettempdir()) / "pcl0dead2-crashed"
    owner = subprocess.Popen(["sleep", "300"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        for namespace, directory, pid in ((live_ns, live_dir, owner.pid), (dead_ns, dead_dir, gone.pid)):
            subprocess.run(["ip", "netns", "add", namespace], check=True)
            directory.mkdir()
            (directory / "owner.pid").write_text(f"{pid}\n")
        assert main(["lab", "clean"]) == 0
        removed = json.loads(capsys.readouterr().out)
        assert removed["running"] == ["pcl0a11fe"]
        assert dead_ns in removed["namespaces"] and str(dead_dir) in removed["temp_dirs"]
        assert live_ns not in removed["namespaces"] and str(live_dir) not in removed["temp_dirs"]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert live_ns in listed and dead_ns not in listed
        assert live_dir.is_dir() and not dead_dir.exists()
    finally:
        owner.kill()
        owner.wait()
        for namespace in (live_ns, dead_ns):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        for directory in (live_dir, dead_dir):
            shutil.rmtree(directory, ignore_errors=True)
