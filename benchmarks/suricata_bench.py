"""Cost and completeness of the Suricata mechanisms packetclip could take packets from, and the sidecar's speed.

Suricata's own throughput (`suricata -r`, single capture enlarged by repeating it with shifted times so that it
runs long enough to time) under these variants of `rules/suricata/suricata-packetclip.yaml`, runs interleaved
(variant A, B, C, D, A, B, ...) so that background load hits all alike:

- `baseline`: no rules (Suricata as it runs without packetclip; same eve outputs);
- `sampling-eve-file`: the sampling rule, eve alert `packet` + `tagged-packets` to eve.json (the chosen mechanism);
- `sampling-eve-socket`: the same records over a `unix_stream` eve output to a listener that drains it;
- `pcap-log-tagged`: the sampling rule with pcap-log `conditional: tag` (packets only; no flow_id: the sidecar
  would have to track flows itself).

Then the sidecar over the eve.json of `sampling-eve-file` (flows/s of featurize + engine, and end to end), and the
agreement of its verdicts with `packetclip classify` on the original capture. JSON on stdout.

    python benchmarks/suricata_bench.py [--capture PCAP] [--copies 20] [--runs 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from packetclip.engine import Engine
from packetclip.featurizer import read_frames
from packetclip.output import verdict_record
from packetclip.pipeline import classify_captures, resolve_model
from packetclip.suricata.agreement import compare, whole_frames_capture
from packetclip.suricata.eve import parse_timestamp
from packetclip.suricata.follow import EveFileFollower, EveSocketListener
from packetclip.suricata.sidecar import SidecarSettings, SuricataSidecar
from packetclip.suricata.verdicts import FileSink

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "rules" / "suricata"
CONFIG = RULES / "suricata-packetclip.yaml"
VARIANTS = ("baseline", "sampling-eve-file", "sampling-eve-socket", "pcap-log-tagged")


def repeat_capture(source: Path, target: Path, copies: int) -> int:
    """`copies` back-to-back copies of `source`, each shifted past the previous one plus two hours (so that
    Suricata's flows of one copy have timed out before the next starts); returns packets written."""
    frames = list(read_frames(source))
    span = frames[-1][0] - frames[0][0] + 7200.0
    with target.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, frames[0][1]))
        for copy in range(copies):
            for ts, _, frame in frames:
                shifted = ts + copy * span
                sec = int(shifted)
                usec = min(round((shifted - sec) * 1e6), 999_999)
                out.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    return len(frames) * copies


def variant_config(variant: str, workdir: Path) -> tuple[Path, Path]:
    """(yaml, rules file) of one variant."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["unix-command"] = {"enabled": False}
    eve = config["outputs"][0]["eve-log"]
    rules = workdir / f"{variant}.rules"
    sampling = (RULES / "packetclip-sampling.rules").read_text()
    rules.write_text("" if variant == "baseline" else sampling)
    if variant == "sampling-eve-socket":
        eve["filetype"] = "unix_stream"
        eve["filename"] = str(workdir / "eve.sock")
    if variant == "pcap-log-tagged":
        eve["types"] = ["flow"]
        config["outputs"].append(
            {
                "pcap-log": {
                    "enabled": True,
                    "filename": "log.pcap",
                    "mode": "normal",
                    "conditional": "tag",
                    "limit": "1000mb",
                    "max-files": 2,
                }
            }
        )
    path = workdir / f"{variant}.yaml"
    path.write_text("%YAML 1.1\n---\n" + yaml.safe_dump(config, sort_keys=False))
    return path, rules


def run_suricata(variant: str, capture: Path, workdir: Path) -> dict[str, Any]:
    config, rules = variant_config(variant, workdir)
    logdir = workdir / f"log-{variant}"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    listener, drained = None, threading.Event()
    if variant == "sampling-eve-socket":
        listener = EveSocketListener(workdir / "eve.sock")
        lines = [0]

        def drain() -> None:
            while not drained.is_set():
                lines[0] += len(listener.poll(0.05))

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
    command = [
        "suricata",
        "-c",
        str(config),
        "-S",
        str(rules),
        "-r",
        str(capture),
        "-k",
        "none",
        "-l",
        str(logdir),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"seconds": seconds}
    if listener is not None:
        time.sleep(0.3)
        drained.set()
        thread.join(5)
        listener.close()
        result["eve_lines"] = lines[0]
    else:
        eve = logdir / "eve.json"
        result["eve_bytes"] = eve.stat().st_size if eve.exists() else 0
        result["eve_lines"] = sum(1 for _ in eve.open("rb")) if eve.exists() else 0
    result["pcap_log_bytes"] = sum(p.stat().st_size for p in logdir.glob("log.pcap*"))
    return result


def sidecar_speed(eve: Path, bundle: Path) -> dict[str, Any]:
    engine = Engine(bundle, threads=1)
    sidecar = SuricataSidecar(
        engine, EveFileFollower(eve), FileSink(io.StringIO()), settings=SidecarSettings(max_wait=3600.0)
    )
    started = time.perf_counter()
    sidecar.run(threading.Event(), stop_after_idle=0.5)
    seconds = time.perf_counter() - started - 0.5  # the idle wait that ended the run is not work
    counts = sidecar.counts
    return {
        "flows": counts.flows_classified,
        "flows_per_second_classify": round(counts.flows_classified / sidecar.pipeline.counts.seconds, 1),
        "flows_per_second_end_to_end": round(counts.flows_classified / seconds, 1),
        "eve_lines_per_second": round(sidecar.parser.counts.lines / seconds, 1),
    }


def agreement_on(capture: Path, bundle: Path, workdir: Path) -> dict[str, Any]:
    """Sidecar (via `suricata -r` and its eve) against `packetclip classify` on one capture, both reading it
    without the frames its snaplen cut short (Suricata's decoder rejects those; the featurizer keeps them)."""
    whole = workdir / f"whole-{capture.name}"
    cut_frames = whole_frames_capture(capture, whole)
    capture = whole
    run_suricata("sampling-eve-file", capture, workdir)
    out = io.StringIO()
    engine = Engine(bundle, threads=1)
    sidecar = SuricataSidecar(
        engine,
        EveFileFollower(workdir / "log-sampling-eve-file" / "eve.json"),
        FileSink(out),
        settings=SidecarSettings(sensor=capture.name, max_wait=3600.0),
    )
    sidecar.run(threading.Event(), stop_after_idle=0.5)
    ours = [json.loads(line) for line in out.getvalue().splitlines()]
    for record in ours:
        record["ts"] = parse_timestamp(record["timestamp"])
    reference: list[dict[str, Any]] = []
    classify_captures(Engine(bundle, threads=1), [capture], lambda v: reference.append(verdict_record(v)))
    result = compare(reference, ours).as_dict()
    result.update(classify_flows=len(reference), sidecar_flows=len(ours), cut_frames_left_out=cut_frames)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capture", type=Path, default=REPO / "samples" / "lab-quick" / "capture.pcap")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    if shutil.which("suricata") is None:
        print("suricata is not installed (scripts/install-suricata)", file=sys.stderr)
        return 2
    bundle = resolve_model(args.model)
    version = subprocess.run(["suricata", "-V"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="packetclip-suricata-bench-") as tmp:
        workdir = Path(tmp)
        capture = workdir / "repeated.pcap"
        packets = repeat_capture(args.capture, capture, args.copies)
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for _ in range(args.runs):
            for variant in VARIANTS:
                runs[variant].append(run_suricata(variant, capture, workdir))
        base = statistics.median(r["seconds"] for r in runs["baseline"])
        suricata_results = {}
        for variant, results in runs.items():
            median = statistics.median(r["seconds"] for r in results)
            suricata_results[variant] = {
                "seconds": [round(r["seconds"], 3) for r in results],
                "median_seconds": round(median, 3),
                "packets_per_second": round(packets / median),
                "throughput_ratio_to_baseline": round(base / median, 3),
                "eve_lines": results[-1].get("eve_lines"),
                "eve_bytes": results[-1].get("eve_bytes"),
                "pcap_log_bytes": results[-1].get("pcap_log_bytes"),
            }
        report = {
            "suricata": version,
            "capture": str(args.capture),
            "copies": args.copies,
            "packets": packets,
            "runs": args.runs,
            "variants": suricata_results,
            "sidecar": sidecar_speed(workdir / "log-sampling-eve-file" / "eve.json", bundle),
            "agreement_with_classify": agreement_on(args.capture, bundle, workdir),
            "model": str(bundle),
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
