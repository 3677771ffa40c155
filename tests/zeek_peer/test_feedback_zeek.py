"""Kept inputs on the Zeek path, through the Zeek-faithful peer: a sidecar whose engine keeps inputs stores one row
per request it answered, under Zeek's uid, with the label it sent; the metrics endpoint counts them; an analyst's
label for one of those uids is recorded. The offline path and the store's bounds: tests/runtime/test_feedback.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.request
from pathlib import Path

import pytest

from packetclip.engine import Engine
from packetclip.feedback import FeedbackStore, InputStore
from packetclip.zeek.service import VERDICT_EVENT, Sidecar
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import ZeekPeer, requests_from_capture
from tests.zeek_peer.test_serve import replay, run_live

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def test_the_sidecar_keeps_each_answered_requests_input_under_zeeks_uid(
    bundle_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "feedback.sqlite"
    engine = Engine(bundle_path, inputs=InputStore(path))
    requests = list(requests_from_capture(LAB_CAPTURE))[:60]
    scraped: list[str] = []
    sent: dict[str, str] = {}  # uid -> the label Zeek got

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await replay(peer, requests)
        sent.update({r.event.args[0]: r.event.args[1] for r in peer.events(VERDICT_EVENT)})
        url = f"http://127.0.0.1:{sidecar.metrics_port}/metrics"
        scraped.append(
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        )

    sidecar = run_live(engine, body, order_hold=0.0, metrics_port=0)
    engine.close()
    assert len(sent) == 60 and "error" not in sent.values()
    with sqlite3.connect(path) as db:
        kept = {
            uid: json.loads(record)["verdict"]["label"]
            for uid, record in db.execute("SELECT uid, record FROM inputs")
        }
    assert kept == sent  # every answered request, under Zeek's uid, with the label Zeek got
    assert sidecar.metrics.inputs_kept == 60 and sidecar.metrics.inputs_errors == 0
    assert "packetclip_serve_inputs_kept_total 60" in scraped[0]
    assert 'packetclip_serve_inputs_evicted_total{reason="room"} 0' in scraped[0]

    uid = next(iter(sent))
    with FeedbackStore(path) as store:
        (labelled,) = store.add("benign", "a Zeek uid", uid=uid)
        assert labelled.verdict_label == sent[uid]
        assert [row["uid"] for row in store.rows()] == [uid]
