"""Replaying a capture with the sidecar killed and restarted mid-capture ends with exactly one verdict per
connection (issue 20: a sidecar killed 4 s into a capture and restarted 2 s later got nothing, and Zeek drained for
ever).

`OfflineZeek` (script_stand_in.py) plays offline.zeek on the Zeek-faithful peer; the sidecar is a real
`packetclip serve` process. The first one is killed (SIGKILL) while requests wait in its reorder window and
queue; requests published while no sidecar is there reach nobody; the second one says hello and gets every
pending request again. Then Zeek drops the second sidecar's connection once, so that it says hello again while
still holding requests it has read: Zeek publishes those again, the sidecar answers both copies, and the second
verdicts are counted as duplicates, never logged. The test waits on what the stand-in has handled (polling), never on
how fast the sidecar happens to be: the drop comes after the sidecar has answered part of the last third, and the
end after every duplicate has arrived.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import ScriptOptions, ZeekPeer
from tests.zeek_peer.script_stand_in import OfflineZeek, publication_schedule

HERE = Path(__file__).resolve().parent

SCRIPT_TOPICS = ["packetclip/verdict/", "packetclip/control/"]
SERVE = "import sys; from packetclip.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def start_sidecar(url: str, bundle: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVE,
                "serve",
                "--zeek",
                url,
                "--model",
                str(bundle),
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll: the stand-in handles the peer's events on its own task, after they arrive."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.01)


def test_a_sidecar_killed_and_restarted_mid_capture_leaves_one_verdict_per_connection(
    bundle_path: Path, tmp_path: Path
) -> None:
    requests = [p.request for p in publication_schedule(LAB_CAPTURE, 0, options=ScriptOptions(node="zeek"))]
    config = tmp_path / "config.toml"
    config.write_text("[serve]\nreconnect_initial = 0.05\nreconnect_max = 0.5\n")
    log = tmp_path / "sidecars.log"
    sidecars: list[subprocess.Popen[bytes]] = []
    seen: dict[str, int] = {}

    async def main() -> OfflineZeek:
        async with ZeekPeer() as peer, OfflineZeek(peer, drain_timeout=30.0) as zeek:
            peer.script_subscriptions = list(SCRIPT_TOPICS)
            sidecars.append(start_sidecar(peer.url, bundle_path, config, log))
            await zeek.wait_for_hello()
            third = len(requests) // 3
            for request in requests[:third]:
                await zeek.publish(request)
            # the first third spans 10 s of the capture: the watermark (max_wait 5 s + slack) lets 14 leave, the
            # rest wait for later frames or the hold limit (5.5 s), so the sidecar dies holding requests
            await until(lambda: len(zeek.rows) >= 10, 60)
            sidecars[0].kill()  # SIGKILL: what it held and queued is gone
            sidecars[0].wait(10)
            await peer.wait_clients(0)  # the peer has read all it sent before it died
            await zeek.settle()
            seen["pending_at_kill"] = len(zeek.pending)
            for request in requests[third : 2 * third]:
                await zeek.publish(request)  # to nobody
            sidecars.append(start_sidecar(peer.url, bundle_path, config, log))
            while zeek.hellos < 2:
                await asyncio.sleep(0.01)
            seen["resent_at_restart"] = zeek.requests_resent
            last = {request.uid for request in requests[2 * third :]}
            for request in requests[2 * third :]:
                await zeek.publish(request)
            # a verdict for the last third shows the sidecar reading it; the capture's last requests then wait out the
            # hold limit (5.5 s) in its reorder window, so it is dropped holding requests it has read
            await until(lambda: any(row.uid in last for row in zeek.rows), 60)
            await asyncio.sleep(0.5)
            seen["pending_at_drop"] = len(zeek.pending)
            await peer.drop_clients()  # the sidecar reconnects holding requests, and says hello again
            while zeek.hellos < 3:
                await asyncio.sleep(0.01)
            await zeek.drain()
            # the copies published again at the third hello are answered after the originals' verdicts ended the
            # drain: wait for them, so that they are seen counted and not logged
            await until(lambda: zeek.verdicts_duplicate >= seen["pending_at_drop"], 60)
            await zeek.settle()
            return zeek

    try:
        zeek = asyncio.run(main())
    finally:
        for process in sidecars:
            if process.poll() is None:
                process.terminate()
                process.wait(20)
    assert seen["pending_at_kill"] > 0, "the first sidecar should be killed holding requests"
    assert seen["resent_at_restart"] == seen["pending_at_kill"] + len(requests) // 3
    assert zeek.requests_lost == 0, log.read_text()[-3000:]
    assert sorted(row.uid for row in zeek.rows) == sorted(request.uid for request in requests)
    assert all(row.label != "error" for row in zeek.rows)
    assert seen["pending_at_drop"] > 0, "the second sidecar should be dropped holding requests"
    assert zeek.verdicts_duplicate == seen["pending_at_drop"] and zeek.verdicts_unmatched == 0
    assert zeek.requests_published == len(requests)
