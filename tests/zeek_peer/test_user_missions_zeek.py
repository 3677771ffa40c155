"""User-written missions on the Zeek path: with missions configured, the sidecar sends each verdict's scores in
`PacketCLIP::mission_scores` right before the verdict, with the types transport.zeek declares (the Zeek-faithful peer
drops an event whose types differ), and the rows the scripts write (played by `script_stand_in.OfflineZeek`) hold
in their `missions` column what `packetclip classify --format zeek` writes for the same connections.

The bundle is the factory tests' tiny one with the stand-in text encoder (hashed words), so no text encoder has to
be exported; the real encoder's scores are tested in tests/runtime/test_user_missions.py.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from packetclip.engine import Engine, Verdict
from packetclip.missions import load_missions
from packetclip.output import ZEEK_FIELDS, ZeekWriter
from packetclip.pipeline import classify_captures
from packetclip.user_missions import UserMissionScorer
from packetclip.zeek.service import MISSION_SCORES_EVENT, VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.runtime.test_engine import LAB_CAPTURE
from tests.runtime.test_store import export_test_bundles, hashed_text_vectors
from tests.zeek_peer.peer import ScriptOptions, ZeekPeer
from tests.zeek_peer.script_stand_in import OfflineZeek, publication_schedule
from tests.zeek_peer.windowed_bundle import windowed_copy

HERE = Path(__file__).resolve().parent

NTP_FLOOD = (HERE.parents[1] / "samples" / "missions" / "ntp_flood.yaml").read_text()
MISSIONS_COLUMN = [name for name, _ in ZEEK_FIELDS].index("missions")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle with the scripts' max_wait as its window, so classify cuts connections as the scripts do."""
    work = tmp_path_factory.mktemp("bundle")
    (exported,) = export_test_bundles(work, ("2026.11.27-1",))
    return windowed_copy(exported, work / "windowed", ScriptOptions().max_wait)


@pytest.fixture(scope="module")
def missions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("missions")
    (folder / "ntp_flood.yaml").write_text(NTP_FLOOD)
    return folder


def scorer_factory(missions_dir: Path):  # type: ignore[no-untyped-def]
    return lambda bundle: UserMissionScorer(bundle, hashed_text_vectors, load_missions(missions_dir))


def replay(engine: Engine, requests: list[Any], **zeek_options: Any) -> tuple[OfflineZeek, ZeekPeer]:
    """The requests published as the scripts publish them, to a sidecar on `engine`, drained; the stand-in's
    state (built with `zeek_options`: script options) and the peer."""

    async def main() -> tuple[OfflineZeek, ZeekPeer]:
        async with ZeekPeer() as peer, OfflineZeek(peer, **zeek_options) as zeek:
            peer.script_subscriptions = ["packetclip/verdict/", "packetclip/control/"]
            sidecar = Sidecar(ServeSettings(zeek=peer.url, max_queue=1000), engine)
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            try:
                await zeek.wait_for_hello()
                for request in requests:
                    await zeek.publish(request)
                await zeek.drain()
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
            return zeek, peer

    return asyncio.run(main())


def test_mission_scores_reach_zeeks_log_as_classify_writes_them(bundle: Path, missions_dir: Path) -> None:
    requests = [p.request for p in publication_schedule(LAB_CAPTURE, 0, ScriptOptions(node="zeek"))][:120]

    zeek, peer = replay(Engine(bundle, user_missions=scorer_factory(missions_dir)), requests)
    assert peer.type_errors == [] and zeek.requests_lost == 0 and zeek.verdicts_unmatched == 0
    assert sorted(row.uid for row in zeek.rows) == sorted(request.uid for request in requests)
    # each verdict follows its own scores, on the node's verdict topic
    order = [
        (r.topic, r.event.name, r.event.args[0]) for r in peer.received if r.event.name != "PacketCLIP::hello"
    ]
    for position, (topic, name, uid) in enumerate(order):
        if name == VERDICT_EVENT:
            assert order[position - 1] == (topic, MISSION_SCORES_EVENT, uid)
    assert sum(name == MISSION_SCORES_EVENT for _, name, _ in order) == len(requests)

    # classify, on the same capture and bundle, writes the same missions column for the same connections
    verdicts: list[Verdict] = []
    engine = Engine(bundle, user_missions=scorer_factory(missions_dir))
    classify_captures(engine, [LAB_CAPTURE], verdicts.append)
    stream = io.StringIO()
    writer = ZeekWriter(stream, clock=lambda: 0.0)
    by_uid = {v.uid: v for v in verdicts}
    checked = 0
    for row in zeek.rows:
        stream.seek(0)
        stream.truncate()
        writer.write(by_uid[row.uid])
        column = stream.getvalue().rstrip("\n").split("\t")[MISSIONS_COLUMN]
        assert (
            row.missions is not None and len(row.missions) == 1 and row.missions[0].startswith("ntp_flood=")
        )
        expected = float(column.removeprefix("ntp_flood="))
        assert abs(float(row.missions[0].removeprefix("ntp_flood=")) - expected) <= 1e-5, (row, column)
        checked += 1
    assert checked == len(requests)


def test_without_missions_the_sidecar_sends_verdicts_only(bundle: Path) -> None:
    requests = [p.request for p in publication_schedule(LAB_CAPTURE, 0, ScriptOptions(node="zeek"))][:20]

    zeek, peer = replay(Engine(bundle), requests)
    assert peer.events(MISSION_SCORES_EVENT) == [] and all(row.missions is None for row in zeek.rows)
    assert len(zeek.rows) == len(requests)
