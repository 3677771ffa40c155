"""`packetclip-train` without its `train` extra: a message that says what to install and exit code 1, not an
import traceback. torch stays installed: a separate Python makes it unimportable with a finder placed first."""

from __future__ import annotations

import subprocess
import sys

from packetclip_training import cli as factory_cli

# Runs the console script's entry with the modules named in argv[1] (comma-separated) made unimportable, the way
# a missing package is: ModuleNotFoundError naming the module. The rest of argv goes to the command.
WITHOUT = """
import importlib.abc, sys

blocked = set(sys.argv[1].split(","))

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in blocked or name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from packetclip_training.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, modules, *argv], capture_output=True, text=True, timeout=120
    )


def test_without_torch_every_invocation_says_what_to_install() -> None:
    for argv in (["--help"], ["pretrain", "--help"], []):
        done = run_without("torch", *argv)
        assert done.returncode == 1, (argv, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "needs the `train` extra" in done.stderr and "'torch'" in done.stderr, done.stderr
        assert "-m pip install -e '.[train]'" in done.stderr, done.stderr  # this checkout, editable
        assert done.stdout == ""


def test_a_missing_module_outside_the_extra_is_still_a_traceback() -> None:
    """The message is for the extra only: a module of the factory itself missing is a defect, and says so."""
    done = run_without("packetclip_training.pretrain.cli", "--help")
    assert done.returncode == 1 and "Traceback" in done.stderr, done.stderr
    assert "ModuleNotFoundError" in done.stderr and "train` extra" not in done.stderr


def test_with_the_extra_the_stages_are_there() -> None:
    assert factory_cli.missing_module is None
    assert {"pretrain", "align", "reasoner", "export", "lab", "dataset"} <= set(factory_cli.cli.commands)


def test_outside_a_checkout_the_published_package_is_named(monkeypatch) -> None:
    monkeypatch.setattr(factory_cli, "__file__", "/usr/lib/python3/dist-packages/packetclip_training/cli.py")
    message = factory_cli.missing_extra_message("torch")
    assert "-m pip install 'packetclip[train]'" in message and "install -e" not in message
