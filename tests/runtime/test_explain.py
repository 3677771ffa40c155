"""Explanations and originator activity: every number an explanation prints is a fact of the connection or of the
originator's observed connections; activity counts are exact on constructed sequences (distinct ports, rate,
window expiry, caps, eviction); the concepts named are the winning mission's most activated of those the
connection's facts allow; the description quoted is the nearest of the predicted class and never brings its own
numbers.

The bundle is written here by hand (shipped missions, concepts and a description bank whose texts are full of
numbers from made-up connections); models are not needed, so its model files are placeholders the manifest hashes.
Verdicts for the committed lab capture come from its `labels.tsv` (the episodes' attacker, target and time span).
"""

from __future__ import annotations

import csv
import dataclasses
import ipaddress
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from packetclip.bundle import load_bundle, load_concepts, load_descriptions, sha256_file
from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.context import RESPONDER_FEATURES, ResponderActivity, responder_summary
from packetclip.explain import Activity, ActivityTracker, Explainer, class_headline
from packetclip.featurizer import FEATURIZER_VERSION, Connection, featurize_pcap
from packetclip.missions import load_missions

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB = REPO_ROOT / "samples" / "lab-quick"
MISSION_DIR = REPO_ROOT / "rules" / "missions"
ALIGNED = 16


# --- a bundle written by hand ---------------------------------------------------------------------------------


def bank_texts() -> tuple[list[str], list[str]]:
    """Per class: texts that mix made-up connection numbers with class-level sentences, a numbers-only text,
    and a short phrase; the class sentences name the mission's concepts for that class."""
    class_concepts = {fine: words for m in load_missions(MISSION_DIR) for fine, words in m.classes.items()}
    texts, classes = [], []
    for index, fine in enumerate(FINE_CLASSES):
        words = class_concepts.get(fine) or ("ordinary traffic",)
        for variant in range(4):
            port, packets, size = 61000 + 37 * index + variant, 3 + variant * 11, 7654321 + variant * 977
            first, second = words[variant % len(words)], words[(variant + 1) % len(words)]
            texts.append(
                f"A TCP flow to port {port} carrying {packets} packets and {size:,} bytes over 1.{variant}7 s. "
                f"Notable: {first} and {second}. It fits {class_headline(fine)}."
            )
            classes.append(fine)
        texts.append(f"The originator sent {97 + index} packets to port {62000 + index} in 2.5 s.")
        classes.append(fine)
        texts.append(f"a connection that is part of {first}")
        classes.append(fine)
    return texts, classes


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain") / "bundle"
    (root / "missions").mkdir(parents=True)
    (root / "fixtures").mkdir()
    missions = load_missions(MISSION_DIR)
    for mission in missions:
        shutil.copy(Path(mission.source), root / "missions" / f"{mission.name}.yaml")
    concepts = [
        {"mission": m.name, "concept": c, "kind": "key" if c in m.key_concepts else "associated"}
        for m in missions
        for c in m.concepts()
    ]
    (root / "concepts.json").write_text(json.dumps(concepts))
    texts, classes = bank_texts()
    (root / "descriptions.json").write_text(json.dumps({"texts": texts, "classes": list(FINE_CLASSES)}))
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((len(texts), ALIGNED))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.savez(
        root / "descriptions.npz",
        embeddings=embeddings.astype(np.float16),
        fine=np.asarray([FINE_CLASSES.index(c) for c in classes], np.int16),
    )
    for name in ("encoder.onnx", "reasoner.onnx", "fixtures/encoder.npz", "fixtures/reasoner.npz"):
        (root / name).write_bytes(b"placeholder: explanations never run the models")
    tensor = {"x": {"dtype": "float32", "shape": ["batch", 1]}}
    models = {
        role: {
            "file": f"{role}.onnx",
            "fixture": f"fixtures/{role}.npz",
            "inputs": tensor,
            "outputs": tensor,
            "parameters": 1,
            "flops_per_packet": 1,
        }
        for role in ("encoder", "reasoner")
    }
    files = {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = {
        "format": "packetclip-bundle/1",
        "name": "explain-test",
        "version": "1.0",
        "created": "2026-01-01T00:00:00Z",
        "featurizer_version": FEATURIZER_VERSION,
        "featurizer": {"max_packets": 30, "snaplen": 128},
        "context": {"slots": 30, "features": []},
        "classes": {
            "coarse": list(COARSE_CLASSES),
            "fine": list(FINE_CLASSES),
            "fine_to_coarse": FINE_TO_COARSE,
        },
        "missions": [m.name for m in missions],
        "models": models,
        "files": files,
        "data_card": {},
        "metrics": {},
        "training": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def explainer(bundle_dir: Path) -> Explainer:
    return Explainer(load_bundle(bundle_dir))


@pytest.fixture(scope="module")
def concept_table(bundle_dir: Path) -> list[dict[str, str]]:
    return load_concepts(load_bundle(bundle_dir))


# --- connections ----------------------------------------------------------------------------------------------


def make_conn(
    ts: float,
    resp_h: str = "10.0.0.2",
    resp_p: int = 80,
    *,
    orig_h: str = "10.0.0.1",
    proto: str = "tcp",
    state: str = "SF",
    orig_pkts: int = 3,
    resp_pkts: int = 2,
    orig_bytes: int = 100,
    resp_bytes: int = 50,
    duration: float = 0.25,
    orig_p: int = 40000,
    history: str = "",
    service: str = "",
) -> Connection:
    return Connection(
        uid=f"C{ts}-{resp_p}",
        ts=ts,
        last_ts=ts + duration,
        proto=proto,
        orig_h=orig_h,
        orig_p=orig_p,
        resp_h=resp_h,
        resp_p=resp_p,
        ip_version=4,
        vlan=None,
        community_id="",
        pkt_ts=np.zeros(0),
        pkt_dir=np.zeros(0, np.int8),
        pkt_len=np.zeros(0, np.int32),
        pkt_bytes=np.zeros((0, 128), np.uint8),
        duration=duration,
        orig_pkts=orig_pkts,
        resp_pkts=resp_pkts,
        orig_bytes=orig_bytes,
        resp_bytes=resp_bytes,
        conn_state=state,
        history=history,
        service=service,
        n_packets=orig_pkts + resp_pkts,
    )


@pytest.fixture(scope="module")
def lab_connections() -> list[Connection]:
    return sorted(featurize_pcap(LAB / "capture.pcap"), key=lambda c: c.ts)


def lab_label(conn: Connection, episodes: list[dict[str, str]]) -> str:
    """The fine class of the lab episode whose attacker, target and time span hold the connection."""
    for episode in episodes:
        start, end = float(episode["start_ts"]), float(episode["end_ts"])
        target = ipaddress.ip_network(episode["target"], strict=False)
        if (
            conn.orig_h == episode["attacker_ip"]
            and ipaddress.ip_address(conn.resp_h) in target
            and start - 1 <= conn.ts <= end + 1
        ):
            return episode["fine"]
    return "benign"


def lab_explanations(
    explainer: Explainer, connections: list[Connection]
) -> list[tuple[Connection, Activity, str, str]]:
    """(connection, activity, fine, explanation) for every lab connection, rows drawn at random but seeded."""
    with (LAB / "labels.tsv").open() as handle:
        episodes = list(csv.DictReader(handle, delimiter="\t"))
    tracker = ActivityTracker(window_seconds=60.0)
    rng = np.random.default_rng(0)
    out = []
    for conn in connections:
        tracker.observe("lab", conn)
        activity = tracker.summary("lab", conn.orig_h, conn.ts)
        fine = lab_label(conn, episodes)
        text = explainer.explain(
            conn,
            activity,
            FINE_TO_COARSE[fine],
            fine,
            rng.random(len(explainer.concepts)),
            rng.standard_normal(ALIGNED),
        )
        out.append((conn, activity, fine, text))
    return out


# --- the number check -----------------------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(%?)(?![\w])")
CONNECTION_FACTS = (
    "orig_p",
    "resp_p",
    "duration",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "orig_ip_bytes",
    "resp_ip_bytes",
    "n_packets",
)
ACTIVITY_TIMES = {"now_ts", "first_ts", "last_ts"}  # epoch times are never printed


def activity_facts(activity: Activity) -> tuple[list[float], list[float]]:
    """(plain numbers, shares) an explanation may print about the originator's activity."""
    plain: list[float] = []
    for item in dataclasses.fields(activity):
        value = getattr(activity, item.name)
        if item.name in ACTIVITY_TIMES or isinstance(value, (str, bool)):
            continue
        if item.name == "top_ports":
            plain += [number for pair in value for number in pair]
        else:
            plain.append(float(value))
    plain.append(activity.span_seconds)
    shares = [getattr(activity, name) for name in dir(type(activity)) if name.endswith("_share")]
    return plain, shares


def false_numbers(text: str, conn: Connection, activity: Activity) -> list[str]:
    """The numbers of `text` that round from no fact of the connection or the activity."""
    plain, shares = activity_facts(activity)
    plain += [float(getattr(conn, name)) for name in CONNECTION_FACTS]
    wrong = []
    for match in NUMBER.finditer(text):
        whole, decimals, percent = match.groups()
        value = float(whole.replace(",", "") + (f".{decimals}" if decimals else ""))
        tolerance = 0.5 * 10 ** -len(decimals or "") + 1e-9
        facts = [share * 100 for share in shares] if percent else plain
        if not any(abs(fact - value) <= tolerance for fact in facts):
            wrong.append(match.group(0))
    return wrong


def test_the_number_check_catches_a_number_no_fact_holds() -> None:
    conn = make_conn(10.0, orig_pkts=4, duration=1.234)
    activity = Activity("s", "10.0.0.1", 10.0, 60.0, connections=12, unanswered=3)
    assert (
        false_numbers(
            "4 packets over 1.234 s; 12 connections in the last 60 s, 25% unanswered", conn, activity
        )
        == []
    )
    assert false_numbers("5 packets", conn, activity) == ["5"]
    assert false_numbers("over 1.3 s", conn, activity) == ["1.3"]
    assert false_numbers("26% unanswered", conn, activity) == ["26%"]
    assert false_numbers("1,212 connections", conn, activity) == ["1,212"]


def test_every_number_in_lab_explanations_is_a_fact_of_the_packets(
    explainer: Explainer, lab_connections: list[Connection]
) -> None:
    explained = lab_explanations(explainer, lab_connections)
    assert len(explained) > 300
    fines = {fine for _, _, fine, _ in explained}
    assert {"benign", "port_scan", "icmp_flood", "dictionary_attack"} <= fines
    for conn, activity, _, text in explained:
        assert false_numbers(text, conn, activity) == [], text


def test_lab_explanations_are_clean_text(explainer: Explainer, lab_connections: list[Connection]) -> None:
    for conn, activity, fine, text in lab_explanations(explainer, lab_connections):
        assert text == text.strip() and "  " not in text, text
        assert text.isascii() and text.endswith("."), text
        assert text.count('"') % 2 == 0 and text.count("(") == text.count(")"), text
        assert "'" not in text.replace("'s ", "").replace("s' ", ""), text
        assert str(conn.resp_p) in text or conn.proto == "icmp"
        if fine == "benign":
            assert text.endswith("judged benign.") and '"' not in text
        else:
            assert f"Judged {class_headline(fine)}" in text
            if activity.connections > 1:
                assert f"{activity.connections:,} connections in the last 60 s" in text, text


def test_description_bank_numbers_never_reach_an_explanation(
    explainer: Explainer, lab_connections: list[Connection]
) -> None:
    """Bank numbers that happen to equal a fact could hide in the generic check: these texts' ports and sizes are
    chosen not to occur in the lab capture, so none may appear at all."""
    texts, _ = bank_texts()
    bank_numbers = {m.group(0) for text in texts for m in NUMBER.finditer(text)}
    quoted = 0
    for _, _, _, text in lab_explanations(explainer, lab_connections):
        quote = re.search(r'"([^"]*)"', text)
        if quote:
            quoted += 1
            assert not re.search(r"\d", quote.group(1)), text
        printed = {m.group(0) for m in NUMBER.finditer(text)}
        assert not printed & {n for n in bank_numbers if len(n.replace(",", "")) >= 5}, text
    assert quoted > 50


# --- activity -------------------------------------------------------------------------------------------------


def observe_all(tracker: ActivityTracker, connections: list[Connection], sensor: str = "s") -> None:
    for conn in connections:
        tracker.observe(sensor, conn)


def test_activity_counts_a_constructed_sequence() -> None:
    tracker = ActivityTracker(window_seconds=60.0)
    states = ["S0", "REJ", "SF", "RSTO", "S0", "SF", "RSTOS0", "REJ", "SF", "S0"]
    connections = [
        make_conn(
            float(i),
            resp_h=f"10.0.0.{2 + i % 2}",
            resp_p=20 + i % 5,
            state=state,
            resp_pkts=0 if state == "S0" else 1,
            orig_pkts=i + 1,
            orig_bytes=10 * i,
            resp_bytes=1,
        )
        for i, state in enumerate(states)
    ]
    observe_all(tracker, connections)
    activity = tracker.summary("s", "10.0.0.1", 9.0)
    assert activity.connections == 10 and activity.responders == 2 and activity.ports == 5
    assert activity.packets == sum(range(1, 11)) + 7 and activity.bytes == 450 + 10
    assert (activity.first_ts, activity.last_ts, activity.span_seconds) == (0.0, 9.0, 9.0)
    assert activity.rate == pytest.approx(10 / 9)  # observed for 9 s of the 60 s window
    assert (activity.unanswered, activity.refused, activity.reset_by_originator) == (3, 2, 2)
    assert activity.unanswered_or_refused_share == pytest.approx(0.5)
    assert activity.top_ports == ((20, 2), (21, 2), (22, 2))
    assert activity.complete
    assert tracker.summary("s", "10.0.0.9", 9.0).connections == 0
    assert tracker.summary("other-sensor", "10.0.0.1", 9.0).connections == 0


def test_the_window_expires_and_excludes_later_connections() -> None:
    tracker = ActivityTracker(window_seconds=60.0)
    observe_all(tracker, [make_conn(float(i * 10), resp_p=i) for i in range(10)])  # ts 0 .. 90
    later = tracker.summary("s", "10.0.0.1", 100.0)  # window (40, 100]: ts 50 .. 90
    assert (later.connections, later.ports, later.first_ts) == (5, 5, 50.0)
    assert later.rate == pytest.approx(5 / 60)
    earlier = tracker.summary("s", "10.0.0.1", 55.0)  # (-5, 55]: but 0 .. 30 left as ts 60 .. 90 arrived
    assert (earlier.connections, earlier.first_ts) == (2, 40.0) and not earlier.complete
    assert tracker.stats.expired_connections == 4
    tracker.observe("s", make_conn(1000.0, resp_p=7))
    alone = tracker.summary("s", "10.0.0.1", 1000.0)
    assert (alone.connections, alone.ports, alone.top_ports) == (1, 1, ((7, 1),))
    assert alone.rate == pytest.approx(1 / 60)


def test_icmp_connections_count_as_hosts_but_not_ports() -> None:
    tracker = ActivityTracker()
    sweep = [make_conn(1.0 + i, resp_h=f"10.0.2.{i}", resp_p=0, proto="icmp", resp_pkts=0) for i in range(5)]
    observe_all(tracker, [*sweep, make_conn(9.0, resp_p=443)])
    activity = tracker.summary("s", "10.0.0.1", 9.0)
    assert (activity.connections, activity.responders, activity.ports) == (6, 6, 1)
    assert activity.top_ports == ((443, 1),) and activity.unanswered == 5


def test_out_of_order_connections_are_counted_in_start_order() -> None:
    tracker = ActivityTracker(window_seconds=10.0)
    observe_all(tracker, [make_conn(ts, resp_p=int(ts)) for ts in (5.0, 3.0, 9.0, 4.0)])
    activity = tracker.summary("s", "10.0.0.1", 8.0)
    assert (activity.connections, activity.first_ts, activity.last_ts, activity.ports) == (3, 3.0, 5.0, 3)


def test_the_per_originator_cap_keeps_the_newest_and_says_the_counts_are_lower_bounds() -> None:
    tracker = ActivityTracker(window_seconds=60.0, max_connections=3)
    observe_all(tracker, [make_conn(float(i), resp_p=i) for i in range(5)])
    activity = tracker.summary("s", "10.0.0.1", 4.0)
    assert (activity.connections, activity.ports, activity.first_ts) == (3, 3, 2.0)
    assert not activity.complete and tracker.stats.capped_connections == 2
    assert tracker.summary("s", "10.0.0.1", 62.5).complete  # the dropped ones have left that window


def test_the_least_recently_seen_originator_is_evicted() -> None:
    tracker = ActivityTracker(max_originators=2)
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3"):
        tracker.observe("s", make_conn(1.0, orig_h=host))
    assert len(tracker) == 2 and tracker.stats.evicted_originators == 1
    assert tracker.summary("s", "10.0.0.2", 1.0).connections == 0
    assert tracker.summary("s", "10.0.0.1", 1.0).connections == 2


def test_a_malformed_connection_is_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    tracker = ActivityTracker()
    tracker.observe("s", make_conn(math.nan))
    tracker.observe("s", make_conn(1.0, resp_p="x"))  # type: ignore[arg-type]
    assert tracker.stats.malformed == 2 and len(tracker) == 0
    assert "skipped connection" in caplog.text


def test_summaries_match_a_brute_force_count_over_random_sequences() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        window = float(rng.choice([5.0, 20.0, 60.0]))
        tracker = ActivityTracker(window_seconds=window, max_connections=int(rng.choice([4, 50])))
        seen: list[Connection] = []
        clock = 0.0
        for _ in range(int(rng.integers(1, 60))):
            clock += float(rng.exponential(2.0))
            start = clock - float(rng.exponential(1.0)) * (rng.random() < 0.3)  # some finish out of order
            state = str(rng.choice(["S0", "REJ", "SF", "RSTO"]))
            conn = make_conn(
                round(start, 3),
                resp_h=f"10.0.1.{rng.integers(4)}",
                resp_p=int(rng.integers(1, 8)),
                state=state,
                resp_pkts=0 if state == "S0" else int(rng.integers(1, 4)),
                orig_bytes=int(rng.integers(0, 500)),
            )
            tracker.observe("s", conn)
            seen.append(conn)
            now = max(c.ts for c in seen) - float(rng.random() * 3)
            got = tracker.summary("s", "10.0.0.1", now)
            inside = [c for c in seen if now - window < c.ts <= now]
            if not got.complete:
                assert got.connections <= len(inside)
                continue
            assert got.connections == len(inside)
            assert got.ports == len({c.resp_p for c in inside})
            assert got.responders == len({c.resp_h for c in inside})
            assert got.packets == sum(c.orig_pkts + c.resp_pkts for c in inside)
            assert got.bytes == sum(c.orig_bytes + c.resp_bytes for c in inside)
            assert got.unanswered == sum(c.resp_pkts == 0 for c in inside)
            assert got.refused == sum(c.conn_state == "REJ" for c in inside)
            if inside:
                assert (got.first_ts, got.last_ts) == (min(c.ts for c in inside), max(c.ts for c in inside))
                counts: dict[int, int] = {}
                for c in inside:
                    counts[c.resp_p] = counts.get(c.resp_p, 0) + 1
                assert got.top_ports[0][1] == max(counts.values())


# --- concepts and descriptions --------------------------------------------------------------------------------


def test_the_top_concepts_named_are_the_winning_missions_top_activations(
    explainer: Explainer, concept_table: list[dict[str, str]]
) -> None:
    missions = {m.name: m for m in load_missions(MISSION_DIR)}
    rng = np.random.default_rng(5)
    ruled_out = 0
    for attack in ("port_scan", "syn_flood", "dictionary_attack"):
        mission = next(name for name, m in missions.items() if attack in m.classes)
        row = rng.random(len(concept_table)).astype(np.float32)
        others = [i for i, c in enumerate(concept_table) if c["mission"] != mission]
        row[others] += 10.0  # other missions' concepts are far more active: they must not be named
        own = sorted(
            (i for i, c in enumerate(concept_table) if c["mission"] == mission), key=lambda i: -row[i]
        )
        expected = [concept_table[i]["concept"] for i in own[:3]]
        assert [c for _, c, _ in explainer.top_concepts(attack, row)] == expected
        conn, activity = make_conn(1.0, state="S0", resp_pkts=0), Activity("s", "10.0.0.1", 1.0, 60.0)
        text = explainer.explain(
            conn, activity, FINE_TO_COARSE[attack], attack, row, rng.standard_normal(ALIGNED)
        )
        # the explanation names the strongest of those the connection's facts and the class allow
        allowed = explainer.concept_rules.allowed([conn], [activity], [attack])[0]
        kept = [concept_table[i]["concept"] for i in own if allowed[i]][:3]
        assert len(kept) == 3, kept
        ruled_out += kept != expected
        named = f"{kept[0]}, {kept[1]} and {kept[2]}"
        assert f"the {mission} concepts most activated were {named}" in text, text
    assert ruled_out  # the facts did set some of the most activated concepts aside


def test_the_quoted_description_is_the_argmax_of_the_predicted_class(
    explainer: Explainer, bundle_dir: Path
) -> None:
    texts, classes, embeddings = load_descriptions(load_bundle(bundle_dir))
    rng = np.random.default_rng(9)
    for attack in ("port_scan", "udp_flood", "slowloris", "ping_sweep"):
        rows = [i for i, c in enumerate(classes) if c == attack]
        for _ in range(5):
            aligned = rng.standard_normal(ALIGNED).astype(np.float32)
            best_anywhere = int(np.argmax(embeddings @ aligned))
            expected = rows[int(np.argmax(embeddings[rows] @ aligned))]
            index, quote = explainer.nearest_description(attack, aligned)
            assert index == expected and classes[index] == attack
            if classes[best_anywhere] != attack:
                assert index != best_anywhere
            assert not re.search(r"\d", quote) and (quote == "" or quote in texts[index])
        mixed = rows[0]  # a text with numbers and class sentences
        index, quote = explainer.nearest_description(attack, embeddings[mixed])
        # one sentence: the one naming most concepts ("Notable: a and b."), never the numbers around it
        assert index == mixed and re.fullmatch(r"Notable: [^.\d]+ and [^.\d]+\.", quote), quote
        numbers_only = rows[4]
        index, quote = explainer.nearest_description(attack, embeddings[numbers_only])
        assert index == numbers_only and quote == ""
        text = explainer.explain(
            make_conn(1.0),
            Activity("s", "10.0.0.1", 1.0, 60.0),
            FINE_TO_COARSE[attack],
            attack,
            rng.random(len(explainer.concepts)),
            embeddings[numbers_only],
        )
        assert "closest description" not in text and not re.search(r"\b62\d{3}\b", text)


def test_benign_verdicts_get_one_short_factual_sentence(explainer: Explainer) -> None:
    conn = make_conn(1.0, orig_pkts=6, resp_pkts=5, orig_bytes=310, resp_bytes=2048, duration=0.042)
    text = explainer.explain(
        conn, Activity("s", "10.0.0.1", 1.0, 60.0, connections=40), "benign", "benign", np.ones(3), np.ones(2)
    )
    assert text == (
        "TCP to port 80: completed normally, 6 packets out, 5 back, 310 payload bytes sent, 2,048 received, "
        "over 0.042 s; judged benign."
    )


def test_rows_of_the_wrong_length_are_counted_not_fatal(explainer: Explainer) -> None:
    before = explainer.stats["malformed_rows"]
    text = explainer.explain(
        make_conn(1.0), Activity("s", "10.0.0.1", 1.0, 60.0), "recon", "port_scan", np.ones(3), np.ones(2)
    )
    assert text.startswith("TCP to port 80") and "Judged a port scan." in text
    assert explainer.stats["malformed_rows"] == before + 2


def test_a_batch_is_explained_as_each_row_alone_and_deterministically(
    explainer: Explainer, lab_connections: list[Connection]
) -> None:
    """`explain_batch` ranks concepts and descriptions per predicted class over the whole batch: every row must
    read as `explain` on that row alone, whatever the mix of classes and benign rows around it."""
    tracker = ActivityTracker()
    rng = np.random.default_rng(1)
    classes = [("recon", "port_scan"), ("dos", "syn_flood"), ("benign", "benign"), ("recon", "os_scan")]
    labels, attacks, activities = [], [], []
    for conn in lab_connections:
        tracker.observe("lab", conn)
        label, attack = classes[int(rng.integers(len(classes)))]
        labels.append(label)
        attacks.append(attack)
        activities.append(tracker.summary("lab", conn.orig_h, conn.ts))
    concepts = rng.random((len(lab_connections), len(explainer.concepts))).astype(np.float32)
    aligned = rng.standard_normal((len(lab_connections), ALIGNED)).astype(np.float32)
    batch = explainer.explain_batch(lab_connections, activities, labels, attacks, concepts, aligned)
    alone = [
        explainer.explain(conn, activity, label, attack, concepts[row], aligned[row])
        for row, (conn, activity, label, attack) in enumerate(
            zip(lab_connections, activities, labels, attacks, strict=True)
        )
    ]
    assert batch == alone
    assert len({text for text in batch if "closest description" in text}) > 10  # the rows really differ
    assert explainer.explain_batch(lab_connections, activities, labels, attacks, concepts, aligned) == batch


def test_the_responders_side_is_reported_for_floods_and_lone_connections(explainer: Explainer) -> None:
    """What the responder received before the connection, in the numbers `ResponderActivity` counted: said for a
    DoS verdict, and for an attack verdict with nothing to say of the originator; never for a benign one."""
    activity = ResponderActivity(window=10.0)
    for i in range(40):  # 40 connections from 25 sources, three in four unanswered
        activity.add(
            "s|10.0.0.2", 1.0 + i * 0.01, f"203.0.113.{i % 25}", 80, "tcp", answered=i % 4 == 0, packets=1
        )
    summary = responder_summary(activity.features("s|10.0.0.2", 2.0, "10.0.0.1", 80, "tcp"))
    said = "the receiving host got 40 connections from 25 sources in the last 10 s (4 per second), 75% unanswered"
    conn = make_conn(2.0)
    lone = Activity("s", "10.0.0.1", 2.0, 60.0, connections=1)
    busy = Activity("s", "10.0.0.1", 2.0, 60.0, connections=30, responders=1, ports=30)

    def text(label: str, attack: str, origin: Activity) -> str:
        return explainer.explain_batch(
            [conn], [origin], [label], [attack], np.ones((1, 3)), np.ones((1, 2)), [summary]
        )[0]

    assert said in text("dos", "syn_flood", lone) and said in text("dos", "syn_flood", busy)
    assert said in text("recon", "port_scan", lone)
    assert said not in text("benign", "benign", lone)
    quiet = responder_summary(np.zeros(len(RESPONDER_FEATURES), np.float32))
    assert (
        "receiving host got"
        not in explainer.explain_batch(
            [conn], [lone], ["dos"], ["syn_flood"], np.ones((1, 3)), np.ones((1, 2)), [quiet]
        )[0]
    )
