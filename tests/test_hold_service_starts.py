"""scripts/hold-service-starts.sh, which install-deps and install-suricata source: while a script installs, a
policy-rc.d refuses every service start; the one it put in place is gone when the script exits — normally, on an
error or on SIGTERM — and a policy-rc.d that was already there is left exactly as it was."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

HELPER = Path(__file__).resolve().parents[1] / "scripts" / "hold-service-starts.sh"


def _run(policy: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = f"set -euo pipefail\nsource {HELPER}\nhold_service_starts probe\n{body}\n"
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PACKETCLIP_POLICY_RC_D": str(policy)},
    )


def test_service_starts_are_refused_while_held_and_allowed_after_any_exit(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    held = _run(policy, f'"{policy}" nginx start || echo "refused $?"')
    assert held.returncode == 0 and "refused 101" in held.stdout, held.stderr
    assert not policy.exists()
    failed = _run(policy, "false")  # set -e ends the script on an error
    assert failed.returncode == 1 and not policy.exists()
    killed = _run(policy, "kill -TERM $$; sleep 10")
    assert killed.returncode == 128 + signal.SIGTERM and not policy.exists()


def test_a_policy_already_in_place_is_left_as_it_was(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the host's own\nexit 101\n")
    policy.chmod(0o755)
    released = _run(policy, "release_service_starts")
    assert released.returncode == 0 and policy.read_text() == "#!/bin/sh\n# the host's own\nexit 101\n"
