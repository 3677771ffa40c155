"""The runtime/factory boundary: `packetclip` must import, every module of it, without torch or the factory."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import packetclip
names = [m.name for m in pkgutil.walk_packages(packetclip.__path__, "packetclip.")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "packetclip_training")))
print(len(names), "modules")
assert not bad, f"runtime pulled in {bad[:5]}"
"""


def test_runtime_imports_without_torch_or_the_factory():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[0]) >= 3, out.stdout  # the walk really visited the runtime's modules


def test_factory_does_import_the_runtime():
    # the reverse direction is allowed and used: training must featurize with the runtime's code
    import packetclip_training.cli  # noqa: F401

    assert "packetclip.cli" in sys.modules
