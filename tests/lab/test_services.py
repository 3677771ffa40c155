"""Every lab service answers a real client from a client namespace: HTTPS with the lab CA, basic auth, form
login, apache, SSH with the client key, FTP login, DNS (existing name and NXDOMAIN), MQTT pub/sub, NTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from packetclip_training.lab.session import LabSession

pytestmark = pytest.mark.lab


def test_each_service_answers(lab_ready: None, leftovers: Callable[[str], dict[str, list[str]]]) -> None:
    with LabSession(seed=5) as lab:
        assert lab.services is not None and lab.secrets is not None
        ns = lab.topology.ns("ws1")
        ip = {h.name: h.ip for h in lab.topology.hosts}
        creds = lab.secrets.credentials

        def run(*argv: str) -> str:
            result = subprocess.run(
                ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, f"{argv[0]}: {result.stderr}"
            return result.stdout

        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]
        https = [
            *curl,
            "--cacert",
            str(lab.services.ca_cert),
            "--resolve",
            f"web.lab.internal:443:{ip['web']}",
        ]
        assert run(*https, "https://web.lab.internal/") == "200"
        assert run(*https, "https://web.lab.internal/admin/") == "401"
        assert run(*https, "-u", ":".join(creds["http_basic"]), "https://web.lab.internal/admin/") == "200"
        user, password = creds["http_form"]
        assert (
            run(*curl, "-d", f"username={user}&password={password}", f"http://{ip['web']}:8080/login")
            == "200"
        )
        assert run(*curl, "-d", f"username={user}&password=wrong", f"http://{ip['web']}/login") == "403"
        assert run(*curl, f"http://{ip['web']}/api/items/42") == "200"
        assert run(*curl, f"http://{ip['web2']}/") == "200"

        ssh_opts = [
            "-i",
            str(lab.services.client_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ]
        ssh_opts += ["-o", "UserKnownHostsFile=/dev/null"]
        assert run("ssh", *ssh_opts, f"{creds['ssh'][0]}@{ip['ssh']}", "echo lab-ok").strip() == "lab-ok"

        ftp_user, ftp_password = creds["ftp"]
        listing = run("curl", "-sS", "--max-time", "10", f"ftp://{ftp_user}:{ftp_password}@{ip['ftp']}/pub/")
        assert "firmware-00.bin" in listing

        assert run("dig", "+short", f"@{ip['dns']}", "web.lab.internal").strip() == ip["web"]
        assert "NXDOMAIN" in run("dig", f"@{ip['dns']}", "no-such-host.lab.internal")

        subscriber = subprocess.Popen(
            ["ip", "netns", "exec", ns, "mosquitto_sub", "-h", ip["mqtt"], "-t", "t/x", "-C", "1", "-W", "10"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        run("mosquitto_pub", "-h", ip["mqtt"], "-t", "t/x", "-m", "hello-lab")
        assert subscriber.communicate(timeout=15)[0].strip() == "hello-lab"

        assert ip["ntp"] in run("ntpdig", "-t", "3", ip["ntp"])
        # The reflector answers at any address of its block, from that address (dig and ntpdig refuse a reply
        # from another one).
        assert run("dig", "+short", "+tries=1", "@198.18.70.9", "mirror.internal", "TXT").count('"') >= 16
        assert "198.18.90.200" in run("ntpdig", "-t", "3", "198.18.90.200")
        prefix = lab.topology.prefix
    assert not any(leftovers(prefix).values()), leftovers(prefix)
