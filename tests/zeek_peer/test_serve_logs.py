"""`packetclip serve --log-format json` writes nothing on stderr but JSON lines: the start line, the log records
and the closing counts, each one object, the counts as fields (a log shipper reads them without parsing text)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import ScriptOptions, ZeekPeer
from tests.zeek_peer.script_stand_in import OfflineZeek, publication_schedule
from tests.zeek_peer.test_sidecar_restart import SCRIPT_TOPICS, SERVE


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def test_serve_json_logs_are_one_object_per_line_from_start_to_the_closing_counts(
    bundle_path: Path, tmp_path: Path
) -> None:
    schedule = publication_schedule(LAB_CAPTURE, 0, options=ScriptOptions(node="zeek"))
    requests = [publication.request for publication in schedule][:40]
    config = tmp_path / "config.toml"
    config.write_text('[serve]\nlog_format = "json"\nreconnect_initial = 0.05\nmetrics_port = 0\n')
    stderr = tmp_path / "serve.log"

    async def main() -> int:
        async with ZeekPeer() as peer, OfflineZeek(peer, drain_timeout=30.0) as zeek:
            peer.script_subscriptions = list(SCRIPT_TOPICS)
            with stderr.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        SERVE,
                        "serve",
                        "--zeek",
                        peer.url,
                        "--model",
                        str(bundle_path),
                        "--config",
                        str(config),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            try:
                await zeek.wait_for_hello()
                for request in requests:
                    await zeek.publish(request)
                await zeek.drain()
            finally:
                process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(process.wait, 20)
            assert sorted(row.uid for row in zeek.rows) == sorted(r.uid for r in requests)
            return code

    assert asyncio.run(main()) == 0
    lines = stderr.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    assert records[0]["message"].startswith("serving model ") and records[0]["model"]
    closing = records[-1]
    assert closing["message"] == "serve finished"
    assert closing["requests"] == len(requests) and closing["verdicts"] == len(requests)
    assert closing["errors"] == 0 and closing["dropped"] == 0
